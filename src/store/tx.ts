/**
 * StoreTx: the reads and writes of one SQLite transaction (see types.ts).
 *
 * Every mutating method validates first, then changes rows only if the
 * stored content actually differs (so an identical PUT changes nothing and
 * the revision is not bumped), and records what it changed in `changes`,
 * which becomes the audit row. Each mutating method runs in its own
 * SAVEPOINT: if it throws halfway, its partial writes and log entries are
 * undone even when the caller catches the error and carries on. A
 * savepoint costs O(its own changes) (changelog.ts), so a transaction may
 * hold thousands of them.
 */
import type Database from 'better-sqlite3';
import { CapacityError, ConflictError, NotFoundError, ValidationError } from '../model/errors.js';
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
import { validateBackendSpec, validatePolicySpec, validateVipSpec } from '../model/validate.js';
import { canonicalIp } from '../net/addr.js';
import { ChangeLog } from './changelog.js';
import { pageRequest, toPage } from './cursor.js';
import { assertOwner, checkDrain, describeEndpoint } from './owners.js';
import { replaceState } from './replace.js';
import {
  addressSortKey,
  backendRecord,
  backendSpecOf,
  checkJson,
  healthEvent,
  makeBackendRecord,
  normBackend,
  normPolicy,
  normVip,
  optionalOf,
  policyRecord,
  policySpecOf,
  sameSpec,
  vipRecord,
  vipSpecOf,
  type BackendRow,
  type NormBackend,
  type NormPolicy,
  type NormVip,
  type PolicyRow,
  type VipRow,
} from './rows.js';
import {
  buildState,
  deriveState,
  toSnapshot,
  touchedNames,
  StateUndo,
  WrittenVips,
  type SnapshotCache,
  type SnapshotState,
  type WrittenBackend,
} from './snapshot.js';
import { MAX_ROWS_PER_INSERT, type BackendInsertRow, type Statements, type VipValues } from './statements.js';
import type {
  FleetMark,
  HealthEventQuery,
  NamedState,
  Page,
  PageQuery,
  ReplaceScope,
  StateChange,
  StoreSnapshot,
  StoreTx,
} from './types.js';
import type { HealthEvent } from '../model/health.js';

export interface StoreContext {
  db: Database.Database;
  st: Statements;
  maxVips: number;
  maxBackends: number;
  /** Clock for tombstone expiry and audit times (ms since the epoch). */
  now: () => number;
  cache: SnapshotCache;
}

/** The result of an update that may have been a no-op. */
export interface Updated<R> {
  record: R;
  changed: boolean;
}

/** nested-read: a read() inside a write, which sees that write's uncommitted changes. */
type Mode = 'read' | 'nested-read' | 'write' | 'sealed' | 'closed';

export class Tx implements StoreTx {
  readonly changes = new ChangeLog();
  /** The VIPs this write created, as written: state() builds them without reading them back. */
  private readonly written = new WrittenVips();
  /**
   * Datapath ids of VIPs this write inserted that no tombstone names yet: a
   * new VIP's backends revive nothing, so their insert skips the query (a
   * burst inserts ten thousand VIPs).
   */
  private readonly untombstonedVips = new Set<number>();
  /**
   * False once a query found fewer free backend ids than wanted: later
   * allocations of this write take fresh ids without asking again (a burst
   * asks ten thousand times). Ids freed meanwhile wait for the next write;
   * running out of fresh ids looks again.
   */
  private freeBackendIdsMayExist = true;
  /** The same for VIP ids. */
  private freeVipIdsMayExist = true;
  /** The state a sealed write's snapshot computed: the store caches it once the commit succeeded. */
  finalState: SnapshotState | null = null;
  /** What state() changed in the cached state; undone when the write rolls back. */
  readonly stateUndo = new StateUndo();
  private mode: Mode;
  /** The committed revision this transaction started from. */
  private readonly baseRevision: number;
  /** Runs a function in a SAVEPOINT (the write's BEGIN is the store's). */
  private inSavepoint: ((fn: () => unknown) => unknown) | undefined;

  constructor(
    private readonly ctx: StoreContext,
    readonly revision: number,
    mode: 'read' | 'nested-read' | 'write',
  ) {
    this.mode = mode;
    this.baseRevision = mode === 'write' ? revision - 1 : revision;
  }

  // ------------------------------------------------------------ lifecycle

  /** After fn: afterWrite may read (snapshot) but no longer change anything. */
  seal(): void {
    if (this.mode === 'write') this.mode = 'sealed';
  }

  /** The SQLite transaction ended: a leaked tx must not run outside it. */
  close(): void {
    this.mode = 'closed';
  }

  /** Statements for a read; throws once the transaction has ended. */
  private get rd(): Statements {
    if (this.mode === 'closed') throw new Error('store: transaction already ended');
    return this.ctx.st;
  }

  /** Statements for a write; throws in read-only and sealed transactions. */
  private get wr(): Statements {
    const st = this.rd;
    if (this.mode === 'read' || this.mode === 'nested-read') throw new Error('store: write in a read-only transaction');
    if (this.mode === 'sealed') throw new Error('store: afterWrite cannot change the store');
    return st;
  }

  /**
   * Runs one mutation in a savepoint (SQLite's, and the change log's), so a
   * throw undoes its partial writes and log entries; savepoints nest.
   */
  private atomic<R>(body: (st: Statements) => R): R {
    const st = this.wr;
    const mark = this.changes.savepoint();
    let result: R;
    try {
      // One transaction function for the whole write: better-sqlite3 builds four wrappers per function.
      this.inSavepoint ??= this.ctx.db.transaction((fn: () => unknown) => fn());
      result = this.inSavepoint(() => body(st)) as R;
    } catch (err) {
      this.changes.rollbackTo(mark);
      // What it knew may include the undone writes: from now on those VIPs are read back.
      this.written.clear();
      throw err;
    }
    this.changes.release(mark);
    return result;
  }

  savepoint<R>(fn: (tx: StoreTx) => R): R {
    return this.atomic(() => fn(this));
  }

  // ----------------------------------------------------------------- VIPs

  listVips(q?: PageQuery): Page<VipRecord> {
    const st = this.rd;
    const { limit, after } = pageRequest('vip', q);
    const rows = st.vipPage.all(after ?? '', limit + 1);
    return toPage(
      rows,
      limit,
      'vip',
      (r) => r.name,
      (r) => this.vipRecordOf(r),
    );
  }

  getVip(name: string): VipRecord {
    return this.vipRecordOf(this.mustVip(name));
  }

  createVip(spec: VipSpec, owner: string | null = null): VipRecord {
    return this.atomic((st) => {
      const norm = this.checkVip(spec);
      if (st.vipByName.get(norm.name) !== undefined) throw new ConflictError(`vip "${norm.name}" already exists`);
      this.assertEndpointFree(norm, null);
      return this.insertVip(norm, owner ?? null).record;
    });
  }

  putVip(spec: VipSpec, owner: string | null = null): { record: VipRecord; created: boolean } {
    return this.atomic((st) => {
      const norm = this.checkVip(spec);
      const row = st.vipByName.get(norm.name);
      if (row === undefined) {
        this.assertEndpointFree(norm, null);
        return { record: this.insertVip(norm, owner ?? null).record, created: true };
      }
      assertOwner('vip', row.name, row.owner, owner ?? null);
      this.assertEndpointFree(norm, row.id);
      if (norm.port === 0) this.assertChecksHavePorts(row);
      this.assertBackendPorts(row, norm);
      return { record: this.updateVip(row, norm).record, created: false };
    });
  }

  deleteVip(name: string, owner: string | null = null): VipRecord {
    return this.atomic(() => {
      const row = this.mustVip(name);
      assertOwner('vip', row.name, row.owner, owner ?? null);
      return this.removeVip(row);
    });
  }

  // ------------------------------------------------------------- backends

  listBackends(vip: string, q?: PageQuery): Page<BackendRecord> {
    const st = this.rd;
    const vipRow = this.mustVip(vip);
    const { limit, after } = pageRequest('backend', q);
    const rows = st.backendPage.all(vipRow.id, after === null ? Buffer.alloc(0) : cursorSortKey(after), limit + 1);
    return toPage(rows, limit, 'backend', (r) => r.address, backendRecord);
  }

  getBackend(vip: string, address: string): BackendRecord {
    return backendRecord(this.mustBackend(this.mustVip(vip), address));
  }

  createBackend(vip: string, spec: BackendSpec, owner: string | null = null): BackendRecord {
    return this.atomic((st) => {
      const vipRow = this.mustVip(vip);
      assertOwner('vip', vipRow.name, vipRow.owner, owner ?? null);
      const norm = checkBackend(spec, vipRow);
      if (backendAt(st, vipRow.id, norm.address) !== undefined) {
        throw new ConflictError(`backend ${norm.address} already exists in vip "${vipRow.name}"`);
      }
      return this.insertBackends(vipRow, [norm], owner ?? null)[0]!;
    });
  }

  putBackend(vip: string, spec: BackendSpec, owner: string | null = null): { record: BackendRecord; created: boolean } {
    return this.atomic((st) => {
      const vipRow = this.mustVip(vip);
      assertOwner('vip', vipRow.name, vipRow.owner, owner ?? null);
      const norm = checkBackend(spec, vipRow);
      const row = backendAt(st, vipRow.id, norm.address);
      if (row === undefined) return { record: this.insertBackends(vipRow, [norm], owner ?? null)[0]!, created: true };
      assertOwner('backend', `${vipRow.name}/${row.address}`, row.owner, owner ?? null);
      return { record: this.updateBackend(row, norm).record, created: false };
    });
  }

  deleteBackend(vip: string, address: string, drainSeconds: number, owner: string | null = null): BackendRecord {
    return this.atomic(() => {
      checkDrain(drainSeconds);
      const vipRow = this.mustVip(vip);
      assertOwner('vip', vipRow.name, vipRow.owner, owner ?? null);
      const row = this.mustBackend(vipRow, address);
      return this.removeBackend(vipRow, row, drainSeconds);
    });
  }

  // ------------------------------------------------------------- policies

  listPolicies(q?: PageQuery): Page<PolicyRecord> {
    const st = this.rd;
    const { limit, after } = pageRequest('policy', q);
    const rows = st.policyPage.all(after ?? '', limit + 1);
    return toPage(rows, limit, 'policy', (r) => r.name, policyRecord);
  }

  getPolicy(name: string): PolicyRecord {
    return policyRecord(this.mustPolicy(name));
  }

  createPolicy(spec: PolicySpec, owner: string | null = null): PolicyRecord {
    return this.atomic((st) => {
      const norm = checkPolicy(spec);
      if (st.policyByName.get(norm.name) !== undefined) throw new ConflictError(`policy "${norm.name}" already exists`);
      return this.insertPolicy(norm, owner ?? null);
    });
  }

  putPolicy(spec: PolicySpec, owner: string | null = null): { record: PolicyRecord; created: boolean } {
    return this.atomic((st) => {
      const norm = checkPolicy(spec);
      const row = st.policyByName.get(norm.name);
      if (row === undefined) return { record: this.insertPolicy(norm, owner ?? null), created: true };
      assertOwner('policy', row.name, row.owner, owner ?? null);
      return { record: this.updatePolicy(row, norm).record, created: false };
    });
  }

  deletePolicy(name: string, owner: string | null = null): PolicyRecord {
    return this.atomic(() => {
      const row = this.mustPolicy(name);
      assertOwner('policy', row.name, row.owner, owner ?? null);
      return this.removePolicy(row);
    });
  }

  // ------------------------------------------------------- whole state

  replaceState(desired: DesiredState, drainSeconds: number, owner: string | null = null, scope?: ReplaceScope): StateChange[] {
    return this.atomic((st) => replaceState(this, st, desired, drainSeconds, owner ?? null, scope));
  }

  exportState(owner: string | null = null): DesiredState {
    const st = this.rd;
    const vips = st.vipsByOwner.all(owner ?? null).map((row) => this.vipWithBackends(row));
    const policies = st.policiesByOwner.all(owner ?? null).map((p) => policySpecOf(policyRecord(p)));
    return { vips, policies };
  }

  exportNamed(names: ReplaceScope, owner: string | null = null): NamedState {
    const st = this.rd;
    const vips = new Map<string, VipWithBackends | null>();
    for (const name of names.vips) {
      const row = st.vipByName.get(name);
      vips.set(name, row === undefined || row.owner !== owner ? null : this.vipWithBackends(row));
    }
    const policies = new Map<string, PolicySpec | null>();
    for (const name of names.policies) {
      const row = st.policyByName.get(name);
      policies.set(name, row === undefined || row.owner !== owner ? null : policySpecOf(policyRecord(row)));
    }
    return { vips, policies };
  }

  touched(): ReplaceScope {
    return touchedNames(this.changes.keys());
  }

  private vipWithBackends(row: VipRow): VipWithBackends {
    const { family: _family, ...spec } = vipSpecOf(this.vipRecordOf(row));
    const backends = this.rd.backendsOfVip.all(row.id).map((b) => backendSpecOf(backendRecord(b)));
    return { ...spec, backends };
  }

  // ---------------------------------------------------------------- fleet

  fleetMark(): FleetMark | null {
    return this.rd.fleetMark.get() ?? null;
  }

  setFleetMark(mark: FleetMark): void {
    this.wr.setFleetMark.run(mark.prefix, mark.cluster, mark.revision);
  }

  setHashSeed(seed: number): void {
    this.atomic((st) => {
      if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
        throw new ValidationError([{ field: '/hash_seed', reason: 'must be an integer from 0 to 4294967295' }]);
      }
      const before = st.meta.get()?.hash_seed;
      if (before === seed) return;
      st.setHashSeed.run(seed);
      this.changes.record('seed', before, seed);
    });
  }

  /** Health transitions, newest first (not part of the revision history). */
  listHealthEvents(q: HealthEventQuery = {}): Page<HealthEvent> {
    const st = this.rd;
    const { limit, after } = pageRequest('event', q);
    const before = after === null ? Number.MAX_SAFE_INTEGER : Number(after);
    if (!Number.isSafeInteger(before)) {
      throw new ValidationError([{ field: '/cursor', reason: 'not a cursor returned by this list (start again without one)' }]);
    }
    const vip = q.vip ?? null;
    const backend = q.backend === undefined || q.backend === null ? null : (canonicalIp(q.backend) ?? q.backend);
    const rows = st.healthEventPage.all(vip, vip, backend, backend, before, limit + 1);
    return toPage(rows, limit, 'event', (r) => String(r.id), healthEvent);
  }

  /** When the earliest drain ends (ms since the epoch), or null while nothing drains. */
  nextDrainEnd(): number | null {
    return this.rd.nextTombstoneExpiry.get() ?? null;
  }

  /**
   * Removes the tombstones whose drain has ended. This is a change (the
   * datapath must free those ids), so it bumps the revision when it removes any.
   */
  expireTombstones(nowMs: number): number {
    return this.atomic((st) => {
      if (!Number.isFinite(nowMs)) throw new ValidationError([{ field: '/now', reason: 'must be a time in ms' }]);
      const expired = st.expiredTombstones.all(nowMs);
      if (expired.length === 0) return 0;
      st.deleteExpiredTombstones.run(nowMs);
      this.changes.record('tombstones', expired, null);
      return expired.length;
    });
  }

  /**
   * The planner's view of the state as this transaction sees it, derived
   * from the cached snapshot of the committed revision when there is one.
   */
  snapshot(): StoreSnapshot {
    return toSnapshot(this.state());
  }

  /** The state behind snapshot(), by name; derived from the cached state of the committed revision when there is one. */
  state(): SnapshotState {
    const st = this.rd;
    const meta = st.meta.get();
    if (meta === undefined) throw new Error('store: meta row missing');
    // A nested read sees another transaction's changes that no change log here names: build in full.
    const base = this.mode === 'nested-read' ? null : this.ctx.cache.get(this.baseRevision);
    let state: SnapshotState;
    if (base === null) state = buildState(st, meta.revision, meta.hash_seed);
    else if (this.changes.size === 0) {
      // Savepoints may have undone every change an earlier state() put into the cached state's maps.
      this.stateUndo.undo();
      state = base;
    } else state = deriveState(st, base, this.changes.keys(), meta.revision, meta.hash_seed, this.stateUndo, this.written);
    // Only states of a committed revision may be cached: a read's, or the final one of a write (after commit).
    if (this.mode === 'read') this.ctx.cache.put(state);
    if (this.mode === 'sealed') this.finalState = state;
    return state;
  }

  // ---------------------------------------------- lookups (used by replace.ts)

  mustVip(name: string): VipRow {
    const row = this.rd.vipByName.get(name);
    if (row === undefined) throw new NotFoundError(`vip "${name}" not found`);
    return row;
  }

  private mustBackend(vip: VipRow, address: string): BackendRow {
    const canonical = canonicalIp(address);
    const row = canonical === null ? undefined : backendAt(this.rd, vip.id, canonical);
    if (row === undefined) throw new NotFoundError(`backend ${address} not found in vip "${vip.name}"`);
    return row;
  }

  private mustPolicy(name: string): PolicyRow {
    const row = this.rd.policyByName.get(name);
    if (row === undefined) throw new NotFoundError(`policy "${name}" not found`);
    return row;
  }

  vipRecordOf(row: VipRow): VipRecord {
    return vipRecord(row, this.rd.vipPolicies.all(row.id));
  }

  // ---------------------------------------------------- checks

  private checkVip(spec: VipSpec): NormVip {
    const st = this.rd;
    const errors = validateVipSpec(spec, { policyExists: (n) => st.policyByName.get(n) !== undefined });
    if (errors.length > 0) throw new ValidationError(errors);
    return normVip(spec);
  }

  /** A VIP becoming all-port: every backend's own check must name its port (a VIP check is validated with the VIP). */
  private assertChecksHavePorts(vip: VipRow): void {
    const errors = this.rd.backendsOfVip
      .all(vip.id)
      .filter((b) => {
        const c = backendRecord(b).health_check;
        return c !== undefined && c.type !== 'none' && c.port === null;
      })
      .map((b) => ({
        field: '/port',
        reason: `backend ${b.address} has a health_check without a port; give it one before making the VIP all-port (0)`,
      }));
    if (errors.length > 0) throw new ValidationError(errors);
  }

  /**
   * The VIP's new port and forwarding must still suit its backends: no own
   * port for a VIP of every port; under dsr, a host to translate it; under
   * snat, the VIP's address family.
   */
  private assertBackendPorts(vip: VipRow, norm: NormVip): void {
    const errors = this.rd.backendsOfVip.all(vip.id).flatMap((b) => {
      const spec = backendSpecOf(backendRecord(b));
      return validateBackendSpec(spec, '', norm.port, norm.forwarding === 'snat' ? norm.family : null)
        .filter((e) => e.field === '/port' || e.field === '/address')
        .map((e) => ({
          field: e.field === '/port' && norm.port === 0 ? '/port' : '/forwarding',
          reason: `backend ${b.address}: ${e.reason}`,
        }));
    });
    if (errors.length > 0) throw new ValidationError(errors);
  }

  /** {address, port, protocol} identifies a VIP: refuse one another VIP already has. */
  private assertEndpointFree(norm: NormVip, selfId: number | null): void {
    const other = this.rd.vipsAtEndpoint.all(norm.address, norm.port, norm.protocol).find((r) => r.id !== selfId);
    if (other !== undefined) {
      throw new ConflictError(`vip "${norm.name}": ${describeEndpoint(norm)} is already used by vip "${other.name}"`);
    }
  }

  // ------------------------------------------- row writes (used by replace.ts)

  /** Inserts a VIP; returns its row and record, what reading them back would give. */
  insertVip(norm: NormVip, owner: string | null): { row: VipRow; record: VipRecord } {
    const st = this.wr;
    const dpId = this.allocVipId();
    const values = vipValues(norm, owner);
    const { lastInsertRowid } = st.insertVip.run(...values, this.revision, this.revision, dpId);
    // A new VIP has no backends (they cascade with a deleted VIP, so a reused id holds none); its policies are
    // the ones written next, in this order.
    const row = insertedVip(Number(lastInsertRowid), norm, values, this.revision, dpId);
    this.writePolicyRefs(row.id, norm.policies, 'new');
    const record = vipRecord(row, [...norm.policies]);
    this.written.created(row, norm.policies);
    this.untombstonedVips.add(dpId);
    this.changes.record(`vip/${norm.name}`, null, record);
    return { row, record };
  }

  /** Rewrites a VIP if `norm` differs from it; returns the (new) record and whether it changed. */
  updateVip(row: VipRow, norm: NormVip): Updated<VipRecord> {
    const before = this.vipRecordOf(row);
    if (sameSpec(vipSpecOf(before), norm)) return { record: before, changed: false };
    const st = this.wr;
    this.written.forget(row.name);
    st.updateVip.run(...vipValues(norm, row.owner), this.revision, row.id);
    if (JSON.stringify(before.policies) !== JSON.stringify(norm.policies)) this.writePolicyRefs(row.id, norm.policies);
    const after = this.vipRecordOf(this.mustVip(norm.name));
    this.changes.record(`vip/${norm.name}`, before, after);
    return { record: after, changed: true };
  }

  /**
   * Deletes a VIP; its backends go with it and their ids are free at once
   * (the VIP leaves the datapath, so their flows end anyway), as do its
   * tombstones (FK cascades; triggers free the ids).
   */
  removeVip(row: VipRow): VipRecord {
    const st = this.wr;
    const before = this.vipRecordOf(row);
    this.written.forget(row.name);
    for (const b of st.backendsOfVip.all(row.id)) this.changes.record(backendKey(b), backendRecord(b), null);
    st.deleteVip.run(row.id);
    this.changes.record(`vip/${row.name}`, before, null);
    return before;
  }

  /** `new`: the VIP was just inserted, so it holds no references to clear (a deleted VIP's went with it, by cascade). */
  private writePolicyRefs(vipId: number, policies: string[], vip: 'new' | 'existing' = 'existing'): void {
    const st = this.wr;
    if (vip === 'existing') st.clearVipPolicies.run(vipId);
    policies.forEach((p, i) => st.insertVipPolicy.run(vipId, i, p));
  }

  /**
   * Adds backends to one VIP. If the same address was removed from this VIP
   * and is still draining, the tombstone is revived: the backend takes back
   * its id and generation, so the flows still pinned to it keep going (they
   * go to the same server either way) and no second id is held. The others
   * get ids reserved together: one query for the VIP's tombstones and one for
   * free ids, not one of each per backend (a Kubernetes burst adds 100,000).
   */
  insertBackends(vip: VipRow, norms: readonly NormBackend[], owner: string | null): BackendRecord[] {
    if (norms.length === 0) return [];
    const st = this.wr;
    const tombs = new Map(this.untombstonedVips.has(vip.dp_id) ? [] : st.tombstonesOfVip.all(vip.dp_id).map((t) => [t.address, t]));
    const ids = this.allocBackendIds(norms.reduce((n, b) => n + (tombs.has(b.address) ? 0 : 1), 0));
    let next = 0;
    const written = norms.map((norm): WrittenBackend => {
      const tomb = tombs.get(norm.address);
      const id = tomb !== undefined ? { dpId: tomb.dp_id, gen: tomb.dp_gen } : ids[next++]!;
      return {
        sortKey: addressSortKey(norm.address),
        row: {
          vip: vip.name,
          address: norm.address,
          weight: norm.weight,
          state: norm.state,
          owner,
          created_revision: this.revision,
          updated_revision: this.revision,
          dp_id: id.dpId,
          dp_gen: id.gen,
          health_check: checkJson(norm.health_check),
          port: norm.port ?? 0,
          host: norm.host ?? null,
        },
      };
    });
    insertBackendRows(st, vip.id, written);
    // A revived id is held by its backend now; the tombstone goes (its trigger leaves the id in use).
    for (const norm of norms) {
      const tomb = tombs.get(norm.address);
      if (tomb !== undefined) st.deleteTombstone.run(tomb.dp_id);
    }
    this.written.addBackends(vip.name, written);
    return norms.map((norm) => {
      const record = makeBackendRecord(
        vip.name,
        norm.address,
        norm.weight,
        norm.state,
        optionalOf(norm),
        owner,
        this.revision,
        this.revision,
      );
      this.changes.record(backendKey(record), null, record);
      return record;
    });
  }

  /** Rewrites a backend if `norm` differs from it; returns the (new) record and whether it changed. */
  updateBackend(row: BackendRow, norm: NormBackend): Updated<BackendRecord> {
    const before = backendRecord(row);
    if (sameSpec(backendSpecOf(before), norm)) return { record: before, changed: false };
    this.written.forget(row.vip);
    this.wr.updateBackend.run(
      norm.weight,
      norm.state,
      checkJson(norm.health_check),
      norm.port ?? 0,
      norm.host ?? null,
      this.revision,
      row.id,
    );
    // Built as backendRecord builds one, not spread from `before` (a spread of the polymorphic record would give it a
    // hidden class of its own).
    const after = makeBackendRecord(
      before.vip,
      before.address,
      norm.weight,
      norm.state,
      optionalOf(norm),
      before.owner,
      before.created_revision,
      this.revision,
    );
    this.changes.record(backendKey(before), before, after);
    return { record: after, changed: true };
  }

  /** Deletes a backend; with a drain time its id stays reserved by a tombstone until then. */
  removeBackend(vip: VipRow, row: BackendRow, drainSeconds: number): BackendRecord {
    const st = this.wr;
    const before = backendRecord(row);
    this.written.forget(vip.name);
    if (drainSeconds > 0) {
      const expires = this.ctx.now() + Math.ceil(drainSeconds * 1000);
      st.insertTombstone.run(row.dp_id, row.dp_gen, vip.dp_id, row.address, expires, row.port, row.host);
      this.untombstonedVips.delete(vip.dp_id);
    }
    st.deleteBackend.run(row.id);
    this.changes.record(backendKey(before), before, null);
    return before;
  }

  insertPolicy(norm: NormPolicy, owner: string | null): PolicyRecord {
    this.wr.insertPolicy.run(norm.name, JSON.stringify(norm.allow), JSON.stringify(norm.deny), owner, this.revision, this.revision);
    const record = policyRecord(this.mustPolicy(norm.name));
    this.changes.record(`policy/${norm.name}`, null, record);
    return record;
  }

  /** Rewrites a policy if `norm` differs from it; returns the (new) record and whether it changed. */
  updatePolicy(row: PolicyRow, norm: NormPolicy): Updated<PolicyRecord> {
    const before = policyRecord(row);
    if (sameSpec(policySpecOf(before), norm)) return { record: before, changed: false };
    this.wr.updatePolicy.run(JSON.stringify(norm.allow), JSON.stringify(norm.deny), this.revision, row.name);
    const after = policyRecord(this.mustPolicy(row.name));
    this.changes.record(`policy/${row.name}`, before, after);
    return { record: after, changed: true };
  }

  /** Deletes a policy; refused while any VIP references it. */
  removePolicy(row: PolicyRow): PolicyRecord {
    const st = this.wr;
    const users = st.policyReferrers.all(row.name).map((r) => `"${r.name}"`);
    if (users.length > 0) {
      throw new ConflictError(`policy "${row.name}" is referenced by vip ${users.join(', ')}; remove the references first`);
    }
    const before = policyRecord(row);
    st.deletePolicy.run(row.name);
    this.changes.record(`policy/${row.name}`, before, null);
    return before;
  }

  // ------------------------------------------------------- datapath ids

  /** The lowest free VIP id, marked in use (ids are handed out lowest first, so the used ones are 0..N-1). */
  private allocVipId(): number {
    const st = this.wr;
    const { maxVips } = this.ctx;
    const looked = this.freeVipIdsMayExist;
    const free = looked ? st.takeFreeVipId.get(maxVips) : undefined;
    if (free !== undefined) return free;
    this.freeVipIdsMayExist = false;
    const next = st.nextVipId.get() ?? 0;
    if (next >= maxVips) {
      if (!looked) {
        this.freeVipIdsMayExist = true;
        return this.allocVipId();
      }
      throw new CapacityError(`no free VIP id: all ${maxVips} datapath VIP slots are in use (capacity max_vips = ${maxVips})`);
    }
    st.addVipId.run(next);
    return next;
  }

  /**
   * `count` backend ids, lowest free first, each with its next generation (a
   * reused id never repeats a generation); then ids never used, which start
   * at generation 1. They are marked in use here, not by a trigger on each
   * inserted row (schema version 7): the caller inserts their backends in
   * the same transaction, and an error rolls both back.
   */
  private allocBackendIds(count: number): Array<{ dpId: number; gen: number }> {
    if (count === 0) return [];
    const st = this.wr;
    const { maxBackends } = this.ctx;
    const looked = this.freeBackendIdsMayExist;
    const free = looked ? st.freeBackendIds.all(maxBackends, count) : [];
    const ids = free.map((dpId) => {
      const gen = st.takeBackendId.get(dpId);
      if (gen === undefined) throw new Error(`store: backend id ${dpId} missing`);
      return { dpId, gen };
    });
    if (ids.length === count) return ids;
    this.freeBackendIdsMayExist = false;
    const first = st.nextBackendId.get() ?? 0;
    if (first + count - ids.length > maxBackends) {
      if (!looked) {
        this.freeBackendIdsMayExist = true;
        return this.allocBackendIds(count);
      }
      throw new CapacityError(
        `no free backend id: all ${maxBackends} datapath backend slots are in use, including draining ` +
          `tombstones (capacity max_backends = ${maxBackends})`,
      );
    }
    const end = first + count - ids.length;
    st.addBackendIds.run(first, end);
    for (let dpId = first; dpId < end; dpId++) ids.push({ dpId, gen: 1 });
    return ids;
  }
}

// ---------------------------------------------------------------- helpers

/** A VIP's backend at a canonical address, found by its sort key (the unique index, schema version 8). */
function backendAt(st: Statements, vipId: number, canonical: string): BackendRow | undefined {
  return st.backendByKey.get(vipId, addressSortKey(canonical));
}

function backendKey(b: { vip: string; address: string }): string {
  return `backend/${b.vip}/${b.address}`;
}

/** Inserts one VIP's backends, up to MAX_ROWS_PER_INSERT rows per statement. */
function insertBackendRows(st: Statements, vipId: number, backends: readonly WrittenBackend[]): void {
  for (let at = 0; at < backends.length; at += MAX_ROWS_PER_INSERT) {
    const end = Math.min(at + MAX_ROWS_PER_INSERT, backends.length);
    const values: Array<BackendInsertRow[number]> = [];
    for (let i = at; i < end; i++) {
      const { row, sortKey } = backends[i]!;
      const r: BackendInsertRow = [
        vipId,
        row.address,
        sortKey,
        row.weight,
        row.state,
        row.health_check,
        row.port,
        row.host,
        row.owner,
        row.created_revision,
        row.updated_revision,
        row.dp_id,
        row.dp_gen,
      ];
      values.push(...r);
    }
    st.insertBackendRows(end - at).run(values);
  }
}

/**
 * The row insertVip wrote, as VIP_SELECT gives it (no backends yet): the
 * columns in its order (one hidden class with the rows read back), the
 * values as SQLite returns what was bound. A RETURNING * cost a row object
 * built column by column through the binding, 10,000 times in a burst.
 */
function insertedVip(id: number, n: NormVip, v: VipValues, revision: number, dpId: number): VipRow {
  return {
    id,
    name: n.name,
    address: n.address,
    family: n.family,
    port: n.port,
    protocol: n.protocol,
    encap: n.encap,
    allow: v[6],
    deny: v[7],
    rl_new_flows_per_sec: v[8],
    rl_burst: v[9],
    maglev_m: v[10],
    source_affinity: n.source_affinity ? 1 : 0,
    owner: v[12],
    created_revision: revision,
    updated_revision: revision,
    dp_id: dpId,
    health_check: v[13],
    forwarding: n.forwarding ?? 'dsr',
    backend_count: 0,
  };
}

function vipValues(n: NormVip, owner: string | null): VipValues {
  return [
    n.name,
    n.address,
    n.family,
    n.port,
    n.protocol,
    n.encap,
    JSON.stringify(n.allow),
    JSON.stringify(n.deny),
    n.rate_limit?.new_flows_per_sec ?? null,
    n.rate_limit?.burst ?? null,
    n.maglev_m,
    n.source_affinity ? 1 : 0,
    owner,
    checkJson(n.health_check),
    n.forwarding ?? 'dsr',
  ];
}

function checkBackend(spec: BackendSpec, vip: VipRow): NormBackend {
  const errors = validateBackendSpec(spec, '', vip.port, vip.forwarding === 'snat' ? vip.family : null);
  if (errors.length > 0) throw new ValidationError(errors);
  return normBackend(spec);
}

function checkPolicy(spec: PolicySpec): NormPolicy {
  const errors = validatePolicySpec(spec);
  if (errors.length > 0) throw new ValidationError(errors);
  return normPolicy(spec);
}

/** A backend cursor holds an address; one that does not parse was not issued by us. */
function cursorSortKey(address: string): Buffer {
  const canonical = canonicalIp(address);
  if (canonical === null) {
    throw new ValidationError([{ field: '/cursor', reason: 'not a cursor returned by this list (start again without one)' }]);
  }
  return addressSortKey(canonical);
}
