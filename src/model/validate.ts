/**
 * Semantic validation of the desired state: what JSON schemas cannot say
 * (addresses that cannot be VIPs, host bits in CIDRs, family mismatches,
 * duplicates, dangling policy references). Pure functions: each returns
 * FieldError[] (empty = valid) with JSON-pointer fields relative to the
 * object checked, or under `prefix` when nested (e.g. "/vips/2").
 *
 * The store calls these before every write and throws ValidationError; the
 * API may call them too to answer before opening a transaction.
 */
import { canonicalIp, ipFamily, isCanonicalIpv4, parseCidr, parseIp, unmappedIpv4 } from '../net/addr.js';
import { MAGLEV_PRIMES } from '../maglev/index.js';
import type { FieldError } from './errors.js';
import { healthCheckErrors } from './health.js';
import {
  FORWARDINGS,
  LOCAL_HOST,
  MAX_WEIGHT,
  NAME_PATTERN,
  type BackendSpec,
  type DesiredState,
  type PolicySpec,
  type VipSpec,
  type VipWithBackends,
} from './types.js';

export const RATE_LIMIT_MAX_FLOWS_PER_SEC = 10_000_000;
export const RATE_LIMIT_MAX_BURST = 1_000_000;
export const BACKEND_STATES = ['active', 'draining', 'disabled'] as const;

const NAME_RE = new RegExp(NAME_PATTERN);

/** Looks up whether a policy name exists outside the object being validated. */
export type PolicyLookup = (name: string) => boolean;

// ---------------------------------------------------------------- addresses

/** The kinds of address that can never be a VIP or a backend, and what to call them. */
const UNUSABLE_RANGES: Readonly<Record<string, string>> = {
  unspecified: 'unspecified',
  loopback: 'loopback',
  multicast: 'multicast',
  broadcast: 'the broadcast address',
  linkLocal: 'link-local',
};

/** Why `text` cannot be a VIP or backend address, or null if it can. */
function unicastProblem(text: unknown, role: 'VIP' | 'backend' | 'host'): string | null {
  if (typeof text === 'string' && isCanonicalIpv4(text)) return rangeProblem(text, unusableIpv4Range(text), role);
  const ip = parseIp(text);
  if (typeof ip === 'string') return ip;
  const v4 = unmappedIpv4(ip);
  // The datapath keys IPv4 and IPv6 apart; a mapped address would be neither.
  if (v4 !== null) return `is an IPv4-mapped IPv6 address; write it as ${v4.text}`;
  return rangeProblem(ip.text, ip.range, role);
}

function rangeProblem(text: string, range: string | null, role: 'VIP' | 'backend' | 'host'): string | null {
  const what = range === null ? undefined : UNUSABLE_RANGES[range];
  return what === undefined ? null : `${text} is ${what} and cannot be a ${role} address`;
}

/**
 * Which of UNUSABLE_RANGES a canonical IPv4 address is in (ipaddr.js's
 * names), or null: read from its octets, where a parse would cost a cache
 * lookup for each of a burst's hundred thousand pod addresses.
 */
function unusableIpv4Range(text: string): string | null {
  const a = Number(text.slice(0, text.indexOf('.')));
  if (a === 0) return 'unspecified';
  if (a === 127) return 'loopback';
  if (a >= 224 && a <= 239) return 'multicast';
  if (a === 169 && text.startsWith('169.254.')) return 'linkLocal';
  if (text === '255.255.255.255') return 'broadcast';
  return null;
}

/** Field errors for a VIP address. */
export function vipAddressErrors(text: unknown, field = '/address'): FieldError[] {
  const reason = unicastProblem(text, 'VIP');
  return reason === null ? [] : [{ field, reason }];
}

/** Field errors for a backend address. */
export function backendAddressErrors(text: unknown, field = '/address'): FieldError[] {
  const reason = unicastProblem(text, 'backend');
  return reason === null ? [] : [{ field, reason }];
}

// -------------------------------------------------------------------- CIDRs

/**
 * Checks one CIDR list; `family` (the VIP's) makes other families an error.
 * Returns the errors and the canonical forms seen (to cross-check allow/deny).
 */
function cidrListErrors(list: unknown, field: string, family: 4 | 6 | null): { errors: FieldError[]; seen: Map<string, number> } {
  const errors: FieldError[] = [];
  const seen = new Map<string, number>();
  if (list === undefined || list === null) return { errors, seen };
  if (!Array.isArray(list)) return { errors: [{ field, reason: 'must be an array of CIDRs' }], seen };
  list.forEach((item: unknown, i) => {
    const parsed = parseCidr(item);
    if (typeof parsed === 'string') {
      errors.push({ field: `${field}/${i}`, reason: parsed });
    } else if (family !== null && parsed.family !== family) {
      errors.push({
        field: `${field}/${i}`,
        reason: `${parsed.text} is IPv${parsed.family} but the VIP address is IPv${family} (family mismatch)`,
      });
    } else if (seen.has(parsed.text)) {
      errors.push({ field: `${field}/${i}`, reason: `duplicate of ${field}/${seen.get(parsed.text)} (${parsed.text})` });
    } else {
      seen.set(parsed.text, i);
    }
  });
  return { errors, seen };
}

/** allow and deny of one object: each valid, and no CIDR in both. */
function allowDenyErrors(obj: { allow?: unknown; deny?: unknown }, prefix: string, family: 4 | 6 | null): FieldError[] {
  const allow = cidrListErrors(obj.allow, `${prefix}/allow`, family);
  const deny = cidrListErrors(obj.deny, `${prefix}/deny`, family);
  const errors = [...allow.errors, ...deny.errors];
  for (const [cidr, i] of deny.seen) {
    const j = allow.seen.get(cidr);
    if (j !== undefined) {
      errors.push({
        field: `${prefix}/deny/${i}`,
        reason: `${cidr} is also in ${prefix}/allow/${j}; a CIDR cannot be both allowed and denied`,
      });
    }
  }
  return errors;
}

// ------------------------------------------------------------------ scalars

function isObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Errors for list items that are not objects (later checks then skip them). */
function nonObjectErrors(list: unknown[], field: string): FieldError[] {
  const errors: FieldError[] = [];
  list.forEach((item, i) => {
    if (!isObject(item)) errors.push({ field: `${field}/${i}`, reason: 'must be an object' });
  });
  return errors;
}

function isIntIn(v: unknown, lo: number, hi: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

function nameErrors(name: unknown, field: string): FieldError[] {
  if (typeof name === 'string' && NAME_RE.test(name)) return [];
  return [
    {
      field,
      reason: `must match ${NAME_PATTERN} (lowercase letters, digits, ".", "_" and "-", at most 63 characters)`,
    },
  ];
}

function rateLimitErrors(rl: unknown, field: string): FieldError[] {
  if (rl === undefined || rl === null) return [];
  if (!isObject(rl)) return [{ field, reason: 'must be an object or null' }];
  const { new_flows_per_sec: rate, burst } = rl as Record<string, unknown>;
  const errors: FieldError[] = [];
  if (!isIntIn(rate, 1, RATE_LIMIT_MAX_FLOWS_PER_SEC)) {
    errors.push({ field: `${field}/new_flows_per_sec`, reason: `must be an integer 1..${RATE_LIMIT_MAX_FLOWS_PER_SEC}` });
  }
  if (!isIntIn(burst, 1, RATE_LIMIT_MAX_BURST)) {
    errors.push({ field: `${field}/burst`, reason: `must be an integer 1..${RATE_LIMIT_MAX_BURST}` });
  }
  return errors;
}

function maglevErrors(m: unknown, field: string): FieldError[] {
  if (m === undefined || m === null) return [];
  if (typeof m === 'number' && MAGLEV_PRIMES.includes(m)) return [];
  return [{ field, reason: `must be one of ${MAGLEV_PRIMES.join(', ')} (Maglev table sizes) or null for automatic` }];
}

/** Policy references: each named once, each existing. */
function policyRefErrors(refs: unknown, field: string, exists: PolicyLookup | undefined): FieldError[] {
  if (refs === undefined || refs === null) return [];
  if (!Array.isArray(refs)) return [{ field, reason: 'must be an array of policy names' }];
  const errors: FieldError[] = [];
  const seen = new Map<string, number>();
  refs.forEach((ref: unknown, i) => {
    const at = `${field}/${i}`;
    if (typeof ref !== 'string') errors.push({ field: at, reason: 'must be a policy name' });
    else if (seen.has(ref)) errors.push({ field: at, reason: `duplicate of ${field}/${seen.get(ref)} ("${ref}")` });
    else if (exists !== undefined && !exists(ref)) errors.push({ field: at, reason: `policy "${ref}" does not exist` });
    if (typeof ref === 'string' && !seen.has(ref)) seen.set(ref, i);
  });
  return errors;
}

// ---------------------------------------------------------------- resources

export interface VipValidationOptions {
  /** When given, every referenced policy must exist. */
  policyExists?: PolicyLookup;
  /** Pointer prefix of the VIP, e.g. "/vips/3". */
  prefix?: string;
}

/** Checks a VIP's own fields (not its backends). */
export function validateVipSpec(spec: VipSpec, opts: VipValidationOptions = {}): FieldError[] {
  const p = opts.prefix ?? '';
  const errors: FieldError[] = [...nameErrors(spec.name, `${p}/name`), ...vipAddressErrors(spec.address, `${p}/address`)];
  if (!isIntIn(spec.port, 0, 65535)) errors.push({ field: `${p}/port`, reason: 'must be an integer 0..65535 (0 = all ports)' });
  if (spec.protocol !== 'tcp' && spec.protocol !== 'udp') errors.push({ field: `${p}/protocol`, reason: 'must be "tcp" or "udp"' });
  if (spec.encap !== undefined && spec.encap !== 'ipip') errors.push({ field: `${p}/encap`, reason: 'must be "ipip"' });
  if (spec.forwarding !== undefined && !FORWARDINGS.includes(spec.forwarding)) {
    errors.push({ field: `${p}/forwarding`, reason: `must be one of ${FORWARDINGS.join(', ')}` });
  }
  // CIDRs are family-checked only against a valid VIP address.
  const family = errors.some((e) => e.field === `${p}/address`) ? null : ipFamily(spec.address);
  errors.push(...allowDenyErrors(spec, p, family));
  errors.push(...policyRefErrors(spec.policies, `${p}/policies`, opts.policyExists));
  errors.push(...rateLimitErrors(spec.rate_limit, `${p}/rate_limit`));
  errors.push(...maglevErrors(spec.maglev_m, `${p}/maglev_m`));
  if (spec.source_affinity !== undefined && typeof spec.source_affinity !== 'boolean') {
    errors.push({ field: `${p}/source_affinity`, reason: 'must be a boolean' });
  }
  // Only against a valid port: an invalid one has its own error already.
  const vipPort = isIntIn(spec.port, 0, 65535) ? spec.port : 1;
  errors.push(...healthCheckErrors(spec.health_check, `${p}/health_check`, { role: 'vip', vipPort }));
  return errors;
}

/**
 * Checks a backend; `prefix` e.g. "/vips/0/backends/2". `vipPort` is its
 * VIP's port: an all-port VIP (0) needs a port in the backend's own check.
 * `snat`: its VIP forwards by source NAT, with addresses of this family
 * (the VIP's), translating ports itself.
 */
export function validateBackendSpec(spec: BackendSpec, prefix = '', vipPort = 1, snat: 4 | 6 | null = null): FieldError[] {
  const errors = backendAddressErrors(spec.address, `${prefix}/address`);
  if (spec.weight !== undefined && !isIntIn(spec.weight, 0, MAX_WEIGHT)) {
    errors.push({ field: `${prefix}/weight`, reason: `must be an integer 0..${MAX_WEIGHT}` });
  }
  if (spec.state !== undefined && !(BACKEND_STATES as readonly unknown[]).includes(spec.state)) {
    errors.push({ field: `${prefix}/state`, reason: `must be one of ${BACKEND_STATES.join(', ')}` });
  }
  errors.push(...backendPathErrors(spec, prefix, vipPort, snat));
  errors.push(...healthCheckErrors(spec.health_check, `${prefix}/health_check`, { role: 'backend', vipPort }));
  return errors;
}

/**
 * A backend's port and host. Another port is translated on the backend's
 * host (bpf/node.bpf.c), so it needs one, unless the VIP translates it here
 * (snat); a VIP of every port keeps the client's port. A host address is of
 * the backend's family (the backend's own address: it runs Ferry's node
 * programs itself, a hostNetwork pod).
 */
function backendPathErrors(spec: BackendSpec, prefix: string, vipPort: number, snat: 4 | 6 | null): FieldError[] {
  const errors: FieldError[] = [];
  if (snat !== null && unicastProblem(spec.address, 'backend') === null && ipFamily(canonicalIp(spec.address)!) !== snat) {
    errors.push({ field: `${prefix}/address`, reason: `source NAT keeps the address family: the backend must be IPv${snat} like its VIP` });
  }
  const host = spec.host ?? null;
  if (host !== null && host !== LOCAL_HOST) {
    const reason = unicastProblem(host, 'host');
    if (reason !== null) {
      errors.push({ field: `${prefix}/host`, reason: `must be "${LOCAL_HOST}" or an address: ${reason}` });
    } else if (unicastProblem(spec.address, 'backend') === null) {
      if (ipFamily(canonicalIp(host)!) !== ipFamily(canonicalIp(spec.address)!)) {
        errors.push({ field: `${prefix}/host`, reason: "must be of the backend address's family" });
      }
    }
  }
  if (spec.port === undefined || spec.port === 0) return errors;
  if (!isIntIn(spec.port, 0, 65535)) {
    errors.push({ field: `${prefix}/port`, reason: "must be an integer 0..65535 (0 = the VIP's port)" });
  } else if (vipPort === 0) {
    errors.push({ field: `${prefix}/port`, reason: "a VIP of every port (0) keeps the client's port: its backends take none" });
  } else if (host === null && snat === null) {
    errors.push({
      field: `${prefix}/port`,
      reason: `another port is translated on the backend's host: set host ("${LOCAL_HOST}" for this one, or the address of its node running Ferry), or make the VIP's forwarding snat`,
    });
  }
  return errors;
}

/** Checks a policy; its CIDRs may mix families (it serves VIPs of both). */
export function validatePolicySpec(spec: PolicySpec, prefix = ''): FieldError[] {
  return [...nameErrors(spec.name, `${prefix}/name`), ...allowDenyErrors(spec, prefix, null)];
}

/** A VIP's backends: each valid, no address listed twice (in any spelling). */
function backendListErrors(vip: VipWithBackends, prefix: string): FieldError[] {
  if (vip.backends === undefined) return [];
  if (!Array.isArray(vip.backends)) return [{ field: `${prefix}/backends`, reason: 'must be an array' }];
  const errors = nonObjectErrors(vip.backends, `${prefix}/backends`);
  if (errors.length > 0) return errors;
  const seen = new Map<string, number>();
  const vipPort = isIntIn(vip.port, 0, 65535) ? vip.port : 1;
  const vipAddress = canonicalIp(vip.address);
  const snatFamily = vip.forwarding === 'snat' && vipAddress !== null ? ipFamily(vipAddress) : null;
  vip.backends.forEach((b, i) => {
    const at = `${prefix}/backends/${i}`;
    const own = validateBackendSpec(b, at, vipPort, snatFamily);
    errors.push(...own);
    const addr = own.some((e) => e.field === `${at}/address`) ? null : canonicalIp(b.address);
    if (addr === null) return;
    const first = seen.get(addr);
    if (first !== undefined) {
      errors.push({ field: `${at}/address`, reason: `duplicate backend ${addr} (also ${prefix}/backends/${first})` });
    } else {
      seen.set(addr, i);
    }
  });
  return errors;
}

/** "address port/protocol" identity of a VIP, or null if its parts are invalid. */
export function endpointKey(spec: Pick<VipSpec, 'address' | 'port' | 'protocol'>): string | null {
  const addr = canonicalIp(String(spec.address));
  if (addr === null) return null;
  return `${addr} ${spec.port}/${spec.protocol}`;
}

/** Names and endpoints must be unique within the file. */
function vipUniquenessErrors(vips: VipWithBackends[]): FieldError[] {
  const errors: FieldError[] = [];
  const names = new Map<string, number>();
  const endpoints = new Map<string, number>();
  vips.forEach((v, i) => {
    const firstName = names.get(v.name);
    if (firstName !== undefined)
      errors.push({ field: `/vips/${i}/name`, reason: `duplicate VIP name "${v.name}" (also /vips/${firstName})` });
    else names.set(v.name, i);
    const key = endpointKey(v);
    if (key === null) return;
    const firstEp = endpoints.get(key);
    if (firstEp !== undefined) {
      errors.push({
        field: `/vips/${i}/address`,
        reason: `same address, port and protocol (${key}) as /vips/${firstEp} ("${vips[firstEp]?.name ?? ''}")`,
      });
    } else {
      endpoints.set(key, i);
    }
  });
  return errors;
}

function policyListErrors(policies: PolicySpec[]): FieldError[] {
  const errors: FieldError[] = [];
  const names = new Map<string, number>();
  policies.forEach((p, i) => {
    errors.push(...validatePolicySpec(p, `/policies/${i}`));
    const first = names.get(p.name);
    if (first !== undefined)
      errors.push({ field: `/policies/${i}/name`, reason: `duplicate policy name "${p.name}" (also /policies/${first})` });
    else names.set(p.name, i);
  });
  return errors;
}

/**
 * Checks a whole desired state (an apply file). A VIP may reference a policy
 * of the file or, through `externalPolicyExists`, one that exists already
 * and that the apply does not manage (another owner's).
 */
export function validateDesiredState(state: DesiredState, opts: { externalPolicyExists?: PolicyLookup } = {}): FieldError[] {
  if (!isObject(state)) return [{ field: '', reason: 'must be an object' }];
  if (!Array.isArray(state.vips)) return [{ field: '/vips', reason: 'must be an array' }];
  if (state.policies !== undefined && !Array.isArray(state.policies)) {
    return [{ field: '/policies', reason: 'must be an array' }];
  }
  const policies = state.policies ?? [];
  const shapeErrors = [...nonObjectErrors(state.vips, '/vips'), ...nonObjectErrors(policies, '/policies')];
  if (shapeErrors.length > 0) return shapeErrors;
  const declared = new Set(policies.map((p) => p.name));
  const external = opts.externalPolicyExists;
  const policyExists: PolicyLookup = (n) => declared.has(n) || (external !== undefined && external(n));
  const errors = policyListErrors(policies);
  state.vips.forEach((v, i) => {
    errors.push(...validateVipSpec(v, { policyExists, prefix: `/vips/${i}` }));
    errors.push(...backendListErrors(v, `/vips/${i}`));
  });
  errors.push(...vipUniquenessErrors(state.vips));
  return errors;
}
