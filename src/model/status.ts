/**
 * What ferryd reports of itself: GET /v1/status and GET /v1/stats as the
 * API serves them, the metrics read them and ferryctl and the lab print them.
 */

export interface InterfaceStatus {
  name: string;
  /** 'native' | 'generic' | 'offload' | 'none'. */
  xdp_mode: string;
}

export interface MapStatus {
  name: string;
  max_entries: number;
  /** Entries in use, when the map can be counted cheaply. */
  used?: number;
}

export interface StatusBody {
  version: string;
  /** Last revision committed in the store. */
  revision: number;
  /** Revision the datapath holds. */
  applied_revision: number;
  uptime_seconds: number;
  interfaces: InterfaceStatus[];
  maps: MapStatus[];
  last_reconcile: { changes: number; duration_ms: number };
}

export interface BackendStats {
  address: string;
  packets: number;
  bytes: number;
  new_flows: number;
}

export interface VipStats {
  name: string;
  packets: number;
  bytes: number;
  new_flows: number;
  ct_hits: number;
  ct_misses: number;
  drops: number;
  /** Packets per second over the daemon's last sampling interval. */
  rate_pps?: number;
  backends: BackendStats[];
}

export interface StatsBody {
  vips: VipStats[];
  /** Datapath drops by reason (packets). */
  drops: Record<string, number>;
  /** Global datapath counters by name (packets), when the daemon has a datapath. */
  counters?: Record<string, number>;
}
