/**
 * The datapath's desired contents, in datapath terms: what the planner
 * (src/reconcile/plan.ts) makes of a store snapshot, and what the reconciler
 * writes into the maps. Ids are the maps' indexes, allocated and kept by
 * the store so they survive restarts.
 */
import type { Protocol } from './types.js';

/** How a backend appears in the datapath. */
export type DpBackendState = 'active' | 'draining' | 'down';

export interface DpBackend {
  /** Index into ferry_backends. */
  id: number;
  /** Generation of this id; conntrack entries of an older generation never hit. */
  gen: number;
  address: string;
  weight: number;
  state: DpBackendState;
  /** The port it listens on; 0 or absent: the VIP's (translated on its host). */
  port?: number;
  /** "local" (this host), its host's address (the next hop), or absent/null: itself. */
  host?: string | null;
}

/** Whether a backend takes slots in its VIP's Maglev table, i.e. gets new flows: active, with a weight. */
export function hasSlots(b: DpBackend): boolean {
  return b.state === 'active' && b.weight > 0;
}

export interface DpVip {
  /** Index into ferry_maglev, ferry_vip_stats, ferry_ratelimit. */
  id: number;
  name: string;
  address: string;
  port: number;
  protocol: Protocol;
  /** VIP_F_* flags. */
  flags: number;
  /** Maglev table size. */
  m: number;
  rlIntervalNs: bigint;
  rlToleranceNs: bigint;
  /** Effective source rules (the VIP's own plus its policies'). */
  allow: string[];
  deny: string[];
  backends: DpBackend[];
}

/** A deleted backend whose existing flows still drain until it expires. */
export interface DpTombstone extends DpBackend {
  vipId: number;
}

export interface DpState {
  vips: DpVip[];
  tombstones: DpTombstone[];
  /** Numbers the plans of one planner, when it keeps track (IncrementalPlanner). */
  serial?: number;
  /**
   * What changed since the plan numbered `since`: VIPs planned anew (new or
   * changed DpVip objects) and the ids of VIPs gone. Every other VIP is the
   * same object as in that plan. An applier that applied plan `since` may
   * apply just this; any other applies `vips` whole.
   */
  changes?: DpChanges;
}

export interface DpChanges {
  since: number;
  vips: DpVip[];
  removed: number[];
}

/** What one reconcile did. */
export interface ReconcileReport {
  /** Map writes and deletes performed (0 when nothing drifted). */
  changes: number;
  /** Wall time of the apply, in milliseconds. */
  durationMs: number;
}

/** Writes a desired state into the datapath. The real one is src/reconcile; tests of upper layers fake it. */
export interface Applier {
  apply(state: DpState): ReconcileReport;
}
