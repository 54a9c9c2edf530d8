/**
 * The Maglev fill (see index.ts for the algorithm and its weights): pure
 * arithmetic over typed arrays, free of the rest of Ferry, so the caller
 * and the table worker (pool.ts, worker.ts) run the same code.
 */
import { fmix32, murmur3Bytes } from './hash.js';

/** A backend as the fill sees it: its key decides its permutation, its weight its share. */
export interface FillBackend {
  key: string;
  weight: number;
}

/** A backend's permutation: slots offset, offset + skip, ... (mod M). */
export interface MaglevPermutation {
  offset: number;
  skip: number;
}

/** The two hash seeds of a table. */
export interface Seeds {
  offsetSeed: number;
  skipSeed: number;
}

/**
 * Fills `out[at .. at + m)` with the table of `active` (sorted by key, every
 * weight > 0, at least one): each slot holds the id of its owner, `ids[i]`
 * being the id of `active[i]`.
 */
export function fillTable(
  out: Uint32Array,
  at: number,
  active: readonly FillBackend[],
  ids: ArrayLike<number>,
  m: number,
  seed: number,
): void {
  const owner = fillSlots(active, m, deriveSeeds(seed));
  for (let s = 0; s < m; s++) out[at + s] = ids[owner[s] as number] as number;
}

/**
 * The two per-table hash seeds, derived from the user seed. fmix32 is a
 * bijection and the two inputs always differ, so h1 and h2 never share a
 * seed: offset and skip are independent functions of the key.
 */
export function deriveSeeds(seed: number): Seeds {
  return {
    offsetSeed: fmix32((seed ^ 0x6f666673) >>> 0), // "offs"
    skipSeed: fmix32((seed ^ 0x736b6970) >>> 0), // "skip"
  };
}

/** Both hashes of a permutation read the same bytes: the key is encoded once (murmur3 would encode it per hash). */
const utf8 = new TextEncoder();

export function permutationOf(key: string, m: number, seeds: Seeds): MaglevPermutation {
  const bytes = utf8.encode(key);
  return {
    offset: murmur3Bytes(bytes, seeds.offsetSeed) % m,
    skip: (murmur3Bytes(bytes, seeds.skipSeed) % (m - 1)) + 1,
  };
}

/**
 * Slots per backend by largest-remainder (Hamilton) apportionment: each
 * gets floor(M * w / W) and the M - sum(floors) leftover slots go to the
 * largest remainders, ties to the earlier backend in sorted order (which
 * is also who gets the extra slot in the paper's unweighted fill).
 *
 * Integer arithmetic throughout: M * w < 2^40 and W < 2^33, but a double
 * quotient near an integer can round up across it, so floors are checked.
 */
function apportion(active: readonly FillBackend[], m: number): Int32Array {
  const n = active.length;
  let total = 0;
  for (const b of active) total += b.weight;
  const quota = new Int32Array(n);
  const remainder = new Float64Array(n);
  let given = 0;
  for (let i = 0; i < n; i++) {
    const share = m * (active[i] as FillBackend).weight;
    let q = Math.floor(share / total);
    if (q * total > share) q--; // quotient rounded up across an integer
    quota[i] = q;
    remainder[i] = share - q * total;
    given += q;
  }
  const byRemainder = Array.from({ length: n }, (_, i) => i).sort((a, b) => (remainder[b] as number) - (remainder[a] as number) || a - b);
  // Fewer than n leftover slots remain, since each floor loses under one.
  for (let k = 0; given < m; k++, given++) {
    const i = byRemainder[k] as number;
    quota[i] = (quota[i] as number) + 1;
  }
  return quota;
}

/**
 * The Maglev fill over sorted, positive-weight backends. Returns, per slot,
 * the index into `active` of the slot's owner.
 *
 * Everything here lives in typed arrays and small integers: the loop runs
 * about M ln M probe steps (~730k at M = 65537), so it must not allocate or
 * leave V8's small-integer fast path. Owners are stored as Int32 (-1 =
 * empty) rather than as u32 ids, because u32 values >= 2^31 would be read
 * back as doubles.
 */
function fillSlots(active: readonly FillBackend[], m: number, seeds: Seeds): Int32Array {
  const n = active.length;
  const left = apportion(active, m); // slots each backend still has to claim
  const pos = new Int32Array(n); // next permutation entry to try, as a slot
  const skip = new Int32Array(n);
  const earn = new Float64Array(n); // credit per round: weight * n (< 2^32)
  const credit = new Float64Array(n);
  const order = new Int32Array(n); // backends still claiming, in turn order
  let price = 0; // credit per claimed slot: sum of weights
  let live = 0;

  for (let i = 0; i < n; i++) {
    const b = active[i] as FillBackend;
    // Walking pos = (pos + skip) mod M visits (offset + j * skip) mod M in
    // order without ever forming the product j * skip (which can exceed
    // 2^31 and 2^53 for large M).
    const perm = permutationOf(b.key, m, seeds);
    pos[i] = perm.offset;
    skip[i] = perm.skip;
    earn[i] = b.weight * n;
    price += b.weight;
    if ((left[i] as number) > 0) order[live++] = i;
  }
  // Start every backend half a slot in credit: a light backend's claims then
  // fall mid-way through its share of rounds rather than at the end.
  credit.fill(price / 2);

  const owner = new Int32Array(m).fill(-1);
  // The quotas sum to M, so the table is full exactly when every backend
  // has claimed its quota and left the round.
  while (live > 0) {
    let kept = 0;
    for (let k = 0; k < live; k++) {
      const i = order[k] as number;
      let c = (credit[i] as number) + (earn[i] as number);
      let want = left[i] as number;
      const step = skip[i] as number;
      while (c >= price && want > 0) {
        c -= price;
        want--;
        // Next preferred slot that nobody has claimed yet. The permutation
        // is a full cycle (M prime), so this ends while any slot is empty.
        let p = pos[i] as number;
        while ((owner[p] as number) >= 0) {
          p += step;
          if (p >= m) p -= m;
        }
        owner[p] = i;
        p += step;
        if (p >= m) p -= m;
        pos[i] = p;
      }
      credit[i] = c;
      left[i] = want;
      // Stable compaction: finished backends drop out, turn order is kept.
      if (want > 0) order[kept++] = i;
    }
    live = kept;
  }
  return owner;
}
