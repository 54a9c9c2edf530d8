/**
 * The hash behind Maglev permutations: MurmurHash3, x86 32-bit variant
 * (Austin Appleby, public domain), over the UTF-8 bytes of a string.
 *
 * Why this one: a Maglev table must come out the same on every host and
 * every Ferry version, so the hash is written out here rather than borrowed
 * from a runtime (V8's string hash is seeded per process). MurmurHash3_x86_32
 * is fully specified, has published test vectors (checked in the tests), and
 * its finalizer avalanches well even for keys that differ in one character,
 * such as "10.0.0.1:80" and "10.0.0.2:80", which FNV-1a disperses poorly in
 * its low bits. It only runs once per backend per table build, so its speed
 * hardly matters; correctness and stability do.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

const utf8 = new TextEncoder();

/** Final avalanche of MurmurHash3: a bijection on u32 that mixes every bit. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** MurmurHash3_x86_32 of raw bytes; returns an unsigned 32-bit integer. */
export function murmur3Bytes(data: Uint8Array, seed: number): number {
  const len = data.length;
  const nblocks = len >>> 2;
  let h = seed >>> 0;

  // Body: 4-byte little-endian blocks.
  for (let i = 0; i < nblocks; i++) {
    const b = i << 2;
    let k = (data[b] ?? 0) | ((data[b + 1] ?? 0) << 8) | ((data[b + 2] ?? 0) << 16) | ((data[b + 3] ?? 0) << 24);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }

  // Tail: the last 0..3 bytes (the reference code's fall-through switch).
  const t = nblocks << 2;
  let k = 0;
  const rem = len & 3;
  if (rem === 3) k ^= (data[t + 2] ?? 0) << 16;
  if (rem >= 2) k ^= (data[t + 1] ?? 0) << 8;
  if (rem >= 1) {
    k ^= data[t] ?? 0;
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }

  h ^= len;
  return fmix32(h);
}

/** MurmurHash3_x86_32 of a string's UTF-8 encoding. */
export function murmur3(key: string, seed: number): number {
  return murmur3Bytes(utf8.encode(key), seed);
}
