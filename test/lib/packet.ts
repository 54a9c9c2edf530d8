/**
 * Builds and parses the frames the datapath tests push through
 * BPF_PROG_TEST_RUN: Ethernet (+802.1Q), IPv4/IPv6, TCP/UDP/ICMP/ICMPv6 with
 * valid checksums, and the IPIP/IP6IP6/4in6/6in4 frames xdp_lb emits.
 */
import { isIPv4 } from 'node:net';
import { dpAddr } from '../../src/datapath/addr.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const IPPROTO_ICMP = 1;
export const IPPROTO_IPIP = 4;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_IPV6 = 41;
export const IPPROTO_ICMPV6 = 58;

export const TCP_SYN = 0x02;
export const TCP_ACK = 0x10;

export const MAC_CLIENT = Buffer.from('02000000c001', 'hex');
export const MAC_LB = Buffer.from('02000000000b', 'hex');

/** One's-complement sum of 16-bit words, folded, not inverted. */
export function csumAdd(buf: Buffer, sum = 0): number {
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export const csumFinish = (sum: number): number => ~sum & 0xffff;

function addrBytes(ip: string): Buffer {
  const a = dpAddr(ip);
  return a.family === 4 ? a.bytes.subarray(0, 4) : a.bytes;
}

function pseudoHeader(src: Buffer, dst: Buffer, proto: number, len: number): Buffer {
  if (src.length === 4) {
    const p = Buffer.alloc(12);
    src.copy(p, 0);
    dst.copy(p, 4);
    p[9] = proto;
    p.writeUInt16BE(len, 10);
    return p;
  }
  const p = Buffer.alloc(40);
  src.copy(p, 0);
  dst.copy(p, 16);
  p.writeUInt32BE(len, 32);
  p[39] = proto;
  return p;
}

export interface L4Opts {
  proto: 'tcp' | 'udp' | 'icmp';
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  payload?: Buffer;
  /** ICMP type/code and the bytes after the 4-byte ICMP header (id/seq or unused + quote). */
  icmpType?: number;
  icmpCode?: number;
  icmpRest?: Buffer;
}

export interface PacketOpts extends L4Opts {
  src: string;
  dst: string;
  vlan?: number;
  srcMac?: Buffer;
  dstMac?: Buffer;
  ttl?: number;
  tos?: number;
  df?: boolean;
}

function l4(o: L4Opts, src: Buffer, dst: Buffer): { proto: number; bytes: Buffer } {
  const payload = o.payload ?? Buffer.alloc(0);
  if (o.proto === 'tcp') {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(o.sport ?? 40000, 0);
    h.writeUInt16BE(o.dport ?? 80, 2);
    h.writeUInt32BE(1000, 4);
    h.writeUInt32BE(o.tcpFlags !== undefined && o.tcpFlags & TCP_ACK ? 1 : 0, 8);
    h[12] = 5 << 4;
    h[13] = o.tcpFlags ?? TCP_SYN;
    h.writeUInt16BE(65535, 14);
    const seg = Buffer.concat([h, payload]);
    seg.writeUInt16BE(csumFinish(csumAdd(seg, csumAdd(pseudoHeader(src, dst, IPPROTO_TCP, seg.length)))), 16);
    return { proto: IPPROTO_TCP, bytes: seg };
  }
  if (o.proto === 'udp') {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(o.sport ?? 40000, 0);
    h.writeUInt16BE(o.dport ?? 53, 2);
    const seg = Buffer.concat([h, payload]);
    seg.writeUInt16BE(seg.length, 4);
    const c = csumFinish(csumAdd(seg, csumAdd(pseudoHeader(src, dst, IPPROTO_UDP, seg.length))));
    seg.writeUInt16BE(c === 0 ? 0xffff : c, 6);
    return { proto: IPPROTO_UDP, bytes: seg };
  }
  const v6 = src.length === 16;
  const h = Buffer.alloc(4);
  h[0] = o.icmpType ?? (v6 ? 128 : 8);
  h[1] = o.icmpCode ?? 0;
  const msg = Buffer.concat([h, o.icmpRest ?? Buffer.from('00010001', 'hex'), payload]);
  const proto = v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
  const base = v6 ? csumAdd(pseudoHeader(src, dst, proto, msg.length)) : 0;
  msg.writeUInt16BE(csumFinish(csumAdd(msg, base)), 2);
  return { proto, bytes: msg };
}

/** An IPv4 or IPv6 packet (no L2) around an L4 segment. */
export function ipPacket(o: PacketOpts): Buffer {
  const src = addrBytes(o.src);
  const dst = addrBytes(o.dst);
  const seg = l4(o, src, dst);
  return ipHeader(src, dst, seg.proto, seg.bytes, o);
}

/** An IP header in front of an arbitrary payload (used for quoted packets too). */
export function ipHeader(
  src: Buffer,
  dst: Buffer,
  proto: number,
  payload: Buffer,
  o: { ttl?: number; tos?: number; df?: boolean } = {},
): Buffer {
  if (src.length === 4) {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h[1] = o.tos ?? 0;
    h.writeUInt16BE(20 + payload.length, 2);
    h.writeUInt16BE(0x1234, 4);
    h.writeUInt16BE(o.df ? 0x4000 : 0, 6);
    h[8] = o.ttl ?? 64;
    h[9] = proto;
    src.copy(h, 12);
    dst.copy(h, 16);
    h.writeUInt16BE(csumFinish(csumAdd(h)), 10);
    return Buffer.concat([h, payload]);
  }
  const h = Buffer.alloc(40);
  h.writeUInt32BE((6 << 28) | ((o.tos ?? 0) << 20) | 0x12345, 0);
  h.writeUInt16BE(payload.length, 4);
  h[6] = proto;
  h[7] = o.ttl ?? 64;
  src.copy(h, 8);
  dst.copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** Ethernet (+ optional VLAN tag) in front of an L3 packet. */
export function ethFrame(l3: Buffer, ethertype: number, o: { vlan?: number; srcMac?: Buffer; dstMac?: Buffer } = {}): Buffer {
  const hdr = Buffer.alloc(o.vlan !== undefined ? 18 : 14);
  (o.dstMac ?? MAC_LB).copy(hdr, 0);
  (o.srcMac ?? MAC_CLIENT).copy(hdr, 6);
  if (o.vlan !== undefined) {
    hdr.writeUInt16BE(ETH_P_8021Q, 12);
    hdr.writeUInt16BE(o.vlan, 14);
    hdr.writeUInt16BE(ethertype, 16);
  } else {
    hdr.writeUInt16BE(ethertype, 12);
  }
  return Buffer.concat([hdr, l3]);
}

/** A complete frame from client to VIP. */
export function frame(o: PacketOpts): Buffer {
  return ethFrame(ipPacket(o), isIPv4(o.src) ? ETH_P_IP : ETH_P_IPV6, o);
}

export interface ParsedIp {
  version: 4 | 6;
  src: Buffer;
  dst: Buffer;
  proto: number;
  ttl: number;
  tos: number;
  /** Total (v4) or payload (v6) length field. */
  lenField: number;
  headerLen: number;
  /** IPv4 flags+fragment offset word; 0 for IPv6. */
  fragWord: number;
  flowLabel: number;
  checksumOk: boolean;
  payload: Buffer;
  raw: Buffer;
}

export function parseIp(b: Buffer): ParsedIp {
  const version = b[0]! >> 4;
  if (version === 4) {
    const ihl = (b[0]! & 0xf) * 4;
    const total = b.readUInt16BE(2);
    return {
      version: 4,
      src: b.subarray(12, 16),
      dst: b.subarray(16, 20),
      proto: b[9]!,
      ttl: b[8]!,
      tos: b[1]!,
      lenField: total,
      headerLen: ihl,
      fragWord: b.readUInt16BE(6),
      flowLabel: 0,
      checksumOk: csumAdd(b.subarray(0, ihl)) === 0xffff,
      payload: b.subarray(ihl, total),
      raw: b.subarray(0, total),
    };
  }
  if (version === 6) {
    const plen = b.readUInt16BE(4);
    const w = b.readUInt32BE(0);
    return {
      version: 6,
      src: b.subarray(8, 24),
      dst: b.subarray(24, 40),
      proto: b[6]!,
      ttl: b[7]!,
      tos: (w >>> 20) & 0xff,
      lenField: plen,
      headerLen: 40,
      fragWord: 0,
      flowLabel: w & 0xfffff,
      checksumOk: true,
      payload: b.subarray(40, 40 + plen),
      raw: b.subarray(0, 40 + plen),
    };
  }
  throw new Error(`not an IP packet (version ${version})`);
}

export interface ParsedFrame {
  dstMac: Buffer;
  srcMac: Buffer;
  vlan?: number;
  ethertype: number;
  l3: Buffer;
}

export function parseEth(b: Buffer): ParsedFrame {
  let type = b.readUInt16BE(12);
  let off = 14;
  let vlan: number | undefined;
  if (type === ETH_P_8021Q) {
    vlan = b.readUInt16BE(14);
    type = b.readUInt16BE(16);
    off = 18;
  }
  const out: ParsedFrame = { dstMac: b.subarray(0, 6), srcMac: b.subarray(6, 12), ethertype: type, l3: b.subarray(off) };
  if (vlan !== undefined) out.vlan = vlan;
  return out;
}

/** True when the L4 checksum (TCP/UDP/ICMP/ICMPv6) of an IP packet is valid. */
export function l4ChecksumOk(ip: ParsedIp): boolean {
  if (ip.proto === IPPROTO_ICMP) return csumAdd(ip.payload) === 0xffff;
  if (ip.proto !== IPPROTO_TCP && ip.proto !== IPPROTO_UDP && ip.proto !== IPPROTO_ICMPV6) return false;
  return csumAdd(ip.payload, csumAdd(pseudoHeader(ip.src, ip.dst, ip.proto, ip.payload.length))) === 0xffff;
}
