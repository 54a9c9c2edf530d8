/**
 * The datapath ABI: the TypeScript mirror of bpf/lib/consts.h and
 * bpf/lib/types.h. test/unit/datapath/abi.test.ts checks every struct against the BTF of
 * the compiled objects and every constant against the C headers.
 */
import { struct, u8, u16, u32, u64, be16, be32, bytes, type ValueOf } from './struct.js';

export const FERRY_BACKEND_NONE = 0xffffffff;
/** ferry_event.vip_id of a drop that happened before the VIP was known. */
export const FERRY_VIP_NONE = 0xffffffff;
export const FERRY_AF_INET = 4;
export const FERRY_AF_INET6 = 6;
export const FERRY_ENCAP_TTL = 64;
/** Maglev slots per element of ferry_maglev. */
export const FERRY_MAGLEV_BLOCK = 16;
/** Table pointers one run of ferry_maglev_publish sets. */
export const FERRY_MAGLEV_PUBLISH_MAX = 64;
/** Entries per conntrack bucket (bpf/lib/conntrack.h). */
export const FERRY_CT_WAYS = 3;
/** Slots per bucket of the VIP index (bpf/lib/index.h). */
export const FERRY_INDEX_WAYS = 4;
/** Per-CPU next-hop cache slots (bpf/lib/fib.h). */
export const FERRY_NEXTHOP_SLOTS = 4096;
/** A conntrack entry's last_seen is refreshed at most this often (jiffies). */
export const FERRY_CT_TOUCH_JIFFIES = 250;

/** Default map capacities compiled into the object (load-time overridable). */
export const DEFAULT_SIZES = {
  maxVips: 1024,
  maxVipAddrs: 1024,
  maxBackends: 65536,
  ctSize: 1_000_000,
  maxPolicyRules: 65536,
  /** u32 slots of ferry_maglev: every Maglev table, M + 1 slots each. */
  maglevSlots: 4_194_304,
  /** ferry_events ring buffer bytes: a power of 2, at least a page. */
  eventRingBytes: 1 << 20,
  /** ferry_snat_fwd / ferry_snat_rev entries: connections source NAT keeps. */
  snatEntries: 262_144,
} as const;

export const VIP_F_POLICY = 1 << 0;
export const VIP_F_ALLOWLIST = 1 << 1;
export const VIP_F_SRC_AFFINITY = 1 << 2;
/** Source NAT to the backends: replies return through this host (bpf/lib/snat.h). */
export const VIP_F_SNAT = 1 << 3;

export const VIP_ADDR_F_ECHO = 1 << 0;

export const BACKEND_FREE = 0;
export const BACKEND_ACTIVE = 1;
export const BACKEND_DRAINING = 2;
export const BACKEND_DOWN = 3;

/** backend.flags: the backend runs on this host (its packets go up the stack to tc_node_in). */
export const BACKEND_F_LOCAL = 1 << 0;

export const CFG_F_SKIP_FIB = 1 << 0;
export const CFG_F_RECORD_AFTER_HANDSHAKE = 1 << 1;

/** ferry_event.kind */
export const FERRY_EVENT_FLOW = 1;
export const FERRY_EVENT_DROP = 2;

export const POLICY_ALLOW = 1;
export const POLICY_DENY = 2;

/** enum ferry_drop_reason, in order; the index is the reason code. */
export const DROP_REASONS = [
  'none',
  'malformed_l3',
  'malformed_l4',
  'ip_options',
  'fragment',
  'ipv6_exthdr',
  'policy',
  'rate_limit',
  'no_backend',
  'bad_backend',
  'no_encap_source',
  'encap_failed',
  'too_big',
  'no_route',
  'icmp_malformed',
  'no_snat_source',
  'no_snat_port',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];
export const dropCode = (r: DropReason): number => DROP_REASONS.indexOf(r);

/** enum ferry_counter, in order. */
export const COUNTERS = [
  'rx',
  'pass_non_ip',
  'pass_non_vip',
  'pass_vip_other',
  'tx',
  'redirect',
  'fib_fallback',
  'icmp_echo',
  'icmp_steered',
  'ct_stale',
  'events',
  'events_suppressed',
  'events_lost',
  'fib_lookup',
  'syn_unrecorded',
  'local',
  'snat',
  'snat_reply',
] as const;
export type CounterName = (typeof COUNTERS)[number];
export const counterCode = (c: CounterName): number => COUNTERS.indexOf(c);

/** enum ferry_flow_reason, in order: why a new flow went to Maglev (flow events). */
export const FLOW_REASONS = ['maglev', 'ct_stale'] as const;
export type FlowReason = (typeof FLOW_REASONS)[number];

/** enum ferry_decap_counter, in order. */
export const DECAP_COUNTERS = ['rx', 'done', 'not_ours', 'pass', 'error'] as const;
export type DecapCounterName = (typeof DECAP_COUNTERS)[number];

/** An address as the datapath stores it: 16 bytes, IPv4 in the first 4. */
const addr = () => bytes(16, 4);

export const VipKey = struct('vip_key', {
  addr: addr(),
  port: be16(),
  proto: u8(),
  family: u8(),
});

export const VipMeta = struct('vip_meta', {
  vip_id: u32(),
  flags: u32(),
  rl_interval_ns: u64(),
  rl_tolerance_ns: u64(),
});

export const VipAddrKey = struct('vip_addr_key', {
  addr: addr(),
  family: u8(),
  pad: bytes(3),
});

export const VipAddrMeta = struct('vip_addr_meta', {
  flags: u32(),
});

/** A slot of ferry_vip_index: key, then meta at offset 24. */
export const VipSlot = struct('vip_slot', {
  key: bytes(VipKey.size, 4),
  pad: u32(),
  meta: bytes(VipMeta.size, 8),
});

export const VipBucket = struct('vip_bucket', {
  slot: bytes(FERRY_INDEX_WAYS * VipSlot.size, 8),
  overflow: u32(),
  pad: u32(),
});

export const VipAddrSlot = struct('vip_addr_slot', {
  key: bytes(VipAddrKey.size, 4),
  meta: bytes(VipAddrMeta.size, 4),
});

export const VipAddrBucket = struct('vip_addr_bucket', {
  slot: bytes(FERRY_INDEX_WAYS * VipAddrSlot.size, 4),
  overflow: u32(),
  pad: u32(),
});

export const Backend = struct('backend', {
  addr: addr(),
  family: u8(),
  state: u8(),
  flags: u8(),
  pad: u8(),
  vip_id: u32(),
  gen: u32(),
  via: addr(),
  port: be16(),
  pad2: u16(),
});

export const FlowKey = struct('flow_key', {
  src: addr(),
  dst: addr(),
  sport: be16(),
  dport: be16(),
  proto: u8(),
  family: u8(),
  pad: u16(),
});

export const CtEntry = struct('ct_entry', {
  fp: u64(),
  backend_id: u32(),
  backend_gen: u32(),
});

export const CtBucket = struct('ct_bucket', {
  e: bytes(FERRY_CT_WAYS * CtEntry.size, 8),
  last_seen: bytes(4 * FERRY_CT_WAYS, 4),
  pad: u32(),
});

export const Nexthop = struct('nexthop', {
  backend_id: u32(),
  backend_gen: u32(),
  iif: u32(),
  ifindex: u32(),
  mtu: u32(),
  expires: u32(),
  dmac: bytes(6),
  smac: bytes(6),
});

export const MaglevBlock = struct('maglev_block', {
  slot: bytes(4 * FERRY_MAGLEV_BLOCK, 4),
});

export const MaglevPublishItem = struct('maglev_publish_item', {
  vip_id: u32(),
  at: u32(),
});

export const MaglevPublish = struct('maglev_publish', {
  count: u32(),
  pad: u32(),
  item: bytes(FERRY_MAGLEV_PUBLISH_MAX * MaglevPublishItem.size, 4),
});

export const PolicyKey = struct('policy_key', {
  prefixlen: u32(),
  vip_id: be32(),
  addr: addr(),
});

export const PolicyValue = struct('policy_value', {
  action: u32(),
});

export const RatelimitState = struct('ratelimit_state', {
  tat_ns: u64(),
});

export const LbConfig = struct('lb_config', {
  hash_seed: u32(),
  flags: u32(),
  src4_prefix: bytes(4, 4),
  src4_hostmask: bytes(4, 4),
  src6_prefix: bytes(16, 4),
  src6_hostmask: bytes(4, 4),
  gw_mac: bytes(6),
  pad: bytes(2),
  events_flow_sample: u32(),
  events_interval_ns: u64(),
  events_burst_ns: u64(),
  vip_index_mask: u32(),
  addr_index_mask: u32(),
  nexthop_ttl: u32(),
  ct_mask: u32(),
  snat_src4: bytes(4, 4),
  snat_src6: bytes(16, 4),
  snat_port_min: u16(),
  snat_port_max: u16(),
});

/** ferry_snat_fwd value (key: the client's FlowKey). */
export const SnatFwd = struct('snat_fwd', {
  backend: addr(),
  backend_port: be16(),
  port: be16(),
  pad: u32(),
});

export const SnatRevKey = struct('snat_rev_key', {
  backend: addr(),
  backend_port: be16(),
  port: be16(),
  proto: u8(),
  family: u8(),
  pad: u16(),
});

export const SnatRev = struct('snat_rev', {
  client: addr(),
  vip: addr(),
  client_port: be16(),
  vip_port: be16(),
  pad: u32(),
});

export const EventBudget = struct('event_budget', {
  tat_ns: u64(),
});

/** A record of the ferry_events ring buffer. */
export const FerryEvent = struct('ferry_event', {
  ts_ns: u64(),
  src: addr(),
  dst: addr(),
  sport: be16(),
  dport: be16(),
  vip_id: u32(),
  backend_id: u32(),
  frame_len: u32(),
  kind: u8(),
  reason: u8(),
  proto: u8(),
  family: u8(),
  pad: u32(),
});

export const VipStats = struct('vip_stats', {
  packets: u64(),
  bytes: u64(),
  new_flows: u64(),
  ct_hits: u64(),
  ct_misses: u64(),
  drops: u64(),
});

export const BackendStats = struct('backend_stats', {
  packets: u64(),
  bytes: u64(),
  new_flows: u64(),
});

export const Counter = struct('counter', {
  packets: u64(),
  bytes: u64(),
});

export type VipKeyV = ValueOf<typeof VipKey>;
export type VipMetaV = ValueOf<typeof VipMeta>;
export type VipAddrKeyV = ValueOf<typeof VipAddrKey>;
export type BackendV = ValueOf<typeof Backend>;
export type FlowKeyV = ValueOf<typeof FlowKey>;
export type PolicyKeyV = ValueOf<typeof PolicyKey>;
export type LbConfigV = ValueOf<typeof LbConfig>;
export type VipStatsV = ValueOf<typeof VipStats>;
export type BackendStatsV = ValueOf<typeof BackendStats>;
export type CounterV = ValueOf<typeof Counter>;
export type FerryEventV = ValueOf<typeof FerryEvent>;

/** Every struct of the ABI, for the layout test. */
export const ALL_STRUCTS = [
  VipKey,
  VipMeta,
  VipAddrKey,
  VipAddrMeta,
  VipSlot,
  VipBucket,
  VipAddrSlot,
  VipAddrBucket,
  Backend,
  FlowKey,
  CtEntry,
  CtBucket,
  Nexthop,
  MaglevBlock,
  MaglevPublishItem,
  MaglevPublish,
  PolicyKey,
  PolicyValue,
  RatelimitState,
  LbConfig,
  VipStats,
  BackendStats,
  Counter,
  EventBudget,
  FerryEvent,
  SnatFwd,
  SnatRevKey,
  SnatRev,
] as const;
