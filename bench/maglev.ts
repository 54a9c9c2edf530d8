/**
 * Maglev table build time: how long the control plane takes to recompute a
 * VIP's table after a backend change. The paper reports 1.8 ms for 1,000
 * backends at M = 65537 in C++.
 *
 *   node dist/bench/maglev.js          human-readable table
 *   node dist/bench/maglev.js --json   {"maglev":[{"backends":100,"m":65537,"ms":...},...]}
 *
 * Each case is warmed up (so V8 has optimized the fill loop), then timed
 * RUNS times; the median is reported because a single GC pause would skew
 * a mean.
 */

import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';

import { DEFAULT_MAGLEV_M, buildMaglevTable, type MaglevBackend } from '../src/maglev/index.js';

const WARMUP = 5;
const RUNS = 20;

export interface MaglevBenchResult {
  backends: number;
  m: number;
  /** Whether backends had mixed weights (1..4) rather than all weight 1. */
  weighted: boolean;
  /** Median build time over RUNS runs, milliseconds. */
  ms: number;
  /** Fastest and slowest run, milliseconds. */
  minMs: number;
  maxMs: number;
}

interface BenchCase {
  backends: number;
  m: number;
  weighted: boolean;
}

const CASES: readonly BenchCase[] = [
  { backends: 100, m: DEFAULT_MAGLEV_M, weighted: false },
  { backends: 1000, m: DEFAULT_MAGLEV_M, weighted: false },
  { backends: 1000, m: DEFAULT_MAGLEV_M, weighted: true },
];

function makeBackends(n: number, weighted: boolean): MaglevBackend[] {
  return Array.from({ length: n }, (_, i) => ({
    id: i,
    key: `10.${(i >> 8) & 255}.${i & 255}.1:8080`,
    weight: weighted ? 1 + (i % 4) : 1,
  }));
}

function median(sorted: readonly number[]): number {
  const mid = sorted.length >> 1;
  const hi = sorted[mid] ?? 0;
  return sorted.length % 2 === 1 ? hi : ((sorted[mid - 1] ?? hi) + hi) / 2;
}

function runCase(c: BenchCase): MaglevBenchResult {
  const set = makeBackends(c.backends, c.weighted);
  let sink = 0; // keeps the tables observably used
  for (let i = 0; i < WARMUP; i++) sink ^= buildMaglevTable(set, c.m)[0] ?? 0;
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const table = buildMaglevTable(set, c.m);
    times.push(performance.now() - t0);
    sink ^= table[i] ?? 0;
  }
  if (sink === -1) console.log(sink); // never true; defeats dead-code elimination
  times.sort((a, b) => a - b);
  const round = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    ...c,
    ms: round(median(times)),
    minMs: round(times[0] ?? 0),
    maxMs: round(times[times.length - 1] ?? 0),
  };
}

/** Runs every case and returns the results. */
export function measureMaglev(): MaglevBenchResult[] {
  return CASES.map(runCase);
}

/** Runs every case, prints the results (table or JSON), and returns them. */
export async function benchMaglev(opts: { json: boolean }): Promise<MaglevBenchResult[]> {
  const results = measureMaglev();
  if (opts.json) {
    console.log(JSON.stringify({ maglev: results }));
  } else {
    console.log(`Maglev table build (median of ${RUNS} runs after ${WARMUP} warm-up)`);
    console.log('backends        M  weights   median ms   min ms   max ms');
    for (const r of results) {
      console.log(
        `${String(r.backends).padStart(8)} ${String(r.m).padStart(8)}  ${(r.weighted ? '1..4' : 'equal').padEnd(7)}` +
          ` ${r.ms.toFixed(3).padStart(11)} ${r.minMs.toFixed(3).padStart(8)} ${r.maxMs.toFixed(3).padStart(8)}`,
      );
    }
  }
  return results;
}

const argv1 = process.argv[1];
if (argv1 !== undefined && import.meta.url === pathToFileURL(argv1).href) {
  await benchMaglev({ json: process.argv.includes('--json') });
}
