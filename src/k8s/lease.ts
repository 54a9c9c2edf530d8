/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's
 * leaderelection package does it, so that one node of the cluster runs a
 * job (the LoadBalancer IP allocator) while the others stand by.
 *
 * Every candidate reads the Lease every retry period. A Lease held by
 * another is taken only once its record has not changed for its whole
 * duration, measured on this host's clock from when this candidate saw it
 * change (no trust in other hosts' clocks). Taking and renewing are
 * replaces carrying the resourceVersion read, so of two candidates racing
 * for it one wins and the other gets 409. The leader renews every retry
 * period; if it cannot for `renewDeadlineMs` (shorter than the duration)
 * it steps down before anyone else may take over, and another holder seen
 * in the Lease makes it step down at once. Stopping releases the Lease
 * (empty holder), so a successor takes over within one retry period
 * instead of a whole duration.
 */
import { ApiError, type ApiClient } from './client.js';
import type { K8sLogger } from './log.js';

export interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number | null;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number | null;
}

export interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  spec?: LeaseSpec;
}

export interface LeaderElectorOptions {
  client: Pick<ApiClient, 'get' | 'send'>;
  namespace: string;
  name: string;
  /** This candidate (the node name). */
  identity: string;
  durationSeconds: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  log: K8sLogger;
  /** Became leader. */
  onStart(): void;
  /** No longer leader (lost, deposed, or stopping). */
  onStop(reason: string): void;
  now?: () => number;
}

export interface ElectionView {
  leader: boolean;
  /** The holder this candidate last saw ("" = released); null before the first read. */
  holder: string | null;
  transitions: number;
  last_error: string | null;
}

/** RFC 3339 with microseconds, as the API's MicroTime. */
const microTime = (ms: number): string => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElector {
  private leading = false;
  private holder: string | null = null;
  private observedRv = '';
  private observedAt = 0;
  private lastRenew = 0;
  /** The Lease as last read or written (the base of a release). */
  private last: Lease | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = true;
  private transitions = 0;
  private lastError: string | null = null;
  private readonly now: () => number;
  private readonly path: string;

  constructor(private readonly o: LeaderElectorOptions) {
    this.now = o.now ?? Date.now;
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${o.namespace}/leases`;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  view(): ElectionView {
    return { leader: this.leading, holder: this.holder, transitions: this.transitions, last_error: this.lastError };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops campaigning; a leader releases the Lease unless `release` is false (a crash, in tests). */
  async stop(release = true): Promise<void> {
    if (this.stopped) return; // stopped already (and released or abandoned then): nothing more to do
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.running) await new Promise((r) => setTimeout(r, 5));
    // Held also when a round in flight at the stop took the Lease (it did not start leading, but holds it).
    if (!this.leading && this.holder !== this.o.identity) return;
    if (release) {
      try {
        await this.write({ holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(this.now()) }, this.last);
        this.o.log.info({ lease: this.o.name }, 'kubernetes: released the leader lease');
      } catch (err) {
        this.o.log.warn(
          { lease: this.o.name, err: (err as Error).message },
          'kubernetes: releasing the leader lease failed; it expires by itself',
        );
      }
    }
    this.lose('stopping');
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.running = true;
    try {
      const held = await this.tryAcquireOrRenew();
      this.lastError = null;
      if (this.stopped) return;
      if (held) {
        this.lastRenew = this.now();
        if (!this.leading) {
          this.leading = true;
          this.transitions++;
          this.o.log.info({ lease: this.o.name, identity: this.o.identity }, 'kubernetes: became the leader');
          this.o.onStart();
        }
      } else if (this.leading) {
        this.lose(`the lease is held by ${this.holder ?? 'another'}`);
      }
    } catch (err) {
      this.lastError = (err as Error).message;
      if (this.leading && this.now() - this.lastRenew >= this.o.renewDeadlineMs) {
        this.lose(`the lease could not be renewed for ${this.o.renewDeadlineMs} ms: ${this.lastError}`);
      } else {
        this.o.log.debug({ lease: this.o.name, err: this.lastError }, 'kubernetes: leader lease request failed');
      }
    } finally {
      this.running = false;
    }
    // A leader renews sooner when a renewal failed, so the deadline is not missed for one lost request.
    this.schedule(this.leading && this.lastError !== null ? Math.min(this.o.retryPeriodMs, 200) : this.jittered());
  }

  private jittered(): number {
    return Math.round(this.o.retryPeriodMs * (1 + (this.leading ? 0 : Math.random() * 0.2)));
  }

  private lose(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    this.o.log.warn({ lease: this.o.name, reason }, 'kubernetes: no longer the leader');
    this.o.onStop(reason);
  }

  /** One round: true when this candidate holds the Lease afterwards. Throws on API or network errors. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.now();
    let lease: Lease;
    try {
      lease = await this.o.client.get<Lease>(`${this.path}/${this.o.name}`, {}, this.o.renewDeadlineMs);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      return this.create(now);
    }
    this.last = lease;
    const spec = lease.spec ?? {};
    const rv = lease.metadata.resourceVersion ?? '';
    if (rv !== this.observedRv) {
      this.observedRv = rv;
      this.observedAt = now;
    }
    const holder = spec.holderIdentity ?? '';
    this.holder = holder;
    const mine = holder === this.o.identity;
    const durationMs = (spec.leaseDurationSeconds ?? this.o.durationSeconds) * 1000;
    if (!mine && holder !== '' && this.observedAt + durationMs > now) return false;
    try {
      const written = await this.write(
        {
          holderIdentity: this.o.identity,
          leaseDurationSeconds: this.o.durationSeconds,
          acquireTime: mine ? (spec.acquireTime ?? microTime(now)) : microTime(now),
          renewTime: microTime(now),
          leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
        },
        lease,
      );
      this.last = written;
      this.observedRv = written.metadata.resourceVersion ?? '';
      this.observedAt = now;
      this.holder = this.o.identity;
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) return false; // another candidate wrote first
      throw err;
    }
  }

  private async create(now: number): Promise<boolean> {
    try {
      const made = await this.o.client.send<Lease>(
        'POST',
        this.path,
        {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.o.name, namespace: this.o.namespace },
          spec: {
            holderIdentity: this.o.identity,
            leaseDurationSeconds: this.o.durationSeconds,
            acquireTime: microTime(now),
            renewTime: microTime(now),
            leaseTransitions: 0,
          },
        },
        this.o.renewDeadlineMs,
      );
      this.last = made;
      this.observedRv = made.metadata.resourceVersion ?? '';
      this.observedAt = now;
      this.holder = this.o.identity;
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) return false;
      throw err;
    }
  }

  /** Replaces the Lease's spec on top of `base` (the version read), conditional on its resourceVersion. */
  private async write(spec: LeaseSpec, base: Lease | undefined): Promise<Lease> {
    const body: Lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: this.o.name, namespace: this.o.namespace, resourceVersion: base?.metadata.resourceVersion ?? this.observedRv },
      spec: { ...(base?.spec ?? {}), ...spec },
    };
    return this.o.client.send<Lease>('PUT', `${this.path}/${this.o.name}`, body, this.o.renewDeadlineMs);
  }
}
