/**
 * Installing and removing Maglev tables in bulk.
 *
 * Every update or delete of a map-in-map makes the kernel wait for an RCU
 * grace period before the syscall returns (maybe_wait_bpf_programs, about
 * 10 ms here), so LbDatapath.setMaglevTable costs ~10 ms per VIP: 1,000
 * VIPs would take 10 s. A batch update waits once per batch. Each element
 * of the batch is still one atomic pointer swap, so every VIP moves from
 * its old table to its complete new one exactly as with setMaglevTable
 * (same inner map layout: slot 0 = M, slots 1..M the backend ids).
 *
 * ferry_maglev is an array of maps, which has no batch delete. Removing a
 * few tables deletes them one by one; removing many points them at one
 * shared one-slot table holding M = 0 ("retired"), in one batch: the
 * datapath treats M = 0 exactly like a missing table (no backend), the big
 * inner maps are freed all the same, and the reconciler treats a retired
 * table as absent.
 */
import { join } from 'node:path';
import type { LbDatapath } from '../datapath/lb.js';
import { BPF_F_INNER_MAP, BPF_MAP_TYPE_ARRAY } from '../datapath/native.js';

/** Tables created and swapped per batch (bounds the open inner-map fds). */
const BATCH = 128;
/** Up to this many removals are real deletes (one grace period each). */
export const MAX_SINGLE_DELETES = 4;

/** The outer map, opened from its pin (LbDatapath keeps its own fd private). */
function openOuter(dp: LbDatapath): number {
  return dp.nat.objGet(join(dp.pinRoot, 'ferry_maglev'));
}

/** Creates an inner table map holding M then the slots. The caller closes the fd. */
function createInner(dp: LbDatapath, name: string, table: Uint32Array): number {
  const m = table.length;
  const fd = dp.nat.mapCreate({
    type: BPF_MAP_TYPE_ARRAY, name: name.slice(0, 15), keySize: 4, valueSize: 4,
    maxEntries: m + 1, flags: BPF_F_INNER_MAP,
  });
  try {
    const keys = Buffer.alloc(4 * (m + 1));
    const values = Buffer.alloc(4 * (m + 1));
    values.writeUInt32LE(m, 0);
    for (let i = 0; i <= m; i++) keys.writeUInt32LE(i, 4 * i);
    for (let i = 0; i < m; i++) values.writeUInt32LE(table[i]!, 4 * (i + 1));
    dp.nat.mapUpdateBatch(fd, keys, values, m + 1, 0);
    return fd;
  } catch (err) {
    dp.nat.closeFd(fd);
    throw err;
  }
}

/** Points each VIP id at its inner map fd, one batch (one grace period). */
function swapAll(dp: LbDatapath, outer: number, ids: readonly number[], fds: readonly number[]): void {
  const keys = Buffer.alloc(4 * ids.length);
  const values = Buffer.alloc(4 * ids.length);
  ids.forEach((id, i) => {
    keys.writeUInt32LE(id, 4 * i);
    values.writeUInt32LE(fds[i]!, 4 * i);
  });
  dp.nat.mapUpdateBatch(outer, keys, values, ids.length, 0);
}

/**
 * Installs the tables of `ids`, built on demand by `build` one batch at a
 * time (memory stays at one batch of tables). One table alone goes through
 * setMaglevTable. Calls `done(id)` for each installed.
 */
export function installTables(
  dp: LbDatapath, ids: readonly number[], build: (vipId: number) => Uint32Array, done: (vipId: number) => void,
): void {
  if (ids.length === 1) {
    const id = ids[0]!;
    dp.setMaglevTable(id, build(id));
    done(id);
    return;
  }
  if (ids.length === 0) return;
  const outer = openOuter(dp);
  try {
    for (let at = 0; at < ids.length; at += BATCH) {
      const chunk = ids.slice(at, at + BATCH);
      const fds: number[] = [];
      try {
        for (const id of chunk) fds.push(createInner(dp, `ferry_mg_${id}`, build(id)));
        swapAll(dp, outer, chunk, fds);
      } finally {
        for (const fd of fds) dp.nat.closeFd(fd);
      }
      chunk.forEach(done);
    }
  } finally {
    dp.nat.closeFd(outer);
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
  const outer = openOuter(dp);
  const retired = createInner(dp, 'ferry_mg_none', new Uint32Array(0));
  try {
    for (let at = 0; at < ids.length; at += BATCH) {
      const chunk = ids.slice(at, at + BATCH);
      swapAll(dp, outer, chunk, chunk.map(() => retired));
      chunk.forEach(done);
    }
  } finally {
    dp.nat.closeFd(retired);
    dp.nat.closeFd(outer);
  }
}

/** A table as read back, or undefined when absent or retired (M = 0). */
export function readTable(dp: LbDatapath, vipId: number): Uint32Array | undefined {
  const t = dp.getMaglevTable(vipId);
  return t && t.length > 0 ? t : undefined;
}
