/**
 * What to check, from a store snapshot: one target per backend whose
 * effective check (its own, else its VIP's) is not 'none'. Pure.
 */
import { effectiveCheck, statusRange, type HealthCheck } from '../model/health.js';
import type { StoreSnapshot, StoredVip } from '../store/types.js';
import type { HttpExpect, Probe, UdpExpect } from './probe.js';

export interface Target {
  /** "vip/address": VIP names cannot contain "/". */
  key: string;
  vip: string;
  address: string;
  probe: Probe;
  intervalMs: number;
  rise: number;
  fall: number;
  /** The check's settings: when they change, old results no longer count. */
  fingerprint: string;
}

export const targetKey = (vip: string, address: string): string => `${vip}/${address}`;

/**
 * Per-check derived values: snapshots share one frozen check object among
 * all backends of a VIP and across revisions, so each is derived once.
 */
interface Derived {
  json: string;
  http?: HttpExpect;
  udp?: UdpExpect;
}
const derivedMemo = new WeakMap<HealthCheck, Derived>();

function derive(c: HealthCheck): Derived {
  let d = derivedMemo.get(c);
  if (d !== undefined) return d;
  d = { json: JSON.stringify(c) };
  if (c.type === 'http' || c.type === 'https') {
    d.http = {
      path: c.path ?? '/',
      host: c.host ?? null,
      status: statusRange(c.expect_status ?? '200-399') ?? [200, 399],
      body: c.expect_body ?? null,
    };
  }
  if (c.type === 'udp') {
    const payload = c.send_hex !== undefined ? Buffer.from(c.send_hex, 'hex') : Buffer.from(c.send ?? '', 'utf8');
    d.udp = { payload, reply: c.expect_reply ?? null };
  }
  derivedMemo.set(c, d);
  return d;
}

/**
 * The target of one backend under its VIP, or null when it is not checked.
 * A backend on a port of its own is checked there; one on a host other
 * than itself is checked directly (the DSR path would reach its host, not
 * it).
 */
export function targetOf(
  vip: StoredVip,
  address: string,
  own: HealthCheck | undefined,
  path: { port?: number; host?: string } = {},
): Target | null {
  const c = effectiveCheck(vip.health_check, own);
  if (c === null || c.type === 'none') return null;
  const dsr = c.dsr === true && path.host === undefined;
  const port = c.port ?? (path.port || vip.port);
  // Validation requires a port for all-port VIPs; a stored exception is skipped, not checked on port 0.
  if (port === 0) return null;
  const d = derive(c);
  const probe: Probe = { type: c.type, address, port, timeoutMs: c.timeout_ms };
  if (d.http !== undefined) probe.http = d.http;
  if (d.udp !== undefined) probe.udp = d.udp;
  if (dsr) probe.dsr = { vip: vip.address };
  return {
    key: targetKey(vip.name, address),
    vip: vip.name,
    address,
    probe,
    intervalMs: c.interval_ms,
    rise: c.rise,
    fall: c.fall,
    fingerprint: `${d.json}|${port}${dsr ? `|${vip.address}` : ''}`,
  };
}

/** Every target of a snapshot, and the keys of every backend (checked or not). */
export function targetsOf(snap: StoreSnapshot): { targets: Target[]; backends: Set<string> } {
  const vips = new Map(snap.vips.map((v) => [v.name, v]));
  const targets: Target[] = [];
  const backends = new Set<string>();
  for (const b of snap.backends) {
    backends.add(targetKey(b.vip, b.address));
    const vip = vips.get(b.vip);
    if (vip === undefined) continue;
    const t = targetOf(vip, b.address, b.health_check, b);
    if (t !== null) targets.push(t);
  }
  return { targets, backends };
}
