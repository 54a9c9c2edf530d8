/**
 * Typed loader for Ferry's native addon (native/, N-API over libbpf).
 *
 * The addon knows BPF objects, maps, programs and links; nothing here knows
 * about VIPs or backends. Every call is synchronous. Every failure throws an
 * Error carrying `errno` (positive) and `code` ("ENOENT", "EINVAL", ...), and
 * for libbpf operations the tail of libbpf's log (verifier output included)
 * in the message and the captured log in `libbpfLog`. Bad arguments throw a
 * TypeError / RangeError with code "EINVAL"; they never reach the kernel.
 *
 * Buffers cross the boundary as Node Buffers laid out exactly as the C
 * structs (host byte order unless the struct says otherwise). Per-CPU maps
 * take and return numPossibleCpus() * roundup(valueSize, 8) bytes.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';

// ---- kernel ABI constants (checked against the C headers by a test) --------

export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_ARRAY = 2;
export const BPF_MAP_TYPE_PROG_ARRAY = 3;
export const BPF_MAP_TYPE_PERCPU_HASH = 5;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_MAP_TYPE_LRU_HASH = 9;
export const BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;
export const BPF_MAP_TYPE_LPM_TRIE = 11;
export const BPF_MAP_TYPE_ARRAY_OF_MAPS = 12;
export const BPF_MAP_TYPE_HASH_OF_MAPS = 13;
export const BPF_MAP_TYPE_DEVMAP = 14;
export const BPF_MAP_TYPE_CPUMAP = 16;
export const BPF_MAP_TYPE_XSKMAP = 17;
export const BPF_MAP_TYPE_DEVMAP_HASH = 25;
export const BPF_MAP_TYPE_RINGBUF = 27;

/** mapUpdate flags. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BPF_F_LOCK = 4;

/** Map creation flags. */
export const BPF_F_NO_PREALLOC = 1;
export const BPF_F_RDONLY_PROG = 1 << 7;
export const BPF_F_INNER_MAP = 1 << 12;
/** Array values mappable into userspace (mapMmap); the kernel page-aligns them. */
export const BPF_F_MMAPABLE = 1 << 10;

/** progTestRun flag: run XDP frames for real (needs ctxIn, returns no data). */
export const BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1;

export const BPF_PROG_TYPE_SCHED_CLS = 3;
export const BPF_PROG_TYPE_XDP = 6;
export const BPF_PROG_TYPE_CGROUP_SOCK = 9;
export const BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18;

export const BPF_LINK_TYPE_CGROUP = 3;
export const BPF_LINK_TYPE_XDP = 6;

/** cgroup attach types (enum bpf_attach_type) of the socket hooks, for cgroupQuery and linkInfo. */
export const BPF_CGROUP_INET4_CONNECT = 10;
export const BPF_CGROUP_INET6_CONNECT = 11;
export const BPF_CGROUP_UDP4_SENDMSG = 14;
export const BPF_CGROUP_UDP6_SENDMSG = 15;
export const BPF_CGROUP_UDP4_RECVMSG = 19;
export const BPF_CGROUP_UDP6_RECVMSG = 20;
export const BPF_CGROUP_INET4_GETPEERNAME = 29;
export const BPF_CGROUP_INET6_GETPEERNAME = 30;
export const BPF_CGROUP_INET_SOCK_RELEASE = 34;

/** XDP verdicts (enum xdp_action). */
export const XDP_ABORTED = 0;
export const XDP_DROP = 1;
export const XDP_PASS = 2;
export const XDP_TX = 3;
export const XDP_REDIRECT = 4;

// ---- types -------------------------------------------------------------------

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  /** Time spent in the program and its runs; zero unless run-time statistics are on (enableStats). */
  runTimeNs: number;
  runCount: number;
}

export interface TestRunResult {
  retval: number;
  /** The packet after the run (empty in live frames mode). */
  data: Buffer;
  /** Average duration of one repetition, as the kernel measured it. */
  durationNs: number;
  /** The context after the run, when ctxIn was given (not in live frames mode). */
  ctxOut?: Buffer;
}

export interface TestRunOptions {
  data: Buffer;
  /** Size of the output buffer; default data.length + 256. */
  dataOutSize?: number;
  repeat?: number;
  /** Context in, e.g. a struct xdp_md. */
  ctxIn?: Buffer;
  flags?: number;
  /** Live frames mode: frames per batch (kernel default 64). */
  batchSize?: number;
}

export type XdpMode = 'native' | 'generic' | 'auto';
export type XdpAttachedMode = 'none' | 'native' | 'generic' | 'offload' | 'multi';
export type TcDirection = 'ingress' | 'egress';

export interface TcOptions {
  /** Filter handle, default 1. */
  handle?: number;
  /** Filter priority (1..65535), default 1. */
  priority?: number;
}

export interface LinkInfo {
  id: number;
  progId: number;
  type: number;
  /** For XDP links; 0 otherwise. */
  ifindex: number;
  /** For cgroup links: the cgroup's id (its directory's inode number); 0 otherwise. */
  cgroupId: number;
  /** For cgroup links: the attach type (BPF_CGROUP_*); -1 otherwise. */
  attachType: number;
}

export interface CgroupQueryResult {
  /** Programs attached directly to the cgroup for the attach type (links and plain attachments). */
  progIds: number[];
  /** BPF_F_ALLOW_OVERRIDE / BPF_F_ALLOW_MULTI of the attachment (0 when only links are attached). */
  attachFlags: number;
}

export interface XdpQueryResult {
  /** The attached program (for 'multi', the driver-mode one). 0 if none. */
  progId: number;
  mode: XdpAttachedMode;
  driverProgId: number;
  genericProgId: number;
  offloadProgId: number;
}

export interface BtfMember {
  name: string;
  /** Byte offset (for bitfields, of the byte holding the first bit). */
  offset: number;
  /** Byte size; arrays count whole. */
  size: number;
  /** Bitfields only: offset and width in bits. */
  bitOffset?: number;
  bitSize?: number;
}

export interface BtfStructLayout {
  size: number;
  /** In declaration order; members of anonymous structs/unions are inlined. */
  members: BtfMember[];
}

export interface MapCreateOptions {
  type: number;
  /** At most 15 characters: letters, digits, '_' and '.'. */
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
  innerMapFd?: number;
}

export interface OpenObjectOptions {
  /**
   * Directory (on a bpffs) where maps declared with LIBBPF_PIN_BY_NAME are
   * pinned, or reused when already pinned there. Without it nothing is pinned
   * or reused (libbpf alone would fall back to /sys/fs/bpf).
   */
  pinRoot?: string;
  /** Overrides of max_entries by map name, applied before load. */
  maxEntries?: Record<string, number>;
}

export interface MapDump {
  keys: Buffer[];
  values: Buffer[];
}

export interface MapDumpOptions {
  /** Use BPF_MAP_LOOKUP_BATCH where the map supports it (default true). */
  batch?: boolean;
}

export interface ObjectMap extends MapInfo {
  /** -1 before load. */
  fd: number;
  /** Where libbpf pins the map, null if it is not pinned. */
  pinPath: string | null;
}

export interface ObjectProgram {
  name: string;
  section: string;
  /** -1 before load. */
  fd: number;
  type: number;
}

/**
 * An opened (and, after load(), loaded) BPF object file. The fds it returns
 * belong to it: do not closeFd() them; they become invalid on close().
 * The garbage collector closes a forgotten object.
 */
export interface BpfObject {
  /** bpf_object__load; maps with a pin path are reused if pinned, else pinned. */
  load(): void;
  maps(): ObjectMap[];
  mapFd(name: string): number;
  programs(): ObjectProgram[];
  programFd(name: string): number;
  /**
   * bpf_program__attach_cgroup: attaches a loaded cgroup program (the attach
   * type comes from its section, e.g. cgroup/connect4) to a cgroup v2
   * directory through a bpf link, and returns the link fd. The fd is the
   * caller's (closeFd it); the link outlives this process only if pinned
   * (objPin), and goes with linkDetach. Errors: ENOENT (no such program or
   * directory), ENOTDIR, EINVAL (not loaded, not a cgroup program, not a
   * cgroup v2 directory), and the kernel's.
   */
  attachCgroup(program: string, cgroupPath: string): number;
  /** Idempotent. Methods called afterwards throw EBADF. */
  close(): void;
  readonly closed: boolean;
  readonly loaded: boolean;
  readonly path: string;
}

/** The shape of every error the addon throws. */
export interface NativeError extends Error {
  errno: number;
  code: string;
  /** The operation that failed, e.g. "mapLookup: bpf_map_lookup_elem on map 'x' (id 3, fd 20)". */
  op?: string;
  /** libbpf's log lines captured during the operation (up to 64 KiB). */
  libbpfLog?: string;
}

export function isNativeError(e: unknown): e is NativeError {
  return (
    e instanceof Error && typeof (e as Partial<NativeError>).errno === 'number' && typeof (e as Partial<NativeError>).code === 'string'
  );
}

export interface NativeAddon {
  libbpfVersion(): string;
  numPossibleCpus(): number;
  /** bpf_object__open_file; unknown names in maxEntries throw ENOENT. */
  openObject(path: string, opts?: OpenObjectOptions): BpfObject;
  /** bpf_obj_get: a new fd for a pinned map, program or link. */
  objGet(path: string): number;
  objPin(fd: number, path: string): void;
  /** Closes an fd from objGet/mapCreate/xdpAttach/mapLookupFd; refuses non-BPF fds. */
  closeFd(fd: number): void;
  mapInfo(fd: number): MapInfo;
  progInfo(fd: number): ProgInfo;
  /** An fd of the loaded program with this id (bpf_prog_get_fd_by_id). */
  progFdById(id: number): number;
  /** Turns on run-time statistics of every BPF program until the returned fd is closed (closeFd). */
  enableStats(): number;
  mapCreate(opts: MapCreateOptions): number;
  /** null when the key is absent. */
  mapLookup(fd: number, key: Buffer): Buffer | null;
  /** Outer map-in-map values are a 4-byte inner map fd. */
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  /** false when the key was absent. */
  mapDelete(fd: number, key: Buffer): boolean;
  /** The key after `key` (the first key for null); null at the end. */
  mapNextKey(fd: number, key: Buffer | null): Buffer | null;
  /** Map-in-map (or program array) entry as a new fd; null when empty. Close it. */
  mapLookupFd(fd: number, key: Buffer): number | null;
  /**
   * The whole map. Keys and values are views into two shared buffers; copy
   * one you keep for long.
   */
  mapDump(fd: number, opts?: MapDumpOptions): MapDump;
  /** keys/values concatenated; falls back to single updates without batch support. */
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags?: number): void;
  /** Deletes count concatenated keys, skipping absent ones; returns how many were deleted. */
  mapDeleteBatch(fd: number, keys: Buffer, count: number): number;
  /**
   * The values of a BPF_F_MMAPABLE array map as memory shared with the
   * kernel (element i at i * valueSize rounded up to 8); unmapped when collected.
   */
  mapMmap(fd: number): ArrayBuffer;
  /** mapUpdate on the thread pool: for updates that wait in the kernel (map-in-map: an RCU grace period). */
  mapUpdateAsync(fd: number, key: Buffer, value: Buffer, flags?: number): Promise<void>;
  progTestRun(progFd: number, opts: TestRunOptions): TestRunResult;
  /** Runs a BPF_PROG_TYPE_SYSCALL program once with ctx as its argument; returns its retval (a signed int). */
  progRunSyscall(progFd: number, ctx: Buffer): number;
  /** bpf_link_create(BPF_XDP); returns the link fd (pin it to outlive the process). */
  xdpAttach(progFd: number, ifindex: number, mode: XdpMode): number;
  /** Atomic program replacement; with oldProgFd only if that program is still attached. */
  linkUpdate(linkFd: number, progFd: number, oldProgFd?: number): void;
  linkDetach(linkFd: number): void;
  linkInfo(fd: number): LinkInfo;
  /** The programs attached directly to a cgroup v2 directory for an attach type (bpf_prog_query). */
  cgroupQuery(cgroupPath: string, attachType: number): CgroupQueryResult;
  xdpQuery(ifindex: number): XdpQueryResult;
  /** clsact hook (created if missing) + direct-action filter, replacing one at the same handle/priority. */
  tcAttach(progFd: number, ifindex: number, direction: TcDirection, opts?: TcOptions): void;
  /** Removes the filter; the clsact qdisc stays. */
  tcDetach(ifindex: number, direction: TcDirection, opts?: TcOptions): void;
  /** The program of a tc filter, null when there is none. */
  tcQuery(ifindex: number, direction: TcDirection, opts?: TcOptions): { progId: number } | null;
  /**
   * Opens a BPF ring buffer map (BPF_MAP_TYPE_RINGBUF) for reading through
   * libbpf's ring_buffer; returns a handle. The map fd may be closed after.
   * Only one reader should consume a ring: readers share its position.
   */
  ringOpen(mapFd: number): number;
  /**
   * The records available now, oldest first, at most maxRecords (each a copy);
   * never waits. Records taken are gone from the ring.
   */
  ringConsume(handle: number, maxRecords: number): Buffer[];
  /** Frees the handle; EBADF for one not open. */
  ringClose(handle: number): void;
  btfStructLayout(objPath: string, structName: string): BtfStructLayout;
  ifNameToIndex(name: string): number;
  /** sd_notify(3): sends state to $NOTIFY_SOCKET; false when not run by systemd. */
  sdNotify(state: string): boolean;
  /** A non-blocking socket (not connected; TCP ones bound to an ephemeral port of their own) whose packets carry SO_MARK `mark`. */
  socketOpen(family: 4 | 6, kind: 'tcp' | 'udp', mark: number): number;
  /** Sets SO_MARK on an existing socket. */
  socketSetMark(fd: number, mark: number): void;
  /**
   * Lab traffic (the flood tests, the packet-rate rig): IPv4 TCP SYNs or UDP datagrams to dstIp:dstPort,
   * each from a random address in srcNet/srcPrefix and a random port (or numbered flows: srcCount),
   * written to `ifname` with AF_PACKET sendmmsg, paced to `rate` or as fast as the interface takes them,
   * until `count` frames were taken or `milliseconds` passed. Blocks the calling thread.
   */
  packetFlood(o: PacketFloodOptions): { sent: number; refused: number; ns: number };
  /** The constants above as the addon's C headers define them. */
  readonly constants: Readonly<Record<string, number>>;
}

export interface PacketFloodOptions {
  ifname: string;
  dstMac: Buffer;
  srcMac: Buffer;
  dstIp: Buffer;
  dstPort: number;
  proto: 'tcp' | 'udp';
  srcNet: Buffer;
  /** 8..32 (default 16). */
  srcPrefix?: number;
  count?: number;
  /** Default 1000. */
  milliseconds?: number;
  seed?: number;
  /** Frames per second, sent in groups of `group` (1..64, default 64); 0 or absent: as fast as the interface takes them. */
  rate?: number;
  group?: number;
  /**
   * Numbered flows instead of random ones: frame n (counting from `first`) comes from srcNet + n % srcCount
   * and port portBase (default 1024) + (n / srcCount) % portCount (default 1), as the rig's xdp_gen numbers them.
   */
  srcCount?: number;
  portCount?: number;
  portBase?: number;
  first?: number;
}

// ---- loading -----------------------------------------------------------------

interface RawDump {
  keys: Buffer;
  values: Buffer;
  count: number;
  keySize: number;
  valueSize: number;
  batched: boolean;
}

type RawAddon = Omit<NativeAddon, 'mapDump'> & {
  mapDumpRaw(fd: number, opts?: MapDumpOptions): RawDump;
};

const FUNCTIONS = [
  'libbpfVersion',
  'numPossibleCpus',
  'openObject',
  'objGet',
  'objPin',
  'closeFd',
  'mapInfo',
  'progInfo',
  'progFdById',
  'enableStats',
  'mapCreate',
  'mapLookup',
  'mapUpdate',
  'mapDelete',
  'mapNextKey',
  'mapLookupFd',
  'mapDumpRaw',
  'mapUpdateBatch',
  'mapDeleteBatch',
  'mapMmap',
  'mapUpdateAsync',
  'progTestRun',
  'progRunSyscall',
  'xdpAttach',
  'linkUpdate',
  'linkDetach',
  'linkInfo',
  'cgroupQuery',
  'xdpQuery',
  'tcAttach',
  'tcDetach',
  'tcQuery',
  'ringOpen',
  'ringConsume',
  'ringClose',
  'btfStructLayout',
  'ifNameToIndex',
  'sdNotify',
  'socketOpen',
  'socketSetMark',
  'packetFlood',
] as const;

/** Path of the built addon; FERRY_NATIVE_ADDON overrides it. */
export function nativeAddonPath(): string {
  const override = process.env['FERRY_NATIVE_ADDON'];
  if (override) return override;
  const root = packageRoot();
  const candidates = ['Release', 'Debug'].map((c) => join(root, 'native', 'build', c, 'ferry_native.node'));
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`Ferry native addon not built (looked for ${candidates.join(', ')}); run "npm run build:native"`);
  }
  return found;
}

function splitDump(raw: RawDump): MapDump {
  const keys: Buffer[] = new Array<Buffer>(raw.count);
  const values: Buffer[] = new Array<Buffer>(raw.count);
  for (let i = 0; i < raw.count; i++) {
    keys[i] = raw.keys.subarray(i * raw.keySize, (i + 1) * raw.keySize);
    values[i] = raw.values.subarray(i * raw.valueSize, (i + 1) * raw.valueSize);
  }
  return { keys, values };
}

function checkShape(mod: unknown, path: string): RawAddon {
  if (typeof mod !== 'object' || mod === null) throw new Error(`${path} is not a Ferry native addon`);
  const rec = mod as Record<string, unknown>;
  for (const name of FUNCTIONS) {
    if (typeof rec[name] !== 'function') {
      throw new Error(`${path} lacks ${name}(): rebuild it with "npm run build:native"`);
    }
  }
  if (typeof rec['constants'] !== 'object' || rec['constants'] === null) {
    throw new Error(`${path} lacks constants: rebuild it with "npm run build:native"`);
  }
  return mod as RawAddon;
}

let cached: NativeAddon | undefined;

/** Loads the addon once per process (per worker thread). */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const path = nativeAddonPath();
  const require = createRequire(import.meta.url);
  const raw = checkShape(require(path) as unknown, path);
  const { mapDumpRaw, ...rest } = raw;
  cached = Object.freeze({
    ...rest,
    mapDump: (fd: number, opts?: MapDumpOptions): MapDump => splitDump(mapDumpRaw(fd, opts)),
  });
  return cached;
}
