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
  Backend,
  BackendStats,
  COUNTERS,
  Counter,
  DEFAULT_SIZES,
  DROP_REASONS,
  EventBudget,
  FERRY_MAGLEV_BLOCK,
  LbConfig,
  PolicyKey,
  PolicyValue,
  RatelimitState,
  VipStats,
  type CounterName,
  type CounterV,
  type DropReason,
} from './abi.js';
import { ADDR_SHAPE, indexBucketCount, KeyIndex, VIP_SHAPE, type AddrIndex, type VipIndex } from './vipindex.js';
import { ArrayMap, PerCpuArray, TypedMap } from './maps.js';
import { Conntrack, ctBucketCount } from './conntrack.js';
import { loadNative, type BpfObject, type NativeAddon } from './native.js';
import { maglevBlocks, MaglevTables } from './maglevtables.js';
import { bpfObjectPath } from '../paths.js';
import { detachPinnedLink, replaceStalePins } from './pins.js';

export interface LbSizes {
  maxVips: number;
  maxVipAddrs: number;
  maxBackends: number;
  ctSize: number;
  maxPolicyRules: number;
  /** u32 slots for all Maglev tables together (a table of M takes M + 1; default 4,194,304 = 16 MiB). */
  maglevSlots: number;
  /** ferry_events ring buffer in bytes: a power of 2, at least a page (default 1 MiB). */
  eventRingBytes?: number;
  /** Connections source NAT keeps (ferry_snat_fwd and ferry_snat_rev each; default 262,144). */
  snatEntries?: number;
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
  ferry_maglev_at: 'maxVips',
  ferry_ratelimit: 'maxVips',
  ferry_vip_stats: 'maxVips',
  ferry_vip_addrs: 'maxVipAddrs',
  ferry_backends: 'maxBackends',
  ferry_backend_stats: 'maxBackends',
  ferry_policy: 'maxPolicyRules',
  ferry_events: 'eventRingBytes',
  ferry_snat_fwd: 'snatEntries',
  ferry_snat_rev: 'snatEntries',
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
 * other map (VIPs, policies, ...) still fails the load. The Maglev tables
 * (they became one flat array; their size is the config's) are rebuilt by
 * the first reconcile, before the new program is attached: the running one
 * keeps the maps it was loaded with until then.
 */
const REPLACEABLE = new Set([
  'ferry_config',
  'ferry_counters',
  'ferry_events',
  'ferry_event_budget',
  'ferry_ct',
  'ferry_maglev',
  'ferry_maglev_at',
  // Written whole from the store by the first reconcile (ids and generations are the store's, so conntrack
  // entries still match); struct backend grew for port translation and source NAT.
  'ferry_backends',
  // Source NAT's connections: like conntrack, lost on a resize (those connections are reset).
  'ferry_snat_fwd',
  'ferry_snat_rev',
]);

/**
 * Replaced together: the table and the offsets into it; conntrack and the
 * config that holds its bucket mask (the program still attached until the
 * first reconcile must not read a new mask against its old table).
 */
const REPLACED_TOGETHER = [
  ['ferry_maglev', 'ferry_maglev_at'],
  ['ferry_ct', 'ferry_config'],
] as const;

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
  /** Every VIP's Maglev table (ferry_maglev, ferry_maglev_at). */
  readonly maglev: MaglevTables;

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
    this.addrIndex = new KeyIndex(nat, fd('ferry_addr_index'), fd('ferry_vip_addrs'), indexBucketCount(sizes.maxVipAddrs), ADDR_SHAPE);
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
    this.maglev = new MaglevTables(
      nat,
      fd('ferry_maglev'),
      fd('ferry_maglev_at'),
      obj.programFd('ferry_maglev_publish'),
      maglevBlocks(sizes.maglevSlots) * FERRY_MAGLEV_BLOCK,
      sizes.maxVips,
    );
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
    maxEntries.ferry_maglev = maglevBlocks(sizes.maglevSlots);
    maxEntries.ferry_vip_index = indexBucketCount(sizes.maxVips);
    maxEntries.ferry_addr_index = indexBucketCount(sizes.maxVipAddrs);
    mkdirSync(opts.pinRoot, { recursive: true });
    const obj = nat.openObject(opts.objectPath ?? bpfObjectPath('xdp_lb'), { pinRoot: opts.pinRoot, maxEntries });
    try {
      const replaced = replaceStalePins(nat, obj, (name) => REPLACEABLE.has(name), REPLACED_TOGETHER);
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
   * Installs a VIP's Maglev table: written whole into free slots, then the
   * VIP pointed at it with one store (maglevtables.ts), so packets see the
   * old table or the new one, never a mix. Nothing waits for the kernel.
   */
  setMaglevTable(vipId: number, table: Uint32Array): void {
    this.maglev.set([vipId], [table]);
  }

  /** Installs several tables; each VIP switches to its new table whole. */
  setMaglevTables(vipIds: readonly number[], tables: readonly Uint32Array[]): void {
    this.maglev.set(vipIds, tables);
  }

  /** The installed table of a VIP (its M backend ids), or undefined. */
  getMaglevTable(vipId: number): Uint32Array | undefined {
    return this.maglev.get(vipId);
  }

  /** Removes VIPs' tables: their packets then drop as no_backend. */
  deleteMaglevTables(vipIds: readonly number[]): void {
    this.maglev.remove(vipIds);
  }

  /** Removes a VIP's table; false when it had none. */
  deleteMaglevTable(vipId: number): boolean {
    const had = this.maglev.get(vipId) !== undefined;
    this.maglev.remove([vipId]);
    return had;
  }

  dropCounts(): Record<DropReason, CounterV> {
    return Object.fromEntries(DROP_REASONS.map((r, i) => [r, this.drops.sum(i)])) as Record<DropReason, CounterV>;
  }

  counterValues(): Record<CounterName, CounterV> {
    return Object.fromEntries(COUNTERS.map((c, i) => [c, this.counters.sum(i)])) as Record<CounterName, CounterV>;
  }

  /** Where the bpf link attaching xdp_lb to `ifname` is pinned. */
  linkPath(ifname: string): string {
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
    this.maglev.close();
    this.obj.close();
  }
}
