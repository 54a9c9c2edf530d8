/**
 * Installing and removing Maglev tables in bulk.
 *
 * Every update or delete of a map-in-map makes the kernel wait for an RCU
 * grace period before the syscall returns (maybe_wait_bpf_programs, about
 * 10 ms here): one table at a time, 1,000 VIPs would take 10 s. Batches of
 * LbDatapath.setMaglevTables wait once each, and each element is still one
 * atomic pointer swap from a VIP's old table to its complete new one.
 *
 * ferry_maglev is an array of maps, which has no batch delete. Removing a
 * few tables deletes them one by one; removing many points them at one
 * shared one-slot table holding M = 0 ("retired"), in one batch: the
 * datapath treats M = 0 exactly like a missing table (no backend), the big
 * inner maps are freed all the same, and the reconciler treats a retired
 * table as absent.
 */
import type { LbDatapath } from '../datapath/lb.js';

/** Tables created and swapped per batch (bounds the open inner-map fds and memory). */
const BATCH = 128;
/** Up to this many removals are real deletes (one grace period each). */
export const MAX_SINGLE_DELETES = 4;

/**
 * Installs the tables of `ids`, built on demand by `build` one batch at a
 * time (memory stays at one batch of tables). Calls `done(id)` for each installed.
 */
export function installTables(
  dp: LbDatapath, ids: readonly number[], build: (vipId: number) => Uint32Array, done: (vipId: number) => void,
): void {
  for (let at = 0; at < ids.length; at += BATCH) {
    const chunk = ids.slice(at, at + BATCH);
    dp.setMaglevTables(chunk, chunk.map(build));
    chunk.forEach(done);
  }
}

/** Removes tables: deleted when few, retired in one batch when many. */
export function removeTables(dp: LbDatapath, ids: readonly number[], done: (vipId: number) => void): void {
  if (ids.length <= MAX_SINGLE_DELETES) {
    for (const id of ids) {
      dp.deleteMaglevTable(id);
      done(id);
    }
    return;
  }
  for (let at = 0; at < ids.length; at += BATCH) {
    const chunk = ids.slice(at, at + BATCH);
    dp.retireMaglevTables(chunk);
    chunk.forEach(done);
  }
}

/** A table as read back, or undefined when absent or retired (M = 0). */
export function readTable(dp: LbDatapath, vipId: number): Uint32Array | undefined {
  const t = dp.getMaglevTable(vipId);
  return t && t.length > 0 ? t : undefined;
}
