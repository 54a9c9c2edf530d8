/**
 * The store's contract (implemented in src/store/store.ts on better-sqlite3).
 * SQLite is the source of truth: every change is one transaction that bumps
 * the global revision and writes an audit row.
 */
import type { HealthEvent, NewHealthEvent } from '../model/health.js';
import type {
  BackendRecord,
  BackendSpec,
  DesiredState,
  PolicyRecord,
  PolicySpec,
  VipRecord,
  VipSpec,
  VipWithBackends,
} from '../model/types.js';

export interface Page<T> {
  items: T[];
  /** Opaque cursor for the next page, null on the last page. */
  next: string | null;
}

export interface PageQuery {
  /** 1..1000, default 100. */
  limit?: number;
  cursor?: string | null;
}

/** The datapath ids the store allocates. */
export interface StoredVip extends VipRecord {
  dp_id: number;
}

export interface StoredBackend extends BackendRecord {
  dp_id: number;
  dp_gen: number;
}

/** A deleted backend still draining its flows until expires_at (ms since epoch). */
export interface Tombstone {
  dp_id: number;
  dp_gen: number;
  vip_dp_id: number;
  address: string;
  expires_at: number;
  /** The backend's own port (0: the VIP's) and host (null: itself), as it had them. */
  port: number;
  host: string | null;
}

/** Everything the planner needs, read in one transaction. */
export interface StoreSnapshot {
  revision: number;
  hash_seed: number;
  vips: StoredVip[];
  backends: StoredBackend[];
  policies: PolicyRecord[];
  tombstones: Tombstone[];
}

/**
 * The same state as StoreSnapshot, by name, neither copied nor sorted:
 * objects that did not change are shared (frozen) from one revision's state
 * to the next, backend lists included, so a consumer can tell by identity
 * what changed (the incremental planner does).
 */
export interface StoreState {
  revision: number;
  hash_seed: number;
  vips: ReadonlyMap<string, StoredVip>;
  /** By VIP name, in address order. */
  backends: ReadonlyMap<string, readonly StoredBackend[]>;
  policies: ReadonlyMap<string, PolicyRecord>;
  tombstones: readonly Tombstone[];
  /**
   * When this state was derived from that of revision `from` by reloading
   * only what a write touched: the VIP names (a VIP or one of its backends)
   * and policy names it touched. Everything else is the same objects.
   */
  delta?: StateDelta;
}

export interface StateDelta {
  from: number;
  vips: ReadonlySet<string>;
  policies: ReadonlySet<string>;
}

/** VIP and policy names: what a transaction touched, or what a scoped replaceState may change. */
export interface ReplaceScope {
  vips: ReadonlySet<string>;
  policies: ReadonlySet<string>;
}

/** A set of VIPs (with their backends) and policies by name; null: the name does not exist (for this owner). */
export interface NamedState {
  vips: Map<string, VipWithBackends | null>;
  policies: Map<string, PolicySpec | null>;
}

/** How far the store mirrors the fleet's etcd prefix: what it holds is that prefix at `revision`. */
export interface FleetMark {
  prefix: string;
  /** etcd's cluster id (decimal): another cluster's revisions mean nothing here. */
  cluster: string;
  revision: number;
}

/** One entry of the diff `PUT /v1/state` answers with. */
export interface StateChange {
  op: 'create' | 'update' | 'delete';
  kind: 'vip' | 'backend' | 'policy';
  /** vip name, "vip/address" for backends, policy name. */
  name: string;
}

/** A page of health events, newest first, optionally of one VIP and/or backend address. */
export interface HealthEventQuery extends PageQuery {
  vip?: string | null;
  backend?: string | null;
}

export interface AuditEntry {
  revision: number;
  time: string;
  actor: string;
  action: string;
  before: unknown;
  after: unknown;
}

/**
 * Reads and writes inside one transaction. Methods throw NotFoundError,
 * ConflictError, ValidationError, ForbiddenError (owner mismatch) from
 * src/model/errors.ts; the caller's transaction then rolls back.
 *
 * `owner` on writes: null for the API; the Kubernetes mode passes its own.
 * A write to a resource with a different owner throws ForbiddenError.
 */
export interface StoreTx {
  /** The revision this transaction commits as. */
  readonly revision: number;

  listVips(q?: PageQuery): Page<VipRecord>;
  getVip(name: string): VipRecord;
  /** Throws ConflictError if the name or {address, port, protocol} is taken. */
  createVip(spec: VipSpec, owner?: string | null): VipRecord;
  /** Creates or replaces (PUT semantics); returns the record and whether it was created. */
  putVip(spec: VipSpec, owner?: string | null): { record: VipRecord; created: boolean };
  /** Deletes the VIP and its backends (their datapath ids are freed). */
  deleteVip(name: string, owner?: string | null): VipRecord;

  listBackends(vip: string, q?: PageQuery): Page<BackendRecord>;
  getBackend(vip: string, address: string): BackendRecord;
  createBackend(vip: string, spec: BackendSpec, owner?: string | null): BackendRecord;
  putBackend(vip: string, spec: BackendSpec, owner?: string | null): { record: BackendRecord; created: boolean };
  /** Deletes a backend; its flows drain until `drainSeconds` from now (a tombstone). */
  deleteBackend(vip: string, address: string, drainSeconds: number, owner?: string | null): BackendRecord;

  listPolicies(q?: PageQuery): Page<PolicyRecord>;
  getPolicy(name: string): PolicyRecord;
  createPolicy(spec: PolicySpec, owner?: string | null): PolicyRecord;
  putPolicy(spec: PolicySpec, owner?: string | null): { record: PolicyRecord; created: boolean };
  /** Throws ConflictError while a VIP references it. */
  deletePolicy(name: string, owner?: string | null): PolicyRecord;

  /**
   * Makes the stored state (of resources with this owner) equal to `desired`;
   * returns what changed. Backends removed here drain like deleteBackend.
   */
  replaceState(desired: DesiredState, drainSeconds: number, owner?: string | null, scope?: ReplaceScope): StateChange[];
  /** The whole state of resources with this owner, in the DesiredState shape. */
  exportState(owner?: string | null): DesiredState;
  /** The named VIPs and policies of this owner in the DesiredState shape (null: absent or another owner's). */
  exportNamed(names: ReplaceScope, owner?: string | null): NamedState;
  /** The VIPs (a VIP or one of its backends) and policies this transaction changed so far. */
  touched(): ReplaceScope;

  /** The fleet mirror's mark (null: this store never mirrored a fleet). */
  fleetMark(): FleetMark | null;
  /** Records the fleet mirror's mark; not a change of its own (no revision), it commits with the transaction. */
  setFleetMark(mark: FleetMark): void;
  /** Sets the Maglev hash seed (the fleet's): a change, audited. */
  setHashSeed(seed: number): void;

  /**
   * Runs fn in a savepoint of this transaction: if fn throws, everything it
   * changed (rows and what the audit row will say) is undone and the error
   * rethrown, and the transaction goes on. Every mutating method above is
   * such a savepoint already; this groups several. Write transactions only.
   */
  savepoint<R>(fn: (tx: StoreTx) => R): R;

  /** When the earliest drain ends (ms since the epoch), or null while nothing drains. */
  nextDrainEnd(): number | null;

  /** Removes tombstones whose drain time has passed; returns how many. */
  expireTombstones(nowMs: number): number;

  /** Health transitions, newest first (kept outside the revision history). */
  listHealthEvents(q?: HealthEventQuery): Page<HealthEvent>;

  snapshot(): StoreSnapshot;

  /** The snapshot's state by name, without copying (see StoreState). */
  state(): StoreState;
}

export interface Store {
  /** The last committed revision. */
  revision(): number;
  /**
   * Runs fn in one SQLite transaction. If fn makes any change, the revision
   * is bumped once and one audit row {actor, action, before, after} is written;
   * if fn throws, nothing is kept. `afterWrite` runs inside the transaction
   * after fn (the controller applies the datapath there, so a datapath
   * failure rolls the store back too).
   */
  write<T>(actor: string, action: string, fn: (tx: StoreTx) => T, afterWrite?: (tx: StoreTx) => void): { result: T; revision: number };
  /** A read-only view (no revision bump). */
  read<T>(fn: (tx: StoreTx) => T): T;
  audit(q?: { limit?: number; sinceRevision?: number }): AuditEntry[];
  /**
   * Appends health transitions in one transaction of their own: no revision,
   * no audit row (health is state, not configuration). Only the newest
   * `healthEventRetention` events are kept.
   */
  appendHealthEvents(events: readonly NewHealthEvent[]): void;
  /** Online backup to a file (SQLite backup API); resolves when complete. */
  backup(path: string, onProgress?: (done: number, total: number) => void): Promise<void>;
  close(): void;
}
