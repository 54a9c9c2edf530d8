/**
 * The socket-level load balancer for Kubernetes ClusterIPs as the daemon
 * sees it: bpf/sock_lb.bpf.o opened with its maps pinned under a bpffs
 * directory, its programs attached to a cgroup v2 directory through pinned
 * bpf links, and `apply(all)`, which makes the map writes that
 * ./socket-lb-plan.ts plans from the whole ClusterIP list (the smallest set;
 * entries given again as the same objects are not looked at again).
 *
 * Atomicity. A service's value names its live backend buffer (gen & 1) and
 * its count. apply() fills the other buffer completely, then replaces the
 * value in one map update, so a connect uses the old set or the new one.
 * A buffer is emptied or reused only after an RCU grace period (an update
 * of ferry_sock_grace, an array of maps, returns only when every program
 * that might still read the old value has finished), so no connect can read
 * a slot that is being rewritten. That grace period is observed, not waited
 * for, as for the Maglev tables: the old buffers (and the ids of removed
 * services) are retired, an update of ferry_sock_grace runs on the thread
 * pool, and when it returns they are deleted (and the ids freed). apply()
 * waits synchronously only when it must write into a buffer still retired
 * (the same service changed again within a grace period), when retired
 * slots stand in the way of capacity, or for leftovers found at start.
 */
import { existsSync, mkdirSync, rmSync, statSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import {
  SOCK_COUNTERS,
  SOCK_SVC_F_AFFINITY,
  SOCKLB_DEFAULT_SIZES,
  SockCounter,
  SockEndpoint,
  SockMemberKey,
  SockSlotKey,
  SockSvc,
  SockSvcKey,
  type SockCounterName,
} from './socket-lb-abi.js';
import {
  checkCapacity,
  IPPROTO_TCP,
  keyString,
  ServiceIds,
  sigOf,
  type InstalledService,
  ListPlanner,
  liveCounts,
  type ListChanges,
  type LiveCounts,
  type SocketLbBackend,
  type SocketLbPlan,
  type SocketLbPlanCounts,
  type SocketLbService,
} from './socket-lb-plan.js';
import { formatAddr } from './addr.js';
import { PerCpuArray } from './maps.js';
import {
  BPF_CGROUP_INET4_CONNECT,
  BPF_CGROUP_INET4_GETPEERNAME,
  BPF_CGROUP_INET6_CONNECT,
  BPF_CGROUP_INET6_GETPEERNAME,
  BPF_CGROUP_INET_SOCK_RELEASE,
  BPF_CGROUP_UDP4_RECVMSG,
  BPF_CGROUP_UDP4_SENDMSG,
  BPF_CGROUP_UDP6_RECVMSG,
  BPF_CGROUP_UDP6_SENDMSG,
  BPF_MAP_TYPE_ARRAY,
  loadNative,
  type BpfObject,
  type NativeAddon,
} from './native.js';
import { bpfObjectPath } from '../paths.js';
import { detachPinnedLink, replaceStalePins } from './pins.js';

/** The cgroup the programs attach to unless told otherwise (cgroup v2 on this machine kind). */
export const DEFAULT_SOCKET_LB_CGROUP = '/sys/fs/cgroup/unified';

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** Whether dir is a directory of a cgroup v2 hierarchy (what the programs can attach to). */
export function isCgroup2(dir: string): boolean {
  try {
    return existsSync(dir) && statfsSync(dir).type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}

/** The programs of sock_lb.bpf.o and the socket hook each one serves. */
export const SOCKET_LB_HOOKS = [
  { hook: 'connect4', program: 'socklb_conn4', attachType: BPF_CGROUP_INET4_CONNECT },
  { hook: 'connect6', program: 'socklb_conn6', attachType: BPF_CGROUP_INET6_CONNECT },
  { hook: 'sendmsg4', program: 'socklb_send4', attachType: BPF_CGROUP_UDP4_SENDMSG },
  { hook: 'sendmsg6', program: 'socklb_send6', attachType: BPF_CGROUP_UDP6_SENDMSG },
  { hook: 'recvmsg4', program: 'socklb_recv4', attachType: BPF_CGROUP_UDP4_RECVMSG },
  { hook: 'recvmsg6', program: 'socklb_recv6', attachType: BPF_CGROUP_UDP6_RECVMSG },
  { hook: 'getpeername4', program: 'socklb_peer4', attachType: BPF_CGROUP_INET4_GETPEERNAME },
  { hook: 'getpeername6', program: 'socklb_peer6', attachType: BPF_CGROUP_INET6_GETPEERNAME },
  { hook: 'sock_release', program: 'socklb_release', attachType: BPF_CGROUP_INET_SOCK_RELEASE },
] as const;
export type SocketLbHook = (typeof SOCKET_LB_HOOKS)[number]['hook'];

export interface SocketLbSizes {
  maxServices: number;
  maxSlots: number;
  revnatSize: number;
  affinitySize: number;
}

/** Map name → the sizes field that sets its capacity. */
const SIZED_MAPS: Record<string, keyof SocketLbSizes> = {
  ferry_sock_svcs: 'maxServices',
  ferry_sock_slots: 'maxSlots',
  ferry_sock_members: 'maxSlots',
  ferry_sock_revnat: 'revnatSize',
  ferry_sock_affinity: 'affinitySize',
};

export interface SocketLbOpenOptions {
  /** bpffs directory for maps and links, e.g. the daemon's /sys/fs/bpf/ferry. */
  pinRoot: string;
  sizes?: Partial<SocketLbSizes>;
  /** The cgroup v2 directory attach() uses by default (DEFAULT_SOCKET_LB_CGROUP). */
  cgroupPath?: string;
  /** Defaults to build/bpf/sock_lb.bpf.o of this package. */
  objectPath?: string;
}

export interface SocketLbApplyResult extends SocketLbPlanCounts {
  /** Services in the maps afterwards. */
  services: number;
  slotsWritten: number;
  slotsDeleted: number;
  /** RCU grace periods this apply() waited for synchronously (0 unless a retired buffer had to be reused, or leftovers). */
  graceWaits: number;
  ms: number;
}

export interface SocketLbStats {
  services: number;
  /** Backends over all services (live slots). */
  backends: number;
  affinityServices: number;
  /** ferry_sock_counters summed over CPUs. */
  counters: Record<SockCounterName, number>;
  applies: number;
  lastApply: SocketLbApplyResult | null;
  /** The cgroup attach() attached to in this process, or null. */
  cgroupPath: string | null;
}

/** What the maps hold for one service (entries()). */
export interface SocketLbEntry {
  ip: string;
  port: number;
  protocol: 'tcp' | 'udp';
  backends: SocketLbBackend[];
  affinityTimeoutSeconds?: number;
  id: number;
  gen: number;
}

export class SocketLb {
  readonly sizes: Required<SocketLbSizes>;
  /**
   * Pinned maps open() replaced because their definition changed (sizes in
   * the config, or an upgrade). Every socket-LB map may be replaced: the
   * services come back with the next apply(); reverse and affinity entries of
   * the old maps are lost (getpeername of an older connection then shows the
   * backend, and affinities start anew).
   */
  replacedPins: string[] = [];
  readonly counters: PerCpuArray<typeof SockCounter>;
  private readonly svcsFd: number;
  private readonly slotsFd: number;
  private readonly membersFd: number;
  private readonly graceFd: number;
  private readonly graceInnerFd: number;
  private installed = new Map<string, InstalledService>();
  /** What the installed services hold, kept with them (the capacity check needs it on every apply). */
  private live: LiveCounts = { slots: 0, members: 0 };
  private ids = new ServiceIds();
  /** Leftovers found in the maps (a crash mid-apply): removed by the next apply(). */
  private staleSlots: Buffer[] = [];
  private staleMembers: Buffer[] = [];
  /** Retired since the grace period in flight began, and retired before it (deleted when it ends). */
  private retired: Retired = emptyRetired();
  private fencing: Retired = emptyRetired();
  private fenceInFlight: Promise<void> | undefined;
  private closing = false;
  /** Grace periods observed off the event loop, and the slots they let go (tests, status). */
  readonly fenceStats = { fences: 0, slotsDeleted: 0 };
  /** Plans each apply() from what changed since the last one written. */
  private readonly planner = new ListPlanner();
  private applies = 0;
  private lastApply: SocketLbApplyResult | null = null;
  private attachedPath: string | null = null;

  private constructor(
    readonly nat: NativeAddon,
    private readonly obj: BpfObject,
    readonly pinRoot: string,
    private readonly defaultCgroup: string,
    sizes: Required<SocketLbSizes>,
  ) {
    this.sizes = sizes;
    this.svcsFd = obj.mapFd('ferry_sock_svcs');
    this.slotsFd = obj.mapFd('ferry_sock_slots');
    this.membersFd = obj.mapFd('ferry_sock_members');
    this.graceFd = obj.mapFd('ferry_sock_grace');
    this.counters = new PerCpuArray(nat, obj.mapFd('ferry_sock_counters'), 'ferry_sock_counters', SockCounter, nat.numPossibleCpus());
    this.graceInnerFd = nat.mapCreate({ type: BPF_MAP_TYPE_ARRAY, name: 'ferry_sock_gi', keySize: 4, valueSize: 4, maxEntries: 1 });
  }

  /**
   * Opens and loads sock_lb. Maps already pinned under pinRoot are adopted
   * with their contents (a restarted daemon keeps every service, reverse
   * entry and affinity), and the next apply() writes only the difference.
   * Attaching is separate: attach().
   */
  static open(opts: SocketLbOpenOptions): SocketLb {
    const nat = loadNative();
    const sizes: Required<SocketLbSizes> = { ...SOCKLB_DEFAULT_SIZES };
    for (const [k, v] of Object.entries(opts.sizes ?? {})) {
      if (v === undefined) continue;
      if (!Number.isInteger(v) || v < 1 || v > 2 ** 31)
        throw new RangeError(`socket-LB size ${k} must be an integer from 1 to 2^31, got ${v}`);
      sizes[k as keyof SocketLbSizes] = v;
    }
    const maxEntries: Record<string, number> = {};
    for (const [map, field] of Object.entries(SIZED_MAPS)) maxEntries[map] = sizes[field];
    mkdirSync(opts.pinRoot, { recursive: true });
    const obj = nat.openObject(opts.objectPath ?? bpfObjectPath('sock_lb'), { pinRoot: opts.pinRoot, maxEntries });
    let lb: SocketLb | undefined;
    try {
      const replaced = replaceStalePins(nat, obj, () => true);
      obj.load();
      lb = new SocketLb(nat, obj, opts.pinRoot, opts.cgroupPath ?? DEFAULT_SOCKET_LB_CGROUP, sizes);
      lb.replacedPins = replaced;
      lb.resync();
      return lb;
    } catch (err) {
      if (lb) lb.close();
      else obj.close();
      throw err;
    }
  }

  // ---- attachment ---------------------------------------------------------------

  private linkPath(hook: SocketLbHook): string {
    return join(this.pinRoot, 'links', `socklb_${hook}`);
  }

  /**
   * Attaches the nine programs to a cgroup v2 directory through links pinned
   * under pinRoot/links/socklb_<hook>, so they stay attached when the daemon
   * exits. A link already pinned for the same cgroup gets this object's
   * program in place (no moment without translation); one pinned for another
   * cgroup is detached first (moving to another cgroup is not atomic: its
   * hooks are without programs for a moment). If an attach fails, the links
   * this call created are detached again and the error is thrown.
   */
  attach(cgroupPath: string = this.defaultCgroup): void {
    const cgroupId = statSync(cgroupPath).ino;
    const created: string[] = [];
    mkdirSync(join(this.pinRoot, 'links'), { recursive: true });
    try {
      for (const h of SOCKET_LB_HOOKS) {
        const path = this.linkPath(h.hook);
        const progFd = this.obj.programFd(h.program);
        if (existsSync(path)) {
          const link = this.nat.objGet(path);
          try {
            const info = this.nat.linkInfo(link);
            if (info.cgroupId === cgroupId && info.attachType === h.attachType) {
              if (info.progId !== this.nat.progInfo(progFd).id) this.nat.linkUpdate(link, progFd);
              continue;
            }
            this.nat.linkDetach(link);
          } finally {
            this.nat.closeFd(link);
          }
          rmSync(path, { force: true });
        }
        const link = this.obj.attachCgroup(h.program, cgroupPath);
        try {
          this.nat.objPin(link, path);
          created.push(path);
        } catch (err) {
          this.nat.linkDetach(link);
          throw err;
        } finally {
          this.nat.closeFd(link);
        }
      }
    } catch (err) {
      for (const path of created) detachPinnedLink(this.nat, path);
      throw err;
    }
    this.attachedPath = cgroupPath;
  }

  /** Detaches every pinned link of the socket-LB and removes the pins; returns how many there were. */
  detach(): number {
    let n = 0;
    for (const h of SOCKET_LB_HOOKS) if (detachPinnedLink(this.nat, this.linkPath(h.hook))) n++;
    this.attachedPath = null;
    return n;
  }

  /** The cgroup id (inode) the pinned links are attached to, per hook; absent hooks are missing. */
  attachedHooks(): Partial<Record<SocketLbHook, { cgroupId: number; progId: number }>> {
    const out: Partial<Record<SocketLbHook, { cgroupId: number; progId: number }>> = {};
    for (const h of SOCKET_LB_HOOKS) {
      const path = this.linkPath(h.hook);
      if (!existsSync(path)) continue;
      const link = this.nat.objGet(path);
      try {
        const info = this.nat.linkInfo(link);
        out[h.hook] = { cgroupId: info.cgroupId, progId: info.progId };
      } finally {
        this.nat.closeFd(link);
      }
    }
    return out;
  }

  // ---- services ------------------------------------------------------------------

  /**
   * Makes the maps hold exactly `all`. Validation and capacity are checked
   * first: a bad entry throws a TypeError/RangeError naming it and changes
   * nothing. Unchanged services cost nothing; a changed backend set is one
   * buffer flip; writes are batched. If the kernel refuses a write midway,
   * every service is still either as before or as wanted (never a mix), the
   * in-memory view is re-read from the maps, and the error is thrown: the
   * next apply() converges. `changes`, when the caller knows them, says how
   * `all` differs from the list of the last apply() that returned (see
   * ListPlanner.plan).
   */
  apply(all: readonly SocketLbService[], changes?: ListChanges): SocketLbApplyResult {
    const started = performance.now();
    const listed = this.planner.plan(all, this.installed, this.ids, changes);
    const { plan } = listed;
    const { problem, mustWait } = checkCapacity(this.sizes, listed.services, this.live, plan, {
      staleSlots: this.staleSlots.length,
      staleMembers: this.staleMembers.length,
      retiredSlots: this.retiredSlots(),
      reusesRetired: plan.flipped.some((id) => this.isRetired(id)),
    });
    if (problem !== null) {
      for (const id of plan.allocated) this.ids.release(id);
      throw new RangeError(`socket-LB apply: ${problem}; nothing was changed`);
    }
    const res: SocketLbApplyResult = {
      services: listed.services,
      ...plan.counts,
      slotsWritten: 0,
      slotsDeleted: 0,
      graceWaits: 0,
      ms: 0,
    };
    try {
      this.write(plan, mustWait, res);
    } catch (err) {
      this.resync();
      throw err;
    }
    // Old buffers go, and removed services' ids are reused, only when no connect can still be reading them.
    this.retire(plan.oldSlots, plan.flipped, plan.freed);
    this.installed = listed.commit(this.installed);
    this.live = listed.liveAfter(this.live);
    this.applies++;
    res.ms = performance.now() - started;
    this.lastApply = res;
    return res;
  }

  /** Writes a plan that fits, in the order that keeps every service whole; throws as the kernel refuses. */
  private write(plan: SocketLbPlan, mustWait: boolean, res: SocketLbApplyResult): void {
    if (mustWait || this.staleSlots.length > 0) this.fenceNow(res);
    if (this.staleMembers.length > 0) {
      this.deleteBatch(this.membersFd, this.staleMembers);
      this.staleMembers = [];
    }
    // New buffers and members first, then the values that name them.
    this.updateBatch(this.slotsFd, plan.slots.keys, plan.slots.values, plan.slots.count);
    res.slotsWritten = plan.slots.count;
    this.updateBatch(
      this.membersFd,
      plan.memberAdds,
      plan.memberAdds.map(() => Buffer.alloc(1, 1)),
    );
    // A member that leaves goes before the values flip: from then on an affinity entry naming it
    // re-picks (from the old buffer until the flip, which still holds it: harmless), and no connect
    // that reads the new value can follow affinity to it.
    this.deleteBatch(this.membersFd, plan.memberDels);
    this.updateBatch(this.svcsFd, plan.svcKeys, plan.svcValues);
    this.deleteBatch(this.svcsFd, plan.svcDels);
  }

  /** What the maps hold, read back from them (sorted by protocol, address, port). */
  entries(): SocketLbEntry[] {
    const slots = this.dumpSlots().byId;
    const out: SocketLbEntry[] = [];
    const { keys, values } = this.nat.mapDump(this.svcsFd);
    keys.forEach((k, i) => {
      const key = SockSvcKey.decode(k);
      const v = SockSvc.decode(values[i]!);
      const buf = slots.get(v.id)?.[v.gen & 1];
      const backends: SocketLbBackend[] = [];
      for (let j = 0; j < v.count; j++) {
        const raw = buf?.get(j);
        if (raw === undefined) continue;
        const e = SockEndpoint.decode(raw);
        backends.push({ address: formatAddr(e.family, e.addr), port: e.port });
      }
      const entry: SocketLbEntry = {
        ip: formatAddr(key.family, key.addr),
        port: key.port,
        protocol: key.proto === IPPROTO_TCP ? 'tcp' : 'udp',
        backends,
        id: v.id,
        gen: v.gen,
      };
      if (v.flags & SOCK_SVC_F_AFFINITY) entry.affinityTimeoutSeconds = v.affinity_timeout_s;
      out.push(entry);
    });
    return out.sort((a, b) => a.protocol.localeCompare(b.protocol) || a.ip.localeCompare(b.ip) || a.port - b.port);
  }

  counterValues(): Record<SockCounterName, number> {
    return Object.fromEntries(SOCK_COUNTERS.map((c, i) => [c, Number(this.counters.sum(i).count)])) as Record<SockCounterName, number>;
  }

  stats(): SocketLbStats {
    let backends = 0;
    let affinityServices = 0;
    for (const s of this.installed.values()) {
      backends += s.backends.length;
      if (s.timeout > 0) affinityServices++;
    }
    return {
      services: this.installed.size,
      backends,
      affinityServices,
      counters: this.counterValues(),
      applies: this.applies,
      lastApply: this.lastApply,
      cgroupPath: this.attachedPath,
    };
  }

  /**
   * Closes this process's handles; pinned maps and links stay (programs keep
   * translating). Buffers still retired stay in the maps: the next open
   * finds them as leftovers and its first apply() removes them.
   */
  close(): void {
    if (this.obj.closed || this.closing) return;
    this.closing = true;
    const closeAll = (): void => {
      this.nat.closeFd(this.graceInnerFd);
      this.obj.close();
    };
    // The thread pool uses ferry_sock_grace's fd until the grace period in flight ends.
    if (this.fenceInFlight) void this.fenceInFlight.finally(closeAll);
    else closeAll();
  }

  /** Resolves once every retired buffer is deleted (tests; a clean stop need not wait). */
  async settled(): Promise<void> {
    while (this.fenceInFlight) await this.fenceInFlight;
  }

  /** Detaches, closes, and removes every pin of the socket-LB (maps and links) under pinRoot. */
  destroy(): void {
    this.detach();
    const maps = this.obj.closed ? [] : this.obj.maps();
    this.close();
    for (const m of maps) if (m.pinPath !== null) rmSync(m.pinPath, { force: true });
  }

  // ---- internals -----------------------------------------------------------------

  /** svc id → [buffer 0, buffer 1] → index → encoded endpoint; keys naming no buffer 0/1 apart. */
  private dumpSlots(): { byId: Map<number, [Map<number, Buffer>, Map<number, Buffer>]>; invalid: Buffer[] } {
    const byId = new Map<number, [Map<number, Buffer>, Map<number, Buffer>]>();
    const invalid: Buffer[] = [];
    const { keys, values } = this.nat.mapDump(this.slotsFd);
    keys.forEach((k, i) => {
      const sk = SockSlotKey.decode(k);
      if (sk.buf > 1) {
        invalid.push(Buffer.from(k));
        return;
      }
      let bufs = byId.get(sk.svc_id);
      if (!bufs) byId.set(sk.svc_id, (bufs = [new Map(), new Map()]));
      bufs[sk.buf]!.set(sk.index, Buffer.from(values[i]!));
    });
    return { byId, invalid };
  }

  /**
   * Rebuilds the in-memory view from the maps: the services with their live
   * buffers and members, the id allocator, and the leftovers (slots of the
   * other buffer or of unknown ids, members of unknown ids) that the next
   * apply() removes.
   */
  private resync(): void {
    const installed = new Map<string, InstalledService>();
    const usedIds = new Set<number>();
    this.staleSlots = [];
    this.staleMembers = [];
    // What the maps hold is the truth: retired buffers come back below as leftovers, retired ids as free.
    this.retired = emptyRetired();
    this.fencing = emptyRetired();
    const members = new Map<number, Map<string, Buffer>>();
    {
      const { keys } = this.nat.mapDump(this.membersFd);
      for (const k of keys) {
        const mk = SockMemberKey.decode(k);
        let m = members.get(mk.svc_id);
        if (!m) members.set(mk.svc_id, (m = new Map()));
        m.set(mk.backend.toString('hex'), Buffer.from(mk.backend));
      }
    }
    const liveSlot = new Set<string>();
    const { keys, values } = this.nat.mapDump(this.svcsFd);
    const { byId: slots, invalid } = this.dumpSlots();
    this.staleSlots.push(...invalid);
    keys.forEach((k, i) => {
      const key = SockSvcKey.decode(k);
      const v = SockSvc.decode(values[i]!);
      // Two services naming one id (never written so, but repaired if found):
      // the second gets a new id and fresh buffers at the next apply.
      const reid = usedIds.has(v.id);
      const buf = slots.get(v.id)?.[v.gen & 1];
      const backends: Buffer[] = [];
      let broken = reid;
      for (let j = 0; j < v.count; j++) {
        const raw = buf?.get(j);
        if (raw === undefined) broken = true;
        else backends.push(raw);
        liveSlot.add(`${v.id}/${v.gen & 1}/${j}`);
      }
      const keyStr = keyString(key.proto, key.family, key.addr, key.port);
      installed.set(keyStr, {
        keyStr,
        key: Buffer.from(k),
        id: v.id,
        gen: v.gen,
        timeout: v.flags & SOCK_SVC_F_AFFINITY ? v.affinity_timeout_s : 0,
        count: reid ? 0 : v.count,
        backends: reid ? [] : backends,
        sig: sigOf(backends),
        broken,
        reid,
        members: reid ? new Map() : (members.get(v.id) ?? new Map()),
      });
      usedIds.add(v.id);
    });
    for (const [id, bufs] of slots) {
      bufs.forEach((buf, b) => {
        for (const index of buf.keys()) {
          if (!liveSlot.has(`${id}/${b}/${index}`)) this.staleSlots.push(SockSlotKey.encode({ svc_id: id, buf: b, index }));
        }
      });
    }
    for (const [id, m] of members) {
      if (usedIds.has(id)) continue;
      for (const b of m.values()) this.staleMembers.push(SockMemberKey.encode({ svc_id: id, backend: b }));
    }
    this.installed = installed;
    this.live = liveCounts(installed.values());
    this.ids = ServiceIds.of(usedIds);
    this.planner.reset();
  }

  private isRetired(id: number): boolean {
    return this.retired.svcIds.has(id) || this.fencing.svcIds.has(id);
  }

  private retiredSlots(): number {
    return this.retired.slots.length + this.fencing.slots.length;
  }

  /** Hands old buffers and freed ids to the next grace period; starts observing one if none is in flight. */
  private retire(slots: readonly Buffer[], svcIds: readonly number[], ids: readonly number[]): void {
    if (slots.length === 0 && ids.length === 0) return;
    this.retired.slots.push(...slots);
    for (const id of svcIds) this.retired.svcIds.add(id);
    this.retired.ids.push(...ids);
    if (!this.fenceInFlight) this.startFence();
  }

  /** Observes a grace period on the thread pool; what was retired before it began is then deleted. */
  private startFence(): void {
    this.fencing = mergeRetired(this.fencing, this.retired);
    this.retired = emptyRetired();
    const fd = Buffer.alloc(4);
    fd.writeUInt32LE(this.graceInnerFd, 0);
    const done = (): void => {
      this.fenceInFlight = undefined;
      if (this.closing) return; // another process may own the maps now: its open() repairs leftovers
      this.fenceStats.fences++;
      this.release(this.fencing);
      this.fencing = emptyRetired();
      if (this.retired.slots.length > 0 || this.retired.ids.length > 0) this.startFence();
    };
    this.fenceInFlight = this.nat.mapUpdateAsync(this.graceFd, Buffer.alloc(4), fd, 0).then(done, () => {
      // Still fencing: the next apply() that needs these buffers waits synchronously.
      this.fenceInFlight = undefined;
    });
  }

  /** Waits for a grace period now: everything retired so far and the leftovers are deleted (throws as apply() does). */
  private fenceNow(res: SocketLbApplyResult): void {
    this.grace(res);
    const all = mergeRetired(this.fencing, this.retired);
    this.fencing = emptyRetired();
    this.retired = emptyRetired();
    res.slotsDeleted += this.deleteBatch(this.slotsFd, [...all.slots, ...this.staleSlots]);
    this.staleSlots = [];
    for (const id of all.ids) this.ids.release(id);
  }

  /**
   * After an observed grace period: deletes retired slots and frees retired
   * ids. Never throws (it runs outside any apply()): if the kernel refuses,
   * the view is re-read from the maps, which lists the slots as leftovers.
   */
  private release(r: Retired): void {
    try {
      this.fenceStats.slotsDeleted += this.deleteBatch(this.slotsFd, r.slots);
      for (const id of r.ids) this.ids.release(id);
    } catch {
      try {
        this.resync();
      } catch {
        // The maps cannot be read either: the next apply() fails and resyncs.
      }
    }
  }

  /** Waits for an RCU grace period: no program still runs with a value read before this call. */
  private grace(res: SocketLbApplyResult): void {
    const fd = Buffer.alloc(4);
    fd.writeUInt32LE(this.graceInnerFd, 0);
    this.nat.mapUpdate(this.graceFd, Buffer.alloc(4), fd, 0);
    res.graceWaits++;
  }

  /** `count` entries, in `keys` and `values` buffers of one entry each unless said (runs of several). */
  private updateBatch(fd: number, keys: readonly Buffer[], values: readonly Buffer[], count = keys.length): void {
    if (count === 0) return;
    this.nat.mapUpdateBatch(fd, Buffer.concat(keys), Buffer.concat(values), count, 0);
  }

  private deleteBatch(fd: number, keys: readonly Buffer[]): number {
    if (keys.length === 0) return 0;
    return this.nat.mapDeleteBatch(fd, Buffer.concat(keys), keys.length);
  }
}

/** Old buffers' slots, the services they belonged to, and the ids of removed services. */
interface Retired {
  slots: Buffer[];
  svcIds: Set<number>;
  ids: number[];
}

function emptyRetired(): Retired {
  return { slots: [], svcIds: new Set(), ids: [] };
}

function mergeRetired(a: Retired, b: Retired): Retired {
  return { slots: [...a.slots, ...b.slots], svcIds: new Set([...a.svcIds, ...b.svcIds]), ids: [...a.ids, ...b.ids] };
}
