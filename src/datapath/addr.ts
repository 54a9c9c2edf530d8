/**
 * Addresses as the datapath stores them: a family code and 16 bytes. Parsing
 * and canonical text live in src/net/addr.ts.
 */
import { formatIp, parseCidr, parseIp, writeCanonicalIpv4 } from '../net/addr.js';
import { FERRY_AF_INET, FERRY_AF_INET6 } from './abi.js';

export type Family = typeof FERRY_AF_INET | typeof FERRY_AF_INET6;

export interface DpAddr {
  family: Family;
  /** 16 bytes; IPv4 in the first 4, the rest zero. */
  bytes: Buffer;
}

/** An IPv4 or IPv6 address in the datapath's form; throws a TypeError naming input that does not parse. */
export function dpAddr(text: string): DpAddr {
  const bytes = Buffer.alloc(16);
  if (writeCanonicalIpv4(text, bytes)) return { family: FERRY_AF_INET, bytes };
  bytes.fill(0, 0, 4);
  const ip = parseIp(text);
  if (typeof ip === 'string') throw new TypeError(`not an IP address: ${JSON.stringify(text)}`);
  ip.bytes.copy(bytes, 0);
  return { family: ip.family === 4 ? FERRY_AF_INET : FERRY_AF_INET6, bytes };
}

/** The text form of a datapath address. */
export function formatAddr(family: number, bytes: Buffer): string {
  return formatIp(family === FERRY_AF_INET ? 4 : 6, bytes);
}

/** IPv4 as ::ffff:a.b.c.d, IPv6 unchanged: the policy trie's address space. */
export function mappedBytes(a: DpAddr): Buffer {
  if (a.family === FERRY_AF_INET6) return Buffer.from(a.bytes);
  const out = Buffer.alloc(16);
  out.writeUInt16BE(0xffff, 10);
  a.bytes.copy(out, 12, 0, 4);
  return out;
}

export interface DpCidr {
  addr: DpAddr;
  /** Prefix length in the address's own family. */
  prefix: number;
}

/** "a.b.c.d/n" or "x::/n" in the datapath's form (a bare address is a host route, host bits cleared); throws a TypeError naming input that does not parse. */
export function dpCidr(text: string): DpCidr {
  const c = parseCidr(text, 'clear');
  if (typeof c === 'string') throw new TypeError(`not a CIDR: ${JSON.stringify(text)}`);
  const bytes = Buffer.alloc(16);
  c.network.copy(bytes, 0);
  return { addr: { family: c.family === 4 ? FERRY_AF_INET : FERRY_AF_INET6, bytes }, prefix: c.prefix };
}

/** The network-order mask of the host part of a prefix, `bits` wide. */
export function hostMask(prefix: number, bits: 32): Buffer {
  const buf = Buffer.alloc(4);
  const host = bits - prefix;
  const mask = host >= 32 ? 0xffffffff : host <= 0 ? 0 : (2 ** host - 1) >>> 0;
  buf.writeUInt32BE(mask, 0);
  return buf;
}
