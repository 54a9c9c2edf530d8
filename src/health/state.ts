/**
 * Rise/fall counting for one backend: the only place that decides its
 * health. Consecutive results, not a sliding window: a backend goes down
 * after `fall` failures in a row and comes back after `rise` passes in a
 * row, so one that alternates (a flapping server) keeps whatever state it
 * had instead of flipping with every check.
 *
 * The first state is 'unknown', treated as up by the planner: a daemon
 * restart (or a newly added backend) never takes a backend out of its
 * table before `fall` checks have failed. The first pass confirms it as up
 * at once (it is serving already, so nothing changes); getting back from
 * down always takes `rise` passes.
 */
import type { HealthStatus } from '../model/health.js';

export type CheckedStatus = Exclude<HealthStatus, 'unchecked'>;

export interface TargetHealth {
  status: CheckedStatus;
  /** When the status was entered, ms since the epoch. */
  since: number;
  /** Consecutive passes (0 after a failure). */
  passes: number;
  /** Consecutive failures (0 after a pass). */
  failures: number;
  lastCheck: number | null;
  lastError: string | null;
  lastDurationMs: number | null;
}

export interface StatusChange {
  from: CheckedStatus;
  to: CheckedStatus;
  reason: string;
}

export function initialHealth(now: number): TargetHealth {
  return { status: 'unknown', since: now, passes: 0, failures: 0, lastCheck: null, lastError: null, lastDurationMs: null };
}

/** Forgets the streaks (the check changed: results of the old one say nothing of the new). */
export function resetStreaks(h: TargetHealth): void {
  h.passes = 0;
  h.failures = 0;
}

/** Counts one result; returns the status change it causes, if any. */
export function recordResult(
  h: TargetHealth,
  ok: boolean,
  error: string | null,
  durationMs: number,
  at: number,
  rise: number,
  fall: number,
): StatusChange | null {
  h.lastCheck = at;
  h.lastDurationMs = durationMs;
  h.lastError = ok ? null : (error ?? 'failed');
  if (ok) {
    h.passes += 1;
    h.failures = 0;
  } else {
    h.failures += 1;
    h.passes = 0;
  }
  const to = nextStatus(h, rise, fall);
  if (to === h.status) return null;
  const change: StatusChange = { from: h.status, to, reason: reasonFor(h, to) };
  h.status = to;
  h.since = at;
  return change;
}

function nextStatus(h: TargetHealth, rise: number, fall: number): CheckedStatus {
  if (h.status === 'down') return h.passes >= rise ? 'up' : 'down';
  if (h.failures >= fall) return 'down';
  return h.passes > 0 ? 'up' : h.status;
}

function reasonFor(h: TargetHealth, to: CheckedStatus): string {
  if (to === 'down') return `${h.failures} consecutive check${h.failures === 1 ? '' : 's'} failed: ${h.lastError ?? 'failed'}`;
  return `${h.passes} consecutive check${h.passes === 1 ? '' : 's'} passed`;
}
