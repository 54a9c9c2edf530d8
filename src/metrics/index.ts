/**
 * Prometheus metrics (prom-client). Datapath counters are read at scrape
 * time from the pinned per-CPU maps (summed over CPUs), so they stay
 * monotonic across daemon restarts; the control plane's own figures
 * (reconcile durations, API requests) are observed as they happen.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { StatsBody, StatusBody } from '../model/status.js';
import type { BgpView } from '../model/bgp.js';
import type { FleetView } from '../model/fleet.js';
import type { KubernetesView } from '../model/kubernetes.js';
import type { LbIpamView } from '../model/lbipam.js';
import type { ReconcileReport } from '../model/dpstate.js';

/** Where the scrape-time values come from (the daemon). */
export interface MetricsSource {
  /** Monotonic datapath counters, per VIP and backend, and drops by reason. */
  counters(): StatsBody;
  status(): StatusBody;
  /** Backend health: 1 up, 0 down, per VIP and backend address; empty without health checks. */
  health?(): Array<{ vip: string; backend: string; up: boolean }>;
  /** Packets of health checks through the DSR path by outcome (bpf/hc.bpf.c); empty when it is not loaded. */
  dsrCheckPackets?(): Record<string, bigint>;
  /** Packets of the node programs (bpf/node.bpf.c: port translation where the endpoint lives) by counter. */
  nodePackets?(): Partial<Record<string, bigint>>;
  /** The Kubernetes mode's figures (kubernetes mode only). */
  kubernetes?(): KubernetesView | null;
  /** The BGP announcement (bgp.enabled only). */
  bgpView?(): BgpView | null;
  /** The fleet store (fleet members only). */
  fleetView?(): FleetView | null;
}

export interface MetricsOptions {
  /** Register the ferry_k8s_* metrics (kubernetes mode). */
  kubernetes?: boolean;
  /** Register the ferry_bgp_* metrics (bgp.enabled). */
  bgp?: boolean;
  /** Register the ferry_fleet_* metrics (a fleet member). */
  fleet?: boolean;
}

const INFORMERS = [
  ['services', 'services'],
  ['endpointslices', 'endpoint_slices'],
  ['nodes', 'nodes'],
] as const;

/** A counter whose value is read from elsewhere at each scrape. */
function mirroredCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Array<[Partial<Record<L, string>>, number]>,
): Counter<L> {
  return new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels, value);
    },
  });
}

/** A gauge read at each scrape. */
function mirroredGauge<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Array<[Partial<Record<L, string>>, number]>,
): Gauge<L> {
  return new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.set(labels, value);
    },
  });
}

export class FerryMetrics {
  readonly registry = new Registry();
  private readonly reconcileSeconds: Histogram;
  private readonly apiRequests: Counter<'method' | 'route' | 'status'>;
  private readonly apiSeconds: Histogram<'method' | 'route'>;
  /** One read of the source per scrape, shared by every metric. */
  private scrape: { counters: StatsBody; status: StatusBody } | undefined;
  private k8sScrape: { view: KubernetesView | null } | undefined;
  private bgpScrape: { view: BgpView | null } | undefined;
  private fleetScrape: { view: FleetView | null } | undefined;
  private readonly k8sBatchSeconds: Histogram | undefined;

  constructor(
    private readonly source: MetricsSource,
    opts: MetricsOptions = {},
  ) {
    collectDefaultMetrics({ register: this.registry });
    this.reconcileSeconds = new Histogram({
      name: 'ferry_reconcile_duration_seconds',
      help: 'Time to apply a desired state to the datapath.',
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [this.registry],
    });
    this.apiRequests = new Counter({
      name: 'ferry_api_requests_total',
      help: 'API requests by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
    });
    this.apiSeconds = new Histogram({
      name: 'ferry_api_request_duration_seconds',
      help: 'API request latency by method and route.',
      labelNames: ['method', 'route'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: [this.registry],
    });
    this.datapathMetrics();
    this.controlMetrics();
    if (opts.kubernetes) {
      this.k8sBatchSeconds = new Histogram({
        name: 'ferry_k8s_batch_duration_seconds',
        help: 'Time of a Kubernetes sync batch (translation, store and datapath).',
        buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers: [this.registry],
      });
      this.kubernetesMetrics();
    }
    if (opts.bgp) this.bgpMetrics();
    if (opts.fleet) this.fleetMetrics();
  }

  private get counters(): StatsBody {
    return this.read().counters;
  }

  private read(): { counters: StatsBody; status: StatusBody } {
    this.scrape ??= { counters: this.source.counters(), status: this.source.status() };
    return this.scrape;
  }

  private datapathMetrics(): void {
    const r = this.registry;
    const vipCounter = (name: string, help: string, pick: (v: StatsBody['vips'][number]) => number) =>
      mirroredCounter(r, name, help, ['vip'], () => this.counters.vips.map((v) => [{ vip: v.name }, pick(v)]));
    vipCounter('ferry_vip_packets_total', 'Packets forwarded to backends, per VIP.', (v) => v.packets);
    vipCounter('ferry_vip_bytes_total', 'Bytes (inner IP length) forwarded to backends, per VIP.', (v) => v.bytes);
    vipCounter('ferry_vip_new_flows_total', 'New flows (Maglev lookups), per VIP.', (v) => v.new_flows);
    vipCounter('ferry_vip_conntrack_hits_total', 'Packets of established flows found in conntrack, per VIP.', (v) => v.ct_hits);
    vipCounter('ferry_vip_conntrack_misses_total', 'Conntrack misses, per VIP.', (v) => v.ct_misses);
    vipCounter('ferry_vip_drops_total', 'Packets dropped by policy, rate limit or lack of backend, per VIP.', (v) => v.drops);
    const beCounter = (name: string, help: string, pick: (b: StatsBody['vips'][number]['backends'][number]) => number) =>
      mirroredCounter(r, name, help, ['vip', 'backend'], () =>
        this.counters.vips.flatMap((v) =>
          v.backends.map((b) => [{ vip: v.name, backend: b.address }, pick(b)] as [Record<string, string>, number]),
        ),
      );
    beCounter('ferry_backend_packets_total', 'Packets forwarded, per backend.', (b) => b.packets);
    beCounter('ferry_backend_bytes_total', 'Bytes forwarded, per backend.', (b) => b.bytes);
    beCounter('ferry_backend_new_flows_total', 'New flows, per backend.', (b) => b.new_flows);
    mirroredCounter(r, 'ferry_drops_total', 'Datapath drops by reason.', ['reason'], () =>
      Object.entries(this.counters.drops).map(([reason, n]) => [{ reason }, n]),
    );
    mirroredCounter(r, 'ferry_datapath_packets_total', 'Global datapath counters (rx, passes, tx, ICMP, events...).', ['counter'], () =>
      Object.entries(this.counters.counters ?? {}).map(([counter, n]) => [{ counter }, n]),
    );
    mirroredGauge(r, 'ferry_backend_up', 'Backend health: 1 up, 0 down.', ['vip', 'backend'], () =>
      (this.source.health?.() ?? []).map((h) => [{ vip: h.vip, backend: h.backend }, h.up ? 1 : 0]),
    );
    mirroredCounter(
      r,
      'ferry_health_dsr_packets_total',
      'Health-check packets through the DSR path: encap (sent to a VIP in the tunnel), reply (translated back), and drops by reason. Restarts from 0 with ferryd.',
      ['result'],
      () => Object.entries(this.source.dsrCheckPackets?.() ?? {}).map(([result, n]) => [{ result }, Number(n)]),
    );
    mirroredCounter(
      r,
      'ferry_node_packets_total',
      'Port translation where the endpoint lives (tc_node_in / tc_node_out): dnat (a tunnel packet translated to a local endpoint), rev_nat (a reply given the frontend address), not_ours, error.',
      ['counter'],
      () => Object.entries(this.source.nodePackets?.() ?? {}).map(([counter, n]) => [{ counter }, Number(n ?? 0n)]),
    );
  }

  private controlMetrics(): void {
    const r = this.registry;
    mirroredGauge(r, 'ferry_map_capacity', 'Capacity of each datapath map.', ['map'], () =>
      this.read().status.maps.map((m) => [{ map: m.name }, m.max_entries]),
    );
    mirroredGauge(r, 'ferry_map_entries', 'Entries in use, for maps counted cheaply.', ['map'], () =>
      this.read()
        .status.maps.filter((m) => m.used !== undefined)
        .map((m) => [{ map: m.name }, m.used!]),
    );
    mirroredGauge(r, 'ferry_applied_revision', 'Store revision the datapath holds.', [], () => [[{}, this.read().status.applied_revision]]);
    mirroredGauge(r, 'ferry_store_revision', 'Last revision committed in the store.', [], () => [[{}, this.read().status.revision]]);
  }

  private k8s(): KubernetesView | null {
    this.k8sScrape ??= { view: this.source.kubernetes?.() ?? null };
    return this.k8sScrape.view;
  }

  private kubernetesMetrics(): void {
    const r = this.registry;
    const one = (pick: (v: KubernetesView) => number) => (): Array<[Record<string, string>, number]> => {
      const v = this.k8s();
      return v === null ? [] : [[{}, pick(v)]];
    };
    mirroredGauge(
      r,
      'ferry_k8s_ready',
      'Kubernetes mode: 1 once every informer listed and the first batch is written.',
      [],
      one((v) => (v.ready ? 1 : 0)),
    );
    type Field = 'objects' | 'lists' | 'watches' | 'events' | 'bookmarks' | 'gone' | 'errors';
    const perInformer = (field: Field) => (): Array<[Record<string, string>, number]> => {
      const v = this.k8s();
      return v === null ? [] : INFORMERS.map(([resource, key]) => [{ resource }, v.informers[key][field]]);
    };
    mirroredGauge(r, 'ferry_k8s_informer_objects', 'Objects in the watch cache, per resource.', ['resource'], perInformer('objects'));
    mirroredCounter(r, 'ferry_k8s_informer_lists_total', 'Complete (re)lists, per resource.', ['resource'], perInformer('lists'));
    mirroredCounter(r, 'ferry_k8s_informer_watches_total', 'Watch requests started, per resource.', ['resource'], perInformer('watches'));
    mirroredCounter(
      r,
      'ferry_k8s_informer_events_total',
      'Changes delivered to the sync, per resource.',
      ['resource'],
      perInformer('events'),
    );
    mirroredCounter(
      r,
      'ferry_k8s_informer_bookmarks_total',
      'Watch bookmarks received, per resource.',
      ['resource'],
      perInformer('bookmarks'),
    );
    mirroredCounter(
      r,
      'ferry_k8s_informer_gone_total',
      '410 Gone answers (each followed by a re-list), per resource.',
      ['resource'],
      perInformer('gone'),
    );
    mirroredCounter(
      r,
      'ferry_k8s_informer_errors_total',
      'Failed lists and watches (retried with backoff), per resource.',
      ['resource'],
      perInformer('errors'),
    );
    mirroredCounter(
      r,
      'ferry_k8s_sync_events_total',
      'Events the sync received.',
      [],
      one((v) => v.sync.events),
    );
    mirroredCounter(
      r,
      'ferry_k8s_sync_batches_total',
      'Sync batches run.',
      [],
      one((v) => v.sync.batches),
    );
    mirroredCounter(
      r,
      'ferry_k8s_sync_transactions_total',
      'Store transactions of the sync that committed a change.',
      [],
      one((v) => v.sync.transactions),
    );
    mirroredCounter(
      r,
      'ferry_k8s_sync_failed_transactions_total',
      'Sync transactions refused as a whole (requeued).',
      [],
      one((v) => v.sync.failed_transactions),
    );
    mirroredCounter(
      r,
      'ferry_k8s_sync_services_written_total',
      'Services whose store state the sync rewrote.',
      [],
      one((v) => v.sync.services_written),
    );
    mirroredGauge(
      r,
      'ferry_k8s_services',
      'Services in the watch cache.',
      [],
      one((v) => v.services),
    );
    mirroredGauge(
      r,
      'ferry_k8s_skipped',
      'Parts of Services not served (GET /v1/kubernetes lists why).',
      [],
      one((v) => v.skipped.length),
    );
    mirroredGauge(
      r,
      'ferry_k8s_ignored_services',
      'Services that are not ours (headless, ExternalName, another proxy).',
      [],
      one((v) => v.ignored.length),
    );
    mirroredGauge(
      r,
      'ferry_k8s_cluster_ip_entries',
      'ClusterIP × port entries in the latest list.',
      [],
      one((v) => v.cluster_ips.entries),
    );
    mirroredGauge(r, 'ferry_k8s_health_check_node_port_listeners', 'Health-check node port listeners by state.', ['state'], () => {
      const v = this.k8s();
      if (v === null) return [];
      const all = v.health_check_node_ports.ports.flatMap((p) => p.listeners);
      const up = all.filter((l) => l.listening).length;
      return [
        [{ state: 'listening' }, up],
        [{ state: 'not_listening' }, all.length - up],
      ];
    });
    mirroredCounter(
      r,
      'ferry_k8s_health_check_node_port_requests_total',
      'Health-check node port requests answered.',
      [],
      one((v) => v.health_check_node_ports.requests),
    );
    mirroredCounter(
      r,
      'ferry_k8s_health_check_node_port_bind_failures_total',
      'Failed binds of health-check node ports (retried).',
      [],
      one((v) => v.health_check_node_ports.bind_failures),
    );
    const ipam = (pick: (v: LbIpamView) => number) => (): Array<[Record<string, string>, number]> => {
      const v = this.k8s()?.lb_ipam ?? null;
      return v === null ? [] : [[{}, pick(v)]];
    };
    mirroredGauge(
      r,
      'ferry_k8s_lb_ipam_leader',
      'LoadBalancer IP allocator: 1 on the node holding the Lease.',
      [],
      ipam((v) => (v.leader ? 1 : 0)),
    );
    mirroredGauge(r, 'ferry_k8s_lb_ipam_allocated', 'LoadBalancer addresses given out, per pool.', ['pool'], () => {
      const v = this.k8s()?.lb_ipam ?? null;
      return v === null ? [] : v.pools.map((p) => [{ pool: p.name }, p.allocated]);
    });
    mirroredGauge(
      r,
      'ferry_k8s_lb_ipam_pending',
      'LoadBalancer Services missing an address (GET /v1/kubernetes says why).',
      [],
      ipam((v) => v.pending.length),
    );
    mirroredCounter(
      r,
      'ferry_k8s_lb_ipam_writes_total',
      'Service status writes of the LoadBalancer IP allocator on this node.',
      [],
      ipam((v) => v.writes),
    );
    mirroredCounter(
      r,
      'ferry_k8s_lb_ipam_conflicts_total',
      'Status writes refused because the Service changed meanwhile.',
      [],
      ipam((v) => v.conflicts),
    );
  }

  private bgpMetrics(): void {
    const r = this.registry;
    const view = (): BgpView | null => {
      this.bgpScrape ??= { view: this.source.bgpView?.() ?? null };
      return this.bgpScrape.view;
    };
    const one = (pick: (v: BgpView) => number) => (): Array<[Record<string, string>, number]> => {
      const v = view();
      return v === null ? [] : [[{}, pick(v)]];
    };
    mirroredGauge(
      r,
      'ferry_bgp_announced_prefixes',
      'VIP addresses this host announces by BGP now.',
      [],
      one((v) => v.announced),
    );
    mirroredGauge(
      r,
      'ferry_bgp_host_drained',
      '1 while the host is drained (ferryctl drain-host): every VIP withdrawn.',
      [],
      one((v) => (v.drained === null ? 0 : 1)),
    );
    mirroredGauge(r, 'ferry_bgp_neighbor_established', 'BGP sessions through BIRD: 1 established, 0 not.', ['neighbor'], () =>
      (view()?.neighbors ?? []).map((n) => [{ neighbor: n.address }, n.established ? 1 : 0]),
    );
    mirroredGauge(
      r,
      'ferry_bgp_bird_in_sync',
      '1 when BIRD has loaded the announced set ferryd wrote last.',
      [],
      one((v) => (v.bird.in_sync ? 1 : 0)),
    );
    mirroredCounter(r, 'ferry_bgp_bird_reloads_total', 'BIRD reloads asked (birdc configure) by result.', ['result'], () => {
      const v = view();
      return v === null
        ? []
        : [
            [{ result: 'ok' }, v.bird.reloads - v.bird.failed_reloads],
            [{ result: 'failed' }, v.bird.failed_reloads],
          ];
    });
  }

  private fleetMetrics(): void {
    const r = this.registry;
    const one = (pick: (v: FleetView) => number) => (): Array<[Record<string, string>, number]> => {
      this.fleetScrape ??= { view: this.source.fleetView?.() ?? null };
      const v = this.fleetScrape.view;
      return v === null ? [] : [[{}, pick(v)]];
    };
    mirroredGauge(
      r,
      'ferry_fleet_connected',
      '1 while this host watches the fleet store (etcd); 0: serving what it mirrored last, writes refused.',
      [],
      one((v) => (v.connected ? 1 : 0)),
    );
    mirroredGauge(
      r,
      'ferry_fleet_revision',
      "The etcd revision this host's store mirrors.",
      [],
      one((v) => v.revision),
    );
    mirroredGauge(
      r,
      'ferry_fleet_rejected_keys',
      'Keys of the fleet store this host could not apply.',
      [],
      one((v) => v.rejected.length),
    );
    mirroredGauge(
      r,
      'ferry_fleet_members',
      'Fleet members with a live record, this host included.',
      [],
      one((v) => v.members.length),
    );
  }

  /** Called after every Kubernetes sync batch. */
  observeK8sBatch(ms: number): void {
    this.k8sBatchSeconds?.observe(ms / 1000);
  }

  /** Called after every datapath apply. */
  observeReconcile(report: ReconcileReport): void {
    this.reconcileSeconds.observe(report.durationMs / 1000);
  }

  /** Called once per answered API request. */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.apiRequests.inc({ method, route, status: String(status) });
    this.apiSeconds.observe({ method, route }, seconds);
  }

  /** The exposition text; reads the datapath once. */
  async render(): Promise<string> {
    this.scrape = undefined;
    this.k8sScrape = undefined;
    this.bgpScrape = undefined;
    this.fleetScrape = undefined;
    try {
      return await this.registry.metrics();
    } finally {
      this.scrape = undefined;
      this.k8sScrape = undefined;
      this.bgpScrape = undefined;
      this.fleetScrape = undefined;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
