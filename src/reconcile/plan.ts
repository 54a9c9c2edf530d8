/**
 * The planner: a store snapshot (plus health) → the datapath's desired
 * contents (DpState). Pure: no I/O, no clock, the same input always gives
 * the same output, in a deterministic order (VIPs and backends by id).
 *
 * Rules:
 *  - a VIP's id is its dp_id; its effective allow/deny rules are its own
 *    plus those of the policies it names, in that order, canonical
 *    ("network/prefix", host bits cleared) and without duplicates;
 *  - flags: VIP_F_POLICY when any rule applies, VIP_F_ALLOWLIST when any
 *    allow rule does, VIP_F_SRC_AFFINITY from source_affinity, VIP_F_SNAT from
 *    forwarding snat;
 *  - m = maglev_m, else chooseMaglevM(backends that take new flows by
 *    configuration: state active and weight > 0). Health is left out of
 *    that count on purpose: a health flap must not resize the table (a new
 *    M reshuffles every slot, Maglev's minimal disruption holds only at
 *    equal M);
 *  - rate limit: interval = round(1e9 / new_flows_per_sec) ns (at least 1),
 *    tolerance = interval × burst; 0n/0n without a limit;
 *  - backend state: disabled → down, draining → draining, active but
 *    health 'down' → down, else active; the weight is kept (0 = no slots,
 *    existing flows stay);
 *  - all down: when every backend that would take new flows (active,
 *    weight > 0) is health-down, the VIP's health_check.all_down decides:
 *    'keep' (the default) ignores health for that VIP, so all of them stay
 *    in the table (fail open: a broken check, e.g. a firewall dropping the
 *    probes, must not black-hole a VIP whose servers may well be serving);
 *    'drop' takes them all out, and the datapath drops new flows as
 *    no_backend (counted);
 *  - tombstones → draining backends of their VIP (those of VIPs that no
 *    longer exist, or whose id a live backend holds, are left out: nothing
 *    can reach them).
 * Backend addresses are canonicalised: they are the Maglev keys, which must
 * be the same text on every Ferry host.
 */
import { VIP_F_ALLOWLIST, VIP_F_POLICY, VIP_F_SNAT, VIP_F_SRC_AFFINITY } from '../datapath/abi.js';
import { chooseMaglevM } from '../maglev/index.js';
import type { DpBackend, DpBackendState, DpState, DpTombstone, DpVip } from '../model/dpstate.js';
import { ipFamily, parseCidr, validatedIp, type Cidr } from '../net/addr.js';
import type { BackendState, PolicyRecord, RateLimit } from '../model/types.js';
import type { StoreSnapshot, StoreState, StoredBackend, StoredVip, Tombstone } from '../store/types.js';

/** Health verdict for one backend of one VIP; undefined = not checked (treated as up). */
export type HealthFn = (vipName: string, address: string) => 'up' | 'down' | undefined;

export interface PlanOptions {
  health?: HealthFn;
  /**
   * A number that changes whenever any health verdict of the VIP may have
   * changed: lets IncrementalPlanner keep a VIP's plan without asking
   * `health` about each of its backends.
   */
  healthEpoch?: (vipName: string) => number;
  /**
   * The VIPs whose verdicts may have changed since a point (0: the start),
   * and the point to ask from next time; vips null when it cannot tell.
   * Lets IncrementalPlanner look at those VIPs only.
   */
  healthChanges?: (since: number) => { seq: number; vips: ReadonlySet<string> | null };
}

const NS_PER_SEC = 1e9;

/** Builds the desired datapath contents of a snapshot, VIPs in id order. */
export function plan(snap: StoreSnapshot, opts: PlanOptions = {}): DpState {
  const policies = new Map(snap.policies.map((p) => [p.name, p]));
  const backendsByVip = groupBackends(snap.backends);
  const vips = [...snap.vips]
    .sort((a, b) => a.dp_id - b.dp_id)
    .map((v) => planVip(v, backendsByVip.get(v.name) ?? [], policies, opts.health));
  return { vips, tombstones: tombstonesOf(snap.tombstones, vips) };
}

/** plan() of a StoreState (VIPs in the state's order). */
export function planState(state: StoreState, opts: PlanOptions = {}): DpState {
  const vips = [...state.vips.values()].map((v) => planVip(v, state.backends.get(v.name) ?? [], state.policies, opts.health));
  return { vips, tombstones: tombstonesOf(state.tombstones, vips) };
}

function tombstonesOf(tombstones: readonly Tombstone[], vips: readonly DpVip[]): DpTombstone[] {
  if (tombstones.length === 0) return [];
  const vipIds = new Set(vips.map((v) => v.id));
  const live = new Set<number>();
  for (const v of vips) for (const b of v.backends) live.add(b.id);
  return planTombstones(
    tombstones,
    (id) => vipIds.has(id),
    (id) => live.has(id),
  );
}

interface VipMemo {
  stored: StoredVip;
  backends: readonly StoredBackend[] | undefined;
  policies: Array<PolicyRecord | undefined>;
  epoch: number;
  out: DpVip;
  /** The plan() call that last saw this VIP (full passes). */
  seen: number;
  /** Where `out` is in the planner's list. */
  index: number;
}

/**
 * plan() with a memory, for the controller. Each plan says what changed
 * since the previous one (DpState.changes), so the reconciler applies just
 * that, and costs what changed itself:
 *  - when the store derived the state from the one planned last (a write's
 *    state, StoreState.delta), only the VIPs it names, those using the
 *    policies it names, and those whose health changed are looked at;
 *  - otherwise every VIP is compared with its last plan by identity: the
 *    same stored record, backend list, policies and health epoch give back
 *    the same DpVip object, without allocating (the store shares unchanged
 *    objects between revisions).
 */
export class IncrementalPlanner {
  private readonly memo = new Map<string, VipMemo>();
  /** Every planned VIP, in no particular order (a removal moves the last one into its place). */
  private readonly list: DpVip[] = [];
  private readonly names: string[] = [];
  /** VIP names by the policy names they use. */
  private readonly users = new Map<string, Set<string>>();
  /** How many planned VIPs hold each backend id, and the planned VIP ids (for tombstones). */
  private readonly live = new Map<number, number>();
  private readonly vipIds = new Map<number, number>();
  private serial = 0;
  /** The state planned last, and its revision (undefined: plan the next one by a full pass). */
  private last: StoreState | undefined;
  private revision: number | undefined;
  private healthSeq = 0;
  /** Plans made from the delta alone, and by a pass over every VIP. */
  readonly stats = { byDelta: 0, full: 0 };

  plan(state: StoreState, opts: PlanOptions = {}): DpState {
    const serial = ++this.serial;
    const changed: DpVip[] = [];
    const removed: number[] = [];
    const healthVips = this.healthChanges(opts);
    const candidates = healthVips === null ? null : this.candidates(state, healthVips);
    // A plan that throws half way (a policy it cannot find) has changed part of the memory: the next
    // one makes a full pass, which compares every VIP with what is remembered.
    this.last = undefined;
    this.revision = undefined;
    if (candidates === null) {
      this.stats.full++;
      this.planAll(state, opts, serial, changed, removed);
    } else {
      this.stats.byDelta++;
      for (const name of candidates) this.planOne(name, state, opts, healthVips!.has(name), changed, removed);
    }
    this.last = state;
    this.revision = state.revision;
    const tombstones = planTombstones(
      state.tombstones,
      (id) => this.vipIds.has(id),
      (id) => this.live.has(id),
    );
    return { vips: this.list.slice(), tombstones, serial, changes: { since: serial - 1, vips: changed, removed } };
  }

  /** The VIPs whose health may have changed since the last plan; null: any may have. */
  private healthChanges(opts: PlanOptions): ReadonlySet<string> | null {
    if (opts.health === undefined) return new Set();
    if (opts.healthChanges === undefined) return null;
    const h = opts.healthChanges(this.healthSeq);
    this.healthSeq = h.seq;
    return h.vips;
  }

  /** The only VIPs that can differ from the last plan, when that can be known. */
  private candidates(state: StoreState, health: ReadonlySet<string>): Set<string> | null {
    if (this.revision === undefined) return null;
    const out = new Set(health);
    // The very state planned last (the store hands out one object per committed revision): only health
    // can differ. Not the same revision number alone: a rolled-back write's number is used again.
    if (state === this.last) return out;
    const d = state.delta;
    if (d === undefined || d.from !== this.revision) return null;
    for (const name of d.vips) out.add(name);
    for (const p of d.policies) for (const name of this.users.get(p) ?? []) out.add(name);
    return out;
  }

  /** Every VIP against its memo (a pass over all of them, allocating only for what changed). */
  private planAll(state: StoreState, opts: PlanOptions, serial: number, changed: DpVip[], removed: number[]): void {
    const reusable = opts.health === undefined || opts.healthEpoch !== undefined;
    for (const [name, stored] of state.vips) {
      const m = this.memo.get(name);
      if (reusable && m !== undefined && this.unchanged(m, name, stored, state, opts)) {
        m.seen = serial;
        continue;
      }
      this.replan(name, stored, state, opts, changed, removed).seen = serial;
    }
    if (this.memo.size > state.vips.size) {
      for (const [name, m] of this.memo) if (m.seen !== serial) this.forget(name, m, removed);
    }
  }

  /** One VIP the delta names: gone, unchanged, or planned anew. */
  private planOne(name: string, state: StoreState, opts: PlanOptions, healthChanged: boolean, changed: DpVip[], removed: number[]): void {
    const stored = state.vips.get(name);
    const m = this.memo.get(name);
    if (stored === undefined) {
      if (m !== undefined) this.forget(name, m, removed);
      return;
    }
    if (m !== undefined && !healthChanged && this.unchanged(m, name, stored, state, opts)) return;
    this.replan(name, stored, state, opts, changed, removed);
  }

  private unchanged(m: VipMemo, name: string, stored: StoredVip, state: StoreState, opts: PlanOptions): boolean {
    return (
      m.stored === stored &&
      m.backends === state.backends.get(name) &&
      m.epoch === (opts.healthEpoch?.(name) ?? 0) &&
      samePolicies(m.policies, stored.policies, state.policies)
    );
  }

  private replan(name: string, stored: StoredVip, state: StoreState, opts: PlanOptions, changed: DpVip[], removed: number[]): VipMemo {
    const backends = state.backends.get(name);
    const out = planVip(stored, backends ?? [], state.policies, opts.health);
    const old = this.memo.get(name);
    const policies = stored.policies.map((p) => state.policies.get(p));
    const m: VipMemo = { stored, backends, policies, epoch: opts.healthEpoch?.(name) ?? 0, out, seen: 0, index: this.list.length };
    if (old !== undefined) {
      this.count(old.out, -1);
      this.use(name, old.stored.policies, false);
      if (old.out.id !== out.id) removed.push(old.out.id);
      m.index = old.index;
      this.list[old.index] = out;
    } else {
      this.list.push(out);
      this.names.push(name);
    }
    this.count(out, 1);
    this.use(name, stored.policies, true);
    this.memo.set(name, m);
    changed.push(out);
    return m;
  }

  private forget(name: string, m: VipMemo, removed: number[]): void {
    this.count(m.out, -1);
    this.use(name, m.stored.policies, false);
    removed.push(m.out.id);
    this.memo.delete(name);
    const last = this.list.length - 1;
    if (m.index !== last) {
      const moved = this.names[last]!;
      this.list[m.index] = this.list[last]!;
      this.names[m.index] = moved;
      this.memo.get(moved)!.index = m.index;
    }
    this.list.pop();
    this.names.pop();
  }

  private use(name: string, policies: readonly string[], add: boolean): void {
    for (const p of policies) {
      let set = this.users.get(p);
      if (add) {
        if (set === undefined) this.users.set(p, (set = new Set()));
        set.add(name);
      } else if (set !== undefined) {
        set.delete(name);
        if (set.size === 0) this.users.delete(p);
      }
    }
  }

  private count(v: DpVip, n: number): void {
    bump(this.vipIds, v.id, n);
    for (const b of v.backends) bump(this.live, b.id, n);
  }
}

function bump(m: Map<number, number>, key: number, n: number): void {
  const c = (m.get(key) ?? 0) + n;
  if (c > 0) m.set(key, c);
  else m.delete(key);
}

/** Whether the VIP's policies are still the records `had` holds (no allocation: called for every VIP). */
function samePolicies(
  had: ReadonlyArray<PolicyRecord | undefined>,
  names: readonly string[],
  policies: ReadonlyMap<string, PolicyRecord>,
): boolean {
  if (had.length !== names.length) return false;
  for (let i = 0; i < names.length; i++) if (had[i] !== policies.get(names[i]!)) return false;
  return true;
}

/** Backends grouped by the name of their VIP. */
function groupBackends(backends: readonly StoredBackend[]): Map<string, StoredBackend[]> {
  const out = new Map<string, StoredBackend[]>();
  for (const b of backends) {
    const list = out.get(b.vip);
    if (list) list.push(b);
    else out.set(b.vip, [b]);
  }
  return out;
}

/** One VIP in datapath terms. */
function planVip(v: StoredVip, stored: readonly StoredBackend[], policies: ReadonlyMap<string, PolicyRecord>, health?: HealthFn): DpVip {
  const { allow, deny } = effectiveRules(v, policies);
  const verdict = vipHealth(v, stored, health);
  const backends = [...stored].sort((a, b) => a.dp_id - b.dp_id).map((b) => planBackend(b, verdict));
  const { rlIntervalNs, rlToleranceNs } = rateLimitNs(v.rate_limit);
  return {
    id: v.dp_id,
    name: v.name,
    address: validatedIp(v.address),
    port: v.port,
    protocol: v.protocol,
    flags: vipFlags(allow, deny, v.source_affinity, v.forwarding === 'snat'),
    m: v.maglev_m ?? chooseMaglevM(stored.filter(takesNewFlows).length),
    rlIntervalNs,
    rlToleranceNs,
    allow,
    deny,
    backends,
  };
}

/**
 * The health verdicts the VIP's plan uses: the checker's, or none at all
 * when every serving backend is down and the VIP keeps them (all_down keep).
 */
function vipHealth(
  v: StoredVip,
  stored: readonly StoredBackend[],
  health: HealthFn | undefined,
): (b: StoredBackend) => 'up' | 'down' | undefined {
  if (health === undefined) return () => undefined;
  const verdicts = new Map(stored.map((b) => [b, health(v.name, b.address)]));
  const serving = stored.filter(takesNewFlows);
  const allDown = serving.length > 0 && serving.every((b) => verdicts.get(b) === 'down');
  if (allDown && (v.health_check?.all_down ?? 'keep') === 'keep') return () => undefined;
  return (b) => verdicts.get(b);
}

/** Whether the operator lets a backend take new flows (health aside). */
function takesNewFlows(b: StoredBackend): boolean {
  return b.state === 'active' && b.weight > 0;
}

/** VIP_F_* flags from the effective rules, the affinity setting and the forwarding. */
export function vipFlags(allow: readonly string[], deny: readonly string[], sourceAffinity: boolean, snat: boolean): number {
  let flags = 0;
  if (allow.length + deny.length > 0) flags |= VIP_F_POLICY;
  if (allow.length > 0) flags |= VIP_F_ALLOWLIST;
  if (sourceAffinity) flags |= VIP_F_SRC_AFFINITY;
  if (snat) flags |= VIP_F_SNAT;
  return flags;
}

/**
 * The VIP's own rules followed by those of its policies, deduplicated.
 * A policy name the snapshot lacks is an error: silently skipping a deny
 * policy would open the VIP. Policies may mix families; only rules of the
 * VIP's family apply (the trie holds IPv4 as ::ffff:a.b.c.d, so an IPv6
 * rule such as ::/0 would otherwise match IPv4 sources).
 */
function effectiveRules(v: StoredVip, policies: ReadonlyMap<string, PolicyRecord>): { allow: string[]; deny: string[] } {
  const family = ipFamily(v.address);
  const allow = new CidrSet(family);
  const deny = new CidrSet(family);
  allow.addAll(v.allow, v.name);
  deny.addAll(v.deny, v.name);
  for (const name of v.policies) {
    const p = policies.get(name);
    if (!p) throw new Error(`plan: VIP ${v.name} names policy ${JSON.stringify(name)}, which does not exist`);
    allow.addAll(p.allow, `policy ${name}`);
    deny.addAll(p.deny, `policy ${name}`);
  }
  return { allow: allow.list(), deny: deny.list() };
}

/** An insertion-ordered set of canonical CIDRs of one family. */
class CidrSet {
  private readonly items = new Set<string>();

  constructor(private readonly family: 4 | 6) {}

  addAll(cidrs: readonly string[], owner: string): void {
    for (const c of cidrs) {
      const cidr = ruleCidr(c, owner);
      if (cidr.family === this.family) this.items.add(cidr.text);
    }
  }

  list(): string[] {
    return [...this.items];
  }
}

/** A rule's CIDR, host bits cleared; throws naming the owner (the store validated it). */
function ruleCidr(text: string, owner: string): Cidr {
  const c = parseCidr(text.trim(), 'clear');
  if (typeof c === 'string') throw new Error(`plan: ${owner}: ${c}`);
  return c;
}

/** GCRA parameters of a new-flow rate limit, in nanoseconds. */
export function rateLimitNs(rl: RateLimit | null | undefined): { rlIntervalNs: bigint; rlToleranceNs: bigint } {
  if (!rl || !(rl.new_flows_per_sec > 0)) return { rlIntervalNs: 0n, rlToleranceNs: 0n };
  // At least 1 ns: an interval of 0 would mean "unlimited" to the datapath.
  const interval = BigInt(Math.max(1, Math.round(NS_PER_SEC / rl.new_flows_per_sec)));
  const burst = BigInt(Math.max(0, Math.floor(rl.burst)));
  return { rlIntervalNs: interval, rlToleranceNs: interval * burst };
}

/** The datapath state of a backend from its configured state and its health. */
export function backendState(state: BackendState, health: 'up' | 'down' | undefined): DpBackendState {
  if (state === 'disabled') return 'down';
  if (state === 'draining') return 'draining';
  return health === 'down' ? 'down' : 'active';
}

function planBackend(b: StoredBackend, verdict: (b: StoredBackend) => 'up' | 'down' | undefined): DpBackend {
  return {
    id: b.dp_id,
    gen: b.dp_gen,
    address: validatedIp(b.address),
    weight: b.weight,
    state: backendState(b.state, verdict(b)),
    ...(b.port !== undefined ? { port: b.port } : {}),
    ...(b.host !== undefined ? { host: b.host } : {}),
  };
}

/**
 * Tombstones of VIPs still planned, as draining backends. One whose VIP is
 * gone cannot be reached (its VIP entry is removed), and one whose id a live
 * backend holds has been superseded: both are left out.
 */
function planTombstones(
  tombstones: readonly Tombstone[],
  isVip: (vipId: number) => boolean,
  isLive: (backendId: number) => boolean,
): DpTombstone[] {
  return tombstones
    .filter((t) => isVip(t.vip_dp_id) && !isLive(t.dp_id))
    .sort((a, b) => a.dp_id - b.dp_id)
    .map((t) => ({
      id: t.dp_id,
      gen: t.dp_gen,
      address: validatedIp(t.address),
      weight: 0,
      state: 'draining' as const,
      vipId: t.vip_dp_id,
      ...(t.port !== 0 ? { port: t.port } : {}),
      ...(t.host !== null ? { host: t.host } : {}),
    }));
}
