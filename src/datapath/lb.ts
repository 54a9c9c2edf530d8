/**
 * The load balancer's datapath as the daemon sees it: the xdp_lb object
 * opened with its maps pinned under a bpffs directory, typed views of every
 * map, Maglev table installation, and XDP attachment through pinned links.
 *
 * Nothing here knows about the store or the API; the reconciler decides what
 * to write, this module knows how.
 */
import { mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  Backend, BackendStats, COUNTERS, Counter, DEFAULT_SIZES, DROP_REASONS, EventBudget, FERRY_BACKEND_NONE,
  LbConfig, PolicyKey, PolicyValue, RatelimitState, VipStats,
  type CounterName, type CounterV, type DropReason,
} from './abi.js';
import { ADDR_SHAPE, indexBucketCount, KeyIndex, VIP_SHAPE, type AddrIndex, type VipIndex } from './vipindex.js';
import { ArrayMap, PerCpuArray, TypedMap } from './maps.js';
import { Conntrack, ctBucketCount } from './conntrack.js';
import { BPF_F_INNER_MAP, BPF_MAP_TYPE_ARRAY, loadNative, type BpfObject, type NativeAddon } from './native.js';
import { bpfObjectPath } from '../paths.js';
import { detachPinnedLink, replaceStalePins } from './pins.js';

export interface LbSizes {
  maxVips: number;
  maxVipAddrs: number;
  maxBackends: number;
  ctSize: number;
  maxPolicyRules: number;
  /** ferry_events ring buffer in bytes: a power of 2, at least a page (default 1 MiB). */
  eventRingBytes?: number;
}

export type XdpMode = 'native' | 'generic' | 'auto';

export interface LbOpenOptions {
  /** bpffs directory for maps and links, e.g. /sys/fs/bpf/ferry. */
  pinRoot: string;
  sizes?: Partial<LbSizes>;
  /** Defaults to build/bpf/xdp_lb.bpf.o of this package. */
  objectPath?: string;
}

/** Map name → the sizes field that sets its capacity. */
const SIZED_MAPS: Record<string, keyof LbSizes> = {
  ferry_vips: 'maxVips',
  ferry_maglev: 'maxVips',
  ferry_ratelimit: 'maxVips',
  ferry_vip_stats: 'maxVips',
  ferry_vip_addrs: 'maxVipAddrs',
  ferry_backends: 'maxBackends',
  ferry_backend_stats: 'maxBackends',
  ferry_policy: 'maxPolicyRules',
  ferry_events: 'eventRingBytes',
};

/**
 * Maps the daemon rebuilds (the config) or may lose (global counters, the
 * events ring and its budget, conntrack). When a pinned one no longer
 * matches this object's definition, because an upgrade changed its layout
 * (live events grew lb_config and the counters; conntrack became a flow
 * table) or its size changed in the config (the ring, conntrack), its pin
 * is removed and the load creates it anew. Losing conntrack is survivable:
 * established flows then follow the Maglev table, which names the backend
 * they already have unless it changed since they began. A mismatch of any
 * other map (VIPs, backends, ...) still fails the load.
 */
const REPLACEABLE = new Set(['ferry_config', 'ferry_counters', 'ferry_events', 'ferry_event_budget', 'ferry_ct']);

const PAGE = 4096;

function checkRingBytes(n: number): void {
  if (!Number.isInteger(n) || n < PAGE || n > 2 ** 31 || (n & (n - 1)) !== 0) {
    throw new RangeError(`eventRingBytes must be a power of 2 from ${PAGE} to 2^31, got ${n}`);
  }
}

export class LbDatapath {
  readonly sizes: Required<LbSizes>;
  readonly progFd: number;
  readonly config: ArrayMap<typeof LbConfig>;
  /** VIPs by {address, port, protocol}: the inline-probed index and its overflow map (vipindex.ts). */
  readonly vipIndex: VipIndex;
  /** VIP addresses, likewise. */
  readonly addrIndex: AddrIndex;
  readonly backends: ArrayMap<typeof Backend>;
  readonly ct: Conntrack;
  readonly policy: TypedMap<typeof PolicyKey, typeof PolicyValue>;
  readonly ratelimit: ArrayMap<typeof RatelimitState>;
  readonly vipStats: PerCpuArray<typeof VipStats>;
  readonly backendStats: PerCpuArray<typeof BackendStats>;
  readonly drops: PerCpuArray<typeof Counter>;
  readonly counters: PerCpuArray<typeof Counter>;
  /** Pinned maps open() replaced because their layout had changed (see REPLACEABLE). */
  replacedPins: string[] = [];
  /** The ferry_events ring buffer (struct ferry_event records); read it with nat.ringOpen. */
  readonly eventsFd: number;
  /** The events cap's per-CPU GCRA state. */
  readonly eventBudget: PerCpuArray<typeof EventBudget>;
  private readonly maglevFd: number;
  private readonly key4 = Buffer.alloc(4);

  private constructor(
    readonly nat: NativeAddon,
    private readonly obj: BpfObject,
    readonly pinRoot: string,
    sizes: Required<LbSizes>,
  ) {
    this.sizes = sizes;
    this.progFd = obj.programFd('xdp_lb');
    const fd = (name: string) => obj.mapFd(name);
    const cpus = nat.numPossibleCpus();
    this.config = new ArrayMap(nat, fd('ferry_config'), 'ferry_config', LbConfig);
    this.vipIndex = new KeyIndex(nat, fd('ferry_vip_index'), fd('ferry_vips'), indexBucketCount(sizes.maxVips), VIP_SHAPE);
    this.addrIndex = new KeyIndex(
      nat, fd('ferry_addr_index'), fd('ferry_vip_addrs'), indexBucketCount(sizes.maxVipAddrs), ADDR_SHAPE,
    );
    this.backends = new ArrayMap(nat, fd('ferry_backends'), 'ferry_backends', Backend);
    this.ct = new Conntrack(nat, fd('ferry_ct'), ctBucketCount(sizes.ctSize));
    this.policy = new TypedMap(nat, fd('ferry_policy'), 'ferry_policy', PolicyKey, PolicyValue);
    this.ratelimit = new ArrayMap(nat, fd('ferry_ratelimit'), 'ferry_ratelimit', RatelimitState);
    this.vipStats = new PerCpuArray(nat, fd('ferry_vip_stats'), 'ferry_vip_stats', VipStats, cpus);
    this.backendStats = new PerCpuArray(nat, fd('ferry_backend_stats'), 'ferry_backend_stats', BackendStats, cpus);
    this.drops = new PerCpuArray(nat, fd('ferry_drops'), 'ferry_drops', Counter, cpus);
    this.counters = new PerCpuArray(nat, fd('ferry_counters'), 'ferry_counters', Counter, cpus);
    this.eventsFd = fd('ferry_events');
    this.eventBudget = new PerCpuArray(nat, fd('ferry_event_budget'), 'ferry_event_budget', EventBudget, cpus);
    this.maglevFd = fd('ferry_maglev');
  }

  /**
   * Opens and loads xdp_lb. Maps already pinned under pinRoot are reused with
   * their contents (a restarted daemon keeps every flow); missing ones are
   * created and pinned.
   */
  static open(opts: LbOpenOptions): LbDatapath {
    const nat = loadNative();
    const sizes: Required<LbSizes> = { ...DEFAULT_SIZES };
    for (const [k, v] of Object.entries(opts.sizes ?? {})) if (v !== undefined) sizes[k as keyof LbSizes] = v;
    checkRingBytes(sizes.eventRingBytes);
    const maxEntries: Record<string, number> = {};
    for (const [map, field] of Object.entries(SIZED_MAPS)) maxEntries[map] = sizes[field];
    maxEntries.ferry_ct = ctBucketCount(sizes.ctSize);
    maxEntries.ferry_vip_index = indexBucketCount(sizes.maxVips);
    maxEntries.ferry_addr_index = indexBucketCount(sizes.maxVipAddrs);
    mkdirSync(opts.pinRoot, { recursive: true });
    const obj = nat.openObject(opts.objectPath ?? bpfObjectPath('xdp_lb'), { pinRoot: opts.pinRoot, maxEntries });
    try {
      const replaced = replaceStalePins(nat, obj, (name) => REPLACEABLE.has(name));
      obj.load();
      const dp = new LbDatapath(nat, obj, opts.pinRoot, sizes);
      dp.replacedPins = replaced;
      return dp;
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /**
   * Installs a VIP's Maglev table in one step: a new inner array is filled
   * completely (slot 0 = M, then the M backend ids) before the outer map
   * points at it, so packets see the old table or the new one, never a mix.
   */
  setMaglevTable(vipId: number, table: Uint32Array): void {
    this.setMaglevTables([vipId], [table]);
  }

  /**
   * Installs several tables with one batched update of the outer map. Every
   * update of a map-in-map makes the kernel wait for an RCU grace period
   * before returning (so no program still reads the old table); a batch
   * waits once. Each element is still one atomic pointer swap.
   */
  setMaglevTables(vipIds: readonly number[], tables: readonly Uint32Array[]): void {
    const fds: number[] = [];
    try {
      vipIds.forEach((id, i) => fds.push(this.createTableMap(`ferry_mg_${id}`, tables[i]!)));
      this.pointTables(vipIds, fds);
    } finally {
      for (const fd of fds) this.nat.closeFd(fd);
    }
  }

  /**
   * Points many VIPs at one shared table holding M = 0, in one batch: the
   * datapath treats M = 0 like a missing table (no backend), and their old
   * tables are freed. The array of maps has no batch delete.
   */
  retireMaglevTables(vipIds: readonly number[]): void {
    const retired = this.createTableMap('ferry_mg_none', new Uint32Array(0));
    try {
      this.pointTables(vipIds, vipIds.map(() => retired));
    } finally {
      this.nat.closeFd(retired);
    }
  }

  /** A new inner array: slot 0 = M, then the M backend ids. The caller closes the fd. */
  private createTableMap(name: string, table: Uint32Array): number {
    const m = table.length;
    const fd = this.nat.mapCreate({
      type: BPF_MAP_TYPE_ARRAY, name: name.slice(0, 15), keySize: 4, valueSize: 4, maxEntries: m + 1, flags: BPF_F_INNER_MAP,
    });
    try {
      const keys = Buffer.alloc(4 * (m + 1));
      const values = Buffer.alloc(4 * (m + 1));
      values.writeUInt32LE(m, 0);
      for (let i = 0; i <= m; i++) keys.writeUInt32LE(i, 4 * i);
      for (let i = 0; i < m; i++) values.writeUInt32LE(table[i]!, 4 * (i + 1));
      this.nat.mapUpdateBatch(fd, keys, values, m + 1, 0);
      return fd;
    } catch (err) {
      this.nat.closeFd(fd);
      throw err;
    }
  }

  /** One batched outer-map update: vipIds[i] → inner map fds[i]. */
  private pointTables(vipIds: readonly number[], fds: readonly number[]): void {
    if (vipIds.length === 0) return;
    const keys = Buffer.alloc(4 * vipIds.length);
    const values = Buffer.alloc(4 * vipIds.length);
    vipIds.forEach((id, i) => {
      keys.writeUInt32LE(id, 4 * i);
      values.writeUInt32LE(fds[i]!, 4 * i);
    });
    this.nat.mapUpdateBatch(this.maglevFd, keys, values, vipIds.length, 0);
  }

  /** The installed table of a VIP (slots 1..M), or undefined. */
  getMaglevTable(vipId: number): Uint32Array | undefined {
    const inner = this.nat.mapLookupFd(this.maglevFd, this.vipKey(vipId));
    if (inner === null) return undefined;
    try {
      const { keys, values } = this.nat.mapDump(inner);
      const m = values.length > 0 ? this.slotOf(keys, values, 0) : 0;
      const out = new Uint32Array(m).fill(FERRY_BACKEND_NONE);
      keys.forEach((k, i) => {
        const slot = k.readUInt32LE(0);
        if (slot >= 1 && slot <= m) out[slot - 1] = values[i]!.readUInt32LE(0);
      });
      return out;
    } finally {
      this.nat.closeFd(inner);
    }
  }

  /** Removes a VIP's table: its packets then drop as no_backend. */
  deleteMaglevTable(vipId: number): boolean {
    return this.nat.mapDelete(this.maglevFd, this.vipKey(vipId));
  }

  dropCounts(): Record<DropReason, CounterV> {
    return Object.fromEntries(DROP_REASONS.map((r, i) => [r, this.drops.sum(i)])) as Record<DropReason, CounterV>;
  }

  counterValues(): Record<CounterName, CounterV> {
    return Object.fromEntries(COUNTERS.map((c, i) => [c, this.counters.sum(i)])) as Record<CounterName, CounterV>;
  }

  private linkPath(ifname: string): string {
    return join(this.pinRoot, 'links', `xdp_${ifname}`);
  }

  /**
   * Attaches xdp_lb to an interface through a pinned bpf link, or swaps the
   * program of the existing link in place (no moment without a program).
   */
  attachXdp(ifname: string, mode: XdpMode): void {
    const path = this.linkPath(ifname);
    if (existsSync(path)) {
      const link = this.nat.objGet(path);
      try {
        this.nat.linkUpdate(link, this.progFd);
      } finally {
        this.nat.closeFd(link);
      }
      return;
    }
    const ifindex = this.nat.ifNameToIndex(ifname);
    const link = this.nat.xdpAttach(this.progFd, ifindex, mode);
    try {
      mkdirSync(join(this.pinRoot, 'links'), { recursive: true });
      this.nat.objPin(link, path);
    } catch (err) {
      this.nat.linkDetach(link);
      throw err;
    } finally {
      this.nat.closeFd(link);
    }
  }

  /** Detaches xdp_lb from an interface and removes the pinned link. */
  detachXdp(ifname: string): boolean {
    return detachPinnedLink(this.nat, this.linkPath(ifname));
  }

  /** Closes this process's handles; pinned maps and links stay. */
  close(): void {
    this.obj.close();
  }

  private vipKey(vipId: number): Buffer {
    this.key4.writeUInt32LE(vipId, 0);
    return this.key4;
  }

  private slotOf(keys: Buffer[], values: Buffer[], slot: number): number {
    const i = keys.findIndex((k) => k.readUInt32LE(0) === slot);
    return i < 0 ? 0 : values[i]!.readUInt32LE(0);
  }
}
