/**
 * What the API needs from the daemon besides the Controller: live status and
 * counters (read from the datapath) and readiness. The daemon implements
 * DaemonInfo; tests fake it.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { LoggerOptions } from 'pino';
import type { Controller } from '../control/controller.js';
import type { KubernetesView } from '../model/kubernetes.js';
import type { FerryMetrics } from '../metrics/index.js';
import type { MonitorSource } from '../monitor/stream.js';
import type { BgpView } from '../model/bgp.js';
import type { FleetView } from '../model/fleet.js';
import type { BackendHealth } from '../model/health.js';
import type { MaglevSharesView, MaglevTablesView } from '../model/maglev.js';
import type { StatsBody, StatusBody } from '../model/status.js';

export interface DaemonInfo {
  status(): StatusBody;
  stats(): StatsBody;
  /** True once the first reconcile has completed (and, in kubernetes mode, the first sync). */
  ready(): boolean;
  /** Why ready() is false, for /readyz. */
  notReadyReason?(): string;
  /** The Kubernetes mode's view; absent or null in standalone mode. */
  kubernetes?(): KubernetesView | null;
  /** The Maglev tables as hosts compare them (GET /v1/maglev); absent: 404. */
  maglevTables?(): MaglevTablesView;
  /** One VIP's table as slots per backend (GET /v1/maglev/{name}); null: no such VIP in the datapath's plan. */
  maglevShares?(name: string): MaglevSharesView | null;
  version: string;
}

/** Runtime health of backends (the daemon's health monitor; absent: every backend is 'unchecked'). */
export interface HealthView {
  /** Catches up with writes committed since the view last looked (called once per read request). */
  refresh(): void;
  backendHealth(vip: string, address: string): BackendHealth;
}

/** The per-client request limit of the TCP listeners. */
export interface RateLimit {
  /** Requests one client address may make per window. */
  max: number;
  windowMs: number;
}

/** What the BGP routes need of the announcer. */
export interface BgpControl {
  /** Reads BIRD's sessions afresh. */
  refresh(): Promise<void>;
  view(): BgpView;
  drain(reason: string | null): void;
  undrain(): void;
  /** Resolves once BIRD has been told of the latest change (or telling it failed). */
  settled(): Promise<void>;
}

/** What the fleet route needs of the fleet. */
export interface FleetStatus {
  view(): FleetView;
}

export interface TlsOptions {
  key: string | Buffer;
  cert: string | Buffer;
  ca?: string | Buffer;
  /** Oldest protocol version accepted; default TLSv1.2. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
}

export interface ApiOptions {
  controller: Controller;
  info: DaemonInfo;
  /** How long a deleted backend's flows drain (seconds). */
  drainSeconds: number;
  /**
   * null: no authentication (unix socket). Otherwise every route but /healthz, /readyz and the status page's
   * files needs a bearer token; `readOnly` tokens (a subset of `tokens`) may only GET.
   */
  auth: { tokens: string[]; readOnly?: string[] } | null;
  /** pino options, a pino (or fastify) logger, or false for none. */
  logger: LoggerOptions | FastifyBaseLogger | false;
  /** Largest request body in bytes; default 1 MiB. */
  bodyLimit?: number;
  /** Largest body of PUT /v1/state in bytes (a whole desired state); default 32 MiB. */
  stateBodyLimit?: number;
  /** Serve HTTPS with this key and certificate (TCP listeners). */
  https?: TlsOptions;
  /** Where backups and restores are staged; default the system's temporary folder. */
  scratchDir?: string;
  /** Requests per client address and window (TCP listeners); absent: unlimited. */
  rateLimit?: RateLimit;
  /** The headers and then the whole request must arrive within this; default 30 s. */
  requestTimeoutMs?: number;
  /** Prometheus metrics: served at /metrics, and every request observed. */
  metrics?: FerryMetrics;
  /** Live datapath events for GET /v1/monitor (absent: the route answers 503). */
  monitor?: MonitorSource;
  /** Backend health shown by the backend routes. */
  health?: HealthView;
  /** The BGP announcement for /v1/bgp (absent: the routes answer 404). */
  bgp?: BgpControl;
  /** The fleet store for /v1/fleet (absent: 404). */
  fleet?: FleetStatus;
}
