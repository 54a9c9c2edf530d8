/**
 * IP addresses and CIDRs: the one place that parses them and names their
 * canonical text (dotted quad; RFC 5952 compressed lowercase IPv6).
 *
 * Strict by design: IPv4 only as four decimal octets (ipaddr.js alone would
 * read "010.0.0.1" as octal 8.0.0.1 and "10.1" as 10.0.0.1, which an operator
 * never means), IPv6 without a zone index. Parses are memoised in one bounded
 * cache: one write spells the same addresses again and again (validated,
 * normalised, stored, planned, written into maps) and parsing was the cost.
 */
import ipaddr from 'ipaddr.js';

export type IpFamily = 4 | 6;

/** A parsed address. Shared through the cache: never modify `bytes`. */
export interface Ip {
  readonly family: IpFamily;
  /** Network order: 4 bytes for IPv4, 16 for IPv6. */
  readonly bytes: Buffer;
  /** The canonical text. */
  readonly text: string;
  /** ipaddr.js's name for the range ("unicast", "loopback", "ipv4Mapped", ...). */
  readonly range: string;
}

/** A parsed CIDR: the network with its host bits clear. */
export interface Cidr {
  readonly family: IpFamily;
  /** Network order, 4 or 16 bytes, host bits zero. */
  readonly network: Buffer;
  readonly prefix: number;
  /** The canonical "network/prefix". */
  readonly text: string;
}

const FOUR_DECIMAL_OCTETS = /^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$/;
/** Prefix lengths are plain decimal: "/08" would be read differently by different tools. */
const PREFIX_RE = /^(0|[1-9][0-9]{0,2})$/;
const MEMO_LIMIT = 1 << 18;
/** Longer than any address's text (IPv6 with an embedded IPv4 is 45): such input is answered, not kept. */
const MEMO_MAX_TEXT = 64;
const memo = new Map<string, Ip | string>();

/** Parses an address; returns it, or the reason it is not one. */
export function parseIp(text: unknown): Ip | string {
  if (typeof text !== 'string') return 'must be a string';
  if (text.length > MEMO_MAX_TEXT) return parseUncached(text);
  const hit = memo.get(text);
  if (hit !== undefined) return hit;
  const out = parseUncached(text);
  if (memo.size >= MEMO_LIMIT) memo.clear();
  memo.set(text, out);
  return out;
}

/**
 * Whether `text` is an IPv4 address in canonical form (four decimal octets
 * 0..255, no leading zeros): then it is its own canonical text. A scan of
 * at most 15 characters, where a lookup in the parse cache (a hundred
 * thousand pod addresses in a burst) costs a cache miss.
 */
export function isCanonicalIpv4(text: string): boolean {
  return scanIpv4(text, null, 0);
}

/**
 * Writes the 4 bytes of a canonical IPv4 address (isCanonicalIpv4) into
 * `out` at `offset` and returns true; returns false for any other text,
 * `out` then unspecified. No parse and no cache: the datapath's form of
 * a burst's pod addresses.
 */
export function writeCanonicalIpv4(text: string, out: Uint8Array, offset = 0): boolean {
  return scanIpv4(text, out, offset);
}

function scanIpv4(text: string, out: Uint8Array | null, offset: number): boolean {
  const n = text.length;
  if (n < 7 || n > 15) return false;
  let octets = 0;
  let i = 0;
  while (i < n) {
    const start = i;
    let value = 0;
    while (i < n) {
      const c = text.charCodeAt(i) - 48;
      if (c < 0 || c > 9) break;
      value = value * 10 + c;
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || value > 255 || (digits > 1 && text.charCodeAt(start) === 48)) return false;
    if (out !== null) out[offset + octets] = value; // a fifth octet is refused below before it is read
    octets++;
    if (i === n) break;
    if (text.charCodeAt(i) !== 46 || octets === 4) return false; // "."
    i++;
    if (i === n) return false;
  }
  return octets === 4;
}

function parseUncached(text: string): Ip | string {
  return text.includes(':') ? parseIpv6(text) : parseIpv4(text);
}

function parseIpv4(text: string): Ip | string {
  const octets = FOUR_DECIMAL_OCTETS.test(text) ? text.split('.').map(Number) : [];
  if (octets.length !== 4 || octets.some((o) => o > 255)) {
    return `not an IP address: ${JSON.stringify(text)} (IPv4 is written as four decimal octets, a.b.c.d)`;
  }
  // Four decimal octets without leading zeros are the canonical text already; ipaddr.js only names the range.
  return Object.freeze({ family: 4, bytes: Buffer.from(octets), text, range: new ipaddr.IPv4(octets).range() });
}

function parseIpv6(text: string): Ip | string {
  let ip: ipaddr.IPv6;
  try {
    ip = ipaddr.IPv6.parse(text);
  } catch {
    return `not an IP address: ${JSON.stringify(text)}`;
  }
  if (ip.zoneId !== undefined) return `must not carry a zone index ("%${ip.zoneId}")`;
  return Object.freeze({ family: 6, bytes: Buffer.from(ip.toByteArray()), text: ip.toString(), range: ip.range() });
}

/** The canonical text of an address, or null if it does not parse; lookups accept any spelling. */
export function canonicalIp(text: string): string | null {
  if (isCanonicalIpv4(text)) return text;
  const ip = parseIp(text);
  return typeof ip === 'string' ? null : ip.text;
}

/** The canonical text of an address already validated; throws a TypeError naming one that does not parse. */
export function validatedIp(text: string): string {
  const c = canonicalIp(text);
  if (c === null) throw new TypeError(`not a validated IP address: ${JSON.stringify(text)}`);
  return c;
}

/** The family of an address already known to be valid. */
export function ipFamily(text: string): IpFamily {
  return text.includes(':') ? 6 : 4;
}

/** The canonical text of the first 4 (IPv4) or 16 (IPv6) bytes of `bytes`. */
export function formatIp(family: IpFamily, bytes: Uint8Array): string {
  return ipaddr.fromByteArray([...bytes.subarray(0, family === 4 ? 4 : 16)]).toString();
}

/** The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d), or null. */
export function unmappedIpv4(ip: Ip): Ip | null {
  if (ip.range !== 'ipv4Mapped') return null;
  const v4 = parseIp(formatIp(4, ip.bytes.subarray(12)));
  return typeof v4 === 'string' ? null : v4;
}

/** Zeroes every bit of `addr` after the first `prefix` of `bits`. */
export function clearHostBits(addr: Uint8Array, prefix: number, bits: number): void {
  for (let i = 0; i < bits / 8; i++) {
    const keep = Math.min(Math.max(prefix - i * 8, 0), 8);
    addr[i] = (addr[i] ?? 0) & ((0xff00 >> keep) & 0xff);
  }
}

/**
 * Parses "10.0.0.0/8" or "2001:db8::/32" (a bare address is a host route).
 * Host bits are refused with the network meant ("did you mean ...?"), or with
 * `hostBits: 'clear'` cleared (as kube-proxy does with source ranges).
 * Returns the CIDR or the reason it is not one.
 */
export function parseCidr(text: unknown, hostBits: 'refuse' | 'clear' = 'refuse'): Cidr | string {
  if (typeof text !== 'string') return 'must be a string';
  const slash = text.indexOf('/');
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (typeof ip === 'string') return `not a CIDR: ${JSON.stringify(text)}`;
  const bits = ip.family === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(bits) : text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!PREFIX_RE.test(prefixText) || prefix > bits) {
    return `not a CIDR: ${JSON.stringify(text)} (prefix length must be 0..${bits})`;
  }
  const network = Buffer.from(ip.bytes);
  clearHostBits(network, prefix, bits);
  const netText = network.equals(ip.bytes) ? ip.text : formatIp(ip.family, network);
  if (hostBits === 'refuse' && netText !== ip.text) return `has host bits set; did you mean ${netText}/${prefix}?`;
  return Object.freeze({ family: ip.family, network, prefix, text: `${netText}/${prefix}` });
}

/** The canonical form of a valid CIDR ("10.0.0.1" → "10.0.0.1/32"); throws a TypeError on an invalid one. */
export function canonicalCidr(text: string): string {
  const c = parseCidr(text);
  if (typeof c === 'string') throw new TypeError(`${JSON.stringify(text)}: ${c}`);
  return c.text;
}

/** Whether the address lies inside the CIDR (families must match). */
export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  if (cidr.family !== ip.family) return false;
  const bytes = Buffer.from(ip.bytes);
  clearHostBits(bytes, cidr.prefix, ip.family === 4 ? 32 : 128);
  return bytes.equals(cidr.network);
}

/** Whether `text` is an address (of `family`, when given): the API's and the config's format checks. */
export function isIp(text: string, family?: IpFamily): boolean {
  const ip = parseIp(text);
  return typeof ip !== 'string' && (family === undefined || ip.family === family);
}

/**
 * Whether `text` is an address or address/length within its family's bits:
 * the API's `cidr` format. Host bits pass here; the store refuses them with
 * the network meant, which says more than a format error could.
 */
export function isCidr(text: string): boolean {
  return typeof parseCidr(text, 'clear') !== 'string';
}
