/**
 * ferryd's wiring: config → store → datapath (pinned maps, adopted) →
 * reconcile → XDP attach → API listeners → ready. The daemon can stop or
 * die at any point while packets keep flowing: programs hang on pinned bpf
 * links and the maps are pinned; the next start adopts them.
 *
 * In kubernetes mode the credentials are loaded first (a bad kubeconfig
 * stops the start before anything is touched), and once the API listens
 * the Kubernetes mode (src/k8s/mode.ts) watches the cluster and writes its
 * Services through the same Controller; /readyz waits for its first sync.
 */
import { execFileSync } from 'node:child_process';
import type { Server as HttpServer } from 'node:http';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from '../api/app.js';
import { parseTokens } from '../api/auth.js';
import type { DaemonInfo } from '../api/types.js';
import type { StatsBody, StatusBody } from '../model/status.js';
import type { KubernetesView } from '../model/kubernetes.js';
import { snatPortRange, type FerryConfig, type InterfaceConfig } from '../config/index.js';
import { COUNTERS, DROP_REASONS } from '../datapath/abi.js';
import { LbDatapath } from '../datapath/lb.js';
import { HealthMonitor } from '../health/monitor.js';
import { dsrPairs, dsrProbe, type DsrUnavailable } from '../health/dsr.js';
import { HcDatapath } from '../datapath/hc.js';
import { NodePrograms } from '../datapath/node.js';
import { openSocketLbConsumer, type SocketLbConsumer } from '../k8s/socket-lb-consumer.js';
import { NatTable } from '../k8s/nat.js';
import { K8sMode, loadCredentials, type ClusterIpConsumer, type K8sCredentials } from '../k8s/mode.js';
import { FerryMetrics, type MetricsSource } from '../metrics/index.js';
import { openEventStream, type EventStream } from '../monitor/stream.js';
import type { ConfigProgram } from '../datapath/program.js';
import { IncrementalPlanner } from '../reconcile/plan.js';
import { Reconciler } from '../reconcile/reconciler.js';
import { NodeEndpoints } from '../reconcile/node.js';
import { openStore } from '../store/store.js';
import type { Store, StoredBackend } from '../store/types.js';
import { Announcer } from '../bgp/announcer.js';
import { Birdc } from '../bgp/bird.js';
import { Fleet } from '../fleet/index.js';
import type { BgpView } from '../model/bgp.js';
import type { FleetView } from '../model/fleet.js';
import type { DpState } from '../model/dpstate.js';
import type { MaglevSharesView, MaglevTablesView } from '../model/maglev.js';
import { planChecksums, planShares } from '../maglev/index.js';
import { canonicalIp } from '../net/addr.js';
import { Controller } from '../control/controller.js';
import { Notifier } from './notify.js';
import { listenProbes } from './probes.js';
import { FERRY_VERSION } from './version.js';

export interface DaemonOptions {
  config: FerryConfig;
  logger: Logger;
}

/** Config sections SIGHUP cannot change: a restart applies them. */
const RESTART_KEYS = ['mode', 'state_dir', 'bpf', 'api', 'kubernetes', 'bgp', 'fleet'] as const;

const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * Mounts bpffs at /sys/fs/bpf when missing, as systemd does on a host. A
 * mount point of another kind (a container's bind mount of a host folder
 * without bpffs) is an error saying so: pins there would not be pins.
 */
function ensureBpffs(pinRoot: string): void {
  if (!pinRoot.startsWith('/sys/fs/bpf')) return;
  try {
    execFileSync('mountpoint', ['-q', '/sys/fs/bpf']);
  } catch {
    try {
      execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf'], { stdio: 'pipe' });
    } catch (err) {
      // ferry.service's system call filter forbids mounting: systemd mounts bpffs at boot.
      throw new Error(
        `/sys/fs/bpf is not mounted and mounting it failed (${(err as Error).message.trim()}): mount bpffs there first (mount -t bpf bpf /sys/fs/bpf)`,
      );
    }
  }
  if (statfsSync('/sys/fs/bpf').type !== BPF_FS_MAGIC) {
    throw new Error(
      '/sys/fs/bpf is mounted but is not a bpf filesystem: mount bpffs there on the host (mount -t bpf bpf /sys/fs/bpf) before mounting it into the container',
    );
  }
}

/** The datapath's global config from ferryd's config and the store's seed. */
export function datapathConfig(c: FerryConfig, storeSeed: number): ConfigProgram {
  const seed = c.datapath.hash_seed ?? storeSeed;
  const mac = c.datapath.gateway_mac;
  const ports = snatPortRange(c.datapath.snat_ports);
  return {
    seed,
    src4: c.datapath.encap_source_v4,
    src6: c.datapath.encap_source_v6,
    ...(mac ? { gwMac: Buffer.from(mac.replace(/:/g, ''), 'hex') } : {}),
    skipFib: c.datapath.skip_fib,
    nexthopCache: c.datapath.nexthop_cache,
    recordAfterHandshake: c.datapath.record_tcp_flows === 'after_handshake',
    eventsFlowSample: c.datapath.events_flow_sample,
    eventsPerSecond: c.datapath.events_per_second,
    snat: { ...snatSources(c), portMin: ports.min, portMax: ports.max },
  };
}

/** The first interface's first global address of a family: what this host's peers reach it at. */
function firstAddress(c: FerryConfig, family: 'IPv4' | 'IPv6', nics = networkInterfaces()): string | null {
  const first = c.interfaces[0] ? (nics[c.interfaces[0].name] ?? []) : [];
  return first.find((a) => a.family === family && !a.internal && !a.address.toLowerCase().startsWith('fe80:'))?.address ?? null;
}

/**
 * This host's addresses for source NAT: the configured ones, else the first
 * interface's first global address of each family (what a node's peers
 * route back to).
 */
export function snatSources(c: FerryConfig, nics = networkInterfaces()): { src4: string | null; src6: string | null } {
  return {
    src4: c.datapath.snat_source_v4 ?? firstAddress(c, 'IPv4', nics),
    src6: c.datapath.snat_source_v6 ?? firstAddress(c, 'IPv6', nics),
  };
}

/** Every address of this host's interfaces, canonical: never announced by BGP (NodePort VIPs are on them). */
function hostAddresses(nics = networkInterfaces()): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(nics)) {
    for (const a of list ?? []) {
      const ip = canonicalIp(a.address);
      if (ip !== null) out.add(ip);
    }
  }
  return out;
}

/** BIRD's router id: the configured one, else the first interface's first IPv4 address. */
export function bgpRouterId(c: FerryConfig, nics = networkInterfaces()): string {
  const id = c.bgp.router_id ?? firstAddress(c, 'IPv4', nics);
  if (id === null)
    throw new Error('bgp.router_id is not set and the first interface has no IPv4 address to take it from: set bgp.router_id');
  return id;
}

/** Where source NAT's ports overlap the host's own ephemeral ports (which connections of the host could then meet). */
function snatPortOverlap(c: FerryConfig): string | null {
  let text: string;
  try {
    text = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8');
  } catch {
    return null;
  }
  const [lo, hi] = text.trim().split(/\s+/).map(Number) as [number, number];
  const { min, max } = snatPortRange(c.datapath.snat_ports);
  return lo <= max && min <= hi ? `${Math.max(lo, min)}-${Math.min(hi, max)}` : null;
}

interface Sample {
  at: number;
  packets: Map<string, number>;
}

export class Daemon implements DaemonInfo, MetricsSource {
  readonly version = FERRY_VERSION;
  private store!: Store;
  private dp!: LbDatapath;
  private reconciler!: Reconciler;
  /** Port translation on this host (bpf/node.bpf.c), fed by every apply. */
  private node!: NodePrograms;
  private nodeEndpoints!: NodeEndpoints;
  controller!: Controller;
  private apps: FastifyInstance[] = [];
  private timers: NodeJS.Timeout[] = [];
  /** The timer that ends the earliest drain, and when it fires (ms since the epoch). */
  private drainTimer: NodeJS.Timeout | undefined;
  private drainTimerAt = 0;
  private readonly started = Date.now();
  private isReady = false;
  private stopping = false;
  private attached: Array<{ name: string; mode: string }> = [];
  private lastSample: Sample | undefined;
  private readonly notifier: Notifier;
  private metrics!: FerryMetrics;
  private events: EventStream | undefined;
  private healthMonitor: HealthMonitor | undefined;
  /** The DSR health-check path (bpf/hc.bpf.c), or why it is not there. */
  private hc: HcDatapath | DsrUnavailable = { reason: 'not loaded yet' };
  private k8s: K8sMode | undefined;
  private probeServer: HttpServer | undefined;
  /**
   * Programs the ClusterIP list in kubernetes mode (the socket-LB); until
   * one is set the list is only kept and counted. Set before start().
   */
  clusterIpConsumer: ClusterIpConsumer | undefined;
  /** The socket-LB ferryd opened itself (kubernetes.socket_lb); `stop --detach` detaches it. */
  private socketLb: SocketLbConsumer | undefined;
  /** The kernel's NAT for ports the XDP datapath cannot translate (kubernetes.nat). */
  private nat: NatTable | undefined;
  /** The VIPs' BGP announcement through BIRD (bgp.enabled). */
  private bgp: Announcer | undefined;
  /** The fleet store (fleet.etcd.endpoints): the API's resources mirrored from etcd, writes to etcd first. */
  private fleet: Fleet | undefined;
  /** The plan the datapath holds (its Maglev tables' inputs). */
  private lastPlan: DpState | undefined;

  constructor(
    private config: FerryConfig,
    private readonly log: Logger,
  ) {
    this.notifier = new Notifier(log);
  }

  async start(): Promise<void> {
    const c = this.config;
    // Before anything is touched: a kubeconfig that cannot be used is a start-up error.
    const credentials = c.mode === 'kubernetes' ? loadCredentials(c.kubernetes) : undefined;
    this.notifier.status('opening the store');
    mkdirSync(c.state_dir, { recursive: true });
    this.store = openStore(join(c.state_dir, 'ferry.db'), { maxVips: c.bpf.max_vips, maxBackends: c.bpf.max_backends });
    this.notifier.status('opening the datapath');
    ensureBpffs(c.bpf.pin_root);
    this.dp = LbDatapath.open({
      pinRoot: c.bpf.pin_root,
      sizes: {
        maxVips: c.bpf.max_vips,
        maxVipAddrs: c.bpf.max_vips,
        maxBackends: c.bpf.max_backends,
        ctSize: c.bpf.conntrack_entries,
        maxPolicyRules: c.bpf.max_policy_rules,
        eventRingBytes: c.bpf.events_ring_bytes,
        maglevSlots: c.bpf.maglev_slots,
        snatEntries: c.bpf.snat_entries,
      },
    });
    if (this.dp.replacedPins.length) this.log.warn({ maps: this.dp.replacedPins }, 'recreated pinned maps whose layout changed');
    if (c.mode === 'kubernetes' && this.clusterIpConsumer === undefined && c.kubernetes.socket_lb.enabled) {
      this.notifier.status('attaching the socket-LB');
      this.socketLb = openSocketLbConsumer(c.bpf.pin_root, c.kubernetes.socket_lb.cgroup);
      this.clusterIpConsumer = this.socketLb;
    }
    if (c.mode === 'kubernetes' && c.kubernetes.nat.enabled) this.nat = new NatTable();
    else if (c.mode === 'kubernetes') {
      // NAT turned off: a table an earlier run left must not keep serving (best effort; nft may be absent).
      new NatTable().remove().catch(() => {});
    }
    const seed = this.store.read((tx) => tx.snapshot().hash_seed);
    this.reconciler = new Reconciler(this.dp, datapathConfig(c, seed));
    const overlap = snatPortOverlap(c);
    if (overlap !== null) {
      this.log.warn(
        { snat_ports: c.datapath.snat_ports, overlap },
        'source NAT ports overlap net.ipv4.ip_local_port_range: narrow one of them',
      );
    }
    this.node = new NodePrograms({ pinRoot: c.bpf.pin_root });
    this.nodeEndpoints = new NodeEndpoints(this.reconciler, this.node);
    // Health joins every plan; until the monitor runs nothing is down, so the first reconcile is the store's alone.
    const planner = new IncrementalPlanner();
    this.controller = new Controller(this.store, this.nodeEndpoints, (state) =>
      planner.plan(state, {
        health: this.healthMonitor?.verdict,
        healthEpoch: this.healthMonitor?.epoch,
        healthChanges: this.healthMonitor?.changedSince,
      }),
    );
    this.hc = this.openHc();
    const monitor = new HealthMonitor({
      store: this.store,
      reconcile: () => this.controller.reconcile(),
      logger: this.log.child({ component: 'health' }),
      checker: { probe: dsrProbe(this.hc) },
      onTargets: (targets) => this.retainDsrPairs(targets),
    });
    // A fleet member: the API's resources come from the fleet store (src/fleet).
    const inFleet = c.fleet.etcd.endpoints.length > 0;
    this.metrics = new FerryMetrics(this, { kubernetes: c.mode === 'kubernetes', bgp: c.bgp.enabled, fleet: inFleet });
    if (c.bgp.enabled) {
      if (c.datapath.hash_seed === null && !inFleet) {
        this.log.warn(
          'bgp is enabled but neither datapath.hash_seed nor a fleet store is set: hosts behind one ECMP router need the same seed, or flows they move between them are reset',
        );
      }
      this.bgp = new Announcer({
        config: c.bgp,
        routerId: bgpRouterId(c),
        bird: new Birdc(c.bgp.birdc, c.bgp.bird_socket),
        drainFile: join(c.state_dir, 'bgp-drain.json'),
        localAddresses: () => hostAddresses(),
        log: this.log.child({ component: 'bgp' }),
      });
    }
    this.controller.onApply = (r, plan) => {
      this.lastPlan = plan;
      this.metrics.observeReconcile(r);
      this.armDrainTimer();
      this.bgp?.observe(plan);
      this.fleet?.poke();
    };
    this.notifier.status('reconciling');
    const report = this.controller.reconcile();
    this.log.info(
      { revision: this.controller.appliedRevision, changes: report.changes, ms: report.durationMs },
      'datapath reconciled from the store',
    );
    this.healthMonitor = monitor;
    monitor.start();
    this.attachInterfaces(c.interfaces);
    // Announced only once the datapath is attached and holds the store's state.
    this.bgp?.start();
    if (inFleet) this.fleet = this.openFleet();
    this.events = openEventStream(this.dp, this.store, () => this.config.datapath, {
      onError: (err) => this.log.error({ err: (err as Error).message }, 'reading live events failed'),
    });
    if (credentials !== undefined) this.k8s = this.kubernetesMode(credentials);
    await this.listen();
    this.k8s?.start();
    this.startTimers();
    this.isReady = true;
    this.notifier.ready(`serving revision ${this.controller.appliedRevision}`);
    this.log.info(
      { version: this.version, mode: c.mode, interfaces: this.attached },
      this.k8s === undefined ? 'ferryd ready' : 'ferryd started; ready once the Kubernetes sync has run',
    );
  }

  /** Joins the fleet store: the mirror starts, the API's writes go to etcd first. */
  private openFleet(): Fleet {
    const fleet = new Fleet({
      config: this.config.fleet,
      controller: this.controller,
      drainSeconds: () => this.config.datapath.drain_seconds,
      localSeed: () => this.reconciler.seed,
      tables: () => this.maglevTables(),
      log: this.log.child({ component: 'fleet' }),
      onSeed: (seed) => {
        if (this.config.datapath.hash_seed !== null) {
          this.log.warn(
            { fleet: seed, configured: this.config.datapath.hash_seed },
            "datapath.hash_seed overrides the fleet's seed: this host's tables differ from the other members'",
          );
          return;
        }
        this.log.info({ seed }, "took the fleet's hash seed; rebuilding the tables");
        this.reconciler.setConfig(datapathConfig(this.config, seed));
        this.controller.reconcile();
      },
    });
    fleet.start();
    return fleet;
  }

  private kubernetesMode(credentials: K8sCredentials): K8sMode {
    return new K8sMode({
      controller: this.controller,
      config: this.config.kubernetes,
      credentials,
      log: this.log.child({ component: 'kubernetes' }),
      ...(this.clusterIpConsumer === undefined ? {} : { clusterIps: this.clusterIpConsumer }),
      ...(this.nat === undefined ? {} : { nat: this.nat }),
      nodeEndpoints: (all) => this.nodeEndpoints.setExtra(all),
      onBatch: (r) => this.metrics.observeK8sBatch(r.ms),
    });
  }

  /** Loads the DSR check path; without it only checks with `dsr: true` fail (saying why). */
  private openHc(): HcDatapath | DsrUnavailable {
    try {
      return HcDatapath.open();
    } catch (err) {
      const reason = (err as Error).message;
      this.log.warn({ err: reason }, 'health checks through the DSR path are unavailable');
      return { reason };
    }
  }

  private retainDsrPairs(targets: Parameters<typeof dsrPairs>[0]): void {
    if (!(this.hc instanceof HcDatapath)) return;
    try {
      this.hc.retain(dsrPairs(targets));
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'health: freeing DSR check slots failed');
    }
  }

  /** Attaches (or re-points the pinned link of) xdp_lb on each interface. */
  private attachInterfaces(list: InterfaceConfig[]): void {
    const done: Array<{ name: string; mode: string }> = [];
    for (const i of list) {
      try {
        this.dp.attachXdp(i.name, i.mode);
        done.push({ name: i.name, mode: i.mode });
      } catch (err) {
        if (!i.generic_fallback || i.mode === 'generic') throw err;
        this.log.warn({ interface: i.name, err: (err as Error).message }, 'native XDP refused; attaching in generic mode');
        this.dp.attachXdp(i.name, 'generic');
        done.push({ name: i.name, mode: 'generic' });
      }
      if (this.hc instanceof HcDatapath) {
        try {
          this.hc.attach(i.name);
        } catch (err) {
          this.log.warn(
            { interface: i.name, err: (err as Error).message },
            'DSR health-check filters refused; DSR checks through it will fail',
          );
        }
      }
      try {
        this.node.attach(i.name);
      } catch (err) {
        this.log.warn(
          { interface: i.name, err: (err as Error).message },
          'port-translation filters refused; local backends behind it get no traffic',
        );
      }
    }
    this.attached = done;
  }

  /** state_dir/scratch, emptied: what a killed ferryd was staging (a backup, a restore) is not kept. */
  private scratchDir(): string {
    const dir = join(this.config.state_dir, 'scratch');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  private tokens(): { tokens: string[]; readOnly: string[] } | null {
    const file = this.config.api.tokens_file;
    if (!file) return null;
    return parseTokens(readFileSync(file, 'utf8'), file);
  }

  private async listen(): Promise<void> {
    const a = this.config.api;
    const common = {
      controller: this.controller,
      info: this as DaemonInfo,
      drainSeconds: this.config.datapath.drain_seconds,
      logger: this.log.child({ component: 'api' }),
      bodyLimit: a.body_limit,
      metrics: this.metrics,
      monitor: this.events,
      requestTimeoutMs: a.request_timeout_seconds * 1000,
      scratchDir: this.scratchDir(),
      ...(this.healthMonitor === undefined ? {} : { health: this.healthMonitor }),
      ...(this.bgp === undefined ? {} : { bgp: this.bgp }),
      ...(this.fleet === undefined ? {} : { fleet: this.fleet }),
    };
    const local = await buildApp({ ...common, auth: null });
    mkdirSync(dirname(a.socket), { recursive: true });
    rmSync(a.socket, { force: true });
    await local.listen({ path: a.socket });
    chmodSync(a.socket, parseInt(a.socket_mode, 8));
    this.apps.push(local);
    if (a.listen) {
      const auth = this.tokens()!;
      const https =
        a.tls_cert && a.tls_key ? { cert: readFileSync(a.tls_cert), key: readFileSync(a.tls_key), minVersion: a.tls_min_version } : null;
      const limit = a.rate_limit.max > 0 ? { rateLimit: { max: a.rate_limit.max, windowMs: a.rate_limit.window_seconds * 1000 } } : {};
      const remote = await buildApp({ ...common, auth, ...limit, ...(https ? { https } : {}) });
      const m = /^\[?(.*?)\]?:(\d+)$/.exec(a.listen)!;
      await remote.listen({ host: m[1]!, port: Number(m[2]) });
      this.apps.push(remote);
    }
    if (a.probe_listen) this.probeServer = await listenProbes(a.probe_listen, this);
  }

  private startTimers(): void {
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(() => {
        try {
          fn();
        } catch (err) {
          this.log.error({ err: (err as Error).message }, 'periodic task failed');
        }
      }, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.config.datapath.reconcile_interval_seconds * 1000, () => this.periodic());
    const wd = this.notifier.watchdogIntervalMs();
    if (wd) every(wd, () => this.notifier.watchdog());
  }

  /**
   * Arms one timer at the earliest drain's end (after every apply), so a
   * removed backend's flows, and its node pair, end when its drain does and
   * not at the next periodic pass.
   */
  private armDrainTimer(): void {
    if (this.stopping) return;
    const at = this.store.read((tx) => tx.nextDrainEnd());
    if (at === null || (this.drainTimer && this.drainTimerAt === at)) return;
    clearTimeout(this.drainTimer);
    this.drainTimerAt = at;
    // A few ms late, so the drain has surely ended by the store's clock; setTimeout's limit is ~24.8 days.
    this.drainTimer = setTimeout(
      () => {
        this.drainTimer = undefined;
        try {
          this.expireDrains();
        } catch (err) {
          // Not re-armed (it would fire again at once): the periodic pass retries, and so does the next apply.
          this.log.error({ err: (err as Error).message }, 'ending drained backends failed');
        }
      },
      Math.min(Math.max(0, at - Date.now()) + 5, 2 ** 31 - 1),
    );
    this.drainTimer.unref();
  }

  /** Removes the backends whose drain has ended (their tombstones): a write, so the datapath frees their ids. */
  private expireDrains(): void {
    const now = Date.now();
    const next = this.store.read((tx) => tx.nextDrainEnd());
    if (next !== null && next <= now) {
      this.controller.write('ferryd', 'expire-drained-backends', (tx) => tx.expireTombstones(now));
    } else {
      this.armDrainTimer();
    }
  }

  /** Tombstone expiry (a backstop to the drain timer) and drift repair. */
  private periodic(): void {
    this.expireDrains();
    // A full compare: the reconciler otherwise trusts its record of what it wrote.
    this.reconciler.forget();
    this.nodeEndpoints.forget();
    const r = this.controller.reconcile();
    if (r.changes > 0) this.log.warn({ changes: r.changes }, 'repaired datapath drift');
  }

  /** SIGHUP: applies what can change live; says what needs a restart. */
  reload(next: FerryConfig): void {
    const prev = this.config;
    for (const key of RESTART_KEYS) {
      if (JSON.stringify(prev[key]) !== JSON.stringify(next[key])) {
        this.log.warn({ key }, 'configuration change needs a restart to take effect');
      }
    }
    this.config = {
      ...next,
      mode: prev.mode,
      state_dir: prev.state_dir,
      bpf: prev.bpf,
      api: prev.api,
      kubernetes: prev.kubernetes,
      fleet: prev.fleet,
    };
    this.log.level = next.log.level;
    const seed = this.store.read((tx) => tx.snapshot().hash_seed);
    this.reconciler.setConfig(datapathConfig(this.config, seed));
    const keep = new Set(next.interfaces.map((i) => i.name));
    for (const old of prev.interfaces) {
      if (keep.has(old.name)) continue;
      this.dp.detachXdp(old.name);
      if (this.hc instanceof HcDatapath) this.hc.detach(old.name);
      this.node.detach(old.name);
    }
    this.attachInterfaces(next.interfaces);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.startTimers();
    this.controller.reconcile();
    this.log.info({ interfaces: this.attached }, 'configuration reloaded');
  }

  /**
   * Stops serving; the datapath keeps forwarding unless detach is set. The
   * Kubernetes mode stops first (watch, then sync), so nothing writes to
   * the store while it closes; its VIPs stay in the store and the maps.
   */
  async stop(opts: { detach: boolean }): Promise<void> {
    this.isReady = false;
    this.stopping = true;
    this.notifier.stopping();
    await this.k8s?.stop();
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.drainTimer);
    this.events?.stop();
    if (this.probeServer !== undefined) {
      const server = this.probeServer;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    for (const app of this.apps) await app.close();
    await this.healthMonitor?.stop();
    await this.fleet?.stop();
    await this.bgp?.stop();
    if (opts.detach) {
      this.socketLb?.socketLb.detach();
      try {
        await this.nat?.remove();
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'removing the kernel NAT table failed');
      }
      for (const i of this.attached) {
        this.dp.detachXdp(i.name);
        if (this.hc instanceof HcDatapath) this.hc.detach(i.name);
        this.node?.detach(i.name);
      }
    }
    if (this.hc instanceof HcDatapath) this.hc.close();
    this.node?.close();
    this.dp?.close();
    this.store?.close();
    if (existsSync(this.config.api.socket)) rmSync(this.config.api.socket, { force: true });
  }

  // ---- DaemonInfo ------------------------------------------------------------

  ready(): boolean {
    return this.isReady && (this.k8s === undefined || this.k8s.ready);
  }

  notReadyReason(): string {
    if (this.stopping) return 'ferryd is stopping';
    if (!this.isReady) return 'the daemon has not completed its first reconcile';
    return this.k8s?.waitingFor() ?? 'not ready';
  }

  kubernetes(): KubernetesView | null {
    return this.k8s?.view() ?? null;
  }

  status(): StatusBody {
    const snap = this.store.read((tx) => tx.snapshot());
    const s = this.dp.sizes;
    return {
      version: this.version,
      revision: snap.revision,
      applied_revision: this.controller.appliedRevision,
      uptime_seconds: Math.round((Date.now() - this.started) / 1000),
      interfaces: this.attached.map((i) => ({ name: i.name, xdp_mode: i.mode })),
      maps: [
        { name: 'ferry_vips', max_entries: s.maxVips, used: snap.vips.length },
        { name: 'ferry_backends', max_entries: s.maxBackends, used: snap.backends.length + snap.tombstones.length },
        { name: 'ferry_ct', max_entries: s.ctSize },
        { name: 'ferry_policy', max_entries: s.maxPolicyRules },
      ],
      last_reconcile: { changes: this.controller.lastReconcile.changes, duration_ms: this.controller.lastReconcile.durationMs },
    };
  }

  /** Health-check packets through the DSR path by outcome (metrics: ferry_health_dsr_packets_total). */
  dsrCheckPackets(): Record<string, bigint> {
    return this.hc instanceof HcDatapath ? this.hc.counts() : {};
  }

  /** Port translation on this host by counter (metrics: ferry_node_packets_total). */
  nodePackets(): Partial<Record<string, bigint>> {
    return this.node.counts();
  }

  /** The BGP announcement (metrics: ferry_bgp_*); null when bgp is not enabled. */
  bgpView(): BgpView | null {
    return this.bgp?.view() ?? null;
  }

  /** The fleet store (metrics: ferry_fleet_*); null on a host of its own. */
  fleetView(): FleetView | null {
    return this.fleet?.view() ?? null;
  }

  /** The Maglev tables as other hosts compare them (GET /v1/maglev). */
  maglevTables(): MaglevTablesView {
    const seed = this.reconciler.seed;
    return {
      version: this.version,
      revision: this.store.revision(),
      applied_revision: this.controller.appliedRevision,
      hash_seed: seed,
      vips: planChecksums(this.lastPlan, seed),
    };
  }

  maglevShares(name: string): MaglevSharesView | null {
    return planShares(this.lastPlan, this.reconciler.seed, name);
  }

  /** Health of the checked backends (metrics: ferry_backend_up). */
  health(): Array<{ vip: string; backend: string; up: boolean }> {
    return this.healthMonitor?.health() ?? [];
  }

  /** Datapath counters per VIP and backend, and drops by reason (monotonic). */
  counters(): StatsBody {
    const snap = this.store.read((tx) => tx.snapshot());
    const byVip = new Map<string, StoredBackend[]>();
    for (const b of snap.backends) byVip.set(b.vip, [...(byVip.get(b.vip) ?? []), b]);
    const vips = snap.vips.map((v) => {
      const st = this.dp.vipStats.sum(v.dp_id);
      return {
        name: v.name,
        packets: Number(st.packets),
        bytes: Number(st.bytes),
        new_flows: Number(st.new_flows),
        ct_hits: Number(st.ct_hits),
        ct_misses: Number(st.ct_misses),
        drops: Number(st.drops),
        backends: (byVip.get(v.name) ?? []).map((b) => {
          const bs = this.dp.backendStats.sum(b.dp_id);
          return { address: b.address, packets: Number(bs.packets), bytes: Number(bs.bytes), new_flows: Number(bs.new_flows) };
        }),
      };
    });
    const drops = this.dp.dropCounts();
    const counters = this.dp.counterValues();
    return {
      vips,
      drops: Object.fromEntries(DROP_REASONS.filter((r) => r !== 'none').map((r) => [r, Number(drops[r].packets)])),
      counters: Object.fromEntries(COUNTERS.map((c) => [c, Number(counters[c].packets)])),
    };
  }

  /** counters() with packet rates since the previous call. */
  stats(): StatsBody {
    const body = this.counters();
    const now = Date.now();
    const prev = this.lastSample;
    const packets = new Map<string, number>();
    for (const v of body.vips) {
      packets.set(v.name, v.packets);
      const before = prev?.packets.get(v.name);
      if (prev && before !== undefined && now > prev.at) v.rate_pps = Math.round((v.packets - before) / ((now - prev.at) / 1000));
    }
    this.lastSample = { at: now, packets };
    return body;
  }
}
