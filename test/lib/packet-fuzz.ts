/**
 * Packet fuzzing of xdp_lb through BPF_PROG_TEST_RUN (fast-check): valid,
 * mutated, truncated and random frames, IPv4 and IPv6, VLAN tags, IPv4
 * options, IPv6 extension headers, fragments, and ICMP errors quoting
 * anything. Shared by the CI suite (test/root/datapath/fuzz-packets.test.ts, a fixed seed)
 * and the soak (test/soak.ts, many more cases).
 *
 * Invariants, checked for every frame:
 *   - the verdict is XDP_PASS, XDP_DROP or XDP_TX (never ABORTED);
 *   - a passed frame leaves untouched;
 *   - a transmitted frame is either an encapsulation (IPIP, IP6IP6, 4in6,
 *     6in4) whose inner packet is the input's, byte for byte, addressed to a
 *     VIP, whose outer destination is an active backend of that VIP, with a
 *     correct outer header (checksum, lengths, outer source in the
 *     configured prefix, next-hop MAC); or an echo reply from a VIP address
 *     to the sender with a correct IPv4 header checksum and an ICMP checksum
 *     exactly as valid as the request's;
 * and for every run of frames: the drop counters grew by the number of
 * drops (every drop has a reason) and the pass counters by the passes.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING, DROP_REASONS, FERRY_AF_INET, type DropReason } from '../../src/datapath/abi.js';
import { dpAddr, dpCidr } from '../../src/datapath/addr.js';
import type { BackendProgram } from '../../src/datapath/program.js';
import { clearHostBits } from '../../src/net/addr.js';
import { GW_MAC, type LbHarness, SRC4, SRC6, XDP_DROP, XDP_PASS, XDP_TX } from './harness.js';
import {
  ETH_P_8021Q,
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_IPIP,
  IPPROTO_IPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  csumAdd,
  csumFinish,
  ethFrame,
  ipPacket,
  l4ChecksumOk,
  parseEth,
  parseIp,
  type PacketOpts,
} from './packet.js';

// ------------------------------------------------------------- the world

interface FuzzVip {
  id: number;
  addr: string;
  port: number;
  proto: 'tcp' | 'udp';
  backends: Array<BackendProgram & { state: number }>;
}

const v4be = (base: number, n: number, states: number[] = []) =>
  Array.from({ length: n }, (_, i) => ({ id: base + i, addr: `198.18.1.${base + i}`, state: states[i] ?? BACKEND_ACTIVE }));
const v6be = (base: number, n: number, states: number[] = []) =>
  Array.from({ length: n }, (_, i) => ({
    id: base + i,
    addr: `2001:db8:1::${(base + i).toString(16)}`,
    state: states[i] ?? BACKEND_ACTIVE,
  }));

/** VIPs of every kind: both families, TCP and UDP, all-port, cross-family backends, draining and down ones. */
export const FUZZ_VIPS: readonly FuzzVip[] = [
  { id: 0, addr: '198.18.0.10', port: 80, proto: 'tcp', backends: v4be(10, 3, [BACKEND_ACTIVE, BACKEND_DRAINING, BACKEND_ACTIVE]) },
  { id: 1, addr: '198.18.0.10', port: 53, proto: 'udp', backends: v4be(20, 2) },
  { id: 2, addr: '198.18.0.11', port: 0, proto: 'tcp', backends: v6be(30, 2) },
  { id: 3, addr: '2001:db8::10', port: 443, proto: 'tcp', backends: v6be(40, 3, [BACKEND_DOWN]) },
  { id: 4, addr: '2001:db8::11', port: 53, proto: 'udp', backends: v4be(50, 2) },
];

const VIP_ADDRS = [...new Set(FUZZ_VIPS.map((v) => v.addr))];
const CLIENTS4 = ['198.51.100.7', '203.0.113.9', '10.1.2.3'];
const CLIENTS6 = ['2001:db8:100::1', '2001:db8:200::2'];
const OTHERS4 = ['198.18.0.99', '192.0.2.1'];
const OTHERS6 = ['2001:db8::99', 'fe80::1'];

/**
 * Where traffic may go: backend address (hex of 16 bytes) → the VIP ids it
 * is active in. Draining and down backends never are: no flow ever reached
 * them while active, so no conntrack entry names them.
 */
function activeBackends(): Map<string, Set<number>> {
  const m = new Map<string, Set<number>>();
  for (const v of FUZZ_VIPS) {
    for (const b of v.backends) {
      if (b.state !== BACKEND_ACTIVE) continue;
      const key = dpAddr(b.addr).bytes.toString('hex');
      const set = m.get(key) ?? new Set<number>();
      set.add(v.id);
      m.set(key, set);
    }
  }
  return m;
}

/** Programs the fuzz VIPs into a harness. */
export function programFuzzWorld(h: LbHarness): void {
  for (const v of FUZZ_VIPS) h.vip({ id: v.id, addr: v.addr, port: v.port, proto: v.proto, m: 251, backends: v.backends });
}

// ------------------------------------------------------------ generators

/** A frame plus what it was meant to be (for reports). */
export interface FuzzFrame {
  kind: string;
  bytes: Buffer;
}

const bytesArb = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));

const v4Addr = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...VIP_ADDRS.filter((a) => !a.includes(':'))) },
  { weight: 2, arbitrary: fc.constantFrom(...CLIENTS4, ...OTHERS4) },
  { weight: 1, arbitrary: fc.ipV4() },
);
const v6Addr = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...VIP_ADDRS.filter((a) => a.includes(':'))) },
  { weight: 2, arbitrary: fc.constantFrom(...CLIENTS6, ...OTHERS6) },
  { weight: 1, arbitrary: fc.ipV6().filter((a) => !a.includes('.') && !a.includes('%')) },
);
const port = fc.oneof(fc.constantFrom(80, 53, 443, 0, 1, 65535), fc.integer({ min: 0, max: 65535 }));

/** A well-formed frame to or near a VIP: the starting point of every other kind. */
const validFrame: fc.Arbitrary<FuzzFrame> = fc
  .record({
    v6: fc.boolean(),
    src4: fc.constantFrom(...CLIENTS4),
    src6: fc.constantFrom(...CLIENTS6),
    dst4: v4Addr,
    dst6: v6Addr,
    proto: fc.constantFrom('tcp', 'udp', 'icmp'),
    sport: port,
    dport: port,
    flags: fc.oneof(fc.constantFrom(0x02, 0x10, 0x18, 0x11, 0x04), fc.integer({ min: 0, max: 255 })),
    icmpType: fc.oneof(fc.constantFrom(8, 128, 0, 3, 11), fc.integer({ min: 0, max: 255 })),
    icmpCode: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })),
    payload: bytesArb(0, 64),
    vlan: fc.option(fc.integer({ min: 0, max: 4095 }), { nil: undefined }),
    tos: fc.integer({ min: 0, max: 255 }),
    df: fc.boolean(),
    // Ethernet padding after the IP packet (a short frame is padded to 60 bytes).
    padding: fc.oneof({ weight: 3, arbitrary: fc.constant(Buffer.alloc(0)) }, { weight: 1, arbitrary: bytesArb(1, 24) }),
  })
  .map((r): FuzzFrame => {
    const o: PacketOpts = {
      src: r.v6 ? r.src6 : r.src4,
      dst: r.v6 ? r.dst6 : r.dst4,
      proto: r.proto as PacketOpts['proto'],
      sport: r.sport,
      dport: r.dport,
      tcpFlags: r.flags,
      payload: r.payload,
      tos: r.tos,
      df: r.df,
      ...(r.proto === 'icmp' ? { icmpType: r.icmpType, icmpCode: r.icmpCode } : {}),
      ...(r.vlan !== undefined ? { vlan: r.vlan } : {}),
    };
    const bytes = Buffer.concat([ethFrame(ipPacket(o), r.v6 ? ETH_P_IPV6 : ETH_P_IP, o), r.padding]);
    return { kind: `valid ${r.v6 ? 'v6' : 'v4'} ${r.proto}${r.padding.length ? ` padded ${r.padding.length}` : ''}`, bytes };
  });

/** IPv4 with options (IHL 6..15), or an IPv4 fragment. */
const v4Special: fc.Arbitrary<FuzzFrame> = fc
  .record({
    base: validFrame.filter((f) => parseEth(f.bytes).ethertype === ETH_P_IP),
    options: bytesArb(0, 40).map((b) => b.subarray(0, b.length - (b.length % 4))),
    frag: fc.option(fc.integer({ min: 0, max: 0x3fff }), { nil: undefined }),
  })
  .map(({ base, options, frag }): FuzzFrame => {
    const eth = parseEth(base.bytes);
    const l3 = eth.l3;
    const hdr = Buffer.concat([l3.subarray(0, 20), options]);
    hdr[0] = 0x40 | (hdr.length / 4);
    if (frag !== undefined) hdr.writeUInt16BE(frag, 6);
    const pkt = Buffer.concat([hdr, l3.subarray(20)]);
    pkt.writeUInt16BE(pkt.length, 2);
    pkt.writeUInt16BE(0, 10);
    pkt.writeUInt16BE(csumFinish(csumAdd(pkt.subarray(0, hdr.length))), 10);
    const l2 = base.bytes.subarray(0, base.bytes.length - l3.length);
    return { kind: `v4 options ${options.length} frag ${frag ?? '-'}`, bytes: Buffer.concat([l2, pkt]) };
  });

/** IPv6 with a chain of extension headers (hop-by-hop, routing, fragment, destination) before the L4 header. */
const v6Special: fc.Arbitrary<FuzzFrame> = fc
  .record({
    base: validFrame.filter((f) => parseEth(f.bytes).ethertype === ETH_P_IPV6),
    chain: fc.array(
      fc.record({
        type: fc.constantFrom(0, 43, 44, 60, 51, 135),
        len: fc.integer({ min: 0, max: 3 }),
        fill: fc.integer({ min: 0, max: 255 }),
      }),
      { minLength: 1, maxLength: 3 },
    ),
  })
  .map(({ base, chain }): FuzzFrame => {
    const eth = parseEth(base.bytes);
    const l3 = eth.l3;
    let next = l3[6]!;
    let exts = Buffer.alloc(0);
    for (let i = chain.length - 1; i >= 0; i--) {
      const e = chain[i]!;
      const size = e.type === 44 ? 8 : (e.len + 1) * 8;
      const h = Buffer.alloc(size, e.fill);
      h[0] = next;
      if (e.type !== 44) h[1] = e.len;
      exts = Buffer.concat([h, exts]);
      next = e.type;
    }
    const pkt = Buffer.concat([l3.subarray(0, 40), exts, l3.subarray(40)]);
    pkt[6] = next;
    pkt.writeUInt16BE(pkt.length - 40, 4);
    const l2 = base.bytes.subarray(0, base.bytes.length - l3.length);
    return { kind: `v6 ext ${chain.map((c) => c.type).join(',')}`, bytes: Buffer.concat([l2, pkt]) };
  });

/** An ICMP "fragmentation needed" / ICMPv6 "packet too big" to a VIP address quoting anything. */
const icmpError: fc.Arbitrary<FuzzFrame> = fc
  .record({
    v6: fc.boolean(),
    client4: fc.constantFrom(...CLIENTS4),
    client6: fc.constantFrom(...CLIENTS6),
    vip4: v4Addr,
    vip6: v6Addr,
    qproto: fc.constantFrom('tcp', 'udp', 'icmp'),
    sport: port,
    dport: port,
    garbage: fc.option(bytesArb(0, 60), { nil: undefined }),
    cut: fc.integer({ min: 0, max: 60 }),
    wrongCode: fc.boolean(),
  })
  .map((r): FuzzFrame => {
    const vip = r.v6 ? r.vip6 : r.vip4;
    const client = r.v6 ? r.client6 : r.client4;
    // The quote is the reply the backend sent (VIP → client), or bytes of any kind.
    const quoted = r.garbage ?? ipPacket({ src: vip, dst: client, proto: r.qproto as PacketOpts['proto'], sport: r.dport, dport: r.sport });
    const quote = quoted.subarray(0, Math.max(0, quoted.length - r.cut));
    const rest = Buffer.concat([Buffer.from([0, 0, 5, 0xdc]) /* MTU 1500, in either family's layout */, quote]);
    const o: PacketOpts = {
      src: r.v6 ? '2001:db8:fe::1' : '192.0.2.254',
      dst: vip,
      proto: 'icmp',
      icmpType: r.v6 ? 2 : 3,
      icmpCode: r.wrongCode ? 3 : r.v6 ? 0 : 4,
      icmpRest: rest,
    };
    return {
      kind: `icmp error quoting ${r.garbage ? 'garbage' : r.qproto} cut ${r.cut}`,
      bytes: ethFrame(ipPacket(o), r.v6 ? ETH_P_IPV6 : ETH_P_IP),
    };
  });

const structured = fc.oneof(
  { weight: 4, arbitrary: validFrame },
  { weight: 2, arbitrary: v4Special },
  { weight: 2, arbitrary: v6Special },
  { weight: 2, arbitrary: icmpError },
);

/** A structured frame with a few bytes overwritten (never the Ethernet addresses: they carry no meaning here). */
const mutated: fc.Arbitrary<FuzzFrame> = fc
  .record({
    base: structured,
    edits: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }),
  })
  .map(({ base, edits }): FuzzFrame => {
    const b = Buffer.from(base.bytes);
    for (const e of edits) b[12 + (e.at % (b.length - 12))] = e.value;
    return { kind: `mutated ${base.kind}`, bytes: b };
  });

/** A structured frame cut short (the kernel refuses test runs below an Ethernet header). */
const truncated: fc.Arbitrary<FuzzFrame> = fc.record({ base: structured, keep: fc.nat() }).map(({ base, keep }): FuzzFrame => {
  const len = 14 + (keep % (base.bytes.length - 13));
  return { kind: `truncated(${len}) ${base.kind}`, bytes: base.bytes.subarray(0, len) };
});

/** Random bytes after an Ethernet header naming IPv4, IPv6 or VLAN (or anything). */
const random: fc.Arbitrary<FuzzFrame> = fc
  .record({
    type: fc.oneof(fc.constantFrom(ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q), fc.integer({ min: 0, max: 0xffff })),
    body: bytesArb(0, 120),
    version: fc.constantFrom(4, 6, -1),
  })
  .map(({ type, body, version }): FuzzFrame => {
    const l2 = Buffer.alloc(14);
    l2.writeUInt16BE(type, 12);
    const b = Buffer.from(body);
    if (version > 0 && b.length > 0) b[0] = (version << 4) | (b[0]! & 0x0f);
    return { kind: `random type ${type.toString(16)}`, bytes: Buffer.concat([l2, b]) };
  });

export const fuzzFrame: fc.Arbitrary<FuzzFrame> = fc.oneof(
  { weight: 3, arbitrary: structured },
  { weight: 3, arbitrary: mutated },
  { weight: 2, arbitrary: truncated },
  { weight: 1, arbitrary: random },
);

// ------------------------------------------------------------- checking

export interface FuzzTally {
  cases: number;
  pass: number;
  drop: number;
  tx: number;
  encapsulated: number;
  echoReplies: number;
  dropsByReason: Partial<Record<DropReason, number>>;
}

/** Runs frames through a harness and checks every invariant; throws an AssertionError naming the frame. */
export class PacketChecker {
  private readonly backends = activeBackends();
  private readonly vipAddrs = new Set(VIP_ADDRS.map((a) => dpAddr(a).bytes.toString('hex')));
  private readonly src4 = dpCidr(SRC4);
  private readonly src6 = dpCidr(SRC6);
  readonly tally: FuzzTally = { cases: 0, pass: 0, drop: 0, tx: 0, encapsulated: 0, echoReplies: 0, dropsByReason: {} };

  constructor(private readonly h: LbHarness) {}

  check(f: FuzzFrame): void {
    const r = this.h.run(f.bytes);
    this.tally.cases++;
    const what = `${f.kind}: ${f.bytes.toString('hex')}`;
    if (r.retval === XDP_PASS) {
      this.tally.pass++;
      assert.deepEqual(r.out, f.bytes, `${what}: passed frames leave untouched`);
    } else if (r.retval === XDP_DROP) {
      this.tally.drop++;
    } else if (r.retval === XDP_TX) {
      this.tally.tx++;
      this.checkTransmitted(f.bytes, r.out, what);
    } else {
      assert.fail(`${what}: verdict ${r.retval} (only PASS, DROP and TX are expected)`);
    }
  }

  private checkTransmitted(input: Buffer, out: Buffer, what: string): void {
    const inEth = parseEth(input);
    const outEth = parseEth(out);
    const outer = parseIp(outEth.l3);
    if (outer.proto === IPPROTO_IPIP || outer.proto === IPPROTO_IPV6) {
      this.tally.encapsulated++;
      this.checkEncap(inEth.l3, outEth, what);
      return;
    }
    // Otherwise only an echo reply, from the VIP address the request was sent to.
    const req = parseIp(inEth.l3);
    assert.ok(outer.proto === IPPROTO_ICMP || outer.proto === IPPROTO_ICMPV6, `${what}: transmitted neither an encapsulation nor ICMP`);
    assert.ok(this.vipAddrs.has(pad16(req.dst)), `${what}: echo reply for an address that is not a VIP's`);
    assert.deepEqual(outer.src, req.dst, `${what}: echo reply from the VIP address`);
    assert.deepEqual(outer.dst, req.src, `${what}: echo reply to the sender`);
    assert.equal(outer.payload[0], outer.version === 4 ? 0 : 129, `${what}: echo reply type`);
    assert.ok(outer.checksumOk, `${what}: echo reply IPv4 header checksum`);
    assert.equal(l4ChecksumOk(outer), l4ChecksumOk(req), `${what}: echo reply checksum as valid as the request's`);
    this.tally.echoReplies++;
  }

  private checkEncap(inL3: Buffer, outEth: ReturnType<typeof parseEth>, what: string): void {
    const outer = parseIp(outEth.l3);
    assert.deepEqual(outEth.dstMac, GW_MAC, `${what}: next-hop MAC`);
    const inner = parseIp(outer.payload);
    assert.equal(outer.proto, inner.version === 4 ? IPPROTO_IPIP : IPPROTO_IPV6, `${what}: outer protocol names the inner family`);
    if (outer.version === 4) {
      assert.ok(outer.checksumOk, `${what}: outer IPv4 header checksum`);
      assert.equal(outer.lenField, outEth.l3.length, `${what}: outer total length`);
      assert.ok(prefixHolds(this.src4, outer.src), `${what}: outer source in ${SRC4}`);
    } else {
      assert.equal(outer.lenField + 40, outEth.l3.length, `${what}: outer payload length`);
      assert.ok(prefixHolds(this.src6, outer.src), `${what}: outer source in ${SRC6}`);
    }
    assert.deepEqual(outer.payload, inL3.subarray(0, outer.payload.length), `${what}: inner packet is the input's`);
    assert.equal(outer.payload.length, inner.raw.length, `${what}: the whole inner packet`);
    const vipIds = this.backends.get(pad16(outer.dst));
    assert.ok(vipIds !== undefined, `${what}: outer destination ${outer.dst.toString('hex')} is not a backend in service`);
    const vip = FUZZ_VIPS.find((v) => vipIds.has(v.id) && dpAddr(v.addr).bytes.toString('hex') === pad16(inner.dst));
    assert.ok(vip !== undefined, `${what}: backend ${outer.dst.toString('hex')} does not serve a VIP at the inner destination`);
    if (inner.proto === IPPROTO_TCP || inner.proto === IPPROTO_UDP) {
      const proto = inner.proto === IPPROTO_TCP ? 'tcp' : 'udp';
      const dport = inner.payload.readUInt16BE(2);
      const ok = FUZZ_VIPS.some((v) => vipIds.has(v.id) && v.addr === vip.addr && v.proto === proto && (v.port === 0 || v.port === dport));
      assert.ok(ok, `${what}: backend serves no VIP for ${proto} port ${dport}`);
    }
  }

  /** Counter deltas since `before` must match the verdicts tallied since `tallyBefore`. */
  checkCounters(before: CounterSnapshot, tallyBefore: FuzzTally): void {
    const after = snapshotCounters(this.h);
    const drops = DROP_REASONS.reduce((n, r) => n + Number(after.drops[r] - before.drops[r]), 0);
    for (const r of DROP_REASONS) {
      const d = Number(after.drops[r] - before.drops[r]);
      if (d > 0) this.tally.dropsByReason[r] = (this.tally.dropsByReason[r] ?? 0) + d;
    }
    assert.equal(drops, this.tally.drop - tallyBefore.drop, 'every drop is counted under a reason');
    assert.equal(Number(after.drops.none - before.drops.none), 0, 'no drop is counted without a reason');
    assert.equal(Number(after.pass - before.pass), this.tally.pass - tallyBefore.pass, 'every pass is counted');
    assert.equal(Number(after.rx - before.rx), this.tally.cases - tallyBefore.cases, 'every frame is counted as received');
  }
}

export interface CounterSnapshot {
  rx: bigint;
  pass: bigint;
  drops: Record<DropReason, bigint>;
}

export function snapshotCounters(h: LbHarness): CounterSnapshot {
  const c = h.dp.counterValues();
  const d = h.dp.dropCounts();
  return {
    rx: c.rx.packets,
    pass: c.pass_non_ip.packets + c.pass_non_vip.packets + c.pass_vip_other.packets,
    drops: Object.fromEntries(DROP_REASONS.map((r) => [r, d[r].packets])) as Record<DropReason, bigint>,
  };
}

/**
 * Runs `runs` fuzz cases from `seed`; the counters are checked after every
 * `batch` cases. Returns the tally. Throws fast-check's report (seed, path,
 * the shrunk frame) on the first broken invariant.
 */
export function fuzzPackets(
  h: LbHarness,
  o: { seed: number; runs: number; batch?: number; onProgress?: (t: FuzzTally) => void },
): FuzzTally {
  const checker = new PacketChecker(h);
  const batch = o.batch ?? 10_000;
  let done = 0;
  while (done < o.runs) {
    const n = Math.min(batch, o.runs - done);
    const before = snapshotCounters(h);
    const tallyBefore = { ...checker.tally };
    fc.assert(
      fc.property(fuzzFrame, (f) => checker.check(f)),
      { seed: o.seed + done, numRuns: n, endOnFailure: true },
    );
    checker.checkCounters(before, tallyBefore);
    done += n;
    o.onProgress?.(checker.tally);
  }
  return checker.tally;
}

// --------------------------------------------------------------- helpers

function pad16(b: Buffer): string {
  return Buffer.concat([b, Buffer.alloc(16 - b.length)]).toString('hex');
}

/** Whether `addr` (4 or 16 bytes) lies in the prefix `c`. */
function prefixHolds(c: ReturnType<typeof dpCidr>, addr: Buffer): boolean {
  const bits = c.addr.family === FERRY_AF_INET ? 32 : 128;
  const x = Buffer.alloc(16);
  addr.copy(x);
  const net = Buffer.from(c.addr.bytes);
  clearHostBits(x, c.prefix, bits);
  clearHostBits(net, c.prefix, bits);
  return x.equals(net);
}
