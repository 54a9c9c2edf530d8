/**
 * The daemon's side of health checking: keeps the checker's targets equal
 * to the store's backends, and turns status changes into what they mean:
 * a log line (child logger {vip, backend}), an event row in SQLite, and a
 * re-plan and re-apply of the datapath (the planner asks `verdict`), so a
 * down backend leaves its VIP's Maglev table and a recovered one returns.
 *
 * Health is runtime state: nothing of it but the events is stored; after a
 * restart every backend starts 'unknown' (in service) and checking rebuilds
 * it. The first pass of an unknown backend (unknown → up) changes nothing in
 * the datapath and is not an event: otherwise every restart would write one
 * event per backend and wash the history of real transitions out of the
 * bounded event table.
 */
import type { Logger } from 'pino';
import { UNCHECKED, type BackendHealth, type NewHealthEvent } from '../model/health.js';
import type { Store } from '../store/types.js';
import { HealthChecker, type CheckerOptions, type Transition } from './checker.js';
import { targetsOf, type Target } from './targets.js';

export interface HealthMonitorOptions {
  store: Store;
  /** Re-plans with the current health and applies the result (Controller.reconcile). */
  reconcile: () => void;
  logger: Logger;
  /** How often the store's revision is compared with the one the targets came from (default 250 ms). */
  syncIntervalMs?: number;
  checker?: Omit<CheckerOptions, 'onTransition'>;
  /** Called with the targets whenever they are re-read (the DSR path frees the slots of pairs gone). */
  onTargets?: (targets: readonly Target[]) => void;
}

/** Transitions into or out of down: the ones the datapath sees, kept as events. */
export function isEvent(t: Pick<Transition, 'from' | 'to'>): boolean {
  return t.from === 'down' || t.to === 'down';
}

export class HealthMonitor {
  readonly checker: HealthChecker;
  private readonly log: Logger;
  private revision = -1;
  private timer: NodeJS.Timeout | null = null;
  private queue: Transition[] = [];
  private flushing: NodeJS.Immediate | null = null;

  constructor(private readonly opts: HealthMonitorOptions) {
    this.log = opts.logger;
    this.checker = new HealthChecker({ ...opts.checker, onTransition: (t) => this.enqueue(t) });
  }

  /** Loads the targets and starts checking. Call after the first reconcile: until then nothing is down anyway. */
  start(): void {
    this.sync();
    this.checker.start();
    this.timer = setInterval(() => this.syncIfChanged(), this.opts.syncIntervalMs ?? 250);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.flushing !== null) clearImmediate(this.flushing);
    this.flushing = null;
    await this.checker.stop();
  }

  /** The planner's HealthFn (an arrow: passed around unbound). */
  readonly verdict = (vip: string, address: string): 'up' | 'down' | undefined => this.checker.verdict(vip, address);

  /** The planner's healthEpoch: changes when any verdict of the VIP may have. */
  readonly epoch = (vip: string): number => this.checker.vipEpoch(vip);

  /** The planner's healthChanges: the VIPs whose verdicts may have changed since a point. */
  readonly changedSince = (since: number): { seq: number; vips: Set<string> | null } => this.checker.changedSince(since);

  /** What the API shows for a backend. */
  backendHealth(vip: string, address: string): BackendHealth {
    return this.checker.health(vip, address) ?? { ...UNCHECKED };
  }

  /** Checked backends and whether they are in service (metrics: ferry_backend_up). */
  health(): Array<{ vip: string; backend: string; up: boolean }> {
    return this.checker.list().map((h) => ({ vip: h.vip, backend: h.backend, up: h.status !== 'down' }));
  }

  /** The API's view catches up before reading: a backend created a moment ago shows 'unknown', not 'unchecked'. */
  refresh(): void {
    this.syncIfChanged();
  }

  /** Re-reads the targets if any write happened since the last time. One SELECT when nothing did. */
  syncIfChanged(): void {
    try {
      if (this.opts.store.revision() !== this.revision) this.sync();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'health: reading the store failed');
    }
  }

  /** Makes the checker's targets those of the committed state. */
  sync(): void {
    const snap = this.opts.store.read((tx) => tx.snapshot());
    this.revision = snap.revision;
    const { targets, backends } = targetsOf(snap);
    const removed = this.checker.setTargets(targets);
    this.opts.onTargets?.(targets);
    const at = Date.now();
    for (const r of removed) {
      // A backend whose check was removed while it was down comes back into service: that is a transition.
      // One that was deleted is simply gone.
      if (r.status === 'down' && backends.has(r.key)) {
        this.enqueue({ vip: r.vip, backend: r.backend, from: 'down', to: 'unchecked', reason: 'health check removed', at });
      }
    }
  }

  private enqueue(t: Transition): void {
    this.queue.push(t);
    // One flush per turn of the event loop: a switch failing takes many backends down at once, and they
    // share one event transaction and one re-apply.
    this.flushing ??= setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushing = null;
    const batch = this.queue;
    this.queue = [];
    const events: NewHealthEvent[] = [];
    for (const t of batch) {
      this.logTransition(t);
      if (isEvent(t)) {
        events.push({ time: new Date(t.at).toISOString(), vip: t.vip, backend: t.backend, from: t.from, to: t.to, reason: t.reason });
      }
    }
    if (events.length === 0) return;
    try {
      this.opts.store.appendHealthEvents(events);
    } catch (err) {
      this.log.error({ err: (err as Error).message, events: events.length }, 'health: storing events failed');
    }
    try {
      this.opts.reconcile();
    } catch (err) {
      // The periodic reconcile retries with the same health view.
      this.log.error({ err: (err as Error).message }, 'health: applying a health change to the datapath failed');
    }
  }

  private logTransition(t: Transition): void {
    const log = this.log.child({ vip: t.vip, backend: t.backend });
    const fields = { from: t.from, to: t.to, reason: t.reason };
    if (t.to === 'down') log.warn(fields, 'backend down');
    else if (t.from === 'down') log.info(fields, 'backend back in service');
    else log.debug(fields, 'backend health confirmed');
  }
}
