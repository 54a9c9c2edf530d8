/**
 * Ferry's desired state as operators write it (REST bodies, `ferryctl apply`
 * files) and as the store returns it. Field names are the API's (snake_case).
 */
import type { HealthCheck, HealthCheckSpec } from './health.js';

export type Protocol = 'tcp' | 'udp';

/** active: new and existing flows; draining: existing flows only; disabled: no flows. */
export type BackendState = 'active' | 'draining' | 'disabled';

/** Encapsulation towards backends: IPIP, IP6IP6, 4in6 or 6in4 by the families involved. */
export type Encap = 'ipip';
/**
 * How packets reach a VIP's backends: dsr (encapsulated; the backend, or the
 * node programs of its host, answer the client directly) or snat (source NAT
 * to the backend's address and port; replies return through this host).
 */
export type Forwarding = 'dsr' | 'snat';
export const FORWARDINGS: readonly Forwarding[] = ['dsr', 'snat'];

export interface RateLimit {
  /** New flows per second admitted for the VIP. */
  new_flows_per_sec: number;
  /** Flows admitted at once above the rate. */
  burst: number;
}

export interface BackendSpec {
  address: string;
  /** 0..65535; 0 = no new flows. Default 100. */
  weight?: number;
  /** Default active. */
  state?: BackendState;
  /**
   * The port it listens on, when not the VIP's: its host translates (see
   * `host`). 0 or absent: the VIP's port.
   */
  port?: number;
  /**
   * Where it runs when it is not its own host: "local" (this host: its
   * packets go up the stack here to be translated) or the address of its
   * host (a Kubernetes node running Ferry, the next hop of its packets).
   * Absent or null: it receives the tunnel itself and decapsulates.
   */
  host?: string | null;
  /** Replaces the VIP's health check for this backend; null or absent: the VIP's. */
  health_check?: HealthCheckSpec | null;
}

export interface VipSpec {
  /** Unique name, [a-z0-9][a-z0-9._-]{0,62}. Identifies the VIP in URLs. */
  name: string;
  address: string;
  /** 0 = every port of the protocol. */
  port: number;
  protocol: Protocol;
  /** Default ipip. */
  encap?: Encap;
  /** Default dsr. */
  forwarding?: Forwarding;
  /** Source CIDRs; when any allow rule applies, sources not allowed are dropped. */
  allow?: string[];
  deny?: string[];
  /** Names of policies whose allow/deny CIDRs add to this VIP's. */
  policies?: string[];
  rate_limit?: RateLimit | null;
  /** Maglev table size, one of MAGLEV_PRIMES; default: chosen from the backend count. */
  maglev_m?: number | null;
  /** Hash source and destination addresses only: every connection of a client on one backend. */
  source_affinity?: boolean;
  /** Health check of the VIP's backends (a backend may override it); null or absent: none. */
  health_check?: HealthCheckSpec | null;
}

/** A VIP with its backends, as in a declarative state file. */
export interface VipWithBackends extends VipSpec {
  backends?: BackendSpec[];
}

export interface PolicySpec {
  name: string;
  allow?: string[];
  deny?: string[];
}

/** The whole desired state (PUT /v1/state, ferryctl apply -f). */
export interface DesiredState {
  vips: VipWithBackends[];
  policies?: PolicySpec[];
}

/** Bookkeeping every stored resource carries. */
export interface ResourceMeta {
  created_revision: number;
  updated_revision: number;
  /** Null for resources made through the API; "kubernetes:NS/NAME" for those the Kubernetes mode owns. */
  owner: string | null;
}

export interface BackendRecord extends Required<Omit<BackendSpec, 'health_check' | 'port' | 'host'>>, ResourceMeta {
  vip: string;
  /** Present only when not the VIP's. */
  port?: number;
  /** Present only when set. */
  host?: string;
  /** Present only when the backend overrides its VIP's check. */
  health_check?: HealthCheck;
}

/** A VIP with every default filled: what the store keeps of a VipSpec. */
export interface VipSettings {
  name: string;
  address: string;
  port: number;
  protocol: Protocol;
  encap: Encap;
  allow: string[];
  deny: string[];
  policies: string[];
  rate_limit: RateLimit | null;
  maglev_m: number | null;
  source_affinity: boolean;
  /** Present only when not dsr (normal form). */
  forwarding?: Forwarding;
  /** Present only when configured (normal form). */
  health_check?: HealthCheck;
}

export interface VipRecord extends VipSettings, ResourceMeta {
  /** Count of backends (any state). */
  backend_count: number;
}

export interface PolicyRecord extends ResourceMeta {
  name: string;
  allow: string[];
  deny: string[];
}

export const DEFAULT_WEIGHT = 100;
/** BackendSpec.host of a backend on this host. */
export const LOCAL_HOST = 'local';
export const MAX_WEIGHT = 65535;
export const NAME_PATTERN = '^[a-z0-9][a-z0-9._-]{0,62}$';
