/**
 * Addresses as the datapath stores them, parsed with ipaddr.js.
 */
import ipaddr from 'ipaddr.js';
import { FERRY_AF_INET, FERRY_AF_INET6 } from './abi.js';

export type Family = typeof FERRY_AF_INET | typeof FERRY_AF_INET6;

export interface DpAddr {
  family: Family;
  /** 16 bytes; IPv4 in the first 4, the rest zero. */
  bytes: Buffer;
}

/** Parses an IPv4 or IPv6 address; throws a TypeError naming the input. */
export function parseAddr(text: string): DpAddr {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(text); // throws for what isValid() refuses: one parse instead of two
  } catch {
    throw new TypeError(`not an IP address: ${JSON.stringify(text)}`);
  }
  const bytes = Buffer.alloc(16);
  if (ip.kind() === 'ipv4') {
    Buffer.from(ip.toByteArray()).copy(bytes, 0);
    return { family: FERRY_AF_INET, bytes };
  }
  Buffer.from(ip.toByteArray()).copy(bytes, 0);
  return { family: FERRY_AF_INET6, bytes };
}

/** The text form of a datapath address. */
export function formatAddr(family: number, bytes: Buffer): string {
  if (family === FERRY_AF_INET) return ipaddr.fromByteArray([...bytes.subarray(0, 4)]).toString();
  return ipaddr.fromByteArray([...bytes.subarray(0, 16)]).toString();
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

/** Parses "a.b.c.d/n" or "x::/n" (a bare address is a host route). */
export function parseCidr(text: string): DpCidr {
  const slash = text.indexOf('/');
  if (slash < 0) {
    const addr = parseAddr(text);
    return { addr, prefix: addr.family === FERRY_AF_INET ? 32 : 128 };
  }
  let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    parsed = ipaddr.parseCIDR(text);
  } catch {
    throw new TypeError(`not a CIDR: ${JSON.stringify(text)}`);
  }
  const [ip, prefix] = parsed;
  const addr = parseAddr(ip.toString());
  return { addr, prefix };
}

/** The network-order mask of the host part of a prefix, `bits` wide. */
export function hostMask(prefix: number, bits: 32): Buffer {
  const buf = Buffer.alloc(4);
  const host = bits - prefix;
  const mask = host >= 32 ? 0xffffffff : host <= 0 ? 0 : (2 ** host - 1) >>> 0;
  buf.writeUInt32BE(mask, 0);
  return buf;
}
