/**
 * LoadBalancer IP allocation from pools, the pure part (what MetalLB and
 * Cilium's LB-IPAM do): given every Service and the configured pools, the
 * ingress IPs each served Service should carry. lbipam.ts runs it on the
 * leader and writes the answers into the Services' status.
 *
 * The allocation lives in the Services' status, nowhere else: every pass
 * starts from what the status fields say, so a new leader (or a restarted
 * one) continues exactly where the last left off. Rules:
 *   - served: type LoadBalancer, not being deleted, and spec.loadBalancerClass
 *     equal to lb_ipam.load_balancer_class (null: Services without a class);
 *   - an address a Service already carries is kept while it is valid for it
 *     (in a pool it may use, of a family it wants, the one it asked for if it
 *     asked); when two Services carry the same address (two leaders raced,
 *     status edited by hand), the older Service keeps it and the other one
 *     gets another;
 *   - addresses in any LoadBalancer Service's status that is not ours (another
 *     class) are never given out;
 *   - one address per family of spec.ipFamilies (IPv4 when unset); with
 *     ipFamilyPolicy RequireDualStack, all of them or none;
 *   - an address asked for (annotation ferry.io/load-balancer-ips, a comma
 *     list, else spec.loadBalancerIP) is given when free and in a pool; pools
 *     can be named (annotation ferry.io/load-balancer-pools, a comma list);
 *   - otherwise the lowest free address of the first pool (in config order)
 *     that has one; a CIDR's network and broadcast addresses (IPv4, prefixes
 *     up to /30) are never given out.
 */
import { formatIp, parseCidr, parseIp, type Ip, type IpFamily } from '../net/addr.js';
import type { Service } from './types.js';
import { objectKey } from './types.js';

export const ANNOTATION_LB_IPS = 'ferry.io/load-balancer-ips';
export const ANNOTATION_LB_POOLS = 'ferry.io/load-balancer-pools';

/** A pool as configured: addresses are CIDRs or "first-last" ranges of one family. */
export interface PoolConfig {
  name: string;
  addresses: string[];
}

interface Range {
  family: IpFamily;
  first: bigint;
  last: bigint;
}

export interface Pool {
  name: string;
  ranges: Range[];
}

const toBig = (bytes: Uint8Array): bigint => bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);

function fromBig(family: IpFamily, n: bigint): string {
  const bytes = new Uint8Array(family === 4 ? 4 : 16);
  for (let i = bytes.length - 1; i >= 0; i--, n >>= 8n) bytes[i] = Number(n & 0xffn);
  return formatIp(family, bytes);
}

/** One entry of a pool's addresses, or the reason it is not one. */
function parseRange(text: string): Range | string {
  const dash = text.indexOf('-');
  if (dash < 0) {
    const c = parseCidr(text);
    if (typeof c === 'string') return `${JSON.stringify(text)} is neither a CIDR nor a "first-last" range (${c})`;
    const bits = c.family === 4 ? 32 : 128;
    const first = toBig(c.network);
    const last = first | ((1n << BigInt(bits - c.prefix)) - 1n);
    // An IPv4 network's first and last addresses are what broken clients still treat as unusable.
    if (c.family === 4 && c.prefix <= 30) return { family: 4, first: first + 1n, last: last - 1n };
    return { family: c.family, first, last };
  }
  const a = parseIp(text.slice(0, dash).trim());
  const b = parseIp(text.slice(dash + 1).trim());
  if (typeof a === 'string' || typeof b === 'string') return `${JSON.stringify(text)}: ${typeof a === 'string' ? a : b}`;
  if (a.family !== b.family) return `${JSON.stringify(text)}: both ends must be of one family`;
  const first = toBig(a.bytes);
  const last = toBig(b.bytes);
  if (first > last) return `${JSON.stringify(text)}: the first address is above the last`;
  return { family: a.family, first, last };
}

/**
 * The pools, checked: names unique, every entry an address range, no
 * address in two entries. The problems name the path of their field under
 * `at` (e.g. "/kubernetes/lb_ipam/pools"); pools are usable only without any.
 */
export function parsePools(configs: PoolConfig[], at: string): { pools: Pool[]; problems: string[] } {
  const problems: string[] = [];
  const pools: Pool[] = [];
  const names = new Set<string>();
  const all: Array<Range & { where: string }> = [];
  configs.forEach((pc, i) => {
    if (names.has(pc.name)) problems.push(`${at}/${i}/name: ${JSON.stringify(pc.name)} is used by an earlier pool`);
    names.add(pc.name);
    const ranges: Range[] = [];
    pc.addresses.forEach((text, j) => {
      const r = parseRange(text);
      if (typeof r === 'string') {
        problems.push(`${at}/${i}/addresses/${j}: ${r}`);
        return;
      }
      const where = `${at}/${i}/addresses/${j}`;
      const clash = all.find((o) => o.family === r.family && o.first <= r.last && r.first <= o.last);
      if (clash !== undefined) problems.push(`${where}: ${JSON.stringify(text)} overlaps ${clash.where}`);
      all.push({ ...r, where });
      ranges.push(r);
    });
    pools.push({ name: pc.name, ranges });
  });
  return { pools, problems };
}

export interface IpamInput {
  pools: Pool[];
  /** The spec.loadBalancerClass served; null = Services without one. */
  loadBalancerClass: string | null;
}

export interface IpamResult {
  /** Per served Service ("ns/name"): the ingress IPs it should carry, in its ipFamilies order. */
  desired: Map<string, string[]>;
  /** Served Services missing an address they want, and why. */
  pending: Array<{ service: string; reason: string }>;
  /** Addresses given out per pool. */
  allocated: Map<string, number>;
}

/** Whether the allocator answers for this Service. */
export function served(svc: Service, loadBalancerClass: string | null): boolean {
  return (
    svc.spec?.type === 'LoadBalancer' &&
    svc.metadata.deletionTimestamp === undefined &&
    (svc.spec.loadBalancerClass ?? null) === loadBalancerClass
  );
}

const FAMILY: Record<string, IpFamily> = { IPv4: 4, IPv6: 6 };

function wantedFamilies(svc: Service): IpFamily[] {
  const fams = (svc.spec?.ipFamilies ?? []).map((f) => FAMILY[f]).filter((f): f is IpFamily => f !== undefined);
  return fams.length > 0 ? [...new Set(fams)] : [4];
}

const commaList = (text: string | undefined): string[] =>
  (text ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');

interface Request {
  families: IpFamily[];
  pools: Pool[];
  /** Asked-for addresses by family (canonical text). */
  asked: Map<IpFamily, string>;
  allOrNothing: boolean;
}

/** What a served Service asks for, or why it cannot be served. */
function requestOf(svc: Service, pools: Pool[]): Request | string {
  const ann = svc.metadata.annotations ?? {};
  let usable = pools;
  const poolNames = commaList(ann[ANNOTATION_LB_POOLS]);
  if (poolNames.length > 0) {
    const unknown = poolNames.filter((n) => !pools.some((p) => p.name === n));
    if (unknown.length > 0) return `${ANNOTATION_LB_POOLS} names no configured pool: ${unknown.join(', ')}`;
    usable = pools.filter((p) => poolNames.includes(p.name));
  }
  const asked = new Map<IpFamily, string>();
  const askedTexts =
    ann[ANNOTATION_LB_IPS] !== undefined
      ? commaList(ann[ANNOTATION_LB_IPS])
      : svc.spec?.loadBalancerIP !== undefined && svc.spec.loadBalancerIP !== ''
        ? [svc.spec.loadBalancerIP]
        : [];
  for (const text of askedTexts) {
    const ip = parseIp(text);
    if (typeof ip === 'string') return `asked-for address ${JSON.stringify(text)}: ${ip}`;
    if (asked.has(ip.family)) return `more than one IPv${ip.family} address asked for`;
    asked.set(ip.family, ip.text);
  }
  const families = asked.size > 0 ? [...asked.keys()] : wantedFamilies(svc);
  return { families, pools: usable, asked, allOrNothing: svc.spec?.ipFamilyPolicy === 'RequireDualStack' && asked.size === 0 };
}

function poolOf(pools: Pool[], family: IpFamily, n: bigint): Pool | undefined {
  return pools.find((p) => p.ranges.some((r) => r.family === family && r.first <= n && n <= r.last));
}

/** Oldest first (creation time, then name): who keeps an address two Services carry. */
function byAge(a: Service, b: Service): number {
  const ta = a.metadata.creationTimestamp ?? '';
  const tb = b.metadata.creationTimestamp ?? '';
  if (ta !== tb) return ta < tb ? -1 : 1;
  const ka = objectKey(a);
  const kb = objectKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** The family of an address already known to parse (canonical text the allocator produced). */
const familyOf = (text: string): IpFamily => (parseIp(text) as Ip).family;

/** The ingress IPs (no hostnames) a Service's status carries. */
export function ingressIps(svc: Service): string[] {
  return (svc.status?.loadBalancer?.ingress ?? []).map((i) => i.ip).filter((ip): ip is string => typeof ip === 'string' && ip !== '');
}

/** The allocation for every served Service (see the file's comment). Cost: O(Services + addresses given). */
export function allocate(services: Iterable<Service>, input: IpamInput): IpamResult {
  const ordered = [...services].filter((s) => s.spec?.type === 'LoadBalancer').sort(byAge);
  const taken = new Set<string>();
  const desired = new Map<string, string[]>();
  const requests = new Map<string, Request>();
  const pending: IpamResult['pending'] = [];
  const allocated = new Map<string, number>(input.pools.map((p) => [p.name, 0]));
  const count = (pool: Pool): void => {
    allocated.set(pool.name, (allocated.get(pool.name) ?? 0) + 1);
  };
  // Others' addresses first: never given out, whatever their age.
  for (const svc of ordered) {
    if (served(svc, input.loadBalancerClass)) continue;
    for (const text of ingressIps(svc)) {
      const ip = parseIp(text);
      if (typeof ip !== 'string') taken.add(ip.text);
    }
  }
  // Keep what is valid, oldest first.
  for (const svc of ordered) {
    if (!served(svc, input.loadBalancerClass)) continue;
    const key = objectKey(svc);
    const req = requestOf(svc, input.pools);
    const kept: string[] = [];
    desired.set(key, kept);
    if (typeof req === 'string') {
      pending.push({ service: key, reason: req });
      continue;
    }
    requests.set(key, req);
    for (const text of ingressIps(svc)) {
      const ip = parseIp(text);
      if (typeof ip === 'string' || taken.has(ip.text) || !req.families.includes(ip.family)) continue;
      if (kept.some((k) => familyOf(k) === ip.family)) continue;
      const asked = req.asked.get(ip.family);
      if (asked !== undefined && asked !== ip.text) continue;
      const pool = poolOf(req.pools, ip.family, toBig(ip.bytes));
      if (pool === undefined) continue;
      taken.add(ip.text);
      kept.push(ip.text);
      count(pool);
    }
  }
  // Then give each its missing families, oldest first.
  const cursors = new Map<Range, bigint>();
  const lowestFree = (pools: Pool[], family: IpFamily): { ip: string; pool: Pool } | null => {
    for (const pool of pools) {
      for (const r of pool.ranges) {
        if (r.family !== family) continue;
        let n = cursors.get(r) ?? r.first;
        while (n <= r.last && taken.has(fromBig(family, n))) n++;
        cursors.set(r, n);
        if (n <= r.last) return { ip: fromBig(family, n), pool };
      }
    }
    return null;
  };
  for (const svc of ordered) {
    const key = objectKey(svc);
    const req = requests.get(key);
    if (req === undefined) continue;
    const kept = desired.get(key)!;
    const have = new Set(kept.map(familyOf));
    const fresh: Array<{ ip: string; pool: Pool }> = [];
    const missing: string[] = [];
    for (const family of req.families) {
      if (have.has(family)) continue;
      const asked = req.asked.get(family);
      let got: { ip: string; pool: Pool } | null = null;
      if (asked !== undefined) {
        const pool = poolOf(req.pools, family, toBig((parseIp(asked) as Ip).bytes));
        if (pool === undefined) missing.push(`${asked} is in no pool this Service may use`);
        else if (taken.has(asked) || fresh.some((f) => f.ip === asked)) missing.push(`${asked} is in use by another Service`);
        else got = { ip: asked, pool };
      } else {
        got = lowestFree(req.pools, family);
        if (got === null)
          missing.push(
            `no free IPv${family} address in ${req.pools.length === 0 ? 'any pool' : `pool(s) ${req.pools.map((p) => p.name).join(', ')}`}`,
          );
      }
      if (got !== null) {
        fresh.push(got);
        taken.add(got.ip);
      }
    }
    if (missing.length > 0) pending.push({ service: key, reason: missing.join('; ') });
    if (missing.length > 0 && req.allOrNothing) {
      for (const f of fresh) taken.delete(f.ip); // RequireDualStack: none of them, and they stay free
      for (const r of cursors.keys()) cursors.delete(r);
      continue;
    }
    for (const f of fresh) {
      kept.push(f.ip);
      count(f.pool);
    }
    const order = (ip: string): number => req.families.indexOf(familyOf(ip));
    kept.sort((a, b) => order(a) - order(b));
  }
  return { desired, pending, allocated };
}
