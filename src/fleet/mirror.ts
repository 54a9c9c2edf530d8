/**
 * FleetMirror: keeps the API's resources in this host's store equal to the
 * fleet's etcd prefix.
 *
 * On every (re)connect it reads the whole prefix at one revision and makes
 * the store equal to it (a prefix without a fence is seeded from this
 * host's store first), then watches from the next revision: each watch
 * response is one store write that reloads only the keys it names. A
 * watch that ends (etcd down, the revision compacted away) starts over
 * with a full read, so nothing between is missed. Meanwhile the store
 * keeps what it mirrored last and the datapath keeps serving it.
 *
 * A key the store refuses (bad JSON, invalid, colliding) is reported as
 * rejected and its old state stays; a datapath that refuses stalls the
 * mirror, which retries the same response until it applies.
 */
import type { Namespace, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import type { Controller } from '../control/controller.js';
import { FerryError } from '../model/errors.js';
import type { FleetMember, FleetRejected } from '../model/fleet.js';
import type { DesiredState, PolicySpec, VipWithBackends } from '../model/types.js';
import type { NamedState, StoreTx } from '../store/types.js';
import { decodeContent, decodeSeed, FENCE, parseKey, policyKey, SEED, vipKey, type Content, type FenceValue } from './keys.js';

export interface MirrorOptions {
  ns: Namespace;
  prefix: string;
  controller: Controller;
  drainSeconds: () => number;
  /** The seed this host uses now: the fleet starts with it when the prefix has none. */
  localSeed: () => number;
  /** The fleet's seed differs from the one this host used: the store holds it now. */
  onSeed: (seed: number) => void;
  /** The mirrored revision moved or members changed. */
  onChange: () => void;
  log: Logger;
  retryMs?: number;
}

/** A key's value as etcd holds it, with its mod revision (what a write compares). */
interface Held {
  mod: number;
  value: string;
}

/** One key of a write: its new value (null: delete) and the mod revision it must still have. */
export interface FleetOp {
  key: string;
  value: string | null;
  mod: number;
}

/** A watch response, reduced to what the mirror uses. */
interface Batch {
  events: Array<{ key: string; mod: number; value: string | null }>;
}

/** Order of per-key application: nothing depends on a later step. */
const STEP = (c: Content): number => (c.kind === 'policy' ? (c.value === null ? 3 : 0) : c.value === null ? 1 : 2);

export class FleetMirror {
  private readonly held = new Map<string, Held>();
  readonly members = new Map<string, FleetMember>();
  readonly rejected = new Map<string, FleetRejected>();
  /** The etcd revision the store mirrors. */
  revision = 0;
  cluster: string | null = null;
  live = false;
  lastError: string | null = null;
  /** Why the next watched revision does not apply (retried), or null. */
  stalled: string | null = null;
  private watcher: Watcher | undefined;
  private queue: Batch[] = [];
  private holds = 0;
  private lock: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private reconnect: NodeJS.Timeout | undefined;
  private waiters: Array<{ revision: number; resolve: () => void }> = [];

  constructor(private readonly o: MirrorOptions) {
    const mark = o.controller.read((tx) => tx.fleetMark());
    if (mark !== null && mark.prefix === o.prefix) {
      this.revision = mark.revision;
      this.cluster = mark.cluster;
    }
  }

  start(): void {
    void this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    clearTimeout(this.reconnect);
    this.live = false;
    const w = this.watcher;
    this.watcher = undefined;
    await w?.cancel().catch(() => {});
  }

  /** The mod revision etcd holds for a key as last seen (0: absent). */
  modOf(key: string): number {
    return this.held.get(key)?.mod ?? 0;
  }

  /** The keys a dry-run's result would change, with the revisions they must still have. */
  diff(named: NamedState): FleetOp[] {
    const ops: FleetOp[] = [];
    const add = (key: string, v: VipWithBackends | PolicySpec | null): void => {
      const value = v === null ? null : JSON.stringify(v);
      const now = this.held.get(key);
      if (value === (now?.value ?? null)) return;
      ops.push({ key, value, mod: now?.mod ?? 0 });
    };
    for (const [name, v] of named.vips) add(vipKey(name), v);
    for (const [name, p] of named.policies) add(policyKey(name), p);
    return ops;
  }

  /** A write committed at `revision`: what the next write compares against, before the watch tells. */
  wrote(ops: readonly FleetOp[], fence: string, revision: number): void {
    for (const op of ops) {
      if (op.value === null) this.held.delete(op.key);
      else this.held.set(op.key, { mod: revision, value: op.value });
    }
    this.held.set(FENCE, { mod: revision, value: fence });
  }

  /**
   * Runs fn while no watch response is applied (they queue), one writer at
   * a time: a write's dry run, its etcd transaction and its local apply see
   * no other change in between.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(async () => {
      this.holds++;
      try {
        return await fn();
      } finally {
        this.holds--;
        this.drain();
      }
    });
    this.lock = run.catch(() => {});
    return run;
  }

  /** Resolves once the store mirrors `revision` (or after `ms`; false then). */
  until(revision: number, ms: number): Promise<boolean> {
    if (this.revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, ms);
      const waiter = {
        revision,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      this.waiters.push(waiter);
    });
  }

  // ------------------------------------------------------------ connection

  private async connect(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.sync();
      await this.watch();
    } catch (err) {
      this.lost(err);
    }
  }

  /** The watch ended or never started: serve what the store holds, start over after a pause. */
  private lost(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (this.live || this.lastError !== message)
      this.o.log.warn({ err: message }, 'fleet store unreachable; serving the last mirrored state');
    this.live = false;
    this.lastError = message;
    const w = this.watcher;
    this.watcher = undefined;
    void w?.cancel().catch(() => {});
    this.o.onChange();
    if (this.stopped) return;
    clearTimeout(this.reconnect);
    this.reconnect = setTimeout(() => void this.connect(), this.o.retryMs ?? 1000);
    this.reconnect.unref();
  }

  /** Reads the whole prefix and makes the store equal to it. */
  private async sync(): Promise<void> {
    for (;;) {
      const res = await this.o.ns.getAll().prefix('').exec();
      const kvs = (res.kvs ?? []).map((kv) => ({
        key: kv.key.toString(),
        mod: Number(kv.mod_revision),
        value: kv.value.toString(),
      }));
      if (!kvs.some((kv) => kv.key === FENCE)) {
        await this.seedPrefix();
        continue;
      }
      const revision = Number(res.header.revision);
      this.cluster = String(res.header.cluster_id);
      this.held.clear();
      this.members.clear();
      this.rejected.clear();
      this.queue = [];
      this.stalled = null;
      const local = this.o.controller.read((tx) => tx.exportState(null));
      // Everything this host holds that the prefix lacks goes: a delete event for it.
      const inPrefix = new Set(kvs.map((kv) => kv.key));
      const absent = [...local.vips.map((v) => vipKey(v.name)), ...(local.policies ?? []).map((p) => policyKey(p.name))]
        .filter((key) => !inPrefix.has(key))
        .map((key) => ({ key, mod: revision, value: null }));
      // Another cluster's (or an older) mark means nothing here: the store now mirrors this read.
      this.revision = 0;
      await this.exclusive(async () => this.apply({ events: [...kvs, ...absent] }, revision, 'fleet.sync'));
      this.o.log.info({ revision, cluster: this.cluster, keys: kvs.length }, 'fleet store mirrored');
      return;
    }
  }

  /** A prefix without a fence has never held a fleet: it starts as this host's store. */
  private async seedPrefix(): Promise<void> {
    const state = this.o.controller.read((tx) => tx.exportState(null));
    const fence: FenceValue = { host: 'seed', actor: 'ferryd', action: 'fleet.seed', time: new Date().toISOString() };
    const ns = this.o.ns;
    const res = await ns
      .if(FENCE, 'Mod', '==', 0)
      .then(
        ...state.vips.map((v) => ns.put(vipKey(v.name)).value(JSON.stringify(v))),
        ...(state.policies ?? []).map((p) => ns.put(policyKey(p.name)).value(JSON.stringify(p))),
        ns.put(SEED).value(String(this.o.localSeed())),
        ns.put(FENCE).value(JSON.stringify(fence)),
      )
      .commit();
    if (res.succeeded) {
      this.o.log.info({ vips: state.vips.length, policies: state.policies?.length ?? 0 }, 'fleet store seeded from this host');
    }
  }

  private async watch(): Promise<void> {
    const w = await this.o.ns
      .watch()
      .prefix('')
      .startRevision(String(this.revision + 1))
      .create();
    if (this.stopped) {
      await w.cancel();
      return;
    }
    this.watcher = w;
    this.live = true;
    this.lastError = null;
    w.on('data', (res) => {
      if (this.watcher !== w) return;
      // One response may carry several revisions: each (one etcd transaction, one member's write) is one store write.
      for (const ev of res.events) {
        const e = {
          key: ev.kv.key.toString(),
          mod: Number(ev.kv.mod_revision),
          value: ev.type === 'Delete' ? null : ev.kv.value.toString(),
        };
        const last = this.queue[this.queue.length - 1];
        if (last !== undefined && last.events[0]!.mod === e.mod) last.events.push(e);
        else this.queue.push({ events: [e] });
      }
      this.drain();
    });
    w.on('disconnected', (err) => {
      if (this.watcher === w) this.lost(err);
    });
    w.on('error', (err) => {
      if (this.watcher === w) this.lost(err);
    });
    this.o.onChange();
  }

  // ------------------------------------------------------------- applying

  /** Applies queued responses in order unless a writer holds the mirror; a datapath refusal retries later. */
  private drain(): void {
    while (this.holds === 0 && this.queue.length > 0) {
      const batch = this.queue[0]!;
      // Member records are not content: the mirrored revision is that of the last content change.
      const top = batch.events.reduce((m, e) => (parseKey(e.key).kind === 'member' ? m : Math.max(m, e.mod)), this.revision);
      try {
        this.apply(batch, top, 'fleet.apply');
      } catch (err) {
        this.stalled = `applying revision ${top}: ${(err as Error).message}`;
        this.lastError = this.stalled;
        this.o.log.error({ err: (err as Error).message, revision: top }, 'fleet: the change could not be applied; retrying');
        clearTimeout(this.retry);
        this.retry = setTimeout(() => this.drain(), this.o.retryMs ?? 1000);
        this.retry.unref();
        return;
      }
      if (this.stalled !== null) this.lastError = null;
      this.stalled = null;
      this.queue.shift();
    }
  }

  /** One store write for one batch of events; the mark says the store holds the prefix at `revision`. */
  private apply(batch: Batch, revision: number, action: string): void {
    const contents = new Map<string, Content>();
    let seed: number | null = null;
    let fence: FenceValue | null = null;
    for (const ev of batch.events) {
      if (ev.value === null) this.held.delete(ev.key);
      else this.held.set(ev.key, { mod: ev.mod, value: ev.value });
      const k = parseKey(ev.key);
      if (k.kind === 'vip' || k.kind === 'policy') {
        try {
          contents.set(ev.key, decodeContent(k.kind, k.name, ev.value));
          this.rejected.delete(ev.key);
        } catch (err) {
          contents.delete(ev.key);
          this.reject(ev.key, ev.mod, (err as Error).message);
        }
      } else if (k.kind === 'seed' && ev.value !== null) {
        seed = decodeSeed(ev.value);
        if (seed === null) this.reject(ev.key, ev.mod, `not a seed (an integer from 0 to 4294967295): ${ev.value.slice(0, 40)}`);
      } else if (k.kind === 'fence' && ev.value !== null) {
        fence = parseFence(ev.value);
      } else if (k.kind === 'member') {
        this.member(k.name, ev.value);
      }
    }
    if (contents.size === 0 && seed === null && revision <= this.revision) {
      this.o.onChange();
      return;
    }
    // The store's seed before this write: read only when the batch carries one.
    const before = seed === null ? null : this.o.controller.read((tx) => tx.snapshot().hash_seed);
    // A watch batch is one write of one member (the fence names it); a full read is many.
    const by = action === 'fleet.apply' ? fence : null;
    this.o.controller.write(by === null ? 'fleet' : `${by.actor}@${by.host}`, by?.action ?? action, (tx) => {
      if (seed !== null) tx.setHashSeed(seed);
      for (const r of applyContents(tx, [...contents.values()], this.o.drainSeconds())) {
        const key = r.content.kind === 'vip' ? vipKey(r.content.name) : policyKey(r.content.name);
        this.reject(key, this.held.get(key)?.mod ?? revision, r.reason);
      }
      tx.setFleetMark({ prefix: this.o.prefix, cluster: this.cluster ?? '', revision });
    });
    this.revision = Math.max(this.revision, revision);
    if (seed !== null && seed !== before) this.o.onSeed(seed);
    this.waiters = this.waiters.filter((w) => {
      if (w.revision > this.revision) return true;
      w.resolve();
      return false;
    });
    this.o.onChange();
  }

  private reject(key: string, revision: number, reason: string): void {
    this.rejected.set(key, { key, revision, reason });
    this.o.log.error({ key, revision, reason }, 'fleet: a key of the fleet store was not applied on this host');
  }

  private member(name: string, raw: string | null): void {
    if (raw === null) {
      this.members.delete(name);
      return;
    }
    try {
      const m = JSON.parse(raw) as FleetMember;
      if (typeof m === 'object' && m !== null && m.name === name) this.members.set(name, m);
    } catch {
      // A member record that is not JSON is not a member this host can show.
    }
  }
}

function parseFence(raw: string): FenceValue | null {
  try {
    const f = JSON.parse(raw) as Partial<FenceValue>;
    return typeof f.actor === 'string' && typeof f.host === 'string' && typeof f.action === 'string' ? (f as FenceValue) : null;
  } catch {
    return null;
  }
}

/** The contents as a desired state, and the names they cover (deletes included). */
function asDesired(contents: readonly Content[]): { desired: DesiredState; scope: { vips: Set<string>; policies: Set<string> } } {
  const vips: VipWithBackends[] = [];
  const policies: PolicySpec[] = [];
  const scope = { vips: new Set<string>(), policies: new Set<string>() };
  for (const c of contents) {
    if (c.kind === 'vip') {
      scope.vips.add(c.name);
      if (c.value !== null) vips.push(c.value);
    } else {
      scope.policies.add(c.name);
      if (c.value !== null) policies.push(c.value);
    }
  }
  return { desired: { vips, policies }, scope };
}

/**
 * Makes the API's resources named by `contents` equal to them: all in one
 * scoped replace when the store takes them; otherwise one key at a time,
 * each in its own savepoint, and the refused ones are returned.
 */
function applyContents(tx: StoreTx, contents: readonly Content[], drainSeconds: number): Array<{ content: Content; reason: string }> {
  if (contents.length === 0) return [];
  try {
    const { desired, scope } = asDesired(contents);
    tx.savepoint((t) => t.replaceState(desired, drainSeconds, null, scope));
    return [];
  } catch (err) {
    if (!(err instanceof FerryError)) throw err;
  }
  const refused: Array<{ content: Content; reason: string }> = [];
  for (const c of [...contents].sort((a, b) => STEP(a) - STEP(b))) {
    try {
      const { desired, scope } = asDesired([c]);
      tx.savepoint((t) => t.replaceState(desired, drainSeconds, null, scope));
    } catch (err) {
      if (!(err instanceof FerryError)) throw err;
      refused.push({ content: c, reason: err.message });
    }
  }
  return refused;
}
