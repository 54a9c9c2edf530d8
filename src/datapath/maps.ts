/**
 * Typed views over BPF maps: keys and values cross the addon as Buffers and
 * are encoded here with the ABI structs.
 */
import type { NativeAddon } from './native.js';
import type { AnyStruct, ValueOf } from './struct.js';

/** A u32 array-map key (or value), as the kernel reads it. */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}

/** u32 keys side by side, as a batch operation reads them: one Buffer, not one per key. */
export function u32s(ns: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(4 * ns.length);
  for (let i = 0; i < ns.length; i++) b.writeUInt32LE(ns[i]!, 4 * i);
  return b;
}

/** The smallest power of 2 at least n (and at least 1): bucket counts of the array-backed tables. */
export function ceilPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** A hash or array map with struct keys and values. */
export class TypedMap<K extends AnyStruct, V extends AnyStruct> {
  constructor(
    protected readonly nat: NativeAddon,
    readonly fd: number,
    readonly name: string,
    protected readonly key: K,
    protected readonly value: V,
  ) {}

  get(k: ValueOf<K>): ValueOf<V> | undefined {
    const v = this.nat.mapLookup(this.fd, this.key.encode(k));
    return v ? (this.value.decode(v) as ValueOf<V>) : undefined;
  }

  set(k: ValueOf<K>, v: ValueOf<V>, flags = 0): void {
    this.nat.mapUpdate(this.fd, this.key.encode(k), this.value.encode(v), flags);
  }

  /** Returns false when the key was not there. */
  delete(k: ValueOf<K>): boolean {
    return this.nat.mapDelete(this.fd, this.key.encode(k));
  }

  entries(): Array<[ValueOf<K>, ValueOf<V>]> {
    const { keys, values } = this.nat.mapDump(this.fd);
    return keys.map((k, i) => [this.key.decode(k) as ValueOf<K>, this.value.decode(values[i]!) as ValueOf<V>]);
  }
}

/** A u32-indexed array map of structs. */
export class ArrayMap<V extends AnyStruct> {
  private readonly idx = Buffer.alloc(4);
  constructor(
    protected readonly nat: NativeAddon,
    readonly fd: number,
    readonly name: string,
    protected readonly value: V,
  ) {}

  get(i: number): ValueOf<V> {
    this.idx.writeUInt32LE(i, 0);
    const v = this.nat.mapLookup(this.fd, this.idx);
    if (!v) throw new RangeError(`${this.name}: index ${i} out of range`);
    return this.value.decode(v) as ValueOf<V>;
  }

  set(i: number, v: ValueOf<V>): void {
    this.idx.writeUInt32LE(i, 0);
    this.nat.mapUpdate(this.fd, this.idx, this.value.encode(v), 0);
  }
}

/**
 * A per-CPU array of counter structs (all u64 fields). Reads sum the CPUs;
 * each CPU's slot is rounded up to 8 bytes by the kernel.
 */
export class PerCpuArray<V extends AnyStruct> {
  private readonly idx = Buffer.alloc(4);
  private readonly stride: number;
  constructor(
    protected readonly nat: NativeAddon,
    readonly fd: number,
    readonly name: string,
    protected readonly value: V,
    private readonly cpus: number,
  ) {
    this.stride = Math.ceil(value.size / 8) * 8;
  }

  /** The sum over CPUs of every u64 field. */
  sum(i: number): ValueOf<V> {
    this.idx.writeUInt32LE(i, 0);
    const raw = this.nat.mapLookup(this.fd, this.idx);
    if (!raw) throw new RangeError(`${this.name}: index ${i} out of range`);
    return this.sumRaw(raw);
  }

  /** Zeroes index i on every CPU (used when an id is reallocated). */
  reset(i: number): void {
    this.idx.writeUInt32LE(i, 0);
    this.nat.mapUpdate(this.fd, this.idx, Buffer.alloc(this.stride * this.cpus), 0);
  }

  private sumRaw(raw: Buffer): ValueOf<V> {
    const total = this.value.zero() as Record<string, bigint>;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const one = this.value.decode(raw, cpu * this.stride) as Record<string, bigint>;
      for (const k of Object.keys(total)) total[k] = total[k]! + one[k]!;
    }
    return total as ValueOf<V>;
  }
}
