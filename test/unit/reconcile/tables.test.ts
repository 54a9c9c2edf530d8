/**
 * Tables filled ahead of their install (src/reconcile/tables.ts): whatever
 * was offered, and whatever changed since, they are the tables buildTables
 * builds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAGLEV_PRIMES } from '../../../src/maglev/index.js';
import type { VipEntry } from '../../../src/reconcile/desired.js';
import { buildTables, PREFETCH_SLOTS, TablePrefetch } from '../../../src/reconcile/tables.js';
import { mulberry32 } from '../../lib/rng.js';

const SEED = 0x5eed;

/** A VIP entry as far as tables go: id, M, slotted backends and the digest naming them. */
function entry(id: number, rnd: (n: number) => number, m = MAGLEV_PRIMES[rnd(3)]!): VipEntry {
  const slotted = Array.from({ length: 1 + rnd(12) }, (_, j) => ({
    id: id * 100 + j,
    key: `10.${id & 255}.${j}.${rnd(256)}:80`,
    weight: 1 + rnd(100),
  }));
  return { vip: { id, m }, slotted, digest: `${m}|${JSON.stringify(slotted)}` } as unknown as VipEntry;
}

test('prefetched, skipped, unoffered and since-changed VIPs all get the tables buildTables builds', () => {
  const rnd = mulberry32(20261207);
  const entries = Array.from({ length: 300 }, (_, id) => entry(id, rnd));
  // Ids divisible by 5 have their table installed already: not prefetched.
  const prefetch = new TablePrefetch(SEED, (e) => e.vip.id % 5 !== 0);
  // Ids divisible by 7 are not offered; more than a batch is, so a batch starts before tables() is asked.
  for (const e of entries) if (e.vip.id % 7 !== 0) prefetch.offer(e);
  // Ids divisible by 3 changed after their offer (other backends): their prefetched table must not be used.
  const wanted = entries.map((e) => (e.vip.id % 3 === 0 ? entry(e.vip.id, rnd) : e));
  // Installed in batches, out of offer order.
  const order = [...wanted].reverse();
  const got = [...prefetch.tables(order.slice(0, 128)), ...prefetch.tables(order.slice(128))];
  const want = buildTables(order, SEED);
  assert.equal(got.length, want.length);
  got.forEach((t, i) => assert.deepEqual(t, want[i], `VIP ${order[i]!.vip.id}`));
});

test('no more than PREFETCH_SLOTS are held ahead; the rest is built when installed', () => {
  const rnd = mulberry32(7);
  const big = MAGLEV_PRIMES[MAGLEV_PRIMES.length - 1]!;
  const count = Math.ceil(PREFETCH_SLOTS / big) + 3;
  const entries = Array.from({ length: count }, (_, id) => entry(id, rnd, big));
  const prefetch = new TablePrefetch(SEED, () => true);
  entries.forEach(prefetch.offer);
  const got = prefetch.tables(entries);
  const want = buildTables(entries, SEED);
  got.forEach((t, i) => assert.deepEqual(t, want[i], `VIP ${i}`));
});
