/**
 * What GET /v1/bgp, `ferryctl bgp` and /metrics show of the BGP
 * announcement of this host's VIPs (src/bgp).
 */

/** Why a VIP address is not announced; null when it is. */
export type NotAnnouncedReason = 'no active backend' | 'host drained' | 'outside bgp.prefixes' | 'address of this host';

export interface BgpPrefixView {
  /** "198.19.0.10/32" or "2001:db8::10/128". */
  prefix: string;
  announced: boolean;
  reason: NotAnnouncedReason | null;
  /** VIPs on this address, and those with an active backend. */
  vips: number;
  serving: number;
}

export interface BgpNeighborView {
  /** BIRD's protocol name (ferry_peerN). */
  protocol: string;
  address: string;
  as: number;
  /** BIRD's protocol state (up, start, down); null until BIRD has been asked. */
  state: string | null;
  /** The session: Established, Active, Connect, Idle, ...; null until known. */
  session: string | null;
  established: boolean;
  since: string | null;
  /** BIRD's last error on this session, if it reports one. */
  info: string | null;
}

export interface BgpView {
  router_id: string;
  local_as: number;
  /** Set by `ferryctl drain-host`: every VIP withdrawn until undrained (survives restarts). */
  drained: { since: string; reason: string | null } | null;
  announced: number;
  prefixes: BgpPrefixView[];
  neighbors: BgpNeighborView[];
  bird: {
    config: string;
    socket: string;
    /** BIRD answered the last request on its socket. */
    reachable: boolean;
    /** BIRD holds the current file (the last reload after the last write succeeded). */
    in_sync: boolean;
    reloads: number;
    failed_reloads: number;
    last_reload_at: string | null;
    last_error: string | null;
  };
}
