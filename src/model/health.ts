/**
 * Health checks as operators configure them (the `health_check` object of a
 * VIP, and of a backend that overrides its VIP's), their defaults, semantic
 * validation and normal form, and the runtime health the API reports.
 *
 * A VIP's check is the default for each of its backends; a backend's own
 * `health_check` replaces it as a whole (no field-by-field merge: a merged
 * check could become invalid when the VIP's changes, e.g. an http `path`
 * under a VIP switched to tcp). `port: null` means the VIP's port, so a VIP
 * moving to another port takes its checks along.
 */
import type { FieldError } from './errors.js';

export const HEALTH_CHECK_TYPES = ['none', 'tcp', 'http', 'https', 'udp'] as const;
export type HealthCheckType = (typeof HEALTH_CHECK_TYPES)[number];

/** What a VIP does when every backend that would take new flows is down. */
export const ALL_DOWN_MODES = ['keep', 'drop'] as const;
export type AllDownMode = (typeof ALL_DOWN_MODES)[number];

/** A health check as written (REST bodies, apply files). */
export interface HealthCheckSpec {
  type: HealthCheckType;
  /** Port checked; null or absent: the VIP's port (required for all-port VIPs). */
  port?: number | null;
  /** Time between the starts of two checks, ms. Default 2000. */
  interval_ms?: number;
  /** A check not done after this long fails, ms (at most interval_ms). Default 1000. */
  timeout_ms?: number;
  /** Consecutive passes that bring a down backend back. Default 3. */
  rise?: number;
  /** Consecutive failures that take a backend down. Default 3. */
  fall?: number;
  /** http/https: path of the GET, default "/". */
  path?: string;
  /** http/https: Host header (and TLS server name); default the backend's address. */
  host?: string | null;
  /** http/https: accepted status codes, "200-399" (default) or one code "204". */
  expect_status?: string;
  /** http/https: the body must contain this text. */
  expect_body?: string | null;
  /** udp: the datagram sent, as text (exactly one of send, send_hex). */
  send?: string;
  /** udp: the datagram sent, as hex bytes. */
  send_hex?: string;
  /** udp: the reply must contain this text; any reply passes without it. */
  expect_reply?: string | null;
  /**
   * Send the check through the direct-server-return path: encapsulated to
   * the VIP on the backend, as client traffic is, so it also covers the
   * backend's decapsulation and its VIP address. Default false: the
   * backend's own address.
   */
  dsr?: boolean;
  /** VIP only: every serving backend down → keep them all in the table (fail open, default) or drop. */
  all_down?: AllDownMode;
}

/** A check with every default filled; fields of other types absent. */
export type HealthCheck = HealthCheckSpec & {
  port: number | null;
  interval_ms: number;
  timeout_ms: number;
  rise: number;
  fall: number;
};

export const HEALTH_DEFAULTS = Object.freeze({
  interval_ms: 2000,
  timeout_ms: 1000,
  rise: 3,
  fall: 3,
  path: '/',
  expect_status: '200-399',
  all_down: 'keep' as AllDownMode,
});

export const HEALTH_LIMITS = Object.freeze({
  intervalMs: [50, 3_600_000] as const,
  timeoutMs: [10, 60_000] as const,
  count: [1, 100] as const,
  text: 1024,
  host: 255,
  /** Bytes of a UDP check datagram: fits one unfragmented IPv6 packet at MTU 1280. */
  datagram: 1232,
});

/**
 * up / down: decided by checks. unknown: checked, but no verdict yet (a new
 * backend, or any backend after a daemon restart): treated as up, so a
 * restart never empties a table; it goes down after `fall` failures.
 * unchecked: no check configured (type none): always in service.
 */
export type HealthStatus = 'up' | 'down' | 'unknown' | 'unchecked';

/** Runtime health of one backend, as the API shows it. */
export interface BackendHealth {
  status: HealthStatus;
  /** When the status was entered (ISO 8601); null when unchecked. */
  since: string | null;
  /** When the last check finished; null before the first. */
  last_check: string | null;
  /** Why the last check failed; null when it passed (or none ran yet). */
  last_error: string | null;
  /** Duration of the last check, ms; null before the first. */
  last_duration_ms: number | null;
}

/** The health of a backend without a check. */
export const UNCHECKED: Readonly<BackendHealth> = Object.freeze({
  status: 'unchecked',
  since: null,
  last_check: null,
  last_error: null,
  last_duration_ms: null,
});

/** A health transition kept in the store. */
export interface HealthEvent {
  id: number;
  time: string;
  vip: string;
  backend: string;
  from: HealthStatus;
  to: HealthStatus;
  /** What decided it (e.g. "3 consecutive checks failed: connection refused"). */
  reason: string | null;
}

export type NewHealthEvent = Omit<HealthEvent, 'id'>;

// ---------------------------------------------------------------- validation

const HTTP_FIELDS = ['path', 'host', 'expect_status', 'expect_body'] as const;
const UDP_FIELDS = ['send', 'send_hex', 'expect_reply'] as const;
const STATUS_RE = /^([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?$/;
const HEX_RE = /^(?:[0-9a-fA-F]{2})+$/;
/** Printable, no spaces: a path or host must not smuggle a second header line. */
const TOKEN_RE = /^[\x21-\x7e]+$/;

export interface HealthCheckContext {
  /** A backend's override may not set all_down (the VIP decides). */
  role: 'vip' | 'backend';
  /** The VIP's port: 0 makes `port` required. */
  vipPort: number;
}

function isIntIn(v: unknown, [lo, hi]: readonly [number, number]): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** "200-399" → [200, 399]; "204" → [204, 204]; null if malformed. */
export function statusRange(text: string): [number, number] | null {
  const m = STATUS_RE.exec(text);
  if (m === null) return null;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  return lo <= hi ? [lo, hi] : null;
}

function timingErrors(c: Record<string, unknown>, p: string): FieldError[] {
  const errors: FieldError[] = [];
  const [iLo, iHi] = HEALTH_LIMITS.intervalMs;
  const [tLo, tHi] = HEALTH_LIMITS.timeoutMs;
  const [cLo, cHi] = HEALTH_LIMITS.count;
  if (c['interval_ms'] !== undefined && !isIntIn(c['interval_ms'], HEALTH_LIMITS.intervalMs)) {
    errors.push({ field: `${p}/interval_ms`, reason: `must be an integer ${iLo}..${iHi} (milliseconds)` });
  }
  if (c['timeout_ms'] !== undefined && !isIntIn(c['timeout_ms'], HEALTH_LIMITS.timeoutMs)) {
    errors.push({ field: `${p}/timeout_ms`, reason: `must be an integer ${tLo}..${tHi} (milliseconds)` });
  }
  for (const k of ['rise', 'fall'] as const) {
    if (c[k] !== undefined && !isIntIn(c[k], HEALTH_LIMITS.count))
      errors.push({ field: `${p}/${k}`, reason: `must be an integer ${cLo}..${cHi}` });
  }
  if (errors.length === 0) {
    // Checks of one backend never overlap: a timeout beyond the interval could only be cut short.
    const interval = (c['interval_ms'] as number | undefined) ?? HEALTH_DEFAULTS.interval_ms;
    const timeout = (c['timeout_ms'] as number | undefined) ?? HEALTH_DEFAULTS.timeout_ms;
    if (timeout > interval) {
      errors.push({ field: `${p}/timeout_ms`, reason: `must not exceed interval_ms (${interval}); a check cannot outlast the next one` });
    }
  }
  return errors;
}

function portErrors(c: Record<string, unknown>, p: string, ctx: HealthCheckContext): FieldError[] {
  const port = c['port'];
  if (port === undefined || port === null) {
    if (ctx.vipPort !== 0) return [];
    return [{ field: `${p}/port`, reason: 'required: the VIP matches all ports (port 0), so the check needs its own port' }];
  }
  return isIntIn(port, [1, 65535]) ? [] : [{ field: `${p}/port`, reason: "must be an integer 1..65535, or null for the VIP's port" }];
}

function textErrors(v: unknown, field: string, max: number, token = false): FieldError[] {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) {
    return [{ field, reason: `must be a non-empty string of at most ${max} characters` }];
  }
  if (token && !TOKEN_RE.test(v)) return [{ field, reason: 'must be printable ASCII without spaces' }];
  return [];
}

function httpErrors(c: Record<string, unknown>, p: string): FieldError[] {
  const errors: FieldError[] = [];
  const path = c['path'];
  if (path !== undefined) {
    errors.push(...textErrors(path, `${p}/path`, HEALTH_LIMITS.text, true));
    if (typeof path === 'string' && !path.startsWith('/')) errors.push({ field: `${p}/path`, reason: 'must start with "/"' });
  }
  if (c['host'] !== undefined && c['host'] !== null) errors.push(...textErrors(c['host'], `${p}/host`, HEALTH_LIMITS.host, true));
  const status = c['expect_status'];
  if (status !== undefined && (typeof status !== 'string' || statusRange(status) === null)) {
    errors.push({
      field: `${p}/expect_status`,
      reason: 'must be a status code or range of codes 100..599, e.g. "200" or "200-399" (low first)',
    });
  }
  if (c['expect_body'] !== undefined && c['expect_body'] !== null)
    errors.push(...textErrors(c['expect_body'], `${p}/expect_body`, HEALTH_LIMITS.text));
  return errors;
}

function udpErrors(c: Record<string, unknown>, p: string): FieldError[] {
  const { send, send_hex: hex } = c;
  const errors: FieldError[] = [];
  if ((send === undefined) === (hex === undefined)) {
    errors.push({
      field: `${p}/send`,
      reason: 'a udp check needs exactly one of send (text) or send_hex (bytes): the datagram the service answers',
    });
  }
  if (send !== undefined) {
    const bad = typeof send !== 'string' || send.length === 0 || Buffer.byteLength(send) > HEALTH_LIMITS.datagram;
    if (bad) errors.push({ field: `${p}/send`, reason: `must be a non-empty string of at most ${HEALTH_LIMITS.datagram} bytes` });
  }
  if (hex !== undefined && (typeof hex !== 'string' || !HEX_RE.test(hex) || hex.length / 2 > HEALTH_LIMITS.datagram)) {
    errors.push({ field: `${p}/send_hex`, reason: `must be hex byte pairs, 1..${HEALTH_LIMITS.datagram} bytes` });
  }
  if (c['expect_reply'] !== undefined && c['expect_reply'] !== null)
    errors.push(...textErrors(c['expect_reply'], `${p}/expect_reply`, HEALTH_LIMITS.text));
  return errors;
}

/** Fields set that the check's type does not use: refused, so a typo'd type is not silently a different check. */
function foreignFieldErrors(c: Record<string, unknown>, p: string, type: HealthCheckType): FieldError[] {
  const errors: FieldError[] = [];
  const http = type === 'http' || type === 'https';
  for (const f of HTTP_FIELDS)
    if (!http && c[f] !== undefined) errors.push({ field: `${p}/${f}`, reason: 'only for http and https checks' });
  for (const f of UDP_FIELDS) if (type !== 'udp' && c[f] !== undefined) errors.push({ field: `${p}/${f}`, reason: 'only for udp checks' });
  return errors;
}

/**
 * Field errors of a `health_check` value (null/undefined = none configured)
 * under `p`, e.g. "/health_check" or "/vips/0/backends/2/health_check".
 */
export function healthCheckErrors(v: unknown, p: string, ctx: HealthCheckContext): FieldError[] {
  if (v === undefined || v === null) return [];
  if (!isObject(v)) return [{ field: p, reason: 'must be an object or null' }];
  const type = v['type'];
  if (typeof type !== 'string' || !(HEALTH_CHECK_TYPES as readonly string[]).includes(type)) {
    return [{ field: `${p}/type`, reason: `must be one of ${HEALTH_CHECK_TYPES.join(', ')}` }];
  }
  const t = type as HealthCheckType;
  const errors = [...timingErrors(v, p), ...foreignFieldErrors(v, p, t)];
  if (t !== 'none') errors.push(...portErrors(v, p, ctx));
  else if (v['port'] !== undefined && v['port'] !== null) errors.push({ field: `${p}/port`, reason: 'not used by type none' });
  if (v['dsr'] !== undefined) {
    if (typeof v['dsr'] !== 'boolean') errors.push({ field: `${p}/dsr`, reason: 'must be true or false' });
    else if (t === 'none' && v['dsr']) errors.push({ field: `${p}/dsr`, reason: 'not used by type none' });
  }
  if (t === 'http' || t === 'https') errors.push(...httpErrors(v, p));
  if (t === 'udp') errors.push(...udpErrors(v, p));
  const allDown = v['all_down'];
  if (allDown !== undefined) {
    if (ctx.role === 'backend')
      errors.push({ field: `${p}/all_down`, reason: "only on the VIP's health_check (it decides for all its backends)" });
    else if (!(ALL_DOWN_MODES as readonly unknown[]).includes(allDown))
      errors.push({ field: `${p}/all_down`, reason: `must be one of ${ALL_DOWN_MODES.join(', ')}` });
  }
  return errors;
}

// ------------------------------------------------------------- normal form

/**
 * The normal form of a validated check: defaults filled, fields in a fixed
 * order (the store compares normal forms as JSON to recognise no-op PUTs).
 */
export function normHealthCheck(s: HealthCheckSpec, role: 'vip' | 'backend'): HealthCheck {
  const out: HealthCheck = {
    type: s.type,
    port: s.type === 'none' ? null : (s.port ?? null),
    interval_ms: s.interval_ms ?? HEALTH_DEFAULTS.interval_ms,
    timeout_ms: s.timeout_ms ?? HEALTH_DEFAULTS.timeout_ms,
    rise: s.rise ?? HEALTH_DEFAULTS.rise,
    fall: s.fall ?? HEALTH_DEFAULTS.fall,
  };
  if (s.type !== 'none') out.dsr = s.dsr ?? false;
  if (s.type === 'http' || s.type === 'https') {
    out.path = s.path ?? HEALTH_DEFAULTS.path;
    out.host = s.host ?? null;
    out.expect_status = s.expect_status ?? HEALTH_DEFAULTS.expect_status;
    out.expect_body = s.expect_body ?? null;
  }
  if (s.type === 'udp') {
    if (s.send !== undefined) out.send = s.send;
    else if (s.send_hex !== undefined) out.send_hex = s.send_hex.toLowerCase();
    out.expect_reply = s.expect_reply ?? null;
  }
  if (role === 'vip') out.all_down = s.all_down ?? HEALTH_DEFAULTS.all_down;
  return out;
}

/** The check a backend runs: its own, else its VIP's; null when none (or type none). */
export function effectiveCheck(vipCheck: HealthCheck | undefined, own: HealthCheck | undefined): HealthCheck | null {
  const c = own ?? vipCheck;
  return c === undefined || c.type === 'none' ? null : c;
}
