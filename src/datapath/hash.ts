/**
 * The datapath's flow hash, bit for bit: Linux jhash2 over the ten 32-bit
 * words of struct flow_key as they lie in memory (host order, little-endian),
 * seeded with lb_config.hash_seed. Every Ferry host with the same seed picks
 * the same Maglev slot for a flow, so hosts behind ECMP agree on backends.
 */
import { FlowKey, type FlowKeyV } from './abi.js';

const JHASH_INITVAL = 0xdeadbeef;

const rol32 = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

/** jhash2 over u32 words; returns an unsigned 32-bit value. */
export function jhash2(words: Uint32Array, seed: number): number {
  let a = (JHASH_INITVAL + (words.length << 2) + seed) >>> 0;
  let b = a;
  let c = a;
  let i = 0;
  let len = words.length;
  while (len > 3) {
    a = (a + words[i]!) >>> 0;
    b = (b + words[i + 1]!) >>> 0;
    c = (c + words[i + 2]!) >>> 0;
    // __jhash_mix
    a = (a - c) >>> 0;
    a = (a ^ rol32(c, 4)) >>> 0;
    c = (c + b) >>> 0;
    b = (b - a) >>> 0;
    b = (b ^ rol32(a, 6)) >>> 0;
    a = (a + c) >>> 0;
    c = (c - b) >>> 0;
    c = (c ^ rol32(b, 8)) >>> 0;
    b = (b + a) >>> 0;
    a = (a - c) >>> 0;
    a = (a ^ rol32(c, 16)) >>> 0;
    c = (c + b) >>> 0;
    b = (b - a) >>> 0;
    b = (b ^ rol32(a, 19)) >>> 0;
    a = (a + c) >>> 0;
    c = (c - b) >>> 0;
    c = (c ^ rol32(b, 4)) >>> 0;
    b = (b + a) >>> 0;
    i += 3;
    len -= 3;
  }
  // The tail: the last one to three words (Linux's switch with fallthrough).
  if (len === 0) return c;
  if (len >= 3) c = (c + words[i + 2]!) >>> 0;
  if (len >= 2) b = (b + words[i + 1]!) >>> 0;
  a = (a + words[i]!) >>> 0;
  // __jhash_final
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 14)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 11)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 25)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 16)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 4)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 14)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 24)) >>> 0;
  return c;
}

/**
 * The hash xdp_lb computes for a flow. With source affinity the ports are
 * left out, so every connection of a client lands on the same backend.
 */
export function flowHash(flow: FlowKeyV, seed: number, srcAffinity = false): number {
  return jhash2(flowWords(srcAffinity ? { ...flow, sport: 0, dport: 0 } : flow), seed);
}

/** Conntrack's hash seed (CT_SEED of bpf/lib/conntrack.h): fixed, unlike the Maglev seed. */
export const CT_SEED = 0x466572727943544fn;

const M64 = (1n << 64n) - 1n;
const rol64 = (w: bigint, s: bigint): bigint => ((w << s) | (w >> (64n - s))) & M64;

/** ct_hash() of bpf/lib/conntrack.h: 64 bits over the key's five 64-bit words. */
export function ctHash64(flow: FlowKeyV): bigint {
  const buf = FlowKey.encode(flow);
  let h = CT_SEED;
  for (let i = 0; i < buf.length; i += 8) {
    h ^= buf.readBigUInt64LE(i);
    h = rol64((h * 0x9e3779b97f4a7c15n) & M64, 31n);
  }
  h ^= h >> 33n;
  h = (h * 0xff51afd7ed558ccdn) & M64;
  h ^= h >> 33n;
  h = (h * 0xc4ceb9fe1a85ec53n) & M64;
  return h ^ (h >> 33n);
}

/**
 * Where conntrack keeps a flow: the hash's high half picks the bucket, the
 * whole is the fingerprint (bit 1 set), the low half varies the outer source.
 */
export function ctHash(flow: FlowKeyV): { bucketHash: number; fingerprint: bigint; outerHash: number } {
  const h = ctHash64(flow);
  return { bucketHash: Number(h >> 32n), fingerprint: h | 2n, outerHash: Number(h & 0xffffffffn) };
}

function flowWords(flow: FlowKeyV): Uint32Array {
  const buf = FlowKey.encode(flow);
  const words = new Uint32Array(buf.length / 4);
  for (let i = 0; i < words.length; i++) words[i] = buf.readUInt32LE(i * 4);
  return words;
}
