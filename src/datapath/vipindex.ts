/**
 * The VIP index (bpf/lib/index.h) as the daemon writes it: buckets of
 * FERRY_INDEX_WAYS slots in an array map, which xdp_lb probes inline, and a
 * kernel hash map for the keys neither of whose two buckets had room.
 *
 * This side places keys. It mirrors index_hash bit for bit, keeps a copy of
 * every bucket, and writes each changed bucket in two steps so that the
 * datapath, reading concurrently, never matches a half-written slot:
 *
 *   1. new keys go into free slots with their family byte still 0 (a key
 *      with family 0 matches no packet); removed keys get family 0;
 *   2. new keys get their family (published); removed slots are zeroed.
 *
 * A slot freed in a write is reused only by a later write. A value changed
 * for a key that stays is written in place: its fields are independent
 * (flags, rate limit, VIP id) and a reader may meet a mix for the few
 * nanoseconds of the copy; no key ever leads elsewhere.
 */
import { FERRY_INDEX_WAYS, VipAddrBucket, VipAddrKey, VipAddrMeta, VipAddrSlot, VipBucket, VipKey, VipMeta, VipSlot } from './abi.js';
import { ceilPow2, u32, u32s } from './maps.js';
import type { NativeAddon } from './native.js';
import type { AnyStruct, ValueOf } from './struct.js';

const KEY_WORDS = 5;

const rol32 = (w: number, s: number): number => ((w << s) | (w >>> (32 - s))) >>> 0;

/** index_hash() of bpf/lib/index.h over a key's five u32 words as they lie in memory. */
export function indexHash(key: Buffer): number {
  let h = 0x9e3779b9;
  for (let i = 0; i < KEY_WORDS; i++) h = Math.imul(rol32((h ^ key.readUInt32LE(4 * i)) >>> 0, 13), 0x85ebca6b) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** The two buckets of a key (index_b1, index_b2). */
export function indexBucketsOf(key: Buffer, mask: number): [number, number] {
  const h = indexHash(key);
  return [(h & mask) >>> 0, (rol32(h, 16) & mask) >>> 0];
}

/** Buckets of an index for up to `entries` keys: a power of 2, at least `entries` (a quarter full at most). */
export function indexBucketCount(entries: number): number {
  return ceilPow2(entries);
}

/** Where a kind of key sits in its bucket (see struct vip_slot / vip_addr_slot). */
export interface IndexShape<K extends AnyStruct, V extends AnyStruct> {
  key: K;
  value: V;
  bucket: AnyStruct;
  slotSize: number;
  /** Offset of the meta within a slot. */
  valueOffset: number;
  /** Offset of the family byte within the key: 0 there means "no key". */
  familyOffset: number;
}

export const VIP_SHAPE: IndexShape<typeof VipKey, typeof VipMeta> = {
  key: VipKey,
  value: VipMeta,
  bucket: VipBucket,
  slotSize: VipSlot.size,
  valueOffset: VipSlot.layout.find((f) => f.name === 'meta')!.offset,
  familyOffset: VipKey.layout.find((f) => f.name === 'family')!.offset,
};

export const ADDR_SHAPE: IndexShape<typeof VipAddrKey, typeof VipAddrMeta> = {
  key: VipAddrKey,
  value: VipAddrMeta,
  bucket: VipAddrBucket,
  slotSize: VipAddrSlot.size,
  valueOffset: VipAddrSlot.layout.find((f) => f.name === 'meta')!.offset,
  familyOffset: VipAddrKey.layout.find((f) => f.name === 'family')!.offset,
};

export interface IndexEntry {
  key: Buffer;
  value: Buffer;
}

/**
 * Where a key lives: a bucket's slot, or the overflow map (counted in bucket
 * `overflow`). A key in a slot may also have a shadow copy in the overflow
 * map, kept equal: found there at load (an older version kept every key in
 * the map, and its program may still run until the new one is attached).
 */
type Place = { bucket: number; slot: number; shadow: boolean } | { overflow: number };

/** A slot filled in the first step, whose key gets its family byte in the second. */
interface Publish {
  bucket: number;
  slot: number;
  family: number;
}

export class KeyIndex<K extends AnyStruct, V extends AnyStruct> {
  private readonly buckets: Buffer[] = [];
  private readonly places = new Map<string, Place>();
  private readonly overflowAt: number;
  private loaded = false;

  /**
   * @param indexFd the bucket array; `count` buckets (a power of 2)
   * @param overflowFd the hash map for keys that fit in neither bucket
   */
  constructor(
    private readonly nat: NativeAddon,
    readonly indexFd: number,
    readonly overflowFd: number,
    readonly count: number,
    readonly shape: IndexShape<K, V>,
  ) {
    this.overflowAt = FERRY_INDEX_WAYS * shape.slotSize;
  }

  get mask(): number {
    return this.count - 1;
  }

  /**
   * Reads both maps into this mirror, repairing what an interrupted write
   * can leave behind: unpublished slots, a key in two places, a slot in a
   * bucket that is not its own, overflow counts that are not the truth.
   */
  load(): void {
    this.loaded = true;
    this.places.clear();
    this.buckets.length = 0;
    const { keys, values } = this.nat.mapDump(this.indexFd);
    for (let i = 0; i < this.count; i++) this.buckets.push(Buffer.alloc(this.shape.bucket.size));
    keys.forEach((k, i) => {
      const b = k.readUInt32LE(0);
      if (b < this.count) values[i]!.copy(this.buckets[b]!);
    });
    const dirty = new Set<number>();
    for (let b = 0; b < this.count; b++) {
      for (let s = 0; s < FERRY_INDEX_WAYS; s++) {
        const key = this.slotKey(b, s);
        const keyHex = key.toString('hex');
        const published = key[this.shape.familyOffset] !== 0;
        const [b1, b2] = indexBucketsOf(key, this.mask);
        if (published && !this.places.has(keyHex) && (b === b1 || b === b2)) {
          this.places.set(keyHex, { bucket: b, slot: s, shadow: false });
        } else if (!this.slotEmpty(b, s)) {
          this.clearSlot(b, s);
          dirty.add(b);
        }
      }
    }
    // Keys of the overflow map: shadows of slots, keys to move into a slot
    // (keeping the map's copy as a shadow), or true overflow.
    const counts = new Array<number>(this.count).fill(0);
    const over = this.nat.mapDump(this.overflowFd);
    const publish: Publish[] = [];
    over.keys.forEach((k, i) => {
      const keyHex = k.toString('hex');
      const key = Buffer.from(k);
      const p = this.places.get(keyHex);
      if (p && 'slot' in p) {
        p.shadow = true;
        if (!this.valueAt(p, key).equals(over.values[i]!)) this.nat.mapUpdate(this.overflowFd, key, this.valueAt(p, key), 0);
        return;
      }
      const slot = this.freeSlot(key, new Set());
      if (slot) {
        this.fill(slot.bucket, slot.slot, key, over.values[i]!);
        this.places.set(keyHex, { bucket: slot.bucket, slot: slot.slot, shadow: true });
        dirty.add(slot.bucket);
        publish.push({ bucket: slot.bucket, slot: slot.slot, family: key[this.shape.familyOffset]! });
        return;
      }
      const [b1] = indexBucketsOf(key, this.mask);
      counts[b1]! += 1;
      this.places.set(keyHex, { overflow: b1 });
    });
    // A count may go up at once (a lookup then also asks the map), but down only with the second
    // write, once the keys that moved into slots are published there.
    const lower: number[] = [];
    for (let b = 0; b < this.count; b++) {
      const had = this.buckets[b]!.readUInt32LE(this.overflowAt);
      if (had === counts[b]) continue;
      if (counts[b]! > had) {
        this.buckets[b]!.writeUInt32LE(counts[b]!, this.overflowAt);
        dirty.add(b);
      } else {
        lower.push(b);
      }
    }
    this.writeBuckets([...dirty]);
    for (const b of lower) this.buckets[b]!.writeUInt32LE(counts[b]!, this.overflowAt);
    this.publish(publish, lower);
  }

  /** Every entry, read from the maps now (not from this mirror). */
  read(): Map<string, IndexEntry> {
    const out = new Map<string, IndexEntry>();
    const { values } = this.nat.mapDump(this.indexFd);
    for (const bucket of values) {
      for (let s = 0; s < FERRY_INDEX_WAYS; s++) {
        const at = s * this.shape.slotSize;
        const key = Buffer.from(bucket.subarray(at, at + this.shape.key.size));
        if (key[this.shape.familyOffset] === 0) continue;
        const v = at + this.shape.valueOffset;
        out.set(key.toString('hex'), { key, value: Buffer.from(bucket.subarray(v, v + this.shape.value.size)) });
      }
    }
    const over = this.nat.mapDump(this.overflowFd);
    over.keys.forEach((k, i) => {
      const keyHex = k.toString('hex');
      if (!out.has(keyHex)) out.set(keyHex, { key: Buffer.from(k), value: Buffer.from(over.values[i]!) });
    });
    return out;
  }

  /** Every entry of this mirror (what the maps hold, as this instance wrote them). */
  known(): Map<string, IndexEntry> {
    this.ensureLoaded();
    const out = new Map<string, IndexEntry>();
    for (const [keyHex, p] of this.places) {
      const key = Buffer.from(keyHex, 'hex');
      out.set(keyHex, { key, value: this.valueAt(p, key) });
    }
    return out;
  }

  get size(): number {
    this.ensureLoaded();
    return this.places.size;
  }

  /** How many keys live in the overflow map. */
  get overflowed(): number {
    this.ensureLoaded();
    let n = 0;
    for (const p of this.places.values()) if ('overflow' in p) n++;
    return n;
  }

  /**
   * Adds or changes `puts` and removes `deletes` (absent keys are ignored),
   * in the two steps described above.
   */
  write(puts: readonly IndexEntry[], deletes: readonly Buffer[]): void {
    this.ensureLoaded();
    const prepare = new Set<number>();
    const publish: Publish[] = [];
    const zero: Array<[number, number]> = [];
    const freed = new Set<string>();

    for (const key of deletes) {
      const keyHex = key.toString('hex');
      const p = this.places.get(keyHex);
      if (!p) continue;
      this.places.delete(keyHex);
      if ('overflow' in p) {
        this.nat.mapDelete(this.overflowFd, key);
        this.addOverflow(p.overflow, -1);
        prepare.add(p.overflow);
        continue;
      }
      this.buckets[p.bucket]![p.slot * this.shape.slotSize + this.shape.familyOffset] = 0;
      prepare.add(p.bucket);
      zero.push([p.bucket, p.slot]);
      freed.add(`${p.bucket}/${p.slot}`);
      if (p.shadow) this.nat.mapDelete(this.overflowFd, key);
    }

    for (const { key, value } of puts) {
      const keyHex = key.toString('hex');
      const p = this.places.get(keyHex);
      if (p && 'overflow' in p) {
        this.nat.mapUpdate(this.overflowFd, key, value, 0);
      } else if (p) {
        value.copy(this.buckets[p.bucket]!, p.slot * this.shape.slotSize + this.shape.valueOffset);
        prepare.add(p.bucket);
        if (p.shadow) this.nat.mapUpdate(this.overflowFd, key, value, 0);
      } else {
        this.place(key, keyHex, value, freed, prepare, publish);
      }
    }

    this.writeBuckets([...prepare]);
    for (const [b, s] of zero) this.clearSlot(b, s);
    this.publish(
      publish,
      zero.map(([b]) => b),
    );
  }

  /** The second step: gives published slots their family byte; writes them and `also`. */
  private publish(publish: readonly Publish[], also: readonly number[] = []): void {
    const second = new Set<number>(also);
    for (const { bucket, slot, family } of publish) {
      this.buckets[bucket]![slot * this.shape.slotSize + this.shape.familyOffset] = family;
      second.add(bucket);
    }
    this.writeBuckets([...second]);
  }

  /** Typed single-entry helpers (tests, benchmarks). */
  set(k: ValueOf<K>, v: ValueOf<V>): void {
    this.write([{ key: this.shape.key.encode(k), value: this.shape.value.encode(v) }], []);
  }

  delete(k: ValueOf<K>): boolean {
    this.ensureLoaded();
    const key = this.shape.key.encode(k);
    const had = this.places.has(key.toString('hex'));
    this.write([], [key]);
    return had;
  }

  get(k: ValueOf<K>): ValueOf<V> | undefined {
    const e = this.read().get(this.shape.key.encode(k).toString('hex'));
    return e ? (this.shape.value.decode(e.value) as ValueOf<V>) : undefined;
  }

  /** Decoded entries read from the maps now. */
  entries(): Array<[ValueOf<K>, ValueOf<V>]> {
    return [...this.read().values()].map((e) => [
      this.shape.key.decode(e.key) as ValueOf<K>,
      this.shape.value.decode(e.value) as ValueOf<V>,
    ]);
  }

  /** A new key: a free slot of b1, else of b2, else the overflow map (counted in b1). */
  private place(key: Buffer, keyHex: string, value: Buffer, freed: Set<string>, prepare: Set<number>, publish: Publish[]): void {
    const slot = this.freeSlot(key, freed);
    if (slot) {
      this.fill(slot.bucket, slot.slot, key, value);
      this.places.set(keyHex, { bucket: slot.bucket, slot: slot.slot, shadow: false });
      prepare.add(slot.bucket);
      publish.push({ bucket: slot.bucket, slot: slot.slot, family: key[this.shape.familyOffset]! });
      return;
    }
    const [b1] = indexBucketsOf(key, this.mask);
    // The map first, then the count that sends misses of b1 to it.
    this.nat.mapUpdate(this.overflowFd, key, value, 0);
    this.addOverflow(b1, 1);
    prepare.add(b1);
    this.places.set(keyHex, { overflow: b1 });
  }

  /** The mirror is read at the first use, not at construction: opening a datapath writes nothing. */
  private ensureLoaded(): void {
    if (!this.loaded) this.load();
  }

  /** The first empty slot of the key's buckets, skipping slots freed by the write in progress. */
  private freeSlot(key: Buffer, freed: Set<string>): { bucket: number; slot: number } | undefined {
    const [b1, b2] = indexBucketsOf(key, this.mask);
    for (const b of b1 === b2 ? [b1] : [b1, b2]) {
      for (let s = 0; s < FERRY_INDEX_WAYS; s++) {
        if (this.slotEmpty(b, s) && !freed.has(`${b}/${s}`)) return { bucket: b, slot: s };
      }
    }
    return undefined;
  }

  /** Writes an unpublished entry (family 0) into the mirror's slot. */
  private fill(b: number, s: number, key: Buffer, value: Buffer): void {
    const at = s * this.shape.slotSize;
    const bucket = this.buckets[b]!;
    key.copy(bucket, at);
    bucket[at + this.shape.familyOffset] = 0;
    value.copy(bucket, at + this.shape.valueOffset);
  }

  private addOverflow(b: number, n: number): void {
    const bucket = this.buckets[b]!;
    bucket.writeUInt32LE(bucket.readUInt32LE(this.overflowAt) + n, this.overflowAt);
  }

  private slotKey(b: number, s: number): Buffer {
    const at = s * this.shape.slotSize;
    return Buffer.from(this.buckets[b]!.subarray(at, at + this.shape.key.size));
  }

  /** A slot with no byte set (an unpublished slot with leftovers is not empty: it is cleared first). */
  private slotEmpty(b: number, s: number): boolean {
    const at = s * this.shape.slotSize;
    const bucket = this.buckets[b]!;
    for (let i = at; i < at + this.shape.slotSize; i++) if (bucket[i] !== 0) return false;
    return true;
  }

  private clearSlot(b: number, s: number): void {
    const at = s * this.shape.slotSize;
    this.buckets[b]!.fill(0, at, at + this.shape.slotSize);
  }

  private valueAt(p: Place, key: Buffer): Buffer {
    if ('overflow' in p) {
      const v = this.nat.mapLookup(this.overflowFd, key);
      return v ? Buffer.from(v) : Buffer.alloc(this.shape.value.size);
    }
    const at = p.slot * this.shape.slotSize + this.shape.valueOffset;
    return Buffer.from(this.buckets[p.bucket]!.subarray(at, at + this.shape.value.size));
  }

  /** Writes whole buckets from the mirror: one update, or one batch for several. */
  private writeBuckets(ids: number[]): void {
    if (ids.length === 0) return;
    if (ids.length === 1) {
      this.nat.mapUpdate(this.indexFd, u32(ids[0]!), this.buckets[ids[0]!]!, 0);
      return;
    }
    const keys = u32s(ids);
    const values = Buffer.concat(ids.map((b) => this.buckets[b]!));
    this.nat.mapUpdateBatch(this.indexFd, keys, values, ids.length, 0);
  }
}

export type VipIndex = KeyIndex<typeof VipKey, typeof VipMeta>;
export type AddrIndex = KeyIndex<typeof VipAddrKey, typeof VipAddrMeta>;
