/**
 * Maglev tables built on two cores. A Kubernetes burst changes thousands of
 * VIPs per transaction, and their fills were a tenth of its time, all on
 * one core while the other had room. A batch of fills goes to shared memory; the
 * caller and one worker thread take jobs from it in turn (an atomic
 * counter), so neither waits for the other to start and the caller never
 * waits longer than the last job the worker took.
 *
 * The worker only ever speeds things up: a job it fails (an exception) is
 * redone by the caller, which then throws buildMaglevTable's own error;
 * a worker that does not finish a job in time is stopped, never used again,
 * and its job redone. Tables are the same whoever filled them (fill.ts is
 * deterministic), so none of this changes a result.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { fillTable, type FillBackend } from './fill.js';

/** One table to fill: its backends with slots (sorted by key, weights > 0) and their ids. */
export interface FillJob {
  active: FillBackend[];
  ids: number[];
  m: number;
  seed: number;
}

/**
 * A batch as both sides see it: the jobs (the caller's own objects; the
 * worker's decoded from a WireBatch), where each table starts in the shared
 * `out`, and the shared `ctrl`: [0] the next job to take, [1 + j] job j's
 * state (PENDING, FAILED, BY_CALLER, BY_WORKER).
 */
export interface SharedBatch {
  jobs: FillJob[];
  at: number[];
  out: Uint32Array;
  ctrl: Int32Array;
}

/**
 * What the worker is sent. Numbers and one string: cloning a thousand small
 * objects cost a tenth of the fills it would share. `meta` holds per job
 * [m, seed, backends, start in out], then per backend [weight, id, end of
 * its key in `keys`].
 */
export interface WireBatch {
  keys: string;
  meta: Uint32Array;
  count: number;
  out: Uint32Array;
  ctrl: Int32Array;
}

function toWire(b: SharedBatch): WireBatch {
  const meta: number[] = [];
  const keys: string[] = [];
  let end = 0;
  b.jobs.forEach((job, j) => {
    meta.push(job.m, job.seed, job.active.length, b.at[j]!);
    job.active.forEach((a, i) => {
      end += a.key.length;
      keys.push(a.key);
      meta.push(a.weight, job.ids[i]!, end);
    });
  });
  return { keys: keys.join(''), meta: Uint32Array.from(meta), count: b.jobs.length, out: b.out, ctrl: b.ctrl };
}

/** The batch a worker received. */
export function fromWire(w: WireBatch): SharedBatch {
  const jobs: FillJob[] = [];
  const at: number[] = [];
  let k = 0;
  let start = 0;
  for (let j = 0; j < w.count; j++) {
    const [m, seed, n, from] = [w.meta[k]!, w.meta[k + 1]!, w.meta[k + 2]!, w.meta[k + 3]!];
    k += 4;
    const job: FillJob = { active: [], ids: [], m, seed };
    for (let i = 0; i < n; i++, k += 3) {
      const end = w.meta[k + 2]!;
      job.active.push({ key: w.keys.slice(start, end), weight: w.meta[k]! });
      job.ids.push(w.meta[k + 1]!);
      start = end;
    }
    jobs.push(job);
    at.push(from);
  }
  return { jobs, at, out: w.out, ctrl: w.ctrl };
}

const PENDING = 0;
const FAILED = 1;
const BY_CALLER = 2;
export const BY_WORKER = 3;

/** Takes jobs until none is left, marking them `done`. The worker and the caller both run this. */
export function workOn(b: SharedBatch, done = BY_CALLER): void {
  for (;;) {
    const j = Atomics.add(b.ctrl, 0, 1);
    if (j >= b.jobs.length) return;
    const job = b.jobs[j]!;
    let state = done;
    try {
      fillTable(b.out, b.at[j]!, job.active, job.ids, job.m, job.seed);
    } catch {
      state = FAILED;
    }
    Atomics.store(b.ctrl, 1 + j, state);
    Atomics.notify(b.ctrl, 1 + j);
  }
}

/** A started batch (MaglevPool.start). */
export interface PendingFill {
  /** The tables, in the jobs' order: fills the jobs no one has taken, waits for the worker's. */
  tables(): Uint32Array[];
}

export interface MaglevPoolOptions {
  /** Share a batch only from this many slots (a message costs about what 20,000 slots do). Default 16,384. */
  minSlots?: number;
  /** A worker job unfinished after this long stops the worker for good. Default 5,000 ms. */
  timeoutMs?: number;
  /** The worker's script (tests). Default worker.js beside this module. */
  workerUrl?: URL;
  /** Whether to use a worker at all. Default: when the host has more than one CPU. */
  parallel?: boolean;
}

export class MaglevPool {
  private worker: Worker | undefined;
  /** Why the worker is no longer used, once it failed to finish a job. */
  private stopped: string | undefined;
  private readonly minSlots: number;
  private readonly timeoutMs: number;
  private readonly workerUrl: URL;
  private readonly parallel: boolean;
  /** Jobs the worker filled (tests, diagnostics). */
  sharedJobs = 0;

  constructor(o: MaglevPoolOptions = {}) {
    this.minSlots = o.minSlots ?? 16_384;
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.workerUrl = o.workerUrl ?? new URL('./worker.js', import.meta.url);
    this.parallel = o.parallel ?? availableParallelism() > 1;
  }

  /** Why the worker was stopped, or undefined while it serves. */
  get stoppedReason(): string | undefined {
    return this.stopped;
  }

  /** The tables of `jobs`, in order (views into one shared buffer). */
  run(jobs: FillJob[]): Uint32Array[] {
    return this.start(jobs).tables();
  }

  /**
   * Hands `jobs` to the worker now and returns at once; the caller collects
   * the tables later, filling itself whatever the worker has not taken by
   * then. Batches started one after another are worked on in that order.
   */
  start(jobs: FillJob[]): PendingFill {
    const at: number[] = [];
    let total = 0;
    for (const j of jobs) {
      at.push(total);
      total += j.m;
    }
    const batch: SharedBatch = {
      jobs,
      at,
      out: new Uint32Array(new SharedArrayBuffer(total * 4)),
      ctrl: new Int32Array(new SharedArrayBuffer((1 + jobs.length) * 4)),
    };
    const worker = jobs.length > 1 && total >= this.minSlots ? this.ready() : undefined;
    worker?.postMessage(toWire(batch));
    let tables: Uint32Array[] | undefined;
    return {
      tables: () => {
        if (tables === undefined) {
          workOn(batch);
          tables = jobs.map((job, j) => this.result(batch, j, job));
        }
        return tables;
      },
    };
  }

  /** Stops the worker (it is also unref'd: it never keeps the process alive). */
  close(): void {
    void this.worker?.terminate();
    this.worker = undefined;
  }

  private ready(): Worker | undefined {
    if (!this.parallel || this.stopped !== undefined) return undefined;
    if (this.worker === undefined) {
      const w = new Worker(this.workerUrl);
      w.unref();
      // A worker that cannot run (its script failed) is not started again; jobs it took time out.
      w.on('error', (err) => {
        this.stopped ??= `the worker failed: ${err.message}`;
      });
      w.on('exit', () => {
        if (this.worker === w) this.worker = undefined;
      });
      this.worker = w;
    }
    return this.worker;
  }

  private result(b: SharedBatch, j: number, job: FillJob): Uint32Array {
    let state = Atomics.load(b.ctrl, 1 + j);
    while (state === PENDING) {
      if (Atomics.wait(b.ctrl, 1 + j, PENDING, this.timeoutMs) === 'timed-out') {
        this.stopped = `a table of ${job.m} slots took the worker over ${this.timeoutMs} ms`;
        this.close();
        state = FAILED;
        break;
      }
      state = Atomics.load(b.ctrl, 1 + j);
    }
    if (state === FAILED) {
      // Redone here: throws the fill's own error, or (a stopped worker) fills a table of the caller's own.
      const table = new Uint32Array(job.m);
      fillTable(table, 0, job.active, job.ids, job.m, job.seed);
      return table;
    }
    if (state === BY_WORKER) this.sharedJobs++;
    return b.out.subarray(b.at[j]!, b.at[j]! + job.m);
  }
}

let pool: MaglevPool | undefined;

/** The process's pool (one worker thread, started at the first batch worth sharing). */
export function defaultPool(): MaglevPool {
  pool ??= new MaglevPool();
  return pool;
}
