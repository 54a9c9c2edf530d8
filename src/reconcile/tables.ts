/**
 * Installing and removing Maglev tables in bulk. Tables are built on demand
 * one batch at a time, so memory holds one batch of tables however many
 * VIPs change; each VIP switches to its complete new table in one store
 * (src/datapath/maglevtables.ts), and nothing waits for the kernel.
 */
import type { LbDatapath } from '../datapath/lb.js';

/** Tables built per batch, to install or to compare (bounds the memory of one apply or start). */
export const TABLE_BATCH = 128;

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
