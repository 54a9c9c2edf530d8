/**
 * The socket-level load balancer's ABI: the TypeScript mirror of
 * bpf/lib/socklb_types.h. test/unit/datapath/socket-lb-abi.test.ts checks every struct against
 * the BTF of build/bpf/sock_lb.bpf.o and every constant against the header.
 */
import { struct, u8, u32, u64, be16, bytes, type ValueOf } from './struct.js';

export const SOCKLB_AF_INET = 4;
export const SOCKLB_AF_INET6 = 6;
export type SockFamily = typeof SOCKLB_AF_INET | typeof SOCKLB_AF_INET6;

/** sock_svc.flags */
export const SOCK_SVC_F_AFFINITY = 1 << 0;

/** An affinity entry's last use is refreshed at most this often (ns). */
export const SOCKLB_AFFINITY_TOUCH_NS = 1_000_000_000;

/** Default map capacities compiled into the object (load-time overridable). */
export const SOCKLB_DEFAULT_SIZES = {
  /** ClusterIP × port × protocol entries (ferry_sock_svcs). */
  maxServices: 65536,
  /** Backend slots of both buffers of every service (ferry_sock_slots), and affinity members. */
  maxSlots: 262144,
  /** (socket, backend) → service reverse entries (LRU). */
  revnatSize: 262144,
  /** (client netns, service) → backend affinity entries (LRU). */
  affinitySize: 65536,
} as const;

/** enum sock_counter_id, in order; the index is the counter's slot. */
export const SOCK_COUNTERS = [
  'connect',
  'sendmsg',
  'no_backend',
  'slot_missing',
  'affinity_hit',
  'affinity_new',
  'revnat_fail',
  'rev_recvmsg',
  'rev_peername',
  'released',
] as const;
export type SockCounterName = (typeof SOCK_COUNTERS)[number];

const addr = () => bytes(16, 4);

export const SockEndpoint = struct('sock_endpoint', {
  addr: addr(),
  port: be16(),
  family: u8(),
  pad: u8(),
});

/** A struct sock_endpoint member of another struct (encode it with SockEndpoint). */
const endpoint = () => bytes(SockEndpoint.size, 4);

export const SockSvcKey = struct('sock_svc_key', {
  addr: addr(),
  port: be16(),
  proto: u8(),
  family: u8(),
});

export const SockSvc = struct('sock_svc', {
  id: u32(),
  count: u32(),
  gen: u32(),
  affinity_timeout_s: u32(),
  flags: u32(),
});

export const SockSlotKey = struct('sock_slot_key', {
  svc_id: u32(),
  buf: u32(),
  index: u32(),
});

export const SockRevKey = struct('sock_rev_key', {
  cookie: u64(),
  backend: endpoint(),
  pad: u32(),
});

export const SockAffinityKey = struct('sock_affinity_key', {
  netns_cookie: u64(),
  svc_id: u32(),
  pad: u32(),
});

export const SockAffinity = struct('sock_affinity', {
  backend: endpoint(),
  pad: u32(),
  last_ns: u64(),
});

export const SockMemberKey = struct('sock_member_key', {
  svc_id: u32(),
  backend: endpoint(),
});

export const SockCounter = struct('sock_counter', {
  count: u64(),
});

export type SockEndpointV = ValueOf<typeof SockEndpoint>;
export type SockSvcKeyV = ValueOf<typeof SockSvcKey>;
export type SockSvcV = ValueOf<typeof SockSvc>;
export type SockRevKeyV = ValueOf<typeof SockRevKey>;
export type SockAffinityKeyV = ValueOf<typeof SockAffinityKey>;
export type SockAffinityV = ValueOf<typeof SockAffinity>;

/** Every struct of this ABI, for the layout test. */
export const SOCKLB_STRUCTS = [
  SockEndpoint,
  SockSvcKey,
  SockSvc,
  SockSlotKey,
  SockRevKey,
  SockAffinityKey,
  SockAffinity,
  SockMemberKey,
  SockCounter,
] as const;
