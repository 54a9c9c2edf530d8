/**
 * Maglev tables built by the pool (the caller and a worker thread sharing a
 * batch) are the tables buildMaglevTable builds, whoever fills them, and a
 * worker that fails never changes or loses one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  FERRY_BACKEND_NONE,
  MAGLEV_PRIMES,
  buildMaglevTable,
  buildMaglevTables,
  startMaglevTables,
  type MaglevInput,
} from '../../../src/maglev/index.js';
import { MaglevPool } from '../../../src/maglev/pool.js';
import { mulberry32 } from '../../lib/rng.js';

/** `count` tables of random sizes, weights and keys; some with no backend of weight > 0. */
function inputs(seed: number, count: number, m?: number): MaglevInput[] {
  const rnd = mulberry32(seed);
  return Array.from({ length: count }, (_, v) => {
    const n = rnd(5) === 0 ? 0 : 1 + rnd(40);
    const backends = Array.from({ length: n }, (_, j) => ({
      id: v * 100 + j,
      key: `10.${v & 255}.${j}.${rnd(256)}:${80 + j}`,
      weight: rnd(6) === 0 ? 0 : 1 + rnd(rnd(2) === 0 ? 3 : 65535),
    }));
    return { backends, m: m ?? MAGLEV_PRIMES[rnd(6)]!, seed: rnd(2 ** 32) };
  });
}

function assertSame(got: Uint32Array[], want: MaglevInput[]): void {
  assert.equal(got.length, want.length);
  want.forEach((x, i) => assert.deepEqual(got[i], buildMaglevTable(x.backends, x.m, x.seed), `table ${i}`));
}

test('tables shared with the worker equal buildMaglevTable, whoever filled them', async () => {
  const pool = new MaglevPool({ minSlots: 0, parallel: true });
  try {
    // The worker starts with the first batch; the caller fills everything until it runs.
    for (let round = 0; round < 200 && pool.sharedJobs === 0; round++) {
      const batch = inputs(round, 24);
      assertSame(buildMaglevTables(batch, pool), batch);
      await sleep(5);
    }
    assert.ok(pool.sharedJobs > 0, 'the worker filled no table');
    const all = inputs(999, 64);
    assertSame(buildMaglevTables(all, pool), all);
    assert.ok(all.some((x) => x.backends.every((b) => b.weight === 0)));
    assert.equal(pool.stoppedReason, undefined);
  } finally {
    pool.close();
  }
});

test('a table without any weighted backend holds no backend in every slot', () => {
  const pool = new MaglevPool({ minSlots: 0, parallel: true });
  try {
    const [t] = buildMaglevTables([{ backends: [{ id: 1, key: 'a', weight: 0 }], m: 251, seed: 0 }], pool);
    assert.equal(t!.length, 251);
    assert.ok(t!.every((id) => id === FERRY_BACKEND_NONE));
  } finally {
    pool.close();
  }
});

test('bad input is refused as buildMaglevTable refuses it, before any table is built', () => {
  const pool = new MaglevPool({ minSlots: 0, parallel: true });
  try {
    const good = inputs(1, 3);
    const dup = {
      backends: [
        { id: 1, key: 'k', weight: 1 },
        { id: 2, key: 'k', weight: 1 },
      ],
      m: 251,
      seed: 0,
    };
    assert.throws(() => buildMaglevTables([...good, dup], pool), /duplicate backend key "k"/);
    assert.throws(() => buildMaglevTables([{ ...good[0]!, m: 1000 }], pool), /table size M must be a prime/);
    assert.equal(pool.sharedJobs, 0);
  } finally {
    pool.close();
  }
});

test('a worker that never finishes its job is stopped and the job redone: every table still right', async () => {
  const workerUrl = new URL('../../lib/maglev-stuck-worker.js', import.meta.url);
  const pool = new MaglevPool({ minSlots: 0, parallel: true, timeoutMs: 300, workerUrl });
  try {
    const warm = inputs(5, 4);
    assertSame(buildMaglevTables(warm, pool), warm);
    await sleep(300); // the worker has started
    // Large tables: the worker surely takes one of them while the caller works through the rest.
    const big = inputs(6, 48, 65537);
    assertSame(buildMaglevTables(big, pool), big);
    assert.match(pool.stoppedReason ?? '', /took the worker over 300 ms/);
    const shared = pool.sharedJobs;
    const after = inputs(7, 40);
    assertSame(buildMaglevTables(after, pool), after);
    assert.equal(pool.sharedJobs, shared, 'a stopped worker is not used again');
  } finally {
    pool.close();
  }
});

test('a started batch is filled by the worker while the caller goes on, then collected whole', async () => {
  const pool = new MaglevPool({ minSlots: 0, parallel: true });
  try {
    const batch = inputs(4242, 24).filter((x) => x.backends.some((b) => b.weight > 0));
    // The caller collects only after a pause: by then the worker has filled every table (it may need a first
    // batch to start, or a try or two on a busy machine).
    let byWorker = 0;
    for (let round = 0; round < 20 && byWorker < batch.length; round++) {
      const before = pool.sharedJobs;
      const collect = startMaglevTables(batch, pool);
      await sleep(100);
      assertSame(collect(), batch);
      byWorker = pool.sharedJobs - before;
    }
    assert.equal(byWorker, batch.length, 'the worker did not fill a started batch on its own');
  } finally {
    pool.close();
  }
});
