/**
 * Rows as SQLite returns them, the normalized specs the store writes, and
 * the mappings between them and the API's records.
 *
 * A "normalized" spec has every default filled and every address and CIDR
 * in canonical text, so two specs mean the same thing iff they are equal:
 * that is how a PUT of identical content is recognized as a no-op.
 */
import { dpAddr } from '../datapath/addr.js';
import {
  DEFAULT_WEIGHT,
  LOCAL_HOST,
  type BackendRecord,
  type BackendSpec,
  type BackendState,
  type Encap,
  type Forwarding,
  type PolicyRecord,
  type PolicySpec,
  type Protocol,
  type VipRecord,
  type VipSettings,
  type VipSpec,
} from '../model/types.js';
import { normHealthCheck, type HealthCheck, type HealthEvent, type HealthStatus } from '../model/health.js';
import { canonicalCidr, ipFamily, validatedIp } from '../net/addr.js';

export interface MetaRow {
  revision: number;
  hash_seed: number;
}

export interface VipRow {
  id: number;
  name: string;
  address: string;
  family: 4 | 6;
  port: number;
  protocol: Protocol;
  encap: Encap;
  allow: string;
  deny: string;
  rl_new_flows_per_sec: number | null;
  rl_burst: number | null;
  maglev_m: number | null;
  source_affinity: 0 | 1;
  forwarding: Forwarding;
  owner: string | null;
  created_revision: number;
  updated_revision: number;
  dp_id: number;
  /** JSON of a HealthCheck in normal form; null: none configured. */
  health_check: string | null;
  backend_count: number;
}

export interface BackendRow {
  id: number;
  vip_id: number;
  /** The VIP's name (joined). */
  vip: string;
  address: string;
  weight: number;
  state: BackendState;
  owner: string | null;
  created_revision: number;
  updated_revision: number;
  dp_id: number;
  dp_gen: number;
  /** JSON of the backend's own HealthCheck; null: its VIP's. */
  health_check: string | null;
  /** 0: the VIP's. */
  port: number;
  /** "local", an address, or null. */
  host: string | null;
}

/** A backend row without SQLite's own ids: what a record and a snapshot entry are made of. */
export type BackendFields = Omit<BackendRow, 'id' | 'vip_id'>;

/** A VIP row as written (an INSERT's RETURNING *): no backend count, which is computed by reads. */
export type VipFields = Omit<VipRow, 'backend_count'>;

export interface PolicyRow {
  name: string;
  allow: string;
  deny: string;
  owner: string | null;
  created_revision: number;
  updated_revision: number;
}

export interface HealthEventRow {
  id: number;
  time: string;
  vip: string;
  backend: string;
  from_status: HealthStatus;
  to_status: HealthStatus;
  reason: string | null;
}

export interface AuditRow {
  revision: number;
  time: string;
  actor: string;
  action: string;
  before: string | null;
  after: string | null;
}

/** A VIP spec with defaults filled and canonical addresses. */
export interface NormVip extends VipSettings {
  family: 4 | 6;
}

export interface NormBackend {
  address: string;
  weight: number;
  state: BackendState;
  /** Only when not 0. */
  port?: number;
  /** Only when set: "local" or a canonical address. */
  host?: string;
  health_check?: HealthCheck;
}

export interface NormPolicy {
  name: string;
  allow: string[];
  deny: string[];
}

// ------------------------------------------------------------ normalization

/** Only call on a validated spec. */
export function normVip(spec: VipSpec): NormVip {
  const address = validatedIp(spec.address);
  const rl = spec.rate_limit ?? null;
  return {
    name: spec.name,
    address,
    family: ipFamily(address),
    port: spec.port,
    protocol: spec.protocol,
    encap: spec.encap ?? 'ipip',
    allow: (spec.allow ?? []).map(canonicalCidr),
    deny: (spec.deny ?? []).map(canonicalCidr),
    policies: [...(spec.policies ?? [])],
    rate_limit: rl === null ? null : { new_flows_per_sec: rl.new_flows_per_sec, burst: rl.burst },
    maglev_m: spec.maglev_m ?? null,
    source_affinity: spec.source_affinity ?? false,
    ...forwardingOf(spec.forwarding ?? 'dsr'),
    // Last and only when set: records of VIPs without checks keep their shape.
    ...(spec.health_check ? { health_check: normHealthCheck(spec.health_check, 'vip') } : {}),
  };
}

/** Only call on a validated spec. */
export function normBackend(spec: BackendSpec): NormBackend {
  return {
    address: validatedIp(spec.address),
    weight: spec.weight ?? DEFAULT_WEIGHT,
    state: spec.state ?? 'active',
    ...pathOf(
      spec.port ?? 0,
      spec.host === undefined || spec.host === null ? null : spec.host === LOCAL_HOST ? LOCAL_HOST : validatedIp(spec.host),
    ),
    ...(spec.health_check ? { health_check: normHealthCheck(spec.health_check, 'backend') } : {}),
  };
}

/** Only call on a validated spec. */
export function normPolicy(spec: PolicySpec): NormPolicy {
  return { name: spec.name, allow: (spec.allow ?? []).map(canonicalCidr), deny: (spec.deny ?? []).map(canonicalCidr) };
}

/** The normalized spec a stored VIP record was written from. */
export function vipSpecOf(r: VipRecord): NormVip {
  return {
    name: r.name,
    address: r.address,
    family: ipFamily(r.address),
    port: r.port,
    protocol: r.protocol,
    encap: r.encap,
    allow: r.allow,
    deny: r.deny,
    policies: r.policies,
    rate_limit: r.rate_limit,
    maglev_m: r.maglev_m,
    source_affinity: r.source_affinity,
    ...forwardingOf(r.forwarding ?? 'dsr'),
    ...(r.health_check ? { health_check: r.health_check } : {}),
  };
}

/** A VIP's forwarding in normal form: present only when not the default (dsr). */
function forwardingOf(f: Forwarding): { forwarding?: Forwarding } {
  return f === 'dsr' ? {} : { forwarding: f };
}

export function backendSpecOf(r: BackendRecord): NormBackend {
  return {
    address: r.address,
    weight: r.weight,
    state: r.state,
    ...pathOf(r.port ?? 0, r.host ?? null),
    ...(r.health_check ? { health_check: r.health_check } : {}),
  };
}

/** A backend's port and host in normal form: present only when set, in this order. */
function pathOf(port: number, host: string | null): { port?: number; host?: string } {
  return { ...(port !== 0 ? { port } : {}), ...(host !== null ? { host } : {}) };
}

export function policySpecOf(r: PolicyRecord): NormPolicy {
  return { name: r.name, allow: r.allow, deny: r.deny };
}

/**
 * Deep equality of normalized specs. Both sides are built field by field
 * in the same order by the functions above, so their JSON is comparable.
 */
export function sameSpec<T extends NormVip | NormBackend | NormPolicy>(a: T, b: T): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

// ------------------------------------------------------------------ records

function parseList(json: string): string[] {
  return JSON.parse(json) as string[];
}

/** A stored check; written by the store in normal form, so read back as is. */
function parseCheck(json: string | null): { health_check?: HealthCheck } {
  if (json === null) return {};
  const c = JSON.parse(json) as HealthCheck;
  // Checks stored before `dsr` existed read as what they are (direct checks), in today's normal form.
  if (c.type !== 'none' && c.dsr === undefined) return { health_check: normHealthCheck(c, c.all_down === undefined ? 'backend' : 'vip') };
  return { health_check: c };
}

/** The column value of an optional check. */
export function checkJson(c: HealthCheck | undefined): string | null {
  return c === undefined ? null : JSON.stringify(c);
}

export function vipRecord(row: VipRow, policies: string[]): VipRecord {
  return {
    name: row.name,
    address: row.address,
    port: row.port,
    protocol: row.protocol,
    encap: row.encap,
    allow: parseList(row.allow),
    deny: parseList(row.deny),
    policies,
    rate_limit:
      row.rl_new_flows_per_sec === null || row.rl_burst === null
        ? null
        : { new_flows_per_sec: row.rl_new_flows_per_sec, burst: row.rl_burst },
    maglev_m: row.maglev_m,
    source_affinity: row.source_affinity === 1,
    ...forwardingOf(row.forwarding),
    ...parseCheck(row.health_check),
    backend_count: row.backend_count,
    owner: row.owner,
    created_revision: row.created_revision,
    updated_revision: row.updated_revision,
  };
}

export function backendRecord(row: BackendFields): BackendRecord {
  const optional =
    row.port === 0 && row.host === null && row.health_check === null
      ? null
      : { ...pathOf(row.port, row.host), ...parseCheck(row.health_check) };
  return makeBackendRecord(row.vip, row.address, row.weight, row.state, optional, row.owner, row.created_revision, row.updated_revision);
}

/** A backend's optional fields, each only when set. */
export type BackendOptional = Pick<NormBackend, 'port' | 'host' | 'health_check'>;

/** `b`, when it sets an optional field, else null (makeBackendRecord's fast case). */
export function optionalOf(b: BackendOptional): BackendOptional | null {
  return b.port === undefined && b.host === undefined && b.health_check === undefined ? null : b;
}

/**
 * A backend's record, fields in the API's order. Backends rarely set an
 * optional field (`optional` null), and then the record is one literal:
 * spreading three empty objects cost more than the rest of building it
 * (200,000 records in a burst of 100,000 backends).
 */
export function makeBackendRecord(
  vip: string,
  address: string,
  weight: number,
  state: BackendState,
  optional: BackendOptional | null,
  owner: string | null,
  created: number,
  updated: number,
): BackendRecord {
  if (optional === null) return { vip, address, weight, state, owner, created_revision: created, updated_revision: updated };
  return {
    vip,
    address,
    weight,
    state,
    ...(optional.port !== undefined ? { port: optional.port } : {}),
    ...(optional.host !== undefined ? { host: optional.host } : {}),
    ...(optional.health_check !== undefined ? { health_check: optional.health_check } : {}),
    owner,
    created_revision: created,
    updated_revision: updated,
  };
}

export function policyRecord(row: PolicyRow): PolicyRecord {
  return {
    name: row.name,
    allow: parseList(row.allow),
    deny: parseList(row.deny),
    owner: row.owner,
    created_revision: row.created_revision,
    updated_revision: row.updated_revision,
  };
}

/** Family byte then the 16 address bytes: orders backends numerically (IPv4 first). */
export function addressSortKey(canonical: string): Buffer {
  const a = dpAddr(canonical);
  const key = Buffer.alloc(17);
  key[0] = a.family;
  a.bytes.copy(key, 1);
  return key;
}

export function healthEvent(row: HealthEventRow): HealthEvent {
  return {
    id: row.id,
    time: row.time,
    vip: row.vip,
    backend: row.backend,
    from: row.from_status,
    to: row.to_status,
    reason: row.reason,
  };
}
