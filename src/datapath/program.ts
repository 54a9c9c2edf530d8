/**
 * Writing one VIP, its backends and its Maglev table into the maps, and the
 * global config. The order never lets a packet meet a half-made VIP: backends
 * first, then the table that names them, then the VIP entry that leads to it.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { BACKEND_ACTIVE, CFG_F_RECORD_AFTER_HANDSHAKE, CFG_F_SKIP_FIB, VIP_ADDR_F_ECHO, type LbConfigV } from './abi.js';
import { hostMask, dpAddr, dpCidr } from './addr.js';
import type { LbDatapath, LbSizes } from './lb.js';
import { indexBucketCount } from './vipindex.js';
import { ctBucketCount } from './conntrack.js';
import { buildMaglevTable } from '../maglev/index.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export interface BackendProgram {
  id: number;
  addr: string;
  weight?: number;
  state?: number;
  gen?: number;
  /** BACKEND_F_* */
  flags?: number;
  /** Its host, the next hop (same family as addr). */
  via?: string;
  /** Its own port (source NAT); absent: the packet's. */
  port?: number;
}

export interface VipProgram {
  id: number;
  addr: string;
  /** 0 = all ports. */
  port: number;
  proto: 'tcp' | 'udp';
  flags?: number;
  /** Maglev table size (prime). */
  m: number;
  backends: BackendProgram[];
  rlIntervalNs?: bigint;
  rlToleranceNs?: bigint;
}

export interface ConfigProgram {
  seed: number;
  /** Outer source prefixes, e.g. 198.19.255.0/24 and 2001:db8:ff::/112; null = none. */
  src4: string | null;
  src6: string | null;
  /** Next hop when the fib lookup fails (or always with skipFib). */
  gwMac?: Buffer;
  skipFib?: boolean;
  /** Reuse each backend's bpf_fib_lookup answer for NEXTHOP_TTL_JIFFIES (default true). */
  nexthopCache?: boolean;
  /** TCP flows enter conntrack at their first packet without SYN, not at the SYN (a SYN-flood defence). */
  recordAfterHandshake?: boolean;
  /** Live events: report 1 in N new flows; 0 or absent = no flow events. */
  eventsFlowSample?: number;
  /** Live events: hard cap on events (flows and drops) per second over all CPUs; 0 or absent = no events. */
  eventsPerSecond?: number;
  /** CPUs the cap is split over (one budget each); default: the online CPUs. */
  eventsCpus?: number;
  /** Source NAT (VIPs with forwarding snat): this host's addresses and the ports it takes; absent: none. */
  snat?: { src4: string | null; src6: string | null; portMin: number; portMax: number };
}

const NS_PER_SEC = 1_000_000_000n;

/**
 * How long a backend's next hop is reused before bpf_fib_lookup is asked
 * again, in jiffies: 64 to 640 ms by the kernel's HZ (1000 to 100). A route
 * or neighbour change reaches the datapath within that time.
 */
export const NEXTHOP_TTL_JIFFIES = 64;

let online: number | undefined;

/**
 * CPUs that can run XDP: the online ones (/sys/devices/system/cpu/online,
 * e.g. "0-3,8"), read once. Not the possible CPUs: firmware often announces
 * many hot-pluggable ones, and splitting the cap over those would leave most
 * of it unused. A CPU brought online later adds its share until ferryd
 * rewrites the config (restart or reload).
 */
export function onlineCpus(): number {
  if (online !== undefined) return online;
  let n = 0;
  try {
    const text = readFileSync('/sys/devices/system/cpu/online', 'utf8').trim();
    for (const part of text.split(',')) {
      const [a, b] = part.split('-').map(Number);
      if (a === undefined || Number.isNaN(a)) continue;
      n += b === undefined || Number.isNaN(b) ? 1 : b - a + 1;
    }
  } catch {
    n = 0;
  }
  online = n > 0 ? n : Math.max(1, cpus().length);
  return online;
}

/**
 * The per-CPU GCRA of the events cap (bpf/lib/events.h): each of `cpus`
 * CPUs admits one event per interval (CPUs x 1 s / cap, rounded up so the
 * sum never exceeds the cap) with a tolerance of 1 s - interval, i.e. a
 * burst of one second's budget. Over any t seconds at most cap x (t + 1 s)
 * events are written.
 */
export function eventBudget(perSecond: number, cpuCount: number): { intervalNs: bigint; burstNs: bigint } {
  if (!Number.isInteger(perSecond) || perSecond <= 0) return { intervalNs: 0n, burstNs: 0n };
  const n = BigInt(Math.max(1, Math.trunc(cpuCount)));
  const cap = BigInt(perSecond);
  const intervalNs = (n * NS_PER_SEC + cap - 1n) / cap;
  const burstNs = intervalNs >= NS_PER_SEC ? 0n : NS_PER_SEC - intervalNs;
  return { intervalNs, burstNs };
}

export const protoNumber = (p: 'tcp' | 'udp'): number => (p === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP);

/**
 * Encodes the global config for maps of the given sizes (the VIP index's
 * bucket masks follow them). IPv6 sources vary in the last 32 bits at most.
 */
export function encodeConfig(c: ConfigProgram, sizes: Pick<LbSizes, 'maxVips' | 'maxVipAddrs' | 'ctSize'>): LbConfigV {
  const s4 = c.src4 === null ? undefined : dpCidr(c.src4);
  const s6 = c.src6 === null ? undefined : dpCidr(c.src6);
  if (s4 && s4.addr.family !== 4) throw new TypeError(`src4 ${c.src4} is not IPv4`);
  if (s6 && s6.addr.family !== 6) throw new TypeError(`src6 ${c.src6} is not IPv6`);
  const budget = eventBudget(c.eventsPerSecond ?? 0, c.eventsCpus ?? (c.eventsPerSecond ? onlineCpus() : 1));
  return {
    hash_seed: c.seed >>> 0,
    flags: (c.skipFib ? CFG_F_SKIP_FIB : 0) | (c.recordAfterHandshake ? CFG_F_RECORD_AFTER_HANDSHAKE : 0),
    src4_prefix: s4 ? s4.addr.bytes.subarray(0, 4) : Buffer.alloc(4),
    src4_hostmask: s4 ? hostMask(s4.prefix, 32) : Buffer.alloc(4),
    src6_prefix: s6 ? s6.addr.bytes : Buffer.alloc(16),
    src6_hostmask: s6 ? hostMask(Math.max(s6.prefix - 96, 0), 32) : Buffer.alloc(4),
    gw_mac: c.gwMac ?? Buffer.alloc(6),
    pad: Buffer.alloc(2),
    // No cap, no events: the flow sample is zeroed too, so new flows pay one branch.
    events_flow_sample: budget.intervalNs === 0n ? 0 : Math.max(0, Math.trunc(c.eventsFlowSample ?? 0)) >>> 0,
    events_interval_ns: budget.intervalNs,
    events_burst_ns: budget.burstNs,
    vip_index_mask: indexBucketCount(sizes.maxVips) - 1,
    addr_index_mask: indexBucketCount(sizes.maxVipAddrs) - 1,
    nexthop_ttl: c.nexthopCache === false ? 0 : NEXTHOP_TTL_JIFFIES,
    ct_mask: ctBucketCount(sizes.ctSize) - 1,
    ...encodeSnat(c.snat),
  };
}

function encodeSnat(s: ConfigProgram['snat']): Pick<LbConfigV, 'snat_src4' | 'snat_src6' | 'snat_port_min' | 'snat_port_max'> {
  const src4 = s?.src4 ? dpAddr(s.src4) : undefined;
  const src6 = s?.src6 ? dpAddr(s.src6) : undefined;
  if (src4 && src4.family !== 4) throw new TypeError(`snat src4 ${s?.src4} is not IPv4`);
  if (src6 && src6.family !== 6) throw new TypeError(`snat src6 ${s?.src6} is not IPv6`);
  return {
    snat_src4: src4 ? src4.bytes.subarray(0, 4) : Buffer.alloc(4),
    snat_src6: src6 ? src6.bytes : Buffer.alloc(16),
    snat_port_min: s?.portMin ?? 0,
    snat_port_max: s?.portMax ?? 0,
  };
}

export function programConfig(dp: LbDatapath, c: ConfigProgram): void {
  dp.config.set(0, encodeConfig(c, dp.sizes));
}

/** Writes a backend's entry. */
export function programBackend(dp: LbDatapath, vipId: number, b: BackendProgram): void {
  const a = dpAddr(b.addr);
  dp.backends.set(b.id, {
    addr: a.bytes,
    family: a.family,
    state: b.state ?? BACKEND_ACTIVE,
    flags: b.flags ?? 0,
    pad: 0,
    vip_id: vipId,
    gen: b.gen ?? 1,
    via: b.via === undefined ? Buffer.alloc(16) : dpAddr(b.via).bytes,
    port: b.port ?? 0,
    pad2: 0,
  });
}

/** Builds and installs a VIP's Maglev table from its active backends; returns it. */
export function programTable(dp: LbDatapath, v: VipProgram, seed: number): Uint32Array {
  const live = v.backends.filter((b) => (b.state ?? BACKEND_ACTIVE) === BACKEND_ACTIVE);
  const table = buildMaglevTable(
    live.map((b) => ({ id: b.id, key: b.addr, weight: b.weight ?? 1 })),
    v.m,
    seed,
  );
  dp.setMaglevTable(v.id, table);
  return table;
}

/** Writes a whole VIP: backends, table, address entry, VIP entry. Returns the table. */
export function programVip(dp: LbDatapath, v: VipProgram, seed: number): Uint32Array {
  for (const b of v.backends) programBackend(dp, v.id, b);
  const table = programTable(dp, v, seed);
  const a = dpAddr(v.addr);
  dp.addrIndex.set({ addr: a.bytes, family: a.family, pad: Buffer.alloc(3) }, { flags: VIP_ADDR_F_ECHO });
  dp.vipIndex.set(
    { addr: a.bytes, port: v.port, proto: protoNumber(v.proto), family: a.family },
    { vip_id: v.id, flags: v.flags ?? 0, rl_interval_ns: v.rlIntervalNs ?? 0n, rl_tolerance_ns: v.rlToleranceNs ?? 0n },
  );
  return table;
}
