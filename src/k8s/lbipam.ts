/**
 * The LoadBalancer IP allocator of the Kubernetes mode: on the one node
 * holding the Lease (lease.ts), it gives served LoadBalancer Services
 * addresses from the configured pools (ipam.ts) and writes them into their
 * status.loadBalancer.ingress; every node's sync then turns those addresses
 * into VIPs and, with bgp enabled, announces them (the same path as any
 * other VIP). The other nodes stand by and take over when the leader goes.
 *
 * A pass reads the Services informer's cache (the watch every node already
 * runs), overlaid with the status this node wrote and has not seen come
 * back yet, so two passes never give one address twice. Writes replace the
 * status subresource conditional on the Service's resourceVersion: a
 * Service that changed meanwhile answers 409 and is redone from its newer
 * version. Nothing is written before the Services are listed (an address
 * in a status not read yet would be given out again), nor after the Lease
 * is lost.
 */
import type { LbIpamConfig } from '../config/index.js';
import type { LbIpamView } from '../model/lbipam.js';
import { allocate, ingressIps, served, type IpamResult, type Pool } from './ipam.js';
import { LeaderElector } from './lease.js';
import type { Service } from './types.js';
import { objectKey } from './types.js';
import { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
import { ApiError, type ApiClient } from './client.js';
import type { EventType } from './informer.js';
import type { K8sLogger } from './log.js';

export interface LbIpamOptions {
  client: Pick<ApiClient, 'get' | 'send'>;
  /** The Services informer (its cache and whether it has listed). */
  services: { readonly cache: ReadonlyMap<string, Service>; readonly synced: boolean };
  config: LbIpamConfig;
  /** The parsed config.pools (parsePools). */
  pools: Pool[];
  /** This node's name: the Lease holder's identity. */
  identity: string;
  log: K8sLogger;
}

/** Status writes in flight at once. */
const WRITE_CONCURRENCY = 8;
/** A pass runs this long after the change that asked for it (a burst of events makes one pass). */
const PASS_DELAY_MS = 20;
/** A pass after a 409, in case the Service's newer version does not come by the watch. */
const CONFLICT_RETRY_MS = 250;

export class LbIpam {
  readonly elector: LeaderElector;
  /** Status this node wrote, by Service, until the watch delivers a version past `before`. */
  private readonly written = new Map<string, { before: string; service: Service }>();
  private timer: NodeJS.Timeout | undefined;
  private passing: Promise<void> | undefined;
  private again = false;
  private failures = 0;
  private result: IpamResult | undefined;
  private stopped = false;
  private readonly stats = { writes: 0, conflicts: 0, errors: 0 };
  private lastError: string | null = null;

  constructor(private readonly o: LbIpamOptions) {
    const l = o.config.lease;
    this.elector = new LeaderElector({
      client: o.client,
      namespace: l.namespace,
      name: l.name,
      identity: o.identity,
      durationSeconds: l.duration_seconds,
      renewDeadlineMs: l.renew_deadline_seconds * 1000,
      retryPeriodMs: l.retry_period_seconds * 1000,
      log: o.log,
      onStart: () => this.schedule(0),
      onStop: () => this.cancel(),
    });
  }

  start(): void {
    this.stopped = false;
    this.elector.start();
  }

  /** Stops allocating; releases the Lease unless `release` is false. */
  async stop(release = true): Promise<void> {
    this.stopped = true;
    this.cancel();
    await this.passing;
    await this.elector.stop(release);
  }

  /** A Service event from the watch. */
  serviceEvent(type: EventType, svc: Service): void {
    const key = objectKey(svc);
    const w = this.written.get(key);
    if (w !== undefined && (type === 'DELETED' || svc.metadata.resourceVersion !== w.before)) this.written.delete(key);
    this.result = undefined;
    this.schedule(PASS_DELAY_MS);
  }

  /** The Services were (re)listed, or the periodic resync: a full pass. */
  resync(): void {
    this.result = undefined;
    this.schedule(PASS_DELAY_MS);
  }

  view(): LbIpamView {
    const r = this.current();
    const e = this.elector.view();
    const l = this.o.config.lease;
    return {
      leader: e.leader,
      holder: e.holder,
      lease: `${l.namespace}/${l.name}`,
      transitions: e.transitions,
      load_balancer_class: this.o.config.load_balancer_class,
      pools: this.o.config.pools.map((p) => ({ name: p.name, addresses: [...p.addresses], allocated: r.allocated.get(p.name) ?? 0 })),
      services: r.desired.size,
      pending: r.pending,
      writes: this.stats.writes,
      conflicts: this.stats.conflicts,
      errors: this.stats.errors,
      last_error: this.lastError ?? e.last_error,
    };
  }

  /** The allocation the cache (and this node's writes) give now; any node can tell, the leader writes it. */
  private current(): IpamResult {
    this.result ??= allocate(this.services(), { pools: this.o.pools, loadBalancerClass: this.o.config.load_balancer_class });
    return this.result;
  }

  /** The informer's Services, each as this node last wrote it when the watch has not brought that back yet. */
  private *services(): Iterable<Service> {
    for (const [key, svc] of this.o.services.cache) yield this.latest(key) ?? svc;
  }

  private latest(key: string): Service | undefined {
    return this.written.get(key)?.service ?? this.o.services.cache.get(key);
  }

  private schedule(ms: number): void {
    if (this.stopped || !this.elector.isLeader || !this.o.services.synced) return;
    if (this.passing !== undefined) {
      this.again = true;
      return;
    }
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.passing = this.pass().finally(() => {
        this.passing = undefined;
        if (this.again) {
          this.again = false;
          this.schedule(PASS_DELAY_MS);
        }
      });
    }, ms);
    this.timer.unref();
  }

  private cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.again = false;
  }

  /** One pass: the allocation, and the status writes that make the Services carry it. */
  private async pass(): Promise<void> {
    this.result = undefined;
    const r = this.current();
    const todo: Array<[Service, string[]]> = [];
    for (const [key, ips] of r.desired) {
      const svc = this.latest(key);
      if (svc !== undefined && served(svc, this.o.config.load_balancer_class) && !carries(svc, ips)) todo.push([svc, ips]);
    }
    if (todo.length === 0) {
      this.failures = 0;
      return;
    }
    let failed = false;
    let conflicted = false;
    const worker = async (): Promise<void> => {
      for (let next = todo.shift(); next !== undefined; next = todo.shift()) {
        if (!this.elector.isLeader || this.stopped) return;
        const outcome = await this.writeStatus(next[0], next[1]);
        if (outcome === 'failed') failed = true;
        if (outcome === 'conflict') conflicted = true;
      }
    };
    await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, todo.length) }, worker));
    this.result = undefined;
    if (!failed) {
      this.failures = 0;
      this.lastError = null;
      // A conflict's newer version usually arrives by the watch (and asks for a pass); this pass is for when it does not.
      if (conflicted) setTimeout(() => this.schedule(0), CONFLICT_RETRY_MS).unref();
      return;
    }
    this.failures++;
    const delay = backoffDelay(DEFAULT_BACKOFF, this.failures);
    setTimeout(() => this.schedule(0), delay).unref();
  }

  /** Replaces one Service's status.loadBalancer. */
  private async writeStatus(svc: Service, ips: string[]): Promise<'written' | 'conflict' | 'failed'> {
    const key = objectKey(svc);
    const path = `/api/v1/namespaces/${svc.metadata.namespace ?? 'default'}/services/${svc.metadata.name}/status`;
    const body: Service = {
      ...svc,
      status: { ...svc.status, loadBalancer: { ingress: ips.map((ip) => ({ ip, ipMode: 'VIP' as const })) } },
    };
    try {
      const out = await this.o.client.send<Service>('PUT', path, body);
      this.stats.writes++;
      this.written.set(key, { before: svc.metadata.resourceVersion ?? '', service: out });
      this.o.log.info({ service: key, ingress: ips }, 'kubernetes: LoadBalancer addresses written');
      return 'written';
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        this.stats.conflicts++;
        this.written.delete(key);
        return 'conflict';
      }
      if (err instanceof ApiError && err.status === 404) return 'written'; // deleted meanwhile: nothing to write
      this.stats.errors++;
      this.lastError = `${key}: ${(err as Error).message}`;
      this.o.log.warn({ service: key, err: (err as Error).message }, 'kubernetes: writing LoadBalancer addresses failed; retrying');
      return 'failed';
    }
  }
}

/** Whether the Service's status already says exactly these addresses (and nothing else). */
function carries(svc: Service, ips: string[]): boolean {
  const ingress = svc.status?.loadBalancer?.ingress ?? [];
  const have = ingressIps(svc);
  return ingress.length === have.length && have.length === ips.length && have.every((ip, i) => ip === ips[i]);
}
