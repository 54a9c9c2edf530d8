/**
 * Installing and removing Maglev tables in bulk. Tables are built on demand
 * one batch at a time, so memory holds one batch of tables however many
 * VIPs change; each VIP switches to its complete new table in one store
 * (src/datapath/maglevtables.ts), and nothing waits for the kernel.
 */
import type { LbDatapath } from '../datapath/lb.js';
import { buildMaglevTables, startMaglevTables, type MaglevInput } from '../maglev/index.js';
import type { VipEntry } from './desired.js';

/** Tables built per batch, to install or to compare (bounds the memory of one apply or start). */
export const TABLE_BATCH = 128;

/** Slots of tables one apply may prefetch in all (16 MiB); VIPs beyond are built when installed. */
export const PREFETCH_SLOTS = 4 * 1024 * 1024;

/** The Maglev tables desired VIPs should have, built together (buildMaglevTables). */
export function buildTables(vs: readonly VipEntry[], seed: number): Uint32Array[] {
  return buildMaglevTables(maglevInputs(vs, seed));
}

/** What the Maglev builder takes for each VIP's table. */
function maglevInputs(vs: readonly VipEntry[], seed: number): MaglevInput[] {
  return vs.map((v) => ({ backends: v.slotted, m: v.vip.m, seed }));
}

/** A batch of prefetched tables: collected (once) when the first of them is installed. */
interface Prefetched {
  collect: () => Uint32Array[];
  tables?: Uint32Array[];
}

/**
 * Tables filled ahead of their install. The planner offers each VIP whose
 * entries it has just made; those whose installed table differs go to the
 * Maglev pool's worker a batch at a time, so the worker fills while this
 * thread plans the other VIPs and writes the other maps (a burst's
 * transaction changes hundreds). tables() then collects them, filling
 * itself what the worker has not reached, and builds any not offered (or
 * offered with other inputs): what it returns is what buildTables would.
 */
export class TablePrefetch {
  private queued: VipEntry[] = [];
  private slots = 0;
  private readonly started = new Map<number, { digest: string; batch: Prefetched; index: number }>();

  /** @param stale whether a VIP's installed table differs from its entry's */
  constructor(
    private readonly seed: number,
    private readonly stale: (e: VipEntry) => boolean,
  ) {}

  /** A VIP's new entry, from the planner. */
  readonly offer = (e: VipEntry): void => {
    if (!this.stale(e) || this.slots + e.vip.m > PREFETCH_SLOTS) return;
    this.slots += e.vip.m;
    this.queued.push(e);
    if (this.queued.length === TABLE_BATCH) this.startQueued();
  };

  /** The tables of `entries`, in order. */
  tables(entries: readonly VipEntry[]): Uint32Array[] {
    this.startQueued();
    const own = entries.map((e) => {
      const s = this.started.get(e.vip.id);
      return s !== undefined && s.digest === e.digest ? s : undefined;
    });
    const missing = entries.filter((_, i) => own[i] === undefined);
    const built = missing.length > 0 ? buildTables(missing, this.seed) : [];
    let k = 0;
    return entries.map((e, i) => {
      const s = own[i];
      if (s === undefined) return built[k++]!;
      this.started.delete(e.vip.id);
      s.batch.tables ??= s.batch.collect();
      return s.batch.tables[s.index]!;
    });
  }

  private startQueued(): void {
    const entries = this.queued;
    if (entries.length === 0) return;
    this.queued = [];
    let collect: () => Uint32Array[];
    try {
      collect = startMaglevTables(maglevInputs(entries, this.seed));
    } catch {
      return; // Inputs the fill refuses: built when installed, and refused there as ever.
    }
    const batch: Prefetched = { collect };
    entries.forEach((e, index) => this.started.set(e.vip.id, { digest: e.digest, batch, index }));
  }
}

/**
 * Installs the tables of `ids`, built on demand by `build` one batch at a
 * time (a batch's tables are built together, on two cores when there are
 * two: buildMaglevTables). Calls `done(id)` for each installed.
 */
export function installTables(
  dp: LbDatapath,
  ids: readonly number[],
  build: (vipIds: readonly number[]) => Uint32Array[],
  done: (vipId: number) => void,
): void {
  for (let at = 0; at < ids.length; at += TABLE_BATCH) {
    const chunk = ids.slice(at, at + TABLE_BATCH);
    dp.setMaglevTables(chunk, build(chunk));
    chunk.forEach(done);
  }
}

/** Removes tables (their VIPs then have none). */
export function removeTables(dp: LbDatapath, ids: readonly number[], done: (vipId: number) => void): void {
  if (ids.length === 0) return;
  dp.deleteMaglevTables(ids);
  ids.forEach(done);
}
