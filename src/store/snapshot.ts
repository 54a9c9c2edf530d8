/**
 * Snapshots for the planner, kept incrementally.
 *
 * The controller plans from a full snapshot on every write, so building one
 * from scratch (every VIP, backend, policy) would make each write cost
 * O(state): ~30 ms at 1,000 VIPs x 10 backends. Instead the store keeps the
 * snapshot of the last revision it saw, and a write derives the next one by
 * reloading only what its change log names (a changed VIP or backend reloads
 * that VIP and its backends; tombstones are always reloaded, they are few).
 *
 * A cached state is used only when its revision equals the committed
 * revision: every change bumps the revision, so a change made by another
 * process (or rolled back) can never be served from the cache. Cached
 * objects are frozen and shared between snapshots; the arrays are fresh.
 */
import type { BackendRecord, PolicyRecord, VipRecord } from '../model/types.js';
import { backendRecord, policyRecord, vipRecord, type BackendFields, type VipFields, type VipRow } from './rows.js';
import type { Statements } from './statements.js';
import type { StateDelta, StoreSnapshot, StoredBackend, StoredVip, Tombstone } from './types.js';

export interface SnapshotState {
  revision: number;
  hash_seed: number;
  vips: Map<string, StoredVip>;
  /** By VIP name, in address order. */
  backends: Map<string, StoredBackend[]>;
  policies: Map<string, PolicyRecord>;
  tombstones: Tombstone[];
  /** Set by deriveState: what changed since the base state (see StoreState.delta). */
  delta?: StateDelta;
}

/** Holds the state of one committed revision. */
export class SnapshotCache {
  private state: SnapshotState | null = null;

  /** The cached state if it is that of `revision`. */
  get(revision: number): SnapshotState | null {
    return this.state !== null && this.state.revision === revision ? this.state : null;
  }

  put(state: SnapshotState): void {
    if (this.state === null || state.revision >= this.state.revision) this.state = state;
  }
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o)) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

// The datapath fields are added to the record rather than spread with it: V8 gives every object made by
// `{ ...polymorphic, extra }` a hidden class of its own (100,000 of them at 100,000 backends), which made
// every later read of a snapshot object megamorphic and doubled the heap's share of hidden classes.
function storedVip(row: VipRow, policies: string[]): StoredVip {
  const v = vipRecord(row, policies) as VipRecord & { dp_id?: number };
  v.dp_id = row.dp_id;
  return deepFreeze(v as StoredVip);
}

function storedBackend(row: BackendFields): StoredBackend {
  const b = backendRecord(row) as BackendRecord & { dp_id?: number; dp_gen?: number };
  b.dp_id = row.dp_id;
  b.dp_gen = row.dp_gen;
  return Object.freeze(b as StoredBackend);
}

/** A backend as a transaction inserted it, with its address sort key (the order of a VIP's backends). */
export interface WrittenBackend {
  row: BackendFields;
  sortKey: Buffer;
}

interface WrittenVip {
  row: VipFields;
  policies: readonly string[];
  backends: WrittenBackend[];
}

/**
 * The VIPs a write transaction created, with the backends it inserted into
 * them: exactly their rows in the database, so the next snapshot builds
 * their entries from here instead of reading back what was just written
 * (a Kubernetes burst creates 10,000 VIPs per batch). Any other change to
 * such a VIP forgets it (it is then read like any other), and a rolled-back
 * savepoint forgets them all: what is left is always what the rows hold.
 */
export class WrittenVips {
  private readonly vips = new Map<string, WrittenVip>();

  created(row: VipFields, policies: readonly string[]): void {
    this.vips.set(row.name, { row, policies: [...policies], backends: [] });
  }

  /** Backends inserted into `vip`; ignored unless this transaction created it (and still knows it whole). */
  addBackends(vip: string, backends: readonly WrittenBackend[]): void {
    const w = this.vips.get(vip);
    if (w !== undefined) for (const b of backends) w.backends.push(b);
  }

  /** `vip` changed otherwise (updated, deleted, a backend changed or removed). */
  forget(vip: string): void {
    this.vips.delete(vip);
  }

  clear(): void {
    this.vips.clear();
  }

  /** The snapshot entries of a VIP this transaction created: as buildState would read them. */
  entries(name: string): { vip: StoredVip; backends: StoredBackend[] } | undefined {
    const w = this.vips.get(name);
    if (w === undefined) return undefined;
    const vip = storedVip({ ...w.row, backend_count: w.backends.length }, [...w.policies]);
    // SQLite orders BLOBs by memcmp, as Buffer.compare does: the order of backendsOfVip.
    const sorted = [...w.backends].sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));
    return { vip, backends: sorted.map((b) => storedBackend(b.row)) };
  }
}

function tombstones(st: Statements): Tombstone[] {
  return st.tombstoneAll.all().map((t) => Object.freeze(t));
}

/** Reads the whole state. */
export function buildState(st: Statements, revision: number, hashSeed: number): SnapshotState {
  const refs = new Map<number, string[]>();
  for (const r of st.allVipPolicies.all()) {
    const list = refs.get(r.vip_id);
    if (list === undefined) refs.set(r.vip_id, [r.policy]);
    else list.push(r.policy);
  }
  const vips = new Map<string, StoredVip>();
  for (const r of st.vipAll.all()) vips.set(r.name, storedVip(r, refs.get(r.id) ?? []));
  const backends = new Map<string, StoredBackend[]>();
  for (const r of st.backendAll.all()) {
    const list = backends.get(r.vip);
    if (list === undefined) backends.set(r.vip, [storedBackend(r)]);
    else list.push(storedBackend(r));
  }
  const policies = new Map<string, PolicyRecord>();
  for (const p of st.policyAll.all()) policies.set(p.name, deepFreeze(policyRecord(p)));
  return { revision, hash_seed: hashSeed, vips, backends, policies, tombstones: tombstones(st) };
}

/**
 * The names a change log touched: "vip/NAME" and "backend/NAME/ADDRESS"
 * name a VIP (names cannot contain "/"), "policy/NAME" a policy.
 */
export function touchedNames(keys: Iterable<string>): { vips: Set<string>; policies: Set<string> } {
  const vips = new Set<string>();
  const policies = new Set<string>();
  // indexOf and slice, not split: a burst's change log holds ~100,000 keys, and split allocated an array and a string per part.
  for (const key of keys) {
    const slash = key.indexOf('/');
    if (slash < 0) continue;
    const end = key.indexOf('/', slash + 1);
    const name = key.slice(slash + 1, end < 0 ? key.length : end);
    if (key.startsWith('vip/') || key.startsWith('backend/')) vips.add(name);
    else if (key.startsWith('policy/')) policies.add(name);
  }
  return { vips, policies };
}

/**
 * What a write changed in the cached state it derived from, to put it back
 * if the write rolls back. The derivation updates the cached state's maps in
 * place (copying them cost O(state) per transaction: 10,000 VIPs, three
 * maps, every step of a burst) and notes each key's first value here. The
 * cache holds only the newest committed state, so nothing reads the old
 * maps afterwards: a commit puts the derived state in the cache (the planner
 * keeps object identities, not maps); a rollback calls undo().
 */
export class StateUndo {
  private target: SnapshotState | null = null;
  private readonly vips = new Map<string, StoredVip | undefined>();
  private readonly backends = new Map<string, StoredBackend[] | undefined>();
  private readonly policies = new Map<string, PolicyRecord | undefined>();

  /** The state to change from now on; a different one than before is first put back. */
  begin(target: SnapshotState): void {
    if (this.target !== null && this.target !== target) this.undo();
    this.target = target;
  }

  /** VIP names changed so far: a later derivation reloads them too (a savepoint may have undone their rows). */
  vipNames(): IterableIterator<string> {
    return this.vips.keys();
  }

  policyNames(): IterableIterator<string> {
    return this.policies.keys();
  }

  setVip(name: string, vip: StoredVip | undefined, backends: StoredBackend[] | undefined): void {
    const t = this.target!;
    if (!this.vips.has(name)) {
      this.vips.set(name, t.vips.get(name));
      this.backends.set(name, t.backends.get(name));
    }
    put(t.vips, name, vip);
    put(t.backends, name, backends);
  }

  setPolicy(name: string, policy: PolicyRecord | undefined): void {
    const t = this.target!;
    if (!this.policies.has(name)) this.policies.set(name, t.policies.get(name));
    put(t.policies, name, policy);
  }

  /** Puts every changed key of the target back. */
  undo(): void {
    const t = this.target;
    if (t === null) return;
    for (const [k, v] of this.vips) put(t.vips, k, v);
    for (const [k, v] of this.backends) put(t.backends, k, v);
    for (const [k, v] of this.policies) put(t.policies, k, v);
    this.vips.clear();
    this.backends.clear();
    this.policies.clear();
    this.target = null;
  }
}

function put<V>(m: Map<string, V>, key: string, value: V | undefined): void {
  if (value === undefined) m.delete(key);
  else m.set(key, value);
}

/**
 * `base` with everything the change log names reloaded from the database,
 * except the VIPs `written` knows whole (created by this transaction). The
 * maps are base's, changed in place through `undo` (see StateUndo).
 */
export function deriveState(
  st: Statements,
  base: SnapshotState,
  keys: Iterable<string>,
  revision: number,
  hashSeed: number,
  undo: StateUndo,
  written?: WrittenVips,
): SnapshotState {
  undo.begin(base);
  const t = touchedNames(keys);
  for (const name of undo.vipNames()) t.vips.add(name);
  for (const name of undo.policyNames()) t.policies.add(name);
  for (const name of t.vips) {
    const w = written?.entries(name);
    if (w !== undefined) {
      undo.setVip(name, w.vip, w.backends.length > 0 ? w.backends : undefined);
      continue;
    }
    const row = st.vipByName.get(name);
    if (row === undefined) {
      undo.setVip(name, undefined, undefined);
      continue;
    }
    const list = st.backendsOfVip.all(row.id).map(storedBackend);
    undo.setVip(name, storedVip(row, st.vipPolicies.all(row.id)), list.length > 0 ? list : undefined);
  }
  for (const name of t.policies) {
    const row = st.policyByName.get(name);
    undo.setPolicy(name, row === undefined ? undefined : deepFreeze(policyRecord(row)));
  }
  return {
    revision,
    hash_seed: hashSeed,
    vips: base.vips,
    backends: base.backends,
    policies: base.policies,
    tombstones: tombstones(st),
    delta: { from: base.revision, vips: t.vips, policies: t.policies },
  };
}

function byName<T>(m: Map<string, T>): string[] {
  return [...m.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The planner's view: VIPs and policies by name, backends by VIP name then address. */
export function toSnapshot(s: SnapshotState): StoreSnapshot {
  const names = byName(s.vips);
  const vips: StoredVip[] = [];
  const backends: StoredBackend[] = [];
  for (const n of names) {
    const v = s.vips.get(n);
    if (v !== undefined) vips.push(v);
    for (const b of s.backends.get(n) ?? []) backends.push(b);
  }
  const policies: PolicyRecord[] = [];
  for (const n of byName(s.policies)) {
    const p = s.policies.get(n);
    if (p !== undefined) policies.push(p);
  }
  return { revision: s.revision, hash_seed: s.hash_seed, vips, backends, policies, tombstones: [...s.tombstones] };
}
