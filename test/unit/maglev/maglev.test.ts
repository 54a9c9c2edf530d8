/**
 * Maglev table builder: correctness, proportional weights, determinism and
 * disruption. Measured figures are printed with t.diagnostic so a run
 * shows how close to ideal the tables are, not just that they pass.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  DEFAULT_MAGLEV_M,
  FERRY_BACKEND_NONE,
  MAGLEV_MAX_WEIGHT,
  MAGLEV_MIN_AUTO_M,
  MAGLEV_PRIMES,
  buildMaglevTable,
  chooseMaglevM,
  countSlots,
  diffTables,
  isPrime,
  maglevPermutation,
  murmur3,
  murmur3Bytes,
  planShares,
  type MaglevBackend,
} from '../../../src/maglev/index.js';
import type { DpState } from '../../../src/model/dpstate.js';

/** n backends with ids 0..n-1 and address-like keys, all of weight 1. */
function backends(n: number, weight = 1): MaglevBackend[] {
  return Array.from({ length: n }, (_, i) => ({
    id: i,
    key: `10.${(i >> 8) & 255}.${i & 255}.1:8080`,
    weight,
  }));
}

/** Deterministic Fisher-Yates shuffle (xorshift32), so failures reproduce. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = items.slice();
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const j = s % (i + 1);
    const tmp = out[i] as T;
    out[i] = out[j] as T;
    out[j] = tmp;
  }
  return out;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(3)}%`;
}

test('murmur3 matches the reference MurmurHash3_x86_32 test vectors', () => {
  assert.equal(murmur3('', 0), 0);
  assert.equal(murmur3('', 1), 0x514e28b7);
  assert.equal(murmur3('', 0xffffffff), 0x81f16f39);
  assert.equal(murmur3('test', 0), 0xba6bd213);
  assert.equal(murmur3('Hello, world!', 0x9747b28c), 0x24884cba);
  assert.equal(murmur3('The quick brown fox jumps over the lazy dog', 0x9747b28c), 0x2fa826cd);
  // UTF-8, not UTF-16: "é" is the two bytes c3 a9.
  assert.equal(murmur3('\u00e9', 5), murmur3Bytes(Uint8Array.of(0xc3, 0xa9), 5));
  assert.equal(murmur3('\u{1f680}', 5), murmur3Bytes(Uint8Array.of(0xf0, 0x9f, 0x9a, 0x80), 5));
});

test('every listed M is prime, in order, and includes the default', () => {
  for (const p of MAGLEV_PRIMES) assert.ok(isPrime(p), `${p} should be prime`);
  for (let i = 1; i < MAGLEV_PRIMES.length; i++) {
    assert.ok((MAGLEV_PRIMES[i] as number) > (MAGLEV_PRIMES[i - 1] as number));
  }
  assert.ok(MAGLEV_PRIMES.includes(DEFAULT_MAGLEV_M));
  assert.ok(Object.isFrozen(MAGLEV_PRIMES));
});

test('isPrime agrees with a sieve up to 10,000 and rejects non-integers', () => {
  const limit = 10_000;
  const composite = new Uint8Array(limit + 1);
  for (let i = 2; i * i <= limit; i++) {
    if (!composite[i]) for (let j = i * i; j <= limit; j += i) composite[j] = 1;
  }
  for (let n = 0; n <= limit; n++) assert.equal(isPrime(n), n >= 2 && !composite[n], `isPrime(${n})`);
  for (const bad of [-7, 2.5, NaN, Infinity, 65537.5]) assert.equal(isPrime(bad), false);
  assert.equal(isPrime(65536), false);
  assert.equal(isPrime(2147483647), true); // 2^31 - 1
});

test('non-prime or out-of-range M is rejected with a RangeError naming it', () => {
  for (const m of [0, 1, 4, 65536, 65535, 100, 251.5, -251, NaN]) {
    assert.throws(
      () => buildMaglevTable(backends(3), m),
      (e: unknown) => e instanceof RangeError && e.message.includes(String(m)),
      `M = ${m}`,
    );
  }
  // Prime, but larger than the table size cap.
  assert.throws(() => buildMaglevTable(backends(3), 2147483647), RangeError);
});

test('bad ids, weights, keys, seeds and duplicates are rejected clearly', () => {
  const ok = backends(3);
  const withB = (patch: Partial<MaglevBackend>): MaglevBackend[] => [...ok.slice(0, 2), { ...(ok[2] as MaglevBackend), ...patch }];
  const cases: Array<[MaglevBackend[], RegExp]> = [
    [withB({ weight: -1 }), /backend #2 .*weight must be an integer 0\.\.65535, got -1/],
    [withB({ weight: 1.5 }), /weight must be an integer .* got 1\.5/],
    [withB({ weight: MAGLEV_MAX_WEIGHT + 1 }), /weight .* got 65536/],
    [withB({ weight: NaN }), /weight .* got NaN/],
    [withB({ id: -1 }), /id must be an integer 0\.\.4294967294, got -1/],
    [withB({ id: FERRY_BACKEND_NONE }), /id must be .* got 4294967295/],
    [withB({ id: 0.5 }), /id must be .* got 0\.5/],
    [withB({ key: '' }), /key must be a non-empty string/],
    [withB({ key: (ok[0] as MaglevBackend).key }), /duplicate backend key "10\.0\.0\.1:8080"/],
    [withB({ id: 0 }), /duplicate backend id 0/],
    // A duplicate is an error even when the duplicate has weight 0.
    [withB({ id: 1, weight: 0 }), /duplicate backend id 1/],
  ];
  for (const [set, msg] of cases) assert.throws(() => buildMaglevTable(set, 251), msg);
  for (const seed of [-1, 2 ** 32, 0.5]) {
    assert.throws(() => buildMaglevTable(ok, 251, seed), /seed must be an integer/);
  }
});

test('chooseMaglevM: smallest listed prime >= 100 x N, with a floor', () => {
  assert.equal(chooseMaglevM(0), MAGLEV_MIN_AUTO_M);
  assert.equal(chooseMaglevM(1), 1021);
  assert.equal(chooseMaglevM(10), 1021);
  assert.equal(chooseMaglevM(11), 2039);
  assert.equal(chooseMaglevM(100), 16381);
  assert.equal(chooseMaglevM(327), 32749);
  assert.equal(chooseMaglevM(328), 65521);
  assert.equal(chooseMaglevM(655), 65521);
  assert.equal(chooseMaglevM(656), 131071);
  assert.equal(chooseMaglevM(1000), 131071);
  assert.equal(chooseMaglevM(100_000), 131071); // capped at the largest
  for (let n = 0; n < 2000; n += 37) assert.ok(isPrime(chooseMaglevM(n)));
  assert.throws(() => chooseMaglevM(-1), RangeError);
  assert.throws(() => chooseMaglevM(1.5), RangeError);
});

test('empty input, all-zero weights: every slot is FERRY_BACKEND_NONE', () => {
  for (const set of [[], backends(5, 0)]) {
    const table = buildMaglevTable(set, 251);
    assert.equal(table.length, 251);
    assert.ok(table.every((id) => id === FERRY_BACKEND_NONE));
  }
});

test('unweighted: each of N backends gets floor(M/N) or ceil(M/N) slots', (t) => {
  const cases: Array<[number, number]> = [
    [1, 251],
    [3, 251],
    [7, 251],
    [100, 251],
    [251, 251],
    [1, 65537],
    [3, 65537],
    [7, 65537],
    [100, 65537],
    [1000, 65537],
    [13, 4093],
    [1000, 131071],
  ];
  for (const [n, m] of cases) {
    // Equal weights other than 1 must behave identically.
    for (const weight of [1, 7]) {
      const table = buildMaglevTable(backends(n, weight), m);
      const counts = countSlots(table);
      assert.equal(counts.size, n, `N=${n} M=${m}: every backend owns a slot`);
      const lo = Math.floor(m / n);
      const hi = Math.ceil(m / n);
      let min = Infinity;
      let max = -Infinity;
      for (const c of counts.values()) {
        min = Math.min(min, c);
        max = Math.max(max, c);
      }
      assert.ok(min >= lo && max <= hi, `N=${n} M=${m} w=${weight}: slots in [${min}, ${max}], want [${lo}, ${hi}]`);
      if (weight === 1) t.diagnostic(`N=${n} M=${m}: slots per backend ${min}..${max} (ideal ${(m / n).toFixed(2)})`);
    }
  }
  // Fewer slots than backends: the table fills in the first round.
  const tiny = countSlots(buildMaglevTable(backends(300), 251));
  assert.equal(tiny.size, 251);
});

test('weighted: slot shares are proportional to weights', (t) => {
  const cases: Array<{ weights: number[]; m: number }> = [
    { weights: [2, 1], m: 65537 },
    { weights: [3, 1], m: 65537 },
    { weights: [1, 2, 3, 4], m: 65537 },
    { weights: [100, 1], m: 65537 },
    { weights: [65535, 1], m: 65537 },
    { weights: [2, 1], m: 251 },
    { weights: [1, 2, 3, 4], m: 251 },
    { weights: [5, 0, 3, 1], m: 4093 },
    // 300 backends with weights 1..300.
    { weights: Array.from({ length: 300 }, (_, i) => i + 1), m: 65537 },
    // One heavy backend and 999 light ones: each light one's share is just
    // under one slot; their rounding must not all land on the heavy one.
    { weights: [65535, ...Array.from({ length: 999 }, () => 1)], m: 65537 },
    // Many light backends whose shares are far below one slot.
    { weights: [...Array.from({ length: 50 }, () => 65535), ...Array.from({ length: 50 }, () => 1)], m: 251 },
  ];
  for (const { weights, m } of cases) {
    const set = weights.map((weight, i) => ({ id: 100 + i, key: `backend-${i}`, weight }));
    const counts = countSlots(buildMaglevTable(set, m));
    const total = weights.reduce((a, b) => a + b, 0);
    // Bound: the floor or the ceiling of the exact share, i.e. strictly
    // less than one slot from it (far inside the +-1% of M that M >= 100 N
    // gives unweighted Maglev).
    let worst = 0;
    const shown: string[] = [];
    weights.forEach((w, i) => {
      const got = counts.get(100 + i) ?? 0;
      const ideal = (m * w) / total;
      const err = got - ideal;
      worst = Math.max(worst, Math.abs(err));
      assert.ok(
        Math.abs(err) < 1,
        `weights ${weights.slice(0, 8).join(':')} M=${m}: backend ${i} (w=${w}) has ${got} slots, ideal ${ideal.toFixed(2)}`,
      );
      if (w === 0) assert.equal(got, 0, 'weight 0 gets no slots');
      if (weights.length <= 4) shown.push(`${got} (ideal ${ideal.toFixed(1)})`);
    });
    const label = weights.length <= 4 ? weights.join(':') : `${weights.slice(0, 3).join(',')},... (${weights.length} backends)`;
    t.diagnostic(
      `weights ${label} M=${m}: ${shown.length ? shown.join(', ') + '; ' : ''}worst error ${worst.toFixed(2)} slots (${pct(worst / m)} of M)`,
    );
  }
});

/**
 * The paper's Pseudocode 1, literally: precomputed permutations, next[],
 * round-robin turns. Unweighted only. BigInt keeps offset + j * skip exact.
 */
function paperMaglev(set: readonly MaglevBackend[], m: number, seed: number): Uint32Array {
  const sorted = set.slice().sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id - b.id));
  const permutation = sorted.map((b) => {
    const { offset, skip } = maglevPermutation(b.key, m, seed);
    return Array.from({ length: m }, (_, j) => Number((BigInt(offset) + BigInt(j) * BigInt(skip)) % BigInt(m)));
  });
  const next = sorted.map(() => 0);
  const entry = new Array<number>(m).fill(-1);
  let n = 0;
  for (;;) {
    for (let i = 0; i < sorted.length; i++) {
      const perm = permutation[i] as number[];
      let c = perm[next[i] as number] as number;
      while ((entry[c] as number) >= 0) {
        next[i] = (next[i] as number) + 1;
        c = perm[next[i] as number] as number;
      }
      entry[c] = (sorted[i] as MaglevBackend).id;
      next[i] = (next[i] as number) + 1;
      if (++n === m) return Uint32Array.from(entry);
    }
  }
}

test("equal weights reproduce the paper's algorithm slot for slot", () => {
  const cases: Array<[number, number, number]> = [
    [1, 251, 0],
    [3, 251, 9],
    [10, 1021, 0],
    [37, 4093, 5],
    [100, 8191, 77],
  ];
  for (const [n, m, seed] of cases) {
    const set = shuffled(backends(n, 3), n);
    assert.equal(diffTables(buildMaglevTable(set, m, seed), paperMaglev(set, m, seed)), 0, `N=${n} M=${m}`);
  }
});

test('permutation parameters are in range and independent of each other', () => {
  const m = 65537;
  let sameAsOffset = 0;
  for (let i = 0; i < 2000; i++) {
    const { offset, skip } = maglevPermutation(`10.0.${i >> 8}.${i & 255}:443`, m, 1);
    assert.ok(Number.isInteger(offset) && offset >= 0 && offset < m);
    assert.ok(Number.isInteger(skip) && skip >= 1 && skip < m);
    if (skip === offset || skip === offset + 1) sameAsOffset++;
  }
  // h1 and h2 use different seeds: skip is not a function of offset.
  assert.ok(sameAsOffset < 5, `skip tracks offset ${sameAsOffset} times in 2000`);
});

test('extreme weight mixes still build (bounded rounds)', (t) => {
  const mixes: Array<[string, MaglevBackend[]]> = [
    ['1 x 65535 + 999 x 1', Array.from({ length: 1000 }, (_, i) => ({ id: i, key: `k${i}`, weight: i === 0 ? 65535 : 1 }))],
    ['999 x 65535 + 1 x 1', Array.from({ length: 1000 }, (_, i) => ({ id: i, key: `k${i}`, weight: i === 0 ? 1 : 65535 }))],
    ['500 x 65535 + 500 x 1', Array.from({ length: 1000 }, (_, i) => ({ id: i, key: `k${i}`, weight: i % 2 ? 1 : 65535 }))],
  ];
  for (const [label, set] of mixes) {
    const t0 = performance.now();
    const table = buildMaglevTable(set, 65537);
    const ms = performance.now() - t0;
    assert.ok(!table.includes(FERRY_BACKEND_NONE));
    t.diagnostic(`${label} at M=65537: ${countSlots(table).size} backends own slots, built in ${ms.toFixed(1)} ms`);
  }
});

test('weight 0 backends get no slots and do not perturb the others', () => {
  const set = backends(10);
  const zeroed = set.map((b, i) => (i === 4 ? { ...b, weight: 0 } : b));
  const without = set.filter((_, i) => i !== 4);
  const a = buildMaglevTable(zeroed, 65537);
  assert.equal(countSlots(a).get(4), undefined);
  // Weight 0 is exactly "not in the table": identical to removing it.
  assert.equal(diffTables(a, buildMaglevTable(without, 65537)), 0);
});

test('deterministic: input order does not matter; the seed does', () => {
  const set = backends(100).map((b, i) => ({ ...b, weight: 1 + (i % 5) }));
  const ref = buildMaglevTable(set, 65537, 42);
  for (let s = 1; s <= 5; s++) {
    assert.equal(diffTables(ref, buildMaglevTable(shuffled(set, s), 65537, 42)), 0, `shuffle ${s}`);
  }
  assert.equal(diffTables(ref, buildMaglevTable(set, 65537, 42)), 0);
  const other = buildMaglevTable(set, 65537, 43);
  assert.ok(diffTables(ref, other) > 65537 / 2, 'a different seed reshuffles most slots');
  // Default seed is 0.
  assert.equal(diffTables(buildMaglevTable(set, 65537), buildMaglevTable(set, 65537, 0)), 0);
});

test('pinned output: a small table never changes across hosts or versions', () => {
  // If this fails, the hash or the fill changed and every deployed table
  // would reshuffle on upgrade: that needs a deliberate decision.
  const table = buildMaglevTable(
    [
      { id: 1, key: '10.0.0.1:80', weight: 1 },
      { id: 2, key: '10.0.0.2:80', weight: 2 },
      { id: 3, key: '[2001:db8::3]:80', weight: 1 },
    ],
    251,
    7,
  );
  const counts = countSlots(table);
  assert.equal((counts.get(1) ?? 0) + (counts.get(2) ?? 0) + (counts.get(3) ?? 0), 251);
  // FNV-1a over the table bytes, a compact fingerprint to pin.
  let h = 0x811c9dc5;
  for (const id of table) {
    h ^= id;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  assert.equal(h.toString(16), PINNED_FINGERPRINT);
});

/** Fingerprint of the pinned table above (recorded from the first build). */
const PINNED_FINGERPRINT = 'fc84dd87';

/** Fraction of slots whose owner changed between two tables. */
function moved(a: Uint32Array, b: Uint32Array): number {
  return diffTables(a, b) / a.length;
}

/**
 * Honest bounds on slots moved by one removal or addition, as a multiple of
 * the ideal 1/N. Maglev is not minimally disruptive: the removed backend's
 * slots go to whoever reaches them first, and those backends then skip
 * preferences they had claimed before, which cascades. The cascade grows as
 * M/N shrinks (the paper's figure 12 shows the same for M = 65537 against
 * M = 655373). Measured at M = 65537 with this hash: ~1.02x at N = 10,
 * ~1.6x at N = 100, ~6.7x at N = 1000 (0.65% of slots instead of 0.1%).
 */
const DISRUPTION_BOUND: ReadonlyMap<number, number> = new Map([
  [10, 1.1],
  [100, 2],
  [1000, 8],
]);

test('disruption: removing or adding one of N backends moves ~1/N of slots', (t) => {
  const m = 65537;
  for (const [n, factor] of DISRUPTION_BOUND) {
    const set = backends(n);
    const before = buildMaglevTable(set, m);
    const removeBound = factor / n;
    const addBound = factor / (n + 1);
    const victims = [0, Math.floor(n / 3), Math.floor(n / 2), n - 1];
    let sumRemove = 0;
    let worstRemove = 0;
    for (const victim of victims) {
      // Remove one: its ~M/N slots must move; ideally nothing else does.
      const after = buildMaglevTable(
        set.filter((_, i) => i !== victim),
        m,
      );
      const r = moved(before, after);
      // Slots that moved although the removed backend did not own them.
      let collateral = 0;
      for (let s = 0; s < m; s++) if (before[s] !== victim && before[s] !== after[s]) collateral++;
      assert.ok(!after.includes(victim));
      assert.ok(r <= removeBound, `N=${n} remove #${victim}: moved ${pct(r)}, bound ${pct(removeBound)}`);
      t.diagnostic(`N=${n} remove #${victim}: moved ${pct(r)} of slots (ideal ${pct(1 / n)}), of which collateral ${pct(collateral / m)}`);
      sumRemove += r;
      worstRemove = Math.max(worstRemove, r);
    }
    let sumAdd = 0;
    let worstAdd = 0;
    for (let k = 0; k < 4; k++) {
      // Add one (N -> N+1): ideally only the newcomer's ~M/(N+1) slots move.
      const grown = [...set, { id: n + k, key: `192.0.2.${k}:8080`, weight: 1 }];
      const a = moved(before, buildMaglevTable(grown, m));
      assert.ok(a <= addBound, `N=${n} add: moved ${pct(a)}, bound ${pct(addBound)}`);
      sumAdd += a;
      worstAdd = Math.max(worstAdd, a);
    }
    t.diagnostic(
      `N=${n} M=${m}: remove one moves mean ${pct(sumRemove / victims.length)} worst ${pct(worstRemove)} ` +
        `(ideal ${pct(1 / n)}, ${((sumRemove / victims.length) * n).toFixed(2)}x); ` +
        `add one moves mean ${pct(sumAdd / 4)} worst ${pct(worstAdd)} (ideal ${pct(1 / (n + 1))}, ${((sumAdd / 4) * (n + 1)).toFixed(2)}x)`,
    );
  }
});

test('disruption with weights: changing one weight moves about its share change', (t) => {
  const m = 65537;
  const set = backends(20).map((b, i) => ({ ...b, weight: 1 + (i % 4) }));
  const total = set.reduce((a, b) => a + b.weight, 0);
  const before = buildMaglevTable(set, m);
  // Halve one weight-4 backend (id 3): its share drops by 2/total of M, and the
  // other weights' shares change too, since the total changes.
  const after = buildMaglevTable(
    set.map((b) => (b.id === 3 ? { ...b, weight: 2 } : b)),
    m,
  );
  const r = moved(before, after);
  const ideal = 2 / total;
  t.diagnostic(`20 weighted backends, one weight 4 -> 2: moved ${pct(r)} (share change ${pct(ideal)})`);
  assert.ok(r <= ideal * 3, `moved ${pct(r)} vs ideal ${pct(ideal)}`);
  // Removing a weighted backend.
  const removed = buildMaglevTable(
    set.filter((b) => b.id !== 3),
    m,
  );
  const rr = moved(before, removed);
  t.diagnostic(`20 weighted backends, remove one of weight 4: moved ${pct(rr)} (its share ${pct(4 / total)})`);
  assert.ok(rr <= (4 / total) * 1.5);
});

test('a 1000-backend build at M = 65537 completes and covers every slot', () => {
  const table = buildMaglevTable(backends(1000), DEFAULT_MAGLEV_M);
  assert.equal(table.length, DEFAULT_MAGLEV_M);
  assert.ok(!table.includes(FERRY_BACKEND_NONE));
  assert.equal(countSlots(table).size, 1000);
  // Large ids (u32 above 2^31) survive into the table unchanged.
  const big = buildMaglevTable(
    [
      { id: 0xfffffffe, key: 'x', weight: 1 },
      { id: 0x80000000, key: 'y', weight: 1 },
    ],
    251,
  );
  assert.deepEqual([...countSlots(big).keys()].sort(), [0x80000000, 0xfffffffe]);
});

test('diffTables counts differing slots and refuses mismatched sizes', () => {
  assert.equal(diffTables(Uint32Array.of(1, 2, 3), Uint32Array.of(1, 5, 3)), 1);
  assert.equal(diffTables(new Uint32Array(0), new Uint32Array(0)), 0);
  assert.throws(() => diffTables(new Uint32Array(3), new Uint32Array(4)), RangeError);
});

test("planShares: one VIP's table as slots per backend, the same table the datapath gets", () => {
  const backends = [
    { id: 7, gen: 1, address: '10.0.0.1', weight: 100, state: 'active' as const },
    { id: 8, gen: 1, address: '10.0.0.2', weight: 300, state: 'active' as const },
    { id: 9, gen: 1, address: '10.0.0.3', weight: 100, state: 'draining' as const },
  ];
  const plan: DpState = {
    vips: [
      {
        id: 1,
        name: 'web',
        address: '198.51.100.1',
        port: 80,
        protocol: 'tcp',
        flags: 0,
        m: 1021,
        rlIntervalNs: 0n,
        rlToleranceNs: 0n,
        allow: [],
        deny: [],
        backends,
      },
    ],
    tombstones: [],
  };
  const shares = planShares(plan, 42, 'web')!;
  assert.equal(shares.m, 1021);
  assert.equal(shares.hash_seed, 42);
  const table = countSlots(
    buildMaglevTable(
      [
        { id: 7, key: '10.0.0.1', weight: 100 },
        { id: 8, key: '10.0.0.2', weight: 300 },
      ],
      1021,
      42,
    ),
  );
  assert.deepEqual(shares.backends, [
    { address: '10.0.0.1', slots: table.get(7) },
    { address: '10.0.0.2', slots: table.get(8) },
    { address: '10.0.0.3', slots: 0 },
  ]);
  assert.equal(
    shares.backends.reduce((n, b) => n + b.slots, 0),
    1021,
  );
  assert.ok(Math.abs(shares.backends[1]!.slots / 1021 - 0.75) < 0.02, 'weight 300 of 400: about three quarters');
  assert.equal(planShares(plan, 42, 'nope'), null);
});
