/**
 * Maglev tables in the datapath (bpf/lib/maglev.h): one flat, mmapable
 * array of u32 slots holding every VIP's table as M+1 consecutive slots,
 * and ferry_maglev_at[vip id], the slot where the VIP's table starts.
 *
 * Replacing a table never waits for the kernel. A new table is written into
 * free slots (plain memory writes through the mapping), then the VIP is
 * pointed at it by ferry_maglev_publish (one 4-byte store each, in the
 * kernel); a packet sees the old table or the new one, never a mix. The
 * old slots are reused only after an RCU grace period, when no program can
 * still be reading them. That grace period is observed, not waited for: an
 * update of a private map-in-map, which the kernel returns from only after
 * a grace period, runs on the thread pool (mapUpdateAsync) while writes go
 * on, and frees what was retired before it began. Only when the slots run
 * out does a write wait for one synchronously.
 */
import { FERRY_MAGLEV_BLOCK, FERRY_MAGLEV_PUBLISH_MAX } from './abi.js';
import { u32 } from './maps.js';
import { BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY_OF_MAPS, type NativeAddon } from './native.js';

/** Elements of ferry_maglev for at least `slots` slots. */
export function maglevBlocks(slots: number): number {
  return Math.ceil(slots / FERRY_MAGLEV_BLOCK);
}

/** A run of slots: [start, start + length). */
interface Run {
  start: number;
  length: number;
}

/** Thrown when the tables do not fit in the slots even after a grace period. */
export class MaglevSlotsFull extends Error {
  override readonly name = 'MaglevSlotsFull';
}

const PUBLISH_ITEM = 8;
const PUBLISH_HEADER = 8;

export class MaglevTables {
  private readonly slab: Uint32Array;
  private readonly at: Uint32Array;
  /** Free runs, sorted by start, never adjacent. */
  private free: Run[] = [];
  /** Runs retired before the grace period in flight began (freed when it ends). */
  private fencing: Run[] = [];
  /** Runs retired since (they wait for the next grace period). */
  private retired: Run[] = [];
  private fenceInFlight: Promise<void> | undefined;
  private readonly fenceOuter: number;
  private readonly fenceInner: number;
  private readonly publishArgs = Buffer.alloc(PUBLISH_HEADER + PUBLISH_ITEM * FERRY_MAGLEV_PUBLISH_MAX);
  private closed = false;
  /** Grace periods observed, and how many writes had to wait for one (tests, metrics). */
  readonly stats = { fences: 0, syncFences: 0 };

  /**
   * @param slabFd ferry_maglev (slots), @param atFd ferry_maglev_at (one per VIP id),
   * @param publishFd the ferry_maglev_publish program
   */
  constructor(
    private readonly nat: NativeAddon,
    slabFd: number,
    atFd: number,
    private readonly publishFd: number,
    readonly slots: number,
    readonly maxVips: number,
  ) {
    // Slots come in blocks of FERRY_MAGLEV_BLOCK (one element each): the mapping is a plain u32 array.
    this.slab = new Uint32Array(nat.mapMmap(slabFd), 0, slots);
    // The kernel spaces u32 array elements 8 bytes apart: pointer i is u32 2i.
    this.at = new Uint32Array(nat.mapMmap(atFd), 0, 2 * maxVips);
    this.fenceInner = nat.mapCreate({ type: BPF_MAP_TYPE_ARRAY, name: 'ferry_fence_in', keySize: 4, valueSize: 4, maxEntries: 1 });
    this.fenceOuter = nat.mapCreate({
      type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
      name: 'ferry_fence',
      keySize: 4,
      valueSize: 4,
      maxEntries: 1,
      innerMapFd: this.fenceInner,
    });
    this.load();
  }

  /**
   * Rebuilds the free runs from the tables the VIPs point at now (at
   * start-up the maps may hold anything). Slot 0 (the empty table) and
   * every run a VIP points at are in use, valid or not: a program may be
   * reading them.
   */
  load(): void {
    const used: Run[] = [{ start: 0, length: 1 }];
    for (let id = 0; id < this.maxVips; id++) {
      const run = this.runAt(id);
      if (run) used.push(run);
    }
    used.sort((a, b) => a.start - b.start);
    this.free = [];
    let next = 0;
    for (const u of used) {
      if (u.start > next) this.free.push({ start: next, length: u.start - next });
      next = Math.max(next, u.start + u.length);
    }
    if (next < this.slots) this.free.push({ start: next, length: this.slots - next });
    this.fencing = [];
    this.retired = [];
  }

  /** Slots a table of M entries takes. */
  static size(m: number): number {
    return m + 1;
  }

  /** The table a VIP points at (its M slots), or undefined for none (or an implausible pointer). */
  get(vipId: number): Uint32Array | undefined {
    const run = this.runAt(vipId);
    if (!run || run.length === 1) return undefined;
    return this.slab.slice(run.start + 1, run.start + run.length);
  }

  /** The slot where a VIP's table starts (0: none). */
  startOf(vipId: number): number {
    return this.runAt(vipId)?.start ?? 0;
  }

  /** Where a VIP's table starts, if the pointer and M are plausible. */
  private runAt(vipId: number): Run | undefined {
    if (vipId < 0 || vipId >= this.maxVips) return undefined;
    const start = this.at[2 * vipId]!;
    if (start === 0 || start >= this.slots) return undefined;
    const m = this.slab[start]!;
    if (start + 1 + m > this.slots) return undefined;
    return { start, length: m + 1 };
  }

  /**
   * Installs tables: each written whole into free slots, then its VIP
   * pointed at it (in batches), then the old table retired. When the slots
   * run out midway, the tables written so far are switched to first, so
   * that what they replace can be freed by the grace period allocate()
   * then waits for.
   */
  set(vipIds: readonly number[], tables: readonly Uint32Array[]): void {
    for (const id of vipIds) {
      if (!Number.isInteger(id) || id < 0 || id >= this.maxVips) throw new RangeError(`VIP id ${id} out of range 0..${this.maxVips - 1}`);
    }
    let ids: number[] = [];
    let starts: number[] = [];
    const flush = () => {
      this.point(ids, starts);
      ids = [];
      starts = [];
    };
    vipIds.forEach((id, i) => {
      const table = tables[i]!;
      const size = MaglevTables.size(table.length);
      let run = this.take(size);
      if (!run) {
        flush();
        run = this.allocate(size);
      }
      this.slab[run.start] = table.length;
      this.slab.set(table, run.start + 1);
      ids.push(id);
      starts.push(run.start);
    });
    flush();
  }

  /** Points VIPs at no table (their packets then drop as no_backend); retires their tables. */
  remove(vipIds: readonly number[]): void {
    this.point(
      vipIds,
      vipIds.map(() => 0),
    );
  }

  /** Free slots now (not counting retired tables still waiting for a grace period). */
  get freeSlots(): number {
    return this.free.reduce((n, r) => n + r.length, 0);
  }

  /** Resolves once every table retired so far may be reused. */
  async settle(): Promise<void> {
    while (this.fenceInFlight || this.retired.length > 0) {
      if (!this.fenceInFlight) this.startFence();
      await this.fenceInFlight;
    }
  }

  /** Closes the fence maps, once no grace period is being observed through them (the worker uses their fds). */
  close(): void {
    this.closed = true;
    const closeFds = (): void => {
      this.nat.closeFd(this.fenceOuter);
      this.nat.closeFd(this.fenceInner);
    };
    if (this.fenceInFlight) void this.fenceInFlight.finally(closeFds);
    else closeFds();
  }

  /** Publishes pointers in batches, then retires what they replaced. */
  private point(vipIds: readonly number[], starts: readonly number[]): void {
    const old = vipIds.map((id) => this.runAt(id));
    for (let at = 0; at < vipIds.length; at += FERRY_MAGLEV_PUBLISH_MAX) {
      const n = Math.min(FERRY_MAGLEV_PUBLISH_MAX, vipIds.length - at);
      const args = this.publishArgs.fill(0);
      args.writeUInt32LE(n, 0);
      for (let i = 0; i < n; i++) {
        args.writeUInt32LE(vipIds[at + i]!, PUBLISH_HEADER + PUBLISH_ITEM * i);
        args.writeUInt32LE(starts[at + i]!, PUBLISH_HEADER + PUBLISH_ITEM * i + 4);
      }
      const r = this.nat.progRunSyscall(this.publishFd, args);
      if (r !== 0) throw new RangeError(`ferry_maglev_publish refused VIP id ${vipIds[at + (-1 - r)]}`);
    }
    for (const run of old) if (run) this.retired.push(run);
    if (this.retired.length > 0 && !this.fenceInFlight) this.startFence();
  }

  /** First fit; when nothing fits, waits for a grace period once and tries again. */
  private allocate(length: number): Run {
    let run = this.take(length);
    if (!run && (this.retired.length > 0 || this.fencing.length > 0)) {
      // A map-in-map update returns after a grace period: everything retired so far is free.
      this.nat.mapUpdate(this.fenceOuter, u32(0), u32(this.fenceInner), 0);
      this.stats.syncFences++;
      for (const r of [...this.fencing, ...this.retired]) this.release(r);
      this.fencing = [];
      this.retired = [];
      run = this.take(length);
    }
    if (!run) {
      throw new MaglevSlotsFull(
        `a Maglev table of ${length - 1} entries does not fit: ${this.freeSlots} of ${this.slots} slots free (bpf.maglev_slots)`,
      );
    }
    return run;
  }

  private take(length: number): Run | undefined {
    const i = this.free.findIndex((r) => r.length >= length);
    if (i < 0) return undefined;
    const r = this.free[i]!;
    const run = { start: r.start, length };
    if (r.length === length) this.free.splice(i, 1);
    else this.free[i] = { start: r.start + length, length: r.length - length };
    return run;
  }

  /** Returns a run to the free list, merging it with its neighbours. */
  private release(run: Run): void {
    let i = 0;
    while (i < this.free.length && this.free[i]!.start < run.start) i++;
    this.free.splice(i, 0, { ...run });
    const merged: Run[] = [];
    for (const r of this.free) {
      const last = merged[merged.length - 1];
      if (last && last.start + last.length >= r.start) {
        last.length = Math.max(last.length, r.start + r.length - last.start);
      } else {
        merged.push({ ...r });
      }
    }
    this.free = merged;
  }

  /** Observes a grace period on the thread pool; what was retired before it is then free. */
  private startFence(): void {
    // Runs of a fence that failed are still here: they wait for this one.
    this.fencing = [...this.fencing, ...this.retired];
    this.retired = [];
    const done = (): void => {
      this.fenceInFlight = undefined;
      if (this.closed) return;
      this.stats.fences++;
      for (const r of this.fencing) this.release(r);
      this.fencing = [];
      if (this.retired.length > 0) this.startFence();
    };
    this.fenceInFlight = this.nat.mapUpdateAsync(this.fenceOuter, u32(0), u32(this.fenceInner), 0).then(done, () => {
      // The retired runs stay fencing; the next write that runs out of slots waits synchronously.
      this.fenceInFlight = undefined;
    });
  }
}
