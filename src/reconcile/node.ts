/**
 * The node programs' pairs (bpf/node.bpf.c) from a plan: every backend on
 * this host (host "local") of every VIP, as (frontend, endpoint, port),
 * plus pairs an outside source adds (Kubernetes: other nodes' addresses ×
 * NodePort, whose packets reach this node's endpoints too).
 *
 * NodeEndpoints wraps the XDP applier: pairs a plan adds are written
 * before the XDP maps (the first packet xdp_lb hands up must find its
 * pair), pairs it drops after (packets of the old table may still come).
 * Pairs are kept per VIP, so a plan with changes costs what changed.
 * A removed local backend keeps its pair while it drains (its tombstone),
 * so its established flows still reach it.
 */
import type { Applier, DpState, DpTombstone, DpVip, ReconcileReport } from '../model/dpstate.js';
import { LOCAL_HOST } from '../model/types.js';
import { endpointKey, type NodeEndpoint } from '../datapath/node.js';

/** Where the pairs go: the node datapath, loaded and attached on first use. */
export interface NodeEndpointSink {
  setEndpoints(list: readonly NodeEndpoint[]): void;
  /** Reads the map again before the next write. */
  forget?(): void;
}

/** A VIP's pairs: its local backends that take new or existing flows. */
export function vipNodeEndpoints(v: DpVip): NodeEndpoint[] {
  const out: NodeEndpoint[] = [];
  for (const b of v.backends) {
    if (b.host !== LOCAL_HOST || b.state === 'down') continue;
    out.push(pairOf(v, b));
  }
  return out;
}

function pairOf(v: DpVip, b: { address: string; port?: number }): NodeEndpoint {
  return { vip: v.address, vipPort: v.port, protocol: v.protocol, backend: b.address, port: v.port === 0 ? 0 : b.port || v.port };
}

/** Pairs of removed local backends whose flows still drain (the VIPs are looked up only when there are any). */
export function drainingNodeEndpoints(tombstones: readonly DpTombstone[], vips: readonly DpVip[]): NodeEndpoint[] {
  const local = tombstones.filter((t) => t.host === LOCAL_HOST);
  if (local.length === 0) return [];
  const byId = new Map(vips.map((v) => [v.id, v]));
  return local.flatMap((t) => {
    const v = byId.get(t.vipId);
    return v === undefined ? [] : [pairOf(v, t)];
  });
}

export class NodeEndpoints implements Applier {
  private byVip = new Map<number, NodeEndpoint[]>();
  private extra: readonly NodeEndpoint[] = [];
  private draining: readonly NodeEndpoint[] = [];
  /** The plan (DpState.serial) byVip was made from. */
  private serial: number | undefined;

  constructor(
    private readonly inner: Applier,
    private readonly sink: NodeEndpointSink,
  ) {}

  apply(state: DpState): ReconcileReport {
    const next = this.next(state);
    const draining = drainingNodeEndpoints(state.tombstones, state.vips);
    const changed = next !== this.byVip || !samePairs(this.draining, draining);
    // Old and new together first (a pair whose port changes takes the new one).
    if (changed) this.sink.setEndpoints(union(this.flatten(this.byVip), this.flatten(next, draining)));
    let report: ReconcileReport;
    try {
      report = this.inner.apply(state);
    } catch (err) {
      this.serial = undefined;
      throw err;
    }
    if (changed) {
      this.byVip = next;
      this.draining = draining;
      this.sink.setEndpoints(this.flatten(next));
    }
    this.serial = state.serial;
    return report;
  }

  /** The next apply writes every pair again, compared with what the map holds (drift repair). */
  forget(): void {
    this.serial = undefined;
    this.sink.forget?.();
  }

  /** Replaces the outside source's pairs (written at once). */
  setExtra(list: readonly NodeEndpoint[]): void {
    this.extra = list;
    this.sink.setEndpoints(this.flatten(this.byVip));
  }

  /**
   * The per-VIP pairs of a plan: from its changes when they follow the
   * last plan (the same map when no VIP's pairs changed), else whole.
   */
  private next(state: DpState): Map<number, NodeEndpoint[]> {
    const c = state.changes;
    if (c !== undefined && this.serial !== undefined && c.since === this.serial) {
      const lists = c.vips.map((v) => [v.id, vipNodeEndpoints(v)] as const);
      const touched = c.removed.some((id) => this.byVip.has(id)) || lists.some(([id, l]) => !samePairs(this.byVip.get(id), l));
      if (!touched) return this.byVip;
      const next = new Map(this.byVip);
      for (const id of c.removed) next.delete(id);
      for (const [id, l] of lists) put(next, id, l);
      return next;
    }
    const next = new Map<number, NodeEndpoint[]>();
    for (const v of state.vips) put(next, v.id, vipNodeEndpoints(v));
    return next;
  }

  /** The outside source's pairs, the draining ones, then the VIPs' (later ones win over the same pair). */
  private flatten(byVip: Map<number, NodeEndpoint[]>, draining = this.draining): NodeEndpoint[] {
    const all = [...this.extra, ...draining];
    for (const l of byVip.values()) all.push(...l);
    return union(all, []);
  }
}

/** a then b, one entry per pair, the later one winning. */
function union(a: readonly NodeEndpoint[], b: readonly NodeEndpoint[]): NodeEndpoint[] {
  const m = new Map<string, NodeEndpoint>();
  for (const e of a) m.set(endpointKey(e), e);
  for (const e of b) m.set(endpointKey(e), e);
  return [...m.values()];
}

function samePairs(a: readonly NodeEndpoint[] | undefined, b: readonly NodeEndpoint[]): boolean {
  const x = a ?? [];
  return x.length === b.length && x.every((e, i) => endpointKey(e) === endpointKey(b[i]!) && e.port === b[i]!.port);
}

function put(m: Map<number, NodeEndpoint[]>, id: number, list: NodeEndpoint[]): void {
  if (list.length > 0) m.set(id, list);
  else m.delete(id);
}
