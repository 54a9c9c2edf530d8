/**
 * A small declarative codec for C structs shared with the datapath.
 *
 * A struct is declared as an ordered list of fields; offsets follow the C
 * rules clang applies to the BPF target (each field aligned to its natural
 * alignment, the struct padded to its largest alignment). The layout test
 * compares these offsets with the BTF of the compiled objects, so a field
 * added on one side only fails the build's tests instead of corrupting maps.
 *
 * Multi-byte host-order fields are little-endian: BPF maps hold host-order
 * values and Ferry runs on little-endian machines only (checked at load).
 */

type Kind = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32' | 'bytes';

interface FieldSpec<K extends Kind> {
  readonly kind: K;
  /** Bytes for 'bytes'; ignored otherwise. */
  readonly length: number;
  /** C alignment of the field. */
  readonly align: number;
}

type FieldValue<K extends Kind> = K extends 'u64' ? bigint : K extends 'bytes' ? Buffer : number;

export const u8 = (): FieldSpec<'u8'> => ({ kind: 'u8', length: 1, align: 1 });
export const u16 = (): FieldSpec<'u16'> => ({ kind: 'u16', length: 2, align: 2 });
export const u32 = (): FieldSpec<'u32'> => ({ kind: 'u32', length: 4, align: 4 });
export const u64 = (): FieldSpec<'u64'> => ({ kind: 'u64', length: 8, align: 8 });
/** A __u16 holding a network-order value (ports). */
export const be16 = (): FieldSpec<'be16'> => ({ kind: 'be16', length: 2, align: 2 });
/** A __u32 holding a network-order value. */
export const be32 = (): FieldSpec<'be32'> => ({ kind: 'be32', length: 4, align: 4 });
/** Raw bytes with the alignment of the C element type (u32[4] addresses: align 4). */
export const bytes = (length: number, align = 1): FieldSpec<'bytes'> => ({ kind: 'bytes', length, align });

export type Fields = Record<string, FieldSpec<Kind>>;
export type StructValue<F extends Fields> = { [N in keyof F]: FieldValue<F[N]['kind']> };

/** Any declared struct (method parameters are bivariant, so every Struct<F> fits). */
export type AnyStruct = Struct<Fields>;

/** The decoded value type of a declared struct. */
export type ValueOf<S> = S extends Struct<infer F> ? StructValue<F> : never;

export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

export interface Struct<F extends Fields> {
  /** The C struct name, as found in BTF. */
  readonly cName: string;
  readonly size: number;
  readonly layout: readonly FieldLayout[];
  encode(value: StructValue<F>): Buffer;
  encodeInto(value: StructValue<F>, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset?: number): StructValue<F>;
  /** A value with every field zero. */
  zero(): StructValue<F>;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

function layoutOf(fields: Fields): { layout: FieldLayout[]; size: number; align: number } {
  let offset = 0;
  let maxAlign = 1;
  const layout: FieldLayout[] = [];
  for (const [name, spec] of Object.entries(fields)) {
    offset = alignUp(offset, spec.align);
    layout.push({ name, offset, size: spec.length });
    offset += spec.length;
    maxAlign = Math.max(maxAlign, spec.align);
  }
  return { layout, size: alignUp(offset, maxAlign), align: maxAlign };
}

function writeField(spec: FieldSpec<Kind>, name: string, v: unknown, buf: Buffer, at: number): void {
  switch (spec.kind) {
    case 'u8':
      buf.writeUInt8(v as number, at);
      return;
    case 'u16':
      buf.writeUInt16LE(v as number, at);
      return;
    case 'u32':
      buf.writeUInt32LE(v as number, at);
      return;
    case 'u64':
      buf.writeBigUInt64LE(v as bigint, at);
      return;
    case 'be16':
      buf.writeUInt16BE(v as number, at);
      return;
    case 'be32':
      buf.writeUInt32BE(v as number, at);
      return;
    case 'bytes': {
      const b = v as Buffer;
      if (b.length > spec.length) throw new RangeError(`field ${name}: ${b.length} bytes > ${spec.length}`);
      b.copy(buf, at);
      return;
    }
  }
}

function readField(spec: FieldSpec<Kind>, buf: Buffer, at: number): number | bigint | Buffer {
  switch (spec.kind) {
    case 'u8':
      return buf.readUInt8(at);
    case 'u16':
      return buf.readUInt16LE(at);
    case 'u32':
      return buf.readUInt32LE(at);
    case 'u64':
      return buf.readBigUInt64LE(at);
    case 'be16':
      return buf.readUInt16BE(at);
    case 'be32':
      return buf.readUInt32BE(at);
    case 'bytes':
      return Buffer.from(buf.subarray(at, at + spec.length));
  }
}

function zeroOf(spec: FieldSpec<Kind>): number | bigint | Buffer {
  if (spec.kind === 'u64') return 0n;
  if (spec.kind === 'bytes') return Buffer.alloc(spec.length);
  return 0;
}

/** Declares a C struct. Field order is the C declaration order. */
export function struct<F extends Fields>(cName: string, fields: F): Struct<F> {
  const { layout, size } = layoutOf(fields);
  const specs = Object.entries(fields).map(([name, spec], i) => ({ name, spec, offset: layout[i]!.offset }));
  const s: Struct<F> = {
    cName,
    size,
    layout,
    encodeInto(value, buf, offset) {
      buf.fill(0, offset, offset + size);
      const rec = value as Record<string, unknown>;
      for (const f of specs) writeField(f.spec, f.name, rec[f.name], buf, offset + f.offset);
    },
    encode(value) {
      // From Node's pool (encodeInto zeroes it): a key or value is a few bytes, and a buffer of its own
      // each (Buffer.alloc) made 100,000 backends 100,000 ArrayBuffers for the collector to track.
      const buf = Buffer.allocUnsafe(size);
      s.encodeInto(value, buf, 0);
      return buf;
    },
    decode(buf, offset = 0) {
      if (buf.length < offset + size) throw new RangeError(`${cName}: need ${size} bytes at ${offset}, have ${buf.length}`);
      const out: Record<string, unknown> = {};
      for (const f of specs) out[f.name] = readField(f.spec, buf, offset + f.offset);
      return out as StructValue<F>;
    },
    zero() {
      const out: Record<string, unknown> = {};
      for (const f of specs) out[f.name] = zeroOf(f.spec);
      return out as StructValue<F>;
    },
  };
  return s;
}
