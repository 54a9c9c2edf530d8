/**
 * Hand-built store snapshots for the planner and reconciler tests (no
 * dependency on src/store: only its types).
 */
import type { PolicyRecord } from '../../src/model/types.js';
import type { StoreSnapshot, StoredBackend, StoredVip, Tombstone } from '../../src/store/types.js';

const META = { created_revision: 1, updated_revision: 1, owner: null };

/** A stored VIP: TCP port 80, no rules, automatic M, unless overridden. */
export function vipRec(name: string, dpId: number, address: string, o: Partial<StoredVip> = {}): StoredVip {
  return {
    name,
    dp_id: dpId,
    address,
    port: 80,
    protocol: 'tcp',
    encap: 'ipip',
    allow: [],
    deny: [],
    policies: [],
    rate_limit: null,
    maglev_m: null,
    source_affinity: false,
    backend_count: 0,
    ...META,
    ...o,
  };
}

/** A stored backend: active, weight 100, generation 1, unless overridden. */
export function beRec(vip: string, address: string, dpId: number, o: Partial<StoredBackend> = {}): StoredBackend {
  return { vip, address, weight: 100, state: 'active', dp_id: dpId, dp_gen: 1, ...META, ...o };
}

export function policyRec(name: string, allow: string[] = [], deny: string[] = []): PolicyRecord {
  return { name, allow, deny, ...META };
}

export function tombstone(vipDpId: number, address: string, dpId: number, gen = 1): Tombstone {
  return { dp_id: dpId, dp_gen: gen, vip_dp_id: vipDpId, address, expires_at: Date.now() + 60_000, port: 0, host: null };
}

export interface SnapshotParts {
  vips: StoredVip[];
  backends?: StoredBackend[];
  policies?: PolicyRecord[];
  tombstones?: Tombstone[];
  seed?: number;
  revision?: number;
}

/** A snapshot; backend_count is filled in from the backends. */
export function snapshot(p: SnapshotParts): StoreSnapshot {
  const backends = p.backends ?? [];
  return {
    revision: p.revision ?? 1,
    hash_seed: p.seed ?? 0x5eed1234,
    vips: p.vips.map((v) => ({ ...v, backend_count: backends.filter((b) => b.vip === v.name).length })),
    backends,
    policies: p.policies ?? [],
    tombstones: p.tombstones ?? [],
  };
}
