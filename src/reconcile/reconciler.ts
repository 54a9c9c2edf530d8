/**
 * The reconciler: makes the xdp_lb maps equal to a desired DpState.
 *
 * Order of one apply, so that no packet ever meets a reference to a missing
 * or foreign entry:
 *   1. config
 *   2. stale VIP entries that lead to a VIP id another VIP is taking (they
 *      would otherwise reach that VIP's new table and backends)
 *   3. backend entries gaining use (new, reallocated, back to a more usable
 *      state; tombstones as DRAINING)
 *   4. Maglev tables: those of VIP ids no longer wanted are removed first,
 *      so that their slots can hold the new tables (those VIPs are going:
 *      their packets drop as no_backend until their entries go in step 9);
 *      then the changed ones, each switched to whole (maglevtables.ts)
 *   5. policy rules to add, 6. VIP address entries, 7. VIP entries
 *   8. backend entries losing use (active → draining/down): only now that
 *      the new tables no longer name them, so no new flow meets them
 *   9. removals: VIP entries → unused addresses → stale policy rules →
 *      backend ids referenced by nothing (zeroed, FREE).
 * When an id changes hands (a backend's new generation, a VIP id new to the
 * maps or now another VIP's), its per-CPU counters are zeroed before the id
 * is written; otherwise counters are never touched.
 *
 * Efficiency: the reconciler remembers what the maps hold (Known) and
 * writes only differences; Maglev tables are known by the digest of their
 * inputs and rebuilt only when those change. A fresh instance (daemon
 * start, pinned maps of unknown content) or one after forget() or after a
 * failed apply first reads every map, including every installed table, and
 * then repairs only what differs: correct entries are never rewritten, so
 * established flows and conntrack are undisturbed.
 */
import { performance } from 'node:perf_hooks';
import { Backend, BackendStats, RatelimitState, VipStats } from '../datapath/abi.js';
import type { LbDatapath } from '../datapath/lb.js';
import { u32, u32s } from '../datapath/maps.js';
import type { NativeAddon } from '../datapath/native.js';
import type { AnyStruct } from '../datapath/struct.js';
import type { KeyIndex } from '../datapath/vipindex.js';
import type { ConfigProgram } from '../datapath/program.js';
import type { Applier, DpState, ReconcileReport } from '../model/dpstate.js';
import { DesiredState, desire, type Desired, type Scope, type VipEntry } from './desired.js';
import { describe, diff, type BackendWrite, type KeyedWrite, type Ops, type Removal } from './diff.js';
import { observe, type HashEntry, type Known } from './known.js';
import { buildTables, installTables, removeTables, TablePrefetch } from './tables.js';

/** A ReconcileReport with what the apply did in detail. */
export interface ApplyReport extends ReconcileReport {
  /** The maps were read and compared in full (first apply, after forget() or a failure). */
  full: boolean;
  /** Only the plan's changes since the plan the maps held were looked at. */
  byChanges: boolean;
  /** VIP ids whose Maglev table was (re)installed. */
  tablesWritten: number[];
  /** Per-CPU counter slots zeroed (ids that changed hands). */
  statsReset: number;
}

export class Reconciler implements Applier {
  private known: Known | undefined;
  private config: ConfigProgram;
  private readonly desired = new DesiredState();
  /** The plan (DpState.serial) the maps hold, when the last apply succeeded. */
  private appliedPlan: number | undefined;

  /**
   * @param dp the opened datapath (its maps may hold anything: the first
   *   apply compares them in full)
   * @param config global datapath config: seed (the store's hash_seed),
   *   encapsulation source prefixes, gateway MAC, skipFib
   */
  constructor(
    private readonly dp: LbDatapath,
    config: ConfigProgram,
  ) {
    this.config = { ...config };
  }

  /** The seed of the flow hash and the tables (the config's). */
  get seed(): number {
    return this.config.seed >>> 0;
  }

  /** Replaces the global config (e.g. on SIGHUP); the next apply writes it, and rebuilds every table if the seed changed. */
  setConfig(config: ConfigProgram): void {
    this.config = { ...config };
  }

  /** Drops what this instance knows of the maps: the next apply compares them in full. */
  forget(): void {
    this.known = undefined;
    this.appliedPlan = undefined;
  }

  /**
   * Makes the maps equal to `state`. Throws (ReconcileError before any
   * write for a state the maps cannot hold; the addon's error otherwise,
   * after which the next apply compares in full).
   */
  apply(state: DpState): ApplyReport {
    const t0 = performance.now();
    const byChanges =
      state.changes !== undefined &&
      this.known !== undefined &&
      this.appliedPlan === state.changes.since &&
      this.desired.seed === this.config.seed >>> 0;
    this.appliedPlan = undefined;
    // Changed VIPs' tables start filling on the pool's worker as the planner makes their entries.
    const installed = byChanges ? this.known?.tables : undefined;
    const prefetch = installed && new TablePrefetch(this.seed, (e) => installed.get(e.vip.id) !== e.digest);
    const scope = byChanges
      ? this.desired.updateChanges(state.changes!, state.tombstones, this.config, this.dp.sizes, prefetch?.offer)
      : this.desired.update(state, this.config, this.dp.sizes);
    const desired = this.desired;
    const full = this.known === undefined || scope.full;
    try {
      const known = this.known ?? observe(this.dp, desired);
      this.known = known;
      const ops = diff(desired, known, full ? undefined : scope);
      const run = new Run(this.dp, known, desired, full ? undefined : scope, prefetch);
      run.execute(ops);
      this.appliedPlan = state.serial;
      return {
        changes: run.changes,
        durationMs: performance.now() - t0,
        full,
        byChanges,
        tablesWritten: ops.tables.map((v) => v.vip.id),
        statsReset: run.statsReset,
      };
    } catch (err) {
      this.known = undefined;
      throw err;
    }
  }

  /** Every difference between the maps and `state`, read from the maps now; empty = no drift. */
  verify(state: DpState): string[] {
    const desired = desire(state, this.config, this.dp.sizes);
    const known = observe(this.dp, desired);
    return describe(diff(desired, known), known);
  }
}

/** One apply's execution: the writes of each phase, counted, with Known kept in step. */
class Run {
  changes = 0;
  statsReset = 0;
  private readonly nat: NativeAddon;
  private readonly cpus: number;

  /** @param scope what changed (undefined: everything may have) */
  constructor(
    private readonly dp: LbDatapath,
    private readonly known: Known,
    private readonly desired: Desired,
    private readonly scope?: Scope,
    private readonly prefetch?: TablePrefetch,
  ) {
    this.nat = dp.nat;
    this.cpus = dp.nat.numPossibleCpus();
  }

  execute(ops: Ops): void {
    if (ops.config) this.writeConfig(ops.config);
    this.deleteVips(ops.vipEarlyDeletes);
    this.writeBackends(ops.backendUps);
    this.deleteTables(ops.tableDeletes);
    this.writeTables(ops);
    this.putKeyed(this.dp.policy.fd, ops.policyPuts, this.known.policy);
    this.putIndex(this.dp.addrIndex, ops.addrPuts, this.known.addrs);
    this.writeVips(ops);
    this.writeBackends(ops.backendDowns);
    this.deleteVips(ops.vipDeletes);
    this.deleteIndex(this.dp.addrIndex, ops.addrDeletes, this.known.addrs);
    this.deleteKeyed(this.dp.policy.fd, ops.policyDeletes, this.known.policy);
    this.freeBackends(ops.backendFrees);
    this.rememberNames();
  }

  private writeConfig(config: Buffer): void {
    this.nat.mapUpdate(this.dp.config.fd, u32(0), config, 0);
    this.known.config = config;
    this.changes++;
  }

  /** Backend entries, in one batch; counters of ids changing hands zeroed first. */
  private writeBackends(writes: BackendWrite[]): void {
    if (writes.length === 0) return;
    const reset = writes.filter((w) => w.resetStats).map((w) => w.entry.id);
    this.resetPerCpu(this.dp.backendStats.fd, BackendStats.size, reset);
    this.updateIds(
      this.dp.backends.fd,
      writes.map((w) => w.entry.id),
      writes.map((w) => w.entry.value),
    );
    for (const w of writes) this.known.backends.set(w.entry.id, w.entry.value);
  }

  /** Builds and installs each changed table (batched); a VIP without active backend gets all FERRY_BACKEND_NONE. */
  private writeTables(ops: Ops): void {
    const byId = new Map(ops.tables.map((v) => [v.vip.id, v]));
    const entry = (id: number): VipEntry => byId.get(id)!;
    installTables(
      this.dp,
      [...byId.keys()],
      (ids) => (this.prefetch ? this.prefetch.tables(ids.map(entry)) : buildTables(ids.map(entry), this.desired.seed)),
      (id) => {
        this.known.tables.set(id, entry(id).digest);
        this.known.tableNotes.delete(id);
        this.changes++;
      },
    );
  }

  /** VIP entries; a new id's counters and any changed rate limit's GCRA state zeroed first. */
  private writeVips(ops: Ops): void {
    if (ops.vipPuts.length === 0) return;
    const resetStats = ops.vipPuts.filter((w) => w.resetStats).map((w) => w.entry.vip.id);
    const resetRate = ops.vipPuts.filter((w) => w.resetRate).map((w) => w.entry.vip.id);
    this.resetPerCpu(this.dp.vipStats.fd, VipStats.size, resetStats);
    if (resetRate.length > 0) {
      const zero = Buffer.alloc(RatelimitState.size);
      this.updateIds(
        this.dp.ratelimit.fd,
        resetRate,
        resetRate.map(() => zero),
      );
    }
    this.dp.vipIndex.write(
      ops.vipPuts.map((w) => ({ key: w.entry.key, value: w.entry.value })),
      [],
    );
    for (const w of ops.vipPuts) this.known.vips.set(w.entry.keyHex, { key: w.entry.key, value: w.entry.value });
    this.changes += ops.vipPuts.length;
  }

  private putIndex(index: KeyIndex<AnyStruct, AnyStruct>, puts: KeyedWrite[], into: Map<string, HashEntry>): void {
    if (puts.length === 0) return;
    index.write(
      puts.map((p) => ({ key: p.entry.key, value: p.entry.value })),
      [],
    );
    for (const p of puts) into.set(p.keyHex, { key: p.entry.key, value: p.entry.value });
    this.changes += puts.length;
  }

  private deleteIndex(index: KeyIndex<AnyStruct, AnyStruct>, dels: Removal[], from: Map<string, HashEntry>): void {
    if (dels.length === 0) return;
    index.write(
      [],
      dels.map((r) => r.entry.key),
    );
    for (const r of dels) from.delete(r.keyHex);
    this.changes += dels.length;
  }

  private putKeyed(fd: number, puts: KeyedWrite[], into: Map<string, HashEntry>): void {
    if (puts.length === 0) return;
    this.updateBatch(
      fd,
      puts.map((p) => p.entry.key),
      puts.map((p) => p.entry.value),
    );
    for (const p of puts) into.set(p.keyHex, { key: p.entry.key, value: p.entry.value });
  }

  private deleteVips(dels: Removal[]): void {
    this.deleteIndex(this.dp.vipIndex, dels, this.known.vips);
  }

  private deleteKeyed(fd: number, dels: Removal[], from: Map<string, HashEntry>): void {
    if (dels.length === 0) return;
    if (dels.length === 1) this.nat.mapDelete(fd, dels[0]!.entry.key);
    else this.nat.mapDeleteBatch(fd, Buffer.concat(dels.map((r) => r.entry.key)), dels.length);
    for (const r of dels) from.delete(r.keyHex);
    this.changes += dels.length;
  }

  private deleteTables(ids: number[]): void {
    removeTables(this.dp, ids, (id) => {
      this.known.tables.delete(id);
      this.known.tableNotes.delete(id);
      this.changes++;
    });
  }

  /** Zeroes backend ids no VIP or tombstone references (state FREE). */
  private freeBackends(ids: number[]): void {
    if (ids.length === 0) return;
    const zero = Buffer.alloc(Backend.size);
    this.updateIds(
      this.dp.backends.fd,
      ids,
      ids.map(() => zero),
    );
    for (const id of ids) this.known.backends.delete(id);
  }

  /** Records which VIP each id now serves, to recognise an id changing hands later. */
  private rememberNames(): void {
    if (this.scope) {
      for (const id of this.scope.vipIds) {
        const v = this.desired.vipById.get(id);
        if (v) this.known.vipNames.set(id, v.vip.name);
        else this.known.vipNames.delete(id);
      }
      return;
    }
    this.known.vipNames.clear();
    for (const v of this.desired.vipById.values()) this.known.vipNames.set(v.vip.id, v.vip.name);
  }

  /** Zeroes per-CPU counter slots in one batch. */
  private resetPerCpu(fd: number, valueSize: number, ids: number[]): void {
    if (ids.length === 0) return;
    const slot = Math.ceil(valueSize / 8) * 8 * this.cpus;
    const zero = Buffer.alloc(slot * ids.length);
    this.nat.mapUpdateBatch(fd, u32s(ids), zero, ids.length, 0);
    this.statsReset += ids.length;
    this.changes += ids.length;
  }

  /** One update for one entry, a batch for more. */
  private updateBatch(fd: number, keys: Buffer[], values: Buffer[]): void {
    if (keys.length === 1) this.nat.mapUpdate(fd, keys[0]!, values[0]!, 0);
    else if (keys.length > 1) this.nat.mapUpdateBatch(fd, Buffer.concat(keys), Buffer.concat(values), keys.length, 0);
    this.changes += keys.length;
  }

  /** updateBatch of an array map's u32 ids: their keys encoded side by side at once. */
  private updateIds(fd: number, ids: number[], values: Buffer[]): void {
    if (ids.length === 1) this.nat.mapUpdate(fd, u32(ids[0]!), values[0]!, 0);
    else if (ids.length > 1) this.nat.mapUpdateBatch(fd, u32s(ids), Buffer.concat(values), ids.length, 0);
    this.changes += ids.length;
  }
}
