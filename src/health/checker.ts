/**
 * The health checker: runs every target's check on its interval with
 * bounded parallelism, counts results (state.ts) and reports status changes.
 *
 * Event-loop budget: a check is a socket and a timer, nothing synchronous
 * beyond setting them up. At most `maxInFlight` checks run at once; due
 * checks beyond that wait in due order (a backlog delays checks, it never
 * piles up work). New targets start at a random point of their interval, so
 * thousands of backends added at once (or a daemon start) spread evenly
 * instead of firing together; later checks run an interval after the start
 * of the previous one, with ±5 % jitter so they do not drift into step.
 */
import type { BackendHealth, HealthStatus } from '../model/health.js';
import { DueHeap } from './due-heap.js';
import { runProbe, type ProbeFn, type ProbeResult } from './probe.js';
import { initialHealth, recordResult, resetStreaks, type CheckedStatus, type TargetHealth } from './state.js';
import { targetKey, type Target } from './targets.js';

export const DEFAULT_MAX_IN_FLIGHT = 64;
const JITTER = 0.05;

export interface Transition {
  vip: string;
  backend: string;
  from: HealthStatus;
  to: HealthStatus;
  reason: string;
  /** ms since the epoch. */
  at: number;
}

export interface CheckerOptions {
  /** Checks running at once (default 64). */
  maxInFlight?: number;
  /** Runs one check; tests and the benchmark may wrap the real one. */
  probe?: ProbeFn;
  onTransition?: (t: Transition) => void;
  /** Told of every finished check (metrics). */
  onResult?: (target: Target, result: ProbeResult) => void;
  now?: () => number;
  random?: () => number;
}

/** A target that left the checker, with the status it had. */
export interface Removed {
  key: string;
  vip: string;
  backend: string;
  status: CheckedStatus;
}

interface Entry {
  target: Target;
  health: TargetHealth;
  /** The heap item that is current for this entry. */
  seq: number;
  /** Bumped when the check's settings change: a result of an older epoch is not counted. */
  epoch: number;
  running: AbortController | null;
}

export interface CheckerStats {
  targets: number;
  inFlight: number;
  /** Checks finished since start. */
  checks: number;
  failures: number;
}

export class HealthChecker {
  private readonly entries = new Map<string, Entry>();
  private readonly heap = new DueHeap();
  private readonly pending = new Set<Promise<void>>();
  private readonly maxInFlight: number;
  private readonly probe: ProbeFn;
  private readonly now: () => number;
  private readonly random: () => number;
  private timer: NodeJS.Timeout | null = null;
  private timerDue = Infinity;
  private running = false;
  private inFlight = 0;
  private seq = 0;
  private checks = 0;
  private failures = 0;
  /** Per VIP: a fresh number whenever a verdict of one of its backends may have changed (vipEpoch). */
  private readonly epochs = new Map<string, number>();
  private epochSeq = 0;
  /** The VIPs of the latest bumps, in order: bump number logStart + i + 1 is log[i] (changedSince). */
  private log: string[] = [];
  private logStart = 0;

  constructor(private readonly opts: CheckerOptions = {}) {
    this.maxInFlight = opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!Number.isInteger(this.maxInFlight) || this.maxInFlight < 1) throw new RangeError('maxInFlight must be a positive integer');
    this.probe = opts.probe ?? runProbe;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  /**
   * Makes the targets exactly these. New ones start 'unknown' at a random
   * point of their interval; changed ones keep their status but start
   * counting afresh; the removed ones are returned.
   */
  setTargets(targets: readonly Target[]): Removed[] {
    const next = new Map(targets.map((t) => [t.key, t]));
    const removed: Removed[] = [];
    for (const [key, e] of this.entries) {
      if (next.has(key)) continue;
      e.running?.abort();
      this.entries.delete(key);
      this.bump(e.target.vip);
      removed.push({ key, vip: e.target.vip, backend: e.target.address, status: e.health.status });
    }
    const now = this.now();
    for (const t of targets) {
      const e = this.entries.get(t.key);
      if (e === undefined) {
        const entry: Entry = { target: t, health: initialHealth(now), seq: 0, epoch: 0, running: null };
        this.entries.set(t.key, entry);
        this.bump(t.vip);
        this.schedule(entry, now + this.random() * t.intervalMs);
      } else if (e.target.fingerprint !== t.fingerprint) {
        e.target = t;
        e.epoch += 1;
        resetStreaks(e.health);
        if (e.running === null) this.schedule(e, now + this.random() * t.intervalMs);
      } else {
        e.target = t;
      }
    }
    const vips = new Set(targets.map((t) => t.vip));
    for (const vip of this.epochs.keys()) if (!vips.has(vip)) this.epochs.delete(vip);
    this.arm();
    return removed;
  }

  start(): void {
    this.running = true;
    this.pump();
  }

  /** Stops checking; resolves once every running check has let go of its socket. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const e of this.entries.values()) e.running?.abort();
    await Promise.allSettled([...this.pending]);
  }

  /**
   * A number that changes whenever a verdict of one of the VIP's backends
   * may have changed (a check added or removed, a status changed), so the
   * planner can keep the VIP's plan without asking about every backend.
   */
  vipEpoch(vip: string): number {
    return this.epochs.get(vip) ?? 0;
  }

  /**
   * The VIPs whose verdicts may have changed since bump number `since`
   * (0: since the start), and the number to ask with next time; null when
   * so much has changed that the log no longer reaches back (then any may have).
   */
  changedSince(since: number): { seq: number; vips: Set<string> | null } {
    if (since < this.logStart) return { seq: this.epochSeq, vips: null };
    return { seq: this.epochSeq, vips: new Set(this.log.slice(since - this.logStart)) };
  }

  /** A number never handed out before, so a forgotten VIP's epoch never comes back. */
  private bump(vip: string): void {
    this.epochs.set(vip, ++this.epochSeq);
    this.log.push(vip);
    if (this.log.length > 8192) {
      this.log = this.log.slice(4096);
      this.logStart += 4096;
    }
  }

  /** The planner's view: 'down' only when checks said so; undefined (in service) otherwise. */
  verdict(vip: string, address: string): 'up' | 'down' | undefined {
    const status = this.entries.get(targetKey(vip, address))?.health.status;
    return status === 'down' ? 'down' : status === 'up' ? 'up' : undefined;
  }

  /** The API's view of one backend; undefined when it has no check. */
  health(vip: string, address: string): BackendHealth | undefined {
    const e = this.entries.get(targetKey(vip, address));
    return e === undefined ? undefined : toBackendHealth(e.health);
  }

  /** Every checked backend with its status. */
  list(): Array<{ vip: string; backend: string; status: CheckedStatus }> {
    return [...this.entries.values()].map((e) => ({ vip: e.target.vip, backend: e.target.address, status: e.health.status }));
  }

  get stats(): CheckerStats {
    return { targets: this.entries.size, inFlight: this.inFlight, checks: this.checks, failures: this.failures };
  }

  // ------------------------------------------------------------ scheduling

  private schedule(e: Entry, due: number): void {
    this.seq += 1;
    e.seq = this.seq;
    this.heap.push({ due, key: e.target.key, seq: e.seq });
  }

  /** Starts every due check there is room for, then sets the timer for the next. */
  private pump(): void {
    if (!this.running) return;
    const now = this.now();
    while (this.inFlight < this.maxInFlight) {
      const top = this.heap.peek();
      if (top === undefined || top.due > now) break;
      this.heap.pop();
      const e = this.entries.get(top.key);
      if (e === undefined || e.seq !== top.seq || e.running !== null) continue;
      this.launch(e);
    }
    this.arm();
  }

  /** One timer for the earliest due check; none while every slot is busy (a finishing check pumps). */
  private arm(): void {
    if (!this.running) return;
    const top = this.heap.peek();
    if (top === undefined || this.inFlight >= this.maxInFlight) return;
    if (this.timer !== null && this.timerDue <= top.due) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerDue = top.due;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.timerDue = Infinity;
        this.pump();
      },
      Math.max(0, top.due - this.now()),
    );
    // The daemon's listeners keep the process alive; a forgotten checker must not.
    this.timer.unref();
  }

  private launch(e: Entry): void {
    const ac = new AbortController();
    const epoch = e.epoch;
    const started = this.now();
    e.running = ac;
    this.inFlight += 1;
    const p = this.probe(e.target.probe, ac.signal)
      .catch((err: unknown): ProbeResult => ({ ok: false, error: String(err), durationMs: this.now() - started }))
      .then((r) => this.complete(e, ac, epoch, started, r));
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private complete(e: Entry, ac: AbortController, epoch: number, started: number, r: ProbeResult): void {
    this.inFlight -= 1;
    if (e.running === ac) e.running = null;
    const current = this.entries.get(e.target.key) === e;
    if (!this.running || !current || ac.signal.aborted) return this.pump();
    this.checks += 1;
    if (!r.ok) this.failures += 1;
    this.opts.onResult?.(e.target, r);
    const now = this.now();
    if (epoch !== e.epoch) {
      // The settings changed while it ran: its result says nothing of the new check.
      this.schedule(e, now + this.random() * e.target.intervalMs);
      return this.pump();
    }
    const before = e.health.status;
    const change = recordResult(e.health, r.ok, r.error, r.durationMs, now, e.target.rise, e.target.fall);
    if (e.health.status !== before) this.bump(e.target.vip);
    if (change !== null) {
      this.opts.onTransition?.({ vip: e.target.vip, backend: e.target.address, ...change, at: now });
    }
    const interval = e.target.intervalMs;
    const jitter = (this.random() * 2 - 1) * JITTER * interval;
    this.schedule(e, Math.max(now, started + interval + jitter));
    this.pump();
  }
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export function toBackendHealth(h: TargetHealth): BackendHealth {
  return {
    status: h.status,
    since: iso(h.since),
    last_check: iso(h.lastCheck),
    last_error: h.lastError,
    last_duration_ms: h.lastDurationMs === null ? null : Math.round(h.lastDurationMs * 100) / 100,
  };
}
