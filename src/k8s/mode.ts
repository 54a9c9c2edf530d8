/**
 * ferryd's Kubernetes mode, assembled: credentials → K8sWatch (Services,
 * EndpointSlices, this Node) → K8sSync (batched store writes through the
 * daemon's Controller) → the sinks: the health-check node port responder
 * (hcnp.ts) and the ClusterIP list, kept here and handed to a
 * ClusterIpConsumer when one is plugged in (the socket-LB).
 *
 * Ready once every informer has listed, the sync has its caches and its
 * first batch has run (or found nothing to write): before that the store
 * may lack Services or hold ones deleted while ferryd was down.
 * Stopping: the watch first (no more events), then the sync (its timers;
 * a batch is synchronous, so none is half done), then the responders and
 * the consumer.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubernetesConfig } from '../config/index.js';
import type { Controller } from '../control/controller.js';
import { HealthCheckNodePorts, type HcnpStatus } from './hcnp.js';
import type { NatTable } from './nat.js';
import type { NodeEndpoint } from '../datapath/node.js';
import { K8sSync, type BatchReport, type ClusterIpChanges } from './sync.js';
import type { ClusterIpEntry, NatEntry } from './translate.js';
import { parsePools } from './ipam.js';
import { LbIpam } from './lbipam.js';
import type { InformerView, KubernetesView, SkippedEntry } from '../model/kubernetes.js';
import { ApiClient, loadKubeConfig } from './client.js';
import { K8sWatch, type InformerStats, type K8sEventHandler } from './informer.js';
import type { K8sLogger } from './log.js';

/**
 * Whoever programs the ClusterIP list (the socket-level load balancer).
 * apply() gets the whole list after every change; close() at shutdown.
 */
/** How often a ClusterIP list the consumer refused is applied again. */
const CLUSTER_IP_RETRY_MS = 2000;
/** Every this many retry ticks (30 s), the NAT table's presence is checked. */
const NAT_CHECK_TICKS = 15;

export interface ClusterIpConsumer {
  /** For the API view, e.g. "socket-lb". */
  readonly name: string;
  /**
   * Makes the consumer hold `all`. `changes`, when given, says how `all`
   * differs from the list of its last apply() that returned (it may spare
   * looking at the others); without it, or after an apply() that threw,
   * the consumer compares the whole list.
   */
  apply(all: ClusterIpEntry[], changes?: ClusterIpChanges): void;
  /** Figures shown in the API view (numbers only). */
  stats?(): Record<string, number>;
  close(): void;
}

export interface K8sCredentials {
  kubeConfig: KubeConfig;
  source: 'kubeconfig' | 'in-cluster';
  /** The API server's URL. */
  server: string;
}

/** The service account files a pod gets (KubeConfig.loadFromCluster reads them). */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * The credentials of the `kubernetes` config section: its kubeconfig, or
 * the pod's service account (KUBERNETES_SERVICE_HOST/PORT from the process
 * environment, which the library reads, and the token and CA under
 * `pathPrefix` + SERVICE_ACCOUNT_DIR). Throws an Error saying what is missing.
 */
export function loadCredentials(k: Pick<KubernetesConfig, 'kubeconfig'>, o: { pathPrefix?: string } = {}): K8sCredentials {
  let kc: KubeConfig;
  let source: K8sCredentials['source'];
  if (k.kubeconfig !== null) {
    try {
      kc = loadKubeConfig({ kubeconfig: k.kubeconfig });
    } catch (err) {
      throw new Error(`kubernetes: cannot use the kubeconfig ${k.kubeconfig}: ${(err as Error).message}`);
    }
    source = 'kubeconfig';
  } else {
    if (!process.env['KUBERNETES_SERVICE_HOST'] || !process.env['KUBERNETES_SERVICE_PORT']) {
      throw new Error('kubernetes: no kubeconfig set and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are unset (not in a pod)');
    }
    const dir = `${o.pathPrefix ?? ''}${SERVICE_ACCOUNT_DIR}`;
    for (const f of ['token', 'ca.crt']) {
      if (!existsSync(join(dir, f))) {
        throw new Error(
          `kubernetes: in-cluster credentials: ${join(dir, f)} is missing (is a service account token mounted? automountServiceAccountToken must not be false)`,
        );
      }
    }
    kc = loadKubeConfig({ inCluster: true, ...(o.pathPrefix === undefined ? {} : { pathPrefix: o.pathPrefix }) });
    source = 'in-cluster';
  }
  return { kubeConfig: kc, source, server: kc.getCurrentCluster()?.server ?? '' };
}

export interface K8sModeOptions {
  controller: Controller;
  /** The resolved section (node_name set: parseConfig fills it from NODE_NAME). */
  config: KubernetesConfig;
  credentials: K8sCredentials;
  log: K8sLogger;
  clusterIps?: ClusterIpConsumer;
  /** The kernel's NAT (external_path nat, nat.ts); absent: not programmed. */
  nat?: NatTable;
  /** Takes the node programs' extra pairs (translate.ts nodeEndpoints); a throw is kept as the view's last_error. */
  nodeEndpoints?(all: NodeEndpoint[]): void;
  /** After every batch (metrics). */
  onBatch?(report: BatchReport): void;
}

function informerView(synced: boolean, s: InformerStats & { resourceVersion: string; objects: number }): InformerView {
  return {
    synced,
    objects: s.objects,
    resource_version: s.resourceVersion,
    lists: s.lists,
    watches: s.watches,
    events: s.events,
    bookmarks: s.bookmarks,
    gone: s.gone,
    errors: s.errors,
  };
}

export class K8sMode {
  readonly watch: K8sWatch;
  readonly sync: K8sSync;
  readonly hcnp: HealthCheckNodePorts;
  /** LoadBalancer IP allocation (kubernetes.lb_ipam.enabled). */
  readonly lbIpam: LbIpam | undefined;
  private settled = false;
  private consumerError: string | null = null;
  private nodeEndpointsError: string | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly nodeName: string;

  constructor(private readonly o: K8sModeOptions) {
    const k = o.config;
    if (k.node_name === null) throw new Error('kubernetes: node_name is not set');
    this.nodeName = k.node_name;
    this.hcnp = new HealthCheckNodePorts({ addresses: k.health_check_addresses, log: o.log });
    this.sync = new K8sSync({
      controller: o.controller,
      translate: {
        nodeName: k.node_name,
        proxyName: k.proxy_name,
        nodePortAddressTypes: k.node_port_address_types,
        externalPath: k.external_path,
      },
      drainSeconds: k.drain_seconds,
      maxDelayMs: k.batch_delay_ms,
      quietMs: k.batch_quiet_ms,
      maxEvents: k.batch_max_events,
      log: o.log,
      onClusterIps: (all, changes) => this.applyClusterIps(all, changes),
      onHealthCheckNodePorts: (all) => this.hcnp.update(all),
      onNat: (all) => this.applyNat(all),
      onNodeEndpoints: (all) => this.applyNodeEndpoints(all),
      onBatch: (r) => {
        o.onBatch?.(r);
        this.settle(); // latched (and logged) as soon as the first batch ran, not at the next probe
      },
    });
    this.watch = new K8sWatch({
      kubeConfig: o.credentials.kubeConfig,
      nodeName: k.node_name,
      handler: this.handler(),
      log: o.log,
      resyncMs: k.resync_seconds * 1000,
    });
    if (k.lb_ipam.enabled) {
      const { pools, problems } = parsePools(k.lb_ipam.pools, '/kubernetes/lb_ipam/pools');
      if (problems.length > 0) throw new Error(`kubernetes: ${problems.join('; ')}`);
      this.lbIpam = new LbIpam({
        client: new ApiClient(o.credentials.kubeConfig),
        services: this.watch.services,
        config: k.lb_ipam,
        pools,
        identity: k.node_name,
        log: o.log,
      });
    }
  }

  /** The watch's events go to the sync, and the Services' also to the allocator. */
  private handler(): K8sEventHandler {
    return {
      service: (t, obj) => {
        this.sync.service(t, obj);
        this.lbIpam?.serviceEvent(t, obj);
      },
      endpointSlice: (t, obj) => this.sync.endpointSlice(t, obj),
      node: (t, obj) => this.sync.node(t, obj),
      synced: (kind) => {
        this.sync.synced(kind);
        if (kind === 'Service') this.lbIpam?.resync();
      },
      resync: () => {
        this.sync.resync();
        this.lbIpam?.resync();
      },
    };
  }

  start(): void {
    // A failed ClusterIP or node-pair apply is retried with the whole list until it goes through.
    let ticks = 0;
    this.retryTimer = setInterval(() => {
      if (this.consumerError !== null) this.applyClusterIps(this.sync.clusterIps());
      if (this.nodeEndpointsError !== null) this.applyNodeEndpoints(this.sync.nodeEndpoints());
      const nat = this.o.nat;
      if (nat?.failed) this.applyNat(this.sync.nat());
      else if (nat !== undefined && ++ticks % NAT_CHECK_TICKS === 0) {
        // A table removed behind ferryd's back (nft flush ruleset) is written again.
        nat.lost().then(
          (lost) => {
            if (!lost) return;
            this.o.log.warn({}, 'kubernetes: the kernel NAT table was removed from outside; writing it again');
            this.applyNat(this.sync.nat());
          },
          () => {},
        );
      }
    }, CLUSTER_IP_RETRY_MS);
    this.retryTimer.unref();
    this.o.log.info(
      { server: this.o.credentials.server, credentials: this.o.credentials.source, node: this.nodeName },
      'kubernetes: watching Services, EndpointSlices and Nodes',
    );
    this.watch.start();
    this.lbIpam?.start();
  }

  /** Every informer listed and the first batch ran (latched: later events do not make it unready). */
  get ready(): boolean {
    return this.settle();
  }

  private settle(): boolean {
    // A first batch that failed as a whole (the store refused its transactions) is not a sync.
    const last = this.sync.stats.lastBatch;
    const written = this.sync.stats.batches > 0 && last !== null && last.failedTransactions === 0;
    if (!this.settled && this.watch.synced && this.sync.isReady && (written || this.sync.idle)) {
      this.settled = true;
      // Once in full, whatever changed: the socket-LB's pinned maps and the NAT table may hold a previous
      // run's entries (Services deleted meanwhile) that no change of this run's lists would touch.
      this.applyClusterIps(this.sync.clusterIps());
      this.o.nat?.invalidate();
      this.applyNat(this.sync.nat());
      this.o.log.info(
        { services: this.watch.services.cache.size, revision: this.o.controller.revision() },
        'kubernetes: first sync done; ready',
      );
    }
    return this.settled;
  }

  /** Why ready is false, for /readyz. */
  waitingFor(): string {
    const pending = (
      [
        ['Services', this.watch.services],
        ['EndpointSlices', this.watch.endpointSlices],
        ['Node', this.watch.nodes],
      ] as const
    )
      .filter(([, i]) => !i.synced)
      .map(([n]) => n);
    if (pending.length > 0) return `waiting for the first list of ${pending.join(', ')} from the Kubernetes API server`;
    return 'waiting for the first batch of Kubernetes Services to be written';
  }

  /** The latest ClusterIP list (the socket-LB's input). */
  clusterIps(): ClusterIpEntry[] {
    return this.sync.clusterIps();
  }

  view(): KubernetesView {
    const w = this.watch;
    const s = this.sync.stats;
    const lb = s.lastBatch;
    const ignored: SkippedEntry[] = [];
    for (const key of [...w.services.cache.keys()].sort()) {
      const reason = this.sync.translation(key)?.ignored;
      if (reason !== undefined && reason !== null) ignored.push({ service: key, reason });
    }
    const c = this.o.clusterIps;
    const ws = w.stats();
    return {
      node_name: this.nodeName,
      proxy_name: this.o.config.proxy_name,
      credentials: this.o.credentials.source,
      server: this.o.credentials.server,
      ready: this.ready,
      synced: w.synced,
      services: w.services.cache.size,
      informers: {
        services: informerView(w.services.synced, ws.services),
        endpoint_slices: informerView(w.endpointSlices.synced, ws.endpointSlices),
        nodes: informerView(w.nodes.synced, ws.nodes),
      },
      sync: {
        events: s.events,
        batches: s.batches,
        transactions: s.transactions,
        failed_transactions: s.failedTransactions,
        services_written: s.servicesWritten,
        last_batch:
          lb === null
            ? null
            : {
                services: lb.services,
                written: lb.written,
                transactions: lb.transactions,
                revision: lb.revision,
                ms: Math.round(lb.ms * 100) / 100,
                refused: lb.refused,
                failed_transactions: lb.failedTransactions,
              },
      },
      cluster_ips: {
        entries: this.sync.clusterIps().length,
        consumer: c?.name ?? null,
        consumer_stats: c?.stats?.() ?? {},
        last_error: this.consumerError,
      },
      nat: { enabled: this.o.nat !== undefined, entries: this.o.nat?.entries ?? 0, last_error: this.o.nat?.lastError ?? null },
      node_endpoints: { entries: this.sync.nodeEndpoints().length, last_error: this.nodeEndpointsError },
      health_check_node_ports: {
        requests: this.hcnp.stats.requests,
        bind_failures: this.hcnp.stats.bindFailures,
        ports: this.hcnp.status().map((p: HcnpStatus) => ({
          service: p.service,
          port: p.port,
          local_endpoints: p.localEndpoints,
          listeners: p.listeners,
          conflict: p.conflict,
        })),
      },
      skipped: this.sync.skipped(),
      ignored,
      lb_ipam: this.lbIpam?.view() ?? null,
    };
  }

  /** The allocator first (its Lease released for a successor), then the watch, the sync's timers, the sinks. */
  async stop(): Promise<void> {
    if (this.retryTimer !== null) clearInterval(this.retryTimer);
    this.retryTimer = null;
    await this.lbIpam?.stop();
    await this.watch.stop();
    this.sync.stop();
    await this.hcnp.close();
    try {
      this.o.clusterIps?.close();
    } catch (err) {
      this.o.log.error({ err: (err as Error).message }, 'kubernetes: closing the ClusterIP consumer failed');
    }
    this.o.log.info({}, 'kubernetes: stopped watching');
  }

  private applyNodeEndpoints(all: NodeEndpoint[]): void {
    if (this.o.nodeEndpoints === undefined) return;
    try {
      this.o.nodeEndpoints(all);
      this.nodeEndpointsError = null;
    } catch (err) {
      this.nodeEndpointsError = (err as Error).message;
      this.o.log.error({ err: this.nodeEndpointsError }, "kubernetes: writing the node programs' pairs failed");
    }
  }

  private applyNat(all: NatEntry[]): void {
    const nat = this.o.nat;
    if (nat === undefined) return;
    const before = nat.lastError;
    nat.apply(all).then(
      () => {
        if (before !== null) this.o.log.info({ entries: all.length }, 'kubernetes: the kernel NAT is programmed again');
      },
      (err: unknown) => {
        // Retried every few seconds: said once per distinct error, not at every retry.
        if ((err as Error).message !== before) {
          this.o.log.error({ entries: all.length, err: (err as Error).message }, 'kubernetes: programming the kernel NAT failed; retrying');
        }
      },
    );
  }

  /** `changes`: how `all` differs from the list handed over before, which the consumer holds unless that apply failed. */
  private applyClusterIps(all: ClusterIpEntry[], changes: ClusterIpChanges | null = null): void {
    const c = this.o.clusterIps;
    if (c === undefined) return;
    const before = this.consumerError;
    try {
      if (changes !== null && before === null) c.apply(all, changes);
      else c.apply(all);
      this.consumerError = null;
      if (before !== null) this.o.log.info({ consumer: c.name, entries: all.length }, 'kubernetes: the ClusterIP list is programmed again');
    } catch (err) {
      this.consumerError = (err as Error).message;
      // Retried every few seconds: said once per distinct error, not at every retry.
      if (this.consumerError !== before) {
        this.o.log.error(
          { consumer: c.name, entries: all.length, err: this.consumerError },
          'kubernetes: programming the ClusterIP list failed',
        );
      }
    }
  }
}
