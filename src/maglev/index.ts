/**
 * Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
 * Software Network Load Balancer", NSDI 2016), with exact weights.
 *
 * The table built here is what the datapath indexes with a flow hash: slot
 * i holds the backend id that new flows hashing to i go to. Its two jobs:
 * spread flows in proportion to backend weights, and when the backend set
 * changes, move as few slots as possible (each moved slot breaks the flows
 * not yet pinned by conntrack on another Ferry node).
 *
 * Algorithm (paper section 3.4): each backend gets a permutation of the M
 * slots, derived from its key alone:
 *   offset = h1(key) mod M,  skip = h2(key) mod (M - 1) + 1,
 *   permutation[j] = (offset + j * skip) mod M.
 * M prime makes every skip in 1..M-1 coprime to M, so each permutation is a
 * full cycle and always reaches an empty slot. Backends then take turns
 * claiming their next preferred slot that is still empty, until the table
 * is full.
 *
 * Weights, in two steps:
 *  1. Quotas. Each backend's slot count is fixed up front by largest-
 *     remainder apportionment of M over the weights: floor(M * w / sum(w)),
 *     plus one for the backends with the largest remainders until the
 *     counts sum to M. Every count is thus the floor or the ceiling of its
 *     exact share M * w / sum(w): truly proportional, within one slot.
 *  2. Turn order. Backends take turns as in the paper, but a turn is paid
 *     for with credit: each round a backend earns `w * N` and each claimed
 *     slot costs `sum(w)` (N = backends with weight > 0), so a backend
 *     claims about N * w / sum(w) slots per round (heavy ones several in a
 *     row, light ones one every few rounds) and stops at its quota. A round
 *     hands out about N claims whatever the weights, so a 65535:1 ratio
 *     costs no more than 1:1; finished backends leave the round.
 * The quota step is what makes weights exact. Turn-taking alone is not:
 * each light backend's count is rounded at the moment the table happens to
 * fill, and those rounding errors pile up on whoever claims early in a
 * round (with one backend of weight 65535 and 999 of weight 1, whose
 * shares are 0.985 slots each, the heavy one would take all 65537 slots). Schemes that give heavy backends "more turns"
 * against a threshold of the maximum weight have the same defect, or walk
 * 65535 empty rounds per slot for a light backend.
 * With equal weights every backend claims exactly one slot per round and
 * the first M mod N backends get the extra slot: the paper's algorithm
 * unchanged (a test checks this against a literal implementation).
 *
 * Determinism: backends are sorted by key (then id) with plain code-unit
 * string comparison (never localeCompare, which depends on the host's ICU
 * locale), and hashed with MurmurHash3_x86_32 of the key's UTF-8 bytes, so
 * the same (backends, M, seed) yields the same table on every host.
 */

import { createHash } from 'node:crypto';
import { deriveSeeds, fillTable, permutationOf, type MaglevPermutation } from './fill.js';
import { defaultPool, type FillJob, type MaglevPool } from './pool.js';
import { FERRY_BACKEND_NONE } from '../datapath/abi.js';
import { hasSlots, type DpState } from '../model/dpstate.js';
import type { MaglevSharesView, MaglevTablesView } from '../model/maglev.js';

export { fmix32, murmur3, murmur3Bytes } from './hash.js';
export type { MaglevPermutation } from './fill.js';

export { FERRY_BACKEND_NONE };

/** Largest accepted weight; 16 bits is ample resolution for operators. */
export const MAGLEV_MAX_WEIGHT = 65535;

/** Largest accepted table size (the table is M u32s; positions stay small ints). */
export const MAGLEV_MAX_M = 1 << 24;

/** Selectable table sizes, all prime. 65537 is the paper's default. */
export const MAGLEV_PRIMES: readonly number[] = Object.freeze([251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071]);

/** The table size configs use unless told otherwise. */
export const DEFAULT_MAGLEV_M = 65537;

/** chooseMaglevM never goes below this: weights need slots to resolve. */
export const MAGLEV_MIN_AUTO_M = 1021;

/** The paper's rule of thumb: M at least 100 x N keeps shares within ~1%. */
export const MAGLEV_SLOTS_PER_BACKEND = 100;

export interface MaglevBackend {
  /** Datapath backend id (u32, index into ferry_backends); not 0xffffffff. */
  id: number;
  /** Stable identity (e.g. "10.0.0.1:80") that alone determines the permutation. */
  key: string;
  /** Integer 0..MAGLEV_MAX_WEIGHT; 0 = no slots (no new flows). */
  weight: number;
}

/**
 * Deterministic primality test by trial division over 6k +/- 1. Exact for
 * every safe integer; fast for table sizes (sqrt(2^24) = 4096 steps).
 */
export function isPrime(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 2) return false;
  if (n < 4) return true;
  if (n % 2 === 0 || n % 3 === 0) return false;
  for (let d = 5; d * d <= n; d += 6) {
    if (n % d === 0 || n % (d + 2) === 0) return false;
  }
  return true;
}

/**
 * Table size for a VIP with `backendCount` backends: the smallest listed
 * prime >= 100 x backendCount and >= MAGLEV_MIN_AUTO_M; the largest listed
 * prime when none is big enough (shares then drift beyond ~1%).
 */
export function chooseMaglevM(backendCount: number): number {
  if (!Number.isSafeInteger(backendCount) || backendCount < 0) {
    throw new RangeError(`maglev: backend count must be a non-negative integer, got ${String(backendCount)}`);
  }
  const want = Math.max(MAGLEV_MIN_AUTO_M, backendCount * MAGLEV_SLOTS_PER_BACKEND);
  for (const p of MAGLEV_PRIMES) if (p >= want) return p;
  return MAGLEV_PRIMES[MAGLEV_PRIMES.length - 1] ?? DEFAULT_MAGLEV_M;
}

/** Throws a RangeError unless m is a prime in 2..MAGLEV_MAX_M. */
export function validateMaglevM(m: number): void {
  if (!isPrime(m) || m > MAGLEV_MAX_M) {
    throw new RangeError(`maglev: table size M must be a prime <= ${MAGLEV_MAX_M} (e.g. ${DEFAULT_MAGLEV_M}), got ${String(m)}`);
  }
}

/**
 * Checks every backend and the set as a whole; throws on the first problem
 * with a message naming the offending backend. Zero-weight backends are
 * checked too: a duplicate is a config error whatever its weight.
 */
function validateBackends(backends: readonly MaglevBackend[]): void {
  const keys = new Set<string>();
  const ids = new Set<number>();
  for (const [i, b] of backends.entries()) {
    const where = `maglev: backend #${i}`;
    if (typeof b.key !== 'string' || b.key.length === 0) {
      throw new TypeError(`${where}: key must be a non-empty string`);
    }
    if (!Number.isInteger(b.id) || b.id < 0 || b.id >= FERRY_BACKEND_NONE) {
      throw new RangeError(`${where} (${b.key}): id must be an integer 0..${FERRY_BACKEND_NONE - 1}, got ${String(b.id)}`);
    }
    if (!Number.isInteger(b.weight) || b.weight < 0 || b.weight > MAGLEV_MAX_WEIGHT) {
      throw new RangeError(`${where} (${b.key}): weight must be an integer 0..${MAGLEV_MAX_WEIGHT}, got ${String(b.weight)}`);
    }
    if (keys.has(b.key)) throw new Error(`maglev: duplicate backend key ${JSON.stringify(b.key)}`);
    if (ids.has(b.id)) throw new Error(`maglev: duplicate backend id ${b.id} (key ${JSON.stringify(b.key)})`);
    keys.add(b.key);
    ids.add(b.id);
  }
}

/** Code-unit order: the same on every host, unlike localeCompare. */
function compareBackends(a: MaglevBackend, b: MaglevBackend): number {
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  return a.id - b.id;
}

/**
 * The permutation parameters of one key (paper section 3.4). Exported for
 * debugging and for the test that checks the fill against the paper.
 */
export function maglevPermutation(key: string, m: number, seed = 0): MaglevPermutation {
  validateMaglevM(m);
  validateSeed(seed);
  return permutationOf(key, m, deriveSeeds(seed));
}

function validateSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`maglev: seed must be an integer 0..${0xffffffff}, got ${String(seed)}`);
  }
}

/**
 * Builds a Maglev lookup table of `m` slots. Each slot holds a backend id,
 * or FERRY_BACKEND_NONE in every slot when no backend has a weight > 0.
 *
 * @param backends any order; keys and ids must be unique.
 * @param m table size, prime (see MAGLEV_PRIMES).
 * @param seed u32 mixed into both hashes (default 0); one seed per cluster
 *   keeps tables identical across Ferry nodes.
 */
export function buildMaglevTable(backends: readonly MaglevBackend[], m: number, seed = 0): Uint32Array {
  const job = fillJob(backends, m, seed);
  const table = new Uint32Array(m);
  if (job === null) return table.fill(FERRY_BACKEND_NONE);
  fillTable(table, 0, job.active, job.ids, m, seed);
  return table;
}

/** One table to build: buildMaglevTable's arguments. */
export interface MaglevInput {
  backends: readonly MaglevBackend[];
  m: number;
  seed: number;
}

/**
 * Many tables at once, each equal to buildMaglevTable's: shared with the
 * pool's worker thread when there is enough work to share (see pool.ts).
 * Throws what buildMaglevTable would, before anything is built.
 */
export function buildMaglevTables(inputs: readonly MaglevInput[], pool: MaglevPool = defaultPool()): Uint32Array[] {
  return startMaglevTables(inputs, pool)();
}

/**
 * buildMaglevTables started now and collected later (call the result):
 * the pool's worker fills meanwhile. Throws at once what
 * buildMaglevTable would.
 */
export function startMaglevTables(inputs: readonly MaglevInput[], pool: MaglevPool = defaultPool()): () => Uint32Array[] {
  const jobs = inputs.map((x) => fillJob(x.backends, x.m, x.seed));
  const pending = pool.start(jobs.filter((j): j is FillJob => j !== null));
  return () => {
    const filled = pending.tables();
    let k = 0;
    return jobs.map((j, i) => (j === null ? new Uint32Array(inputs[i]!.m).fill(FERRY_BACKEND_NONE) : filled[k++]!));
  };
}

/** Checks a table's inputs; its backends with slots, sorted, or null when none has a weight. */
function fillJob(backends: readonly MaglevBackend[], m: number, seed: number): FillJob | null {
  validateMaglevM(m);
  validateSeed(seed);
  validateBackends(backends);
  const active = backends.filter((b) => b.weight > 0).sort(compareBackends);
  if (active.length === 0) return null;
  return { active, ids: active.map((b) => b.id), m, seed };
}

/** Number of slots in which two tables of the same size differ. */
export function diffTables(a: Uint32Array, b: Uint32Array): number {
  if (a.length !== b.length) {
    throw new RangeError(`maglev: cannot diff tables of different sizes (${a.length} vs ${b.length})`);
  }
  let d = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) d++;
  return d;
}

/** Slots owned by each backend id (FERRY_BACKEND_NONE counted too, if present). */
export function countSlots(table: Uint32Array): Map<number, number> {
  const counts = new Map<number, number>();
  for (const id of table) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/**
 * A checksum of a Maglev table that hosts can compare: it covers what the
 * table is computed from (M, the seed, and each backend with a slot by its
 * key and weight), not the host's own datapath ids. Two hosts of the same
 * Ferry version with equal checksums hold the same table: a flow gets the
 * same backend on either.
 */
export function tableChecksum(m: number, seed: number, backends: ReadonlyArray<{ key: string; weight: number }>): string {
  const parts = backends
    .filter((b) => b.weight > 0)
    .map((b) => `${b.key}*${b.weight}`)
    .sort();
  return createHash('sha256')
    .update(`${m}/${seed >>> 0}/${parts.join(',')}`)
    .digest('hex')
    .slice(0, 16);
}

/** One VIP's table from a plan, as slots per backend (GET /v1/maglev/{name}); null when the plan has no such VIP. */
export function planShares(plan: DpState | undefined, seed: number, name: string): MaglevSharesView | null {
  const v = plan?.vips.find((x) => x.name === name);
  if (v === undefined) return null;
  const slotted = v.backends.filter(hasSlots).map((b) => ({ id: b.id, key: b.address, weight: b.weight }));
  const counts = countSlots(buildMaglevTable(slotted, v.m, seed));
  return {
    name: v.name,
    m: v.m,
    hash_seed: seed,
    backends: v.backends.map((b) => ({ address: b.address, slots: hasSlots(b) ? (counts.get(b.id) ?? 0) : 0 })),
  };
}

/** Every VIP of a plan with its table's checksum, by name (GET /v1/maglev, the fleet's member records). */
export function planChecksums(plan: DpState | undefined, seed: number): MaglevTablesView['vips'] {
  return (plan?.vips ?? [])
    .map((v) => {
      const slotted = v.backends.filter(hasSlots).map((b) => ({ key: b.address, weight: b.weight }));
      return {
        name: v.name,
        address: v.address,
        port: v.port,
        protocol: v.protocol,
        m: v.m,
        backends: slotted.length,
        checksum: tableChecksum(v.m, seed, slotted),
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
