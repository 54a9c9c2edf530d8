/**
 * xdp_lb, packet by packet: frames go in through BPF_PROG_TEST_RUN on the
 * real kernel, and the bytes that come out are checked field by field.
 */
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import assert from 'node:assert/strict';
import {
  BACKEND_ACTIVE,
  BACKEND_DOWN,
  BACKEND_DRAINING,
  FERRY_AF_INET,
  FERRY_BACKEND_NONE,
  POLICY_ALLOW,
  POLICY_DENY,
  VIP_F_ALLOWLIST,
  VIP_F_POLICY,
  VIP_F_SRC_AFFINITY,
  VipKey,
  type DropReason,
  type CounterName,
  type FlowKeyV,
} from '../../../src/datapath/abi.js';
import { mappedBytes, dpAddr, dpCidr } from '../../../src/datapath/addr.js';
import { ctHash } from '../../../src/datapath/hash.js';
import { indexBucketsOf } from '../../../src/datapath/vipindex.js';
import type { BackendProgram } from '../../../src/datapath/program.js';
import {
  GW_MAC,
  LbHarness,
  XDP_DROP,
  XDP_PASS,
  XDP_TX,
  bpfUnavailable,
  expectedOuterSource,
  flowOf,
  type VipSpec,
} from '../../lib/harness.js';
import {
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_IPIP,
  IPPROTO_IPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  MAC_CLIENT,
  MAC_LB,
  TCP_ACK,
  TCP_SYN,
  csumAdd,
  ethFrame,
  frame,
  ipHeader,
  ipPacket,
  l4ChecksumOk,
  parseEth,
  parseIp,
  type PacketOpts,
} from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping datapath tests: ${skip}`);

const CLIENT4 = '198.18.100.1';
const CLIENT6 = '2001:db8:100::1';

/** VIP ids and their addresses in this suite. */
const V4 = { id: 0, addr: '198.18.0.10' };
const V6 = { id: 1, addr: '2001:db8::10' };
const V4to6 = { id: 2, addr: '198.18.0.11' };
const V6to4 = { id: 3, addr: '2001:db8::11' };
const UDP4 = { id: 4, addr: '198.18.0.10' };
const ALLPORT = { id: 5, addr: '198.18.0.12' };

const be4 = (base: number, n: number): BackendProgram[] =>
  Array.from({ length: n }, (_, i) => ({ id: base + i, addr: `198.18.1.${base + i}` }));
const be6 = (base: number, n: number): BackendProgram[] =>
  Array.from({ length: n }, (_, i) => ({ id: base + i, addr: `2001:db8:1::${(base + i).toString(16)}` }));

describe('xdp_lb', { skip }, () => {
  let h: LbHarness;
  /** backend address text (canonical) → id */
  const idByAddr = new Map<string, number>();

  const counters = () => h.dp.counterValues();
  const drops = () => h.dp.dropCounts();
  const dropDelta = (before: Record<DropReason, { packets: bigint }>, r: DropReason) => drops()[r].packets - before[r].packets;
  const cntDelta = (before: Record<CounterName, { packets: bigint }>, c: CounterName) => counters()[c].packets - before[c].packets;
  /** Remembers backends' addresses, so assertEncap can name the one a frame went to. */
  const know = (...backends: BackendProgram[]) => {
    for (const b of backends) idByAddr.set(dpAddr(b.addr).bytes.toString('hex'), b.id);
  };
  /** Declares a VIP with its backends and table. */
  const declare = (spec: VipSpec) => {
    h.vip(spec);
    know(...spec.backends);
  };
  /** Adds backends to a declared VIP and rebuilds its table. */
  const grow = (spec: VipSpec & { backends: BackendProgram[] }, added: BackendProgram[]) => {
    spec.backends.push(...added);
    for (const b of added) h.backend(spec.id, b);
    know(...added);
    h.rebuildTable(spec.id);
  };

  before(() => {
    h = new LbHarness(`/sys/fs/bpf/ferry-test-dp-${process.pid}`);
    const specs = [
      { ...V4, port: 80, proto: 'tcp' as const, backends: be4(10, 3) },
      { ...V6, port: 80, proto: 'tcp' as const, backends: be6(20, 3) },
      { ...V4to6, port: 443, proto: 'tcp' as const, backends: be6(30, 2) },
      { ...V6to4, port: 443, proto: 'tcp' as const, backends: be4(40, 2) },
      { ...UDP4, port: 53, proto: 'udp' as const, backends: be4(50, 3) },
      { ...ALLPORT, port: 0, proto: 'tcp' as const, backends: be4(60, 3) },
    ];
    for (const s of specs) declare(s);
  });
  after(() => h?.close());

  /** Checks an encapsulated frame against the frame that went in; returns the backend id it went to. */
  function assertEncap(input: Buffer, out: Buffer, flow: FlowKeyV): number {
    const flowHashValue = ctHash(flow).outerHash;
    const inEth = parseEth(input);
    const outEth = parseEth(out);
    assert.deepEqual(outEth.dstMac, GW_MAC, 'next hop MAC is the gateway');
    assert.deepEqual(outEth.srcMac, inEth.dstMac, 'source MAC is our own');
    assert.equal(outEth.vlan, inEth.vlan, 'VLAN tag kept');
    const outer = parseIp(outEth.l3);
    assert.equal(outEth.ethertype, outer.version === 4 ? ETH_P_IP : ETH_P_IPV6);
    const inner = parseIp(inEth.l3);
    const innerLen = inner.raw.length;
    assert.equal(outer.proto, inner.version === 4 ? IPPROTO_IPIP : IPPROTO_IPV6, 'outer protocol names the inner family');
    assert.equal(outer.ttl, 64);
    assert.equal(outer.tos, inner.tos, 'DSCP/ECN copied');
    assert.deepEqual(outer.src, expectedOuterSource(outer.version, flowHashValue), "outer source from the flow's conntrack hash");
    if (outer.version === 4) {
      assert.equal(outer.lenField, innerLen + 20);
      assert.ok(outer.checksumOk, 'outer IPv4 checksum');
      assert.equal(outer.fragWord, inner.version === 4 ? inner.fragWord & 0x4000 : 0, 'DF follows the inner packet');
    } else {
      assert.equal(outer.lenField, innerLen);
      assert.equal(outer.flowLabel, flowHashValue & 0xfffff, "flow label from the flow's conntrack hash");
    }
    assert.equal(out.length, input.length + (outer.version === 4 ? 20 : 40));
    assert.deepEqual(outer.payload, inEth.l3, 'inner packet unchanged byte for byte');
    const id = idByAddr.get(Buffer.concat([outer.dst, Buffer.alloc(16 - outer.dst.length)]).toString('hex'));
    assert.ok(id !== undefined, `outer destination ${outer.dst.toString('hex')} is a backend`);
    return id;
  }

  function tcp(src: string, dst: string, sport: number, dport: number, flags = TCP_SYN, extra: Partial<PacketOpts> = {}) {
    return frame({ src, dst, proto: 'tcp', sport, dport, tcpFlags: flags, payload: Buffer.from('hello'), ...extra });
  }

  const cases = [
    { name: 'IPv4 in IPv4', vip: V4, client: CLIENT4, port: 80 },
    { name: 'IPv6 in IPv6', vip: V6, client: CLIENT6, port: 80 },
    { name: 'IPv4 in IPv6', vip: V4to6, client: CLIENT4, port: 443 },
    { name: 'IPv6 in IPv4', vip: V6to4, client: CLIENT6, port: 443 },
  ];
  for (const c of cases) {
    it(`encapsulates ${c.name} to the Maglev-chosen backend`, () => {
      const seen = new Set<number>();
      for (let sport = 30000; sport < 30040; sport++) {
        const input = tcp(c.client, c.vip.addr, sport, c.port, TCP_SYN, { tos: 0x28, df: true });
        const r = h.run(input);
        assert.equal(r.retval, XDP_TX);
        const flow = flowOf(c.client, c.vip.addr, sport, c.port, IPPROTO_TCP);
        const id = assertEncap(input, r.out, flow);
        assert.equal(id, h.expectedBackend(c.vip.id, flow), `flow ${sport} goes where the TypeScript table says`);
        assert.ok(l4ChecksumOk(parseIp(parseIp(parseEth(r.out).l3).payload)), 'inner TCP checksum still valid');
        seen.add(id);
      }
      assert.ok(seen.size > 1, 'flows spread over more than one backend');
    });
  }

  it('balances UDP and keeps datagrams of a flow together', () => {
    for (let sport = 5000; sport < 5020; sport++) {
      const input = frame({ src: CLIENT4, dst: UDP4.addr, proto: 'udp', sport, dport: 53, payload: Buffer.from('q') });
      const flow = flowOf(CLIENT4, UDP4.addr, sport, 53, IPPROTO_UDP);
      const first = h.run(input);
      assert.equal(first.retval, XDP_TX);
      const id = assertEncap(input, first.out, flow);
      assert.equal(id, h.expectedBackend(UDP4.id, flow));
      assert.equal(assertEncap(input, h.run(input).out, flow), id);
    }
  });

  it('matches an all-port VIP on any destination port', () => {
    for (const port of [1, 22, 8080, 65535]) {
      const input = tcp(CLIENT4, ALLPORT.addr, 41000, port);
      const r = h.run(input);
      assert.equal(r.retval, XDP_TX, `port ${port}`);
      const flow = flowOf(CLIENT4, ALLPORT.addr, 41000, port, IPPROTO_TCP);
      assert.equal(assertEncap(input, r.out, flow), h.expectedBackend(ALLPORT.id, flow));
    }
    // An exact VIP on the address wins over nothing: UDP to the all-port TCP VIP passes.
    const before = counters();
    const udp = frame({ src: CLIENT4, dst: ALLPORT.addr, proto: 'udp', sport: 1, dport: 2 });
    const r = h.run(udp);
    assert.equal(r.retval, XDP_PASS);
    assert.deepEqual(r.out, udp);
    assert.equal(cntDelta(before, 'pass_vip_other'), 1n);
  });

  it('keeps the VLAN tag of tagged frames', () => {
    const input = tcp(CLIENT4, V4.addr, 31000, 80, TCP_SYN, { vlan: 42 });
    const r = h.run(input);
    assert.equal(r.retval, XDP_TX);
    const flow = flowOf(CLIENT4, V4.addr, 31000, 80, IPPROTO_TCP);
    assert.equal(assertEncap(input, r.out, flow), h.expectedBackend(V4.id, flow));
    assert.equal(parseEth(r.out).vlan, 42);
  });

  it('passes non-VIP traffic untouched', () => {
    const before = counters();
    for (const input of [
      tcp(CLIENT4, '198.18.0.99', 1234, 80),
      tcp(CLIENT6, '2001:db8::99', 1234, 80),
      tcp(CLIENT4, V4.addr, 1234, 81), // VIP address, no VIP on this port
    ]) {
      const r = h.run(input);
      assert.equal(r.retval, XDP_PASS);
      assert.deepEqual(r.out, input);
    }
    assert.equal(cntDelta(before, 'pass_non_vip'), 2n);
    assert.equal(cntDelta(before, 'pass_vip_other'), 1n);
  });

  it('finds VIPs whose two buckets are full through the overflow map; misses and removals stay exact', () => {
    // Nine VIPs whose keys share both buckets of the index: eight fit, the ninth overflows.
    const mask = h.dp.vipIndex.mask;
    const groups = new Map<string, string[]>();
    let addrs: string[] = [];
    for (let n = 0; addrs.length < 9; n++) {
      const addr = `198.18.${60 + (n >> 8)}.${n & 255}`;
      const [b1, b2] = indexBucketsOf(VipKey.encode({ addr: dpAddr(addr).bytes, port: 80, proto: IPPROTO_TCP, family: 4 }), mask);
      if (b1 === b2) continue;
      const group = groups.get(`${b1}/${b2}`) ?? [];
      group.push(addr);
      groups.set(`${b1}/${b2}`, group);
      if (group.length === 9) addrs = group;
    }
    const vips = addrs.map((addr, i) => ({
      id: 40 + i,
      addr,
      port: 80,
      proto: 'tcp' as const,
      backends: [{ id: 400 + i, addr: `198.18.2.${i}` }],
    }));
    for (const v of vips) {
      h.vip(v);
      know(v.backends[0]!);
    }
    assert.ok(h.dp.vipIndex.overflowed >= 1, 'a key lives in the overflow map');
    const sendTo = (addr: string, dport = 80) => {
      const input = tcp(CLIENT4, addr, 33000, dport);
      return { input, r: h.run(input) };
    };
    for (const v of vips) {
      const { input, r } = sendTo(v.addr);
      assert.equal(r.retval, XDP_TX, v.addr);
      assert.equal(assertEncap(input, r.out, flowOf(CLIENT4, v.addr, 33000, 80, IPPROTO_TCP)), v.backends[0]!.id);
      assert.equal(sendTo(v.addr, 81).r.retval, XDP_PASS, 'no VIP on this port');
    }
    // Removing VIPs leaves the others exactly as they were, overflowed or not.
    for (const v of vips.slice(0, 4)) h.dp.vipIndex.delete({ addr: dpAddr(v.addr).bytes, port: 80, proto: IPPROTO_TCP, family: 4 });
    for (const v of vips.slice(0, 4)) assert.equal(sendTo(v.addr).r.retval, XDP_PASS, `${v.addr} removed`);
    for (const v of vips.slice(4)) assert.equal(sendTo(v.addr).r.retval, XDP_TX, `${v.addr} kept`);
    for (const v of vips.slice(4)) h.dp.vipIndex.delete({ addr: dpAddr(v.addr).bytes, port: 80, proto: IPPROTO_TCP, family: 4 });
    for (const v of vips) h.dp.addrIndex.delete({ addr: dpAddr(v.addr).bytes, family: 4, pad: Buffer.alloc(3) });
    assert.equal(h.dp.vipIndex.overflowed, 0);
    assert.deepEqual(h.dp.vipIndex.read(), h.dp.vipIndex.known(), 'the maps hold what the index wrote');
  });

  it('keeps an established flow on its backend when the table changes; new flows follow the new table', () => {
    const vip = { id: 10, addr: '198.18.0.20', port: 80, proto: 'tcp' as const, backends: be4(100, 2) };
    declare(vip);
    const flows = Array.from({ length: 60 }, (_, i) => 20000 + i);
    const owner = new Map<number, number>();
    for (const sport of flows) {
      const input = tcp(CLIENT4, vip.addr, sport, 80, TCP_SYN);
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      owner.set(sport, assertEncap(input, h.run(input).out, flow));
    }
    // Add three backends: the table changes for most slots.
    const added = be4(102, 3);
    grow(vip, added);
    let moved = 0;
    for (const sport of flows) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      const ack = tcp(CLIENT4, vip.addr, sport, 80, TCP_ACK);
      assert.equal(assertEncap(ack, h.run(ack).out, flow), owner.get(sport), 'established flow stays');
      if (h.expectedBackend(vip.id, flow) !== owner.get(sport)) moved++;
    }
    assert.ok(moved > 10, `the new table moves flows (${moved} of ${flows.length})`);
    // A SYN always consults Maglev, so a reused 5-tuple follows the new table.
    for (const sport of flows) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      const syn = tcp(CLIENT4, vip.addr, sport, 80, TCP_SYN);
      assert.equal(assertEncap(syn, h.run(syn).out, flow), h.expectedBackend(vip.id, flow));
    }
    // Brand-new flows follow the new table.
    for (let sport = 50000; sport < 50030; sport++) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      const syn = tcp(CLIENT4, vip.addr, sport, 80, TCP_SYN);
      assert.equal(assertEncap(syn, h.run(syn).out, flow), h.expectedBackend(vip.id, flow));
    }
  });

  it('counts conntrack hits and misses, and forwarded packets per VIP and backend', () => {
    const vipBefore = h.dp.vipStats.sum(V4.id);
    const input = tcp(CLIENT4, V4.addr, 32000, 80, TCP_SYN);
    const flow = flowOf(CLIENT4, V4.addr, 32000, 80, IPPROTO_TCP);
    const id = assertEncap(input, h.run(input).out, flow);
    const beBefore = h.dp.backendStats.sum(id);
    const ack = tcp(CLIENT4, V4.addr, 32000, 80, TCP_ACK);
    for (let i = 0; i < 5; i++) h.run(ack);
    const vipAfter = h.dp.vipStats.sum(V4.id);
    const beAfter = h.dp.backendStats.sum(id);
    const ipLen = BigInt(parseEth(ack).l3.length);
    assert.equal(vipAfter.packets - vipBefore.packets, 6n);
    assert.equal(vipAfter.new_flows - vipBefore.new_flows, 1n);
    assert.equal(vipAfter.ct_hits - vipBefore.ct_hits, 5n);
    assert.equal(beAfter.packets - beBefore.packets, 5n);
    assert.equal(beAfter.bytes - beBefore.bytes, 5n * ipLen);
    const ct = h.dp.ct.get(flow);
    assert.ok(ct, 'the flow is in conntrack');
    assert.equal(ct.backend_id, id);
    // A non-SYN packet of an unknown flow is a conntrack miss that Maglev resolves.
    const missBefore = h.dp.vipStats.sum(V4.id).ct_misses;
    const stray = tcp(CLIENT4, V4.addr, 32001, 80, TCP_ACK);
    assert.equal(h.run(stray).retval, XDP_TX);
    assert.equal(h.dp.vipStats.sum(V4.id).ct_misses - missBefore, 1n);
  });

  it('drains: a draining backend keeps its flows, a down or reallocated one loses them', () => {
    const vip = { id: 11, addr: '198.18.0.21', port: 80, proto: 'tcp' as const, backends: be4(110, 3) };
    declare(vip);
    // Find flows owned by backend 110.
    const mine: number[] = [];
    for (let sport = 1000; mine.length < 5; sport++) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      if (h.expectedBackend(vip.id, flow) !== 110) continue;
      const syn = tcp(CLIENT4, vip.addr, sport, 80);
      assert.equal(assertEncap(syn, h.run(syn).out, flow), 110);
      mine.push(sport);
    }
    const go = (sport: number, flags: number) => {
      const p = tcp(CLIENT4, vip.addr, sport, 80, flags);
      const r = h.run(p);
      assert.equal(r.retval, XDP_TX);
      return assertEncap(p, r.out, flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP));
    };
    // Draining: out of the table, existing flows stay.
    vip.backends[0]!.state = BACKEND_DRAINING;
    h.backend(vip.id, vip.backends[0]!);
    const table = h.rebuildTable(vip.id);
    assert.ok(!table.includes(110));
    for (const sport of mine) assert.equal(go(sport, TCP_ACK), 110, 'draining backend keeps its flow');
    // Down: existing flows are re-chosen from the table.
    const stale0 = counters().ct_stale.packets;
    vip.backends[0]!.state = BACKEND_DOWN;
    h.backend(vip.id, vip.backends[0]!);
    for (const sport of mine) assert.notEqual(go(sport, TCP_ACK), 110, 'down backend loses its flow');
    assert.equal(counters().ct_stale.packets - stale0, BigInt(mine.length));
    // Re-chosen flows are now pinned to their new backend.
    const now = mine.map((s) => go(s, TCP_ACK));
    // Reallocation: backend id 111 freed and reused with a new generation for another address:
    // conntrack entries naming the old generation must not follow the id.
    const flows111: number[] = [];
    for (let sport = 3000; flows111.length < 3; sport++) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      if (h.expectedBackend(vip.id, flow) !== 111) continue;
      assert.equal(go(sport, TCP_SYN), 111);
      flows111.push(sport);
    }
    vip.backends[1] = { id: 111, addr: '198.18.1.211', gen: 2 };
    know(vip.backends[1]!);
    h.backend(vip.id, vip.backends[1]!);
    h.rebuildTable(vip.id);
    const stale1 = counters().ct_stale.packets;
    for (const sport of flows111) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      assert.equal(go(sport, TCP_ACK), h.expectedBackend(vip.id, flow));
    }
    assert.equal(counters().ct_stale.packets - stale1, BigInt(flows111.length), 'old generation never hits');
    mine.forEach((s, i) => assert.equal(go(s, TCP_ACK), now[i]));
  });

  it('drops, counted, when a VIP has no backend', () => {
    const vip = { id: 12, addr: '198.18.0.22', port: 80, proto: 'tcp' as const, backends: [] };
    h.vip(vip);
    assert.ok(h.tables.get(12)!.every((x) => x === FERRY_BACKEND_NONE));
    const before = drops();
    const vipBefore = h.dp.vipStats.sum(12).drops;
    assert.equal(h.run(tcp(CLIENT4, vip.addr, 1, 80)).retval, XDP_DROP);
    h.dp.deleteMaglevTable(12);
    assert.equal(h.run(tcp(CLIENT4, vip.addr, 2, 80)).retval, XDP_DROP);
    assert.equal(dropDelta(before, 'no_backend'), 2n);
    assert.equal(h.dp.vipStats.sum(12).drops - vipBefore, 2n);
    // A slot naming a backend of another VIP is never used.
    const foreign = new Uint32Array(251).fill(10); // backend 10 belongs to VIP 0
    h.dp.setMaglevTable(12, foreign);
    const b2 = drops();
    assert.equal(h.run(tcp(CLIENT4, vip.addr, 3, 80)).retval, XDP_DROP);
    assert.equal(dropDelta(b2, 'bad_backend'), 1n);
  });

  it('replaces a Maglev table atomically, including a change of M', () => {
    const vip = { id: 13, addr: '198.18.0.23', port: 80, proto: 'tcp' as const, m: 251, backends: be4(130, 4) };
    declare(vip);
    assert.deepEqual(h.dp.getMaglevTable(13), h.tables.get(13));
    vip.m = 509;
    const t = h.rebuildTable(13);
    assert.equal(t.length, 509);
    assert.deepEqual(h.dp.getMaglevTable(13), t);
    for (let sport = 7000; sport < 7020; sport++) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 80, IPPROTO_TCP);
      const syn = tcp(CLIENT4, vip.addr, sport, 80);
      assert.equal(assertEncap(syn, h.run(syn).out, flow), h.expectedBackend(13, flow));
    }
  });

  it("reuses a replaced table's slots only after a grace period has passed, without waiting for one", async () => {
    const m = h.dp.maglev;
    await m.settle();
    const table = (id: number) => new Uint32Array(251).fill(id);
    h.dp.setMaglevTable(16, table(160));
    const a = m.startOf(16);
    h.dp.setMaglevTable(16, table(161));
    const b = m.startOf(16);
    h.dp.setMaglevTable(16, table(162));
    const c = m.startOf(16);
    assert.ok(a > 0 && new Set([a, b, c]).size === 3, `three places: ${a}, ${b}, ${c}`);
    assert.equal(m.stats.syncFences, 0, 'no write waited');
    await m.settle();
    h.dp.setMaglevTable(16, table(163));
    assert.equal(m.startOf(16), Math.min(a, b), 'the first freed slots are taken again');
    h.dp.deleteMaglevTable(16);
  });

  it('switches tables under traffic: every packet meets a whole table, slots are reused only after a grace period', async (t) => {
    // A thread sends SYNs through xdp_lb while this one replaces the VIP's table
    // again and again: each table sends everything to one backend of a pool, and
    // M changes with every switch, so a packet that read M of one table and a
    // slot of another (or slots being rewritten) would drop or go elsewhere.
    const pool = be4(150, 4);
    const vip = { id: 15, addr: '198.18.0.25', port: 80, proto: 'tcp' as const, m: 251, backends: pool };
    declare(vip);
    const before = drops();
    const worker = new Worker(new URL('../../lib/send-worker.js', import.meta.url), {
      workerData: { progFd: h.dp.progFd, frame: tcp(CLIENT4, vip.addr, 9000, 80), ms: 1500 },
    });
    const result = new Promise<{ sent: number; dsts: Record<string, number>; others: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const sizes = [251, 509, 1021, 2039];
    let switches = 0;
    let done = false;
    void result.then(() => (done = true));
    while (!done) {
      const id = pool[switches % pool.length]!.id;
      h.dp.setMaglevTable(vip.id, new Uint32Array(sizes[switches % sizes.length]!).fill(id));
      switches++;
      if (switches % 64 === 0) await new Promise((r) => setImmediate(r));
    }
    const r = await result;
    await h.dp.maglev.settle();
    t.diagnostic(`${r.sent} packets during ${switches} table switches; ${h.dp.maglev.stats.fences} grace periods observed`);
    assert.ok(r.sent > 1000 && switches > 100, `${r.sent} packets, ${switches} switches`);
    assert.equal(r.others, 0, 'every packet was forwarded');
    const wanted = new Set(pool.map((b) => b.addr));
    for (const dst of Object.keys(r.dsts)) assert.ok(wanted.has(dst), `went to ${dst}`);
    for (const reason of ['no_backend', 'bad_backend'] as const) assert.equal(dropDelta(before, reason), 0n, reason);
    assert.ok(h.dp.maglev.stats.fences > 0, 'old tables were freed after grace periods');
    h.dp.setMaglevTable(vip.id, h.rebuildTable(vip.id));
  });

  it('source affinity hashes addresses only', () => {
    const vip = { id: 14, addr: '198.18.0.24', port: 5201, proto: 'tcp' as const, flags: VIP_F_SRC_AFFINITY, backends: be4(140, 4) };
    declare(vip);
    const ids = new Set<number>();
    for (let sport = 100; sport < 120; sport++) {
      const flow = flowOf(CLIENT4, vip.addr, sport, 5201, IPPROTO_TCP);
      const syn = tcp(CLIENT4, vip.addr, sport, 5201);
      ids.add(assertEncap(syn, h.run(syn).out, flow));
      assert.equal([...ids][0], h.expectedBackend(14, flow, true));
    }
    assert.equal(ids.size, 1, 'every connection of one client on one backend');
  });

  it('applies per-VIP deny and allow rules by longest prefix', () => {
    const vip = { id: 15, addr: '198.18.0.25', port: 80, proto: 'tcp' as const, flags: VIP_F_POLICY, backends: be4(150, 2) };
    declare(vip);
    const rule = (cidr: string, vipId: number, action: number) => {
      const c = dpCidr(cidr);
      const bits = c.addr.family === FERRY_AF_INET ? 96 + c.prefix : c.prefix;
      h.dp.policy.set({ prefixlen: 32 + bits, vip_id: vipId, addr: mappedBytes(c.addr) }, { action });
    };
    rule('198.18.200.0/24', 15, POLICY_DENY);
    rule('198.18.200.7/32', 15, POLICY_ALLOW);
    rule('2001:db8:200::/48', 15, POLICY_DENY);
    const before = drops();
    const vipDrops = h.dp.vipStats.sum(15).drops;
    assert.equal(h.run(tcp('198.18.200.1', vip.addr, 1, 80)).retval, XDP_DROP, 'denied /24');
    assert.equal(h.run(tcp('198.18.200.7', vip.addr, 1, 80)).retval, XDP_TX, 'allowed /32 inside the denied /24');
    assert.equal(h.run(tcp('198.18.201.1', vip.addr, 1, 80)).retval, XDP_TX, 'no rule: allowed');
    // The same source to a VIP without policy is not affected.
    assert.equal(h.run(tcp('198.18.200.1', V4.addr, 1, 80)).retval, XDP_TX);
    assert.equal(dropDelta(before, 'policy'), 1n);
    assert.equal(h.dp.vipStats.sum(15).drops - vipDrops, 1n);
    // Allow-list mode: only matching allow rules pass.
    const v6 = {
      id: 16,
      addr: '2001:db8::26',
      port: 80,
      proto: 'tcp' as const,
      flags: VIP_F_POLICY | VIP_F_ALLOWLIST,
      backends: be6(160, 2),
    };
    declare(v6);
    rule('2001:db8:300::/48', 16, POLICY_ALLOW);
    assert.equal(h.run(tcp('2001:db8:300::5', v6.addr, 1, 80)).retval, XDP_TX);
    assert.equal(h.run(tcp('2001:db8:301::5', v6.addr, 1, 80)).retval, XDP_DROP);
    // Established flows are cut when a rule denies them.
    rule('2001:db8:300::5/128', 16, POLICY_DENY);
    assert.equal(h.run(tcp('2001:db8:300::5', v6.addr, 1, 80, TCP_ACK)).retval, XDP_DROP);
    assert.equal(dropDelta(before, 'policy'), 3n);
  });

  it('limits the new-flow rate of a VIP and counts the excess', () => {
    // One new flow per 10 s with a burst of one: the second new flow drops, existing flows pass.
    const vip = {
      id: 17,
      addr: '198.18.0.27',
      port: 80,
      proto: 'tcp' as const,
      backends: be4(170, 2),
      rlIntervalNs: 10_000_000_000n,
      rlToleranceNs: 10_000_000_000n,
    };
    declare(vip);
    const before = drops();
    const results = [1, 2, 3, 4].map((s) => h.run(tcp(CLIENT4, vip.addr, s, 80)).retval);
    assert.equal(results.filter((r) => r === XDP_TX).length, 2, `burst of 1 plus the first flow: ${results}`);
    assert.equal(dropDelta(before, 'rate_limit'), 2n);
    assert.equal(h.run(tcp(CLIENT4, vip.addr, 1, 80, TCP_ACK)).retval, XDP_TX, 'established flow unaffected');
  });

  it('records a TCP flow after its handshake when told to: the SYN leaves no entry, its first ACK does', () => {
    const vip = {
      id: 18,
      addr: '198.18.0.28',
      port: 80,
      proto: 'tcp' as const,
      backends: be4(180, 3),
      rlIntervalNs: 10_000_000_000n,
      rlToleranceNs: 10_000_000_000n,
    };
    declare(vip);
    h.setConfig({ recordAfterHandshake: true });
    try {
      const cBefore = counters();
      const dBefore = drops();
      const sBefore = h.dp.vipStats.sum(vip.id);
      // Rate limit: burst of one plus the first flow. SYNs take the tokens.
      const flow = (s: number) => flowOf(CLIENT4, vip.addr, s, 80, IPPROTO_TCP);
      const owners = new Map<number, number>();
      for (const s of [1, 2, 3, 4]) {
        const syn = tcp(CLIENT4, vip.addr, s, 80, TCP_SYN);
        const r = h.run(syn);
        if (r.retval === XDP_TX) owners.set(s, assertEncap(syn, r.out, flow(s)));
        assert.equal(h.dp.ct.get(flow(s)), undefined, `SYN ${s} left no conntrack entry`);
      }
      assert.deepEqual([...owners.keys()], [1, 2], 'the rate limit still applies to SYNs');
      assert.equal(dropDelta(dBefore, 'rate_limit'), 2n);
      assert.equal(cntDelta(cBefore, 'syn_unrecorded'), 2n);
      assert.equal(h.dp.vipStats.sum(vip.id).new_flows - sBefore.new_flows, 0n, 'a SYN alone is not yet a flow');
      // The handshake's ACK: the same backend, now recorded and counted, and no token taken (none is left).
      for (const [s, owner] of owners) {
        const ack = tcp(CLIENT4, vip.addr, s, 80, TCP_ACK);
        assert.equal(assertEncap(ack, h.run(ack).out, flow(s)), owner, 'the ACK follows its SYN');
        assert.equal(h.dp.ct.get(flow(s))?.backend_id, owner, `flow ${s} recorded by its ACK`);
      }
      assert.equal(dropDelta(dBefore, 'rate_limit'), 2n, 'the recording ACKs took no token');
      assert.equal(h.dp.vipStats.sum(vip.id).new_flows - sBefore.new_flows, 2n);
      // Recorded flows keep their backend when the table changes.
      const added = be4(183, 3);
      grow(vip, added);
      for (const [s, owner] of owners) {
        const ack = tcp(CLIENT4, vip.addr, s, 80, TCP_ACK);
        assert.equal(assertEncap(ack, h.run(ack).out, flow(s)), owner, 'established flow stays after the table changed');
      }
      // UDP has no handshake: its first datagram records the flow as before.
      const udpFlow = flowOf(CLIENT4, UDP4.addr, 4000, 53, IPPROTO_UDP);
      const dgram = frame({ src: CLIENT4, dst: UDP4.addr, proto: 'udp', sport: 4000, dport: 53, payload: Buffer.from('q') });
      assert.equal(h.run(dgram).retval, XDP_TX);
      assert.ok(h.dp.ct.get(udpFlow), 'a UDP flow is recorded at once');
    } finally {
      h.setConfig({});
    }
    // Back to recording on SYN.
    const syn = tcp(CLIENT4, V4.addr, 33000, 80, TCP_SYN);
    assert.equal(h.run(syn).retval, XDP_TX);
    assert.ok(h.dp.ct.get(flowOf(CLIENT4, V4.addr, 33000, 80, IPPROTO_TCP)), 'on_syn records the SYN');
  });

  it('answers ICMP echo requests to a VIP address', () => {
    const before = counters();
    for (const [src, dst] of [
      [CLIENT4, V4.addr],
      [CLIENT6, V6.addr],
    ] as const) {
      const input = frame({ src, dst, proto: 'icmp', payload: Buffer.from('ping-payload'), ttl: 17 });
      const r = h.run(input);
      assert.equal(r.retval, XDP_TX);
      const e = parseEth(r.out);
      assert.deepEqual(e.dstMac, MAC_CLIENT);
      assert.deepEqual(e.srcMac, MAC_LB);
      const ip = parseIp(e.l3);
      const inIp = parseIp(parseEth(input).l3);
      assert.deepEqual(ip.src, inIp.dst);
      assert.deepEqual(ip.dst, inIp.src);
      assert.ok(ip.checksumOk);
      assert.equal(ip.proto, ip.version === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6);
      assert.equal(ip.payload[0], ip.version === 4 ? 0 : 129, 'echo reply');
      assert.ok(l4ChecksumOk(ip), 'ICMP checksum valid');
      assert.deepEqual(ip.payload.subarray(4), inIp.payload.subarray(4), 'id, sequence and data echoed');
    }
    assert.equal(cntDelta(before, 'icmp_echo'), 2n);
  });

  it('steers frag-needed and packet-too-big to the backend that owns the flow', () => {
    const before = counters();
    for (const c of [
      { client: CLIENT4, vip: V4, type: 3, code: 4 },
      { client: CLIENT6, vip: V6, type: 2, code: 0 },
    ]) {
      const sport = 33333;
      const syn = tcp(c.client, c.vip.addr, sport, 80);
      const flow = flowOf(c.client, c.vip.addr, sport, 80, IPPROTO_TCP);
      const owner = assertEncap(syn, h.run(syn).out, flow);
      // The backend's reply (VIP → client) as a router quotes it.
      const reply = ipPacket({
        src: c.vip.addr,
        dst: c.client,
        proto: 'tcp',
        sport: 80,
        dport: sport,
        tcpFlags: TCP_ACK,
        payload: Buffer.alloc(64),
      });
      const quote = reply.subarray(0, reply[0]! >> 4 === 4 ? 28 + 20 : 40 + 20);
      const mtu = Buffer.alloc(4);
      mtu.writeUInt32BE(c.type === 2 ? 1400 : 1400, 0);
      const router = c.client === CLIENT4 ? '198.18.99.1' : '2001:db8:99::1';
      const icmp = frame({
        src: router,
        dst: c.vip.addr,
        proto: 'icmp',
        icmpType: c.type,
        icmpCode: c.code,
        icmpRest: mtu,
        payload: quote,
      });
      const r = h.run(icmp);
      assert.equal(r.retval, XDP_TX);
      assert.equal(assertEncap(icmp, r.out, flow), owner, 'same backend as the flow');
    }
    assert.equal(cntDelta(before, 'icmp_steered'), 2n);
    // A quote that cannot be parsed is dropped and counted.
    const bad = frame({
      src: '198.18.99.1',
      dst: V4.addr,
      proto: 'icmp',
      icmpType: 3,
      icmpCode: 4,
      icmpRest: Buffer.alloc(4),
      payload: Buffer.from('short'),
    });
    const d = drops();
    assert.equal(h.run(bad).retval, XDP_DROP);
    assert.equal(dropDelta(d, 'icmp_malformed'), 1n);
  });

  it('drops without an outer source address for the backend family', () => {
    h.setConfig({ src4: null });
    try {
      const before = drops();
      assert.equal(h.run(tcp(CLIENT4, V4.addr, 9, 80)).retval, XDP_DROP);
      assert.equal(dropDelta(before, 'no_encap_source'), 1n);
      assert.equal(h.run(tcp(CLIENT6, V6.addr, 9, 80)).retval, XDP_TX, 'IPv6 backends unaffected');
    } finally {
      h.setConfig({});
    }
  });

  it('drops without a route and without a gateway MAC', () => {
    h.setConfig({ gwMac: Buffer.alloc(6) });
    try {
      const before = drops();
      assert.equal(h.run(tcp(CLIENT4, V4.addr, 10, 80)).retval, XDP_DROP);
      assert.equal(dropDelta(before, 'no_route'), 1n);
    } finally {
      h.setConfig({});
    }
  });

  it('leaves Ethernet padding out of the tunnel', () => {
    for (const c of cases) {
      // A bare ACK: 40 (IPv4) or 60 (IPv6) bytes of IP, padded as a short frame is.
      const packet = tcp(c.client, c.vip.addr, 45000, c.port, TCP_ACK, { payload: Buffer.alloc(0) });
      const input = Buffer.concat([packet, Buffer.alloc(Math.max(6, 60 - packet.length), 0xee)]);
      const r = h.run(input);
      assert.equal(r.retval, XDP_TX, c.name);
      const outer = parseIp(parseEth(r.out).l3);
      assert.deepEqual(outer.payload, parseEth(packet).l3, `${c.name}: the inner packet, without the padding`);
      assert.equal(r.out.length, packet.length + (outer.version === 4 ? 20 : 40), `${c.name}: nothing after the outer packet`);
    }
  });

  describe('malformed and unsupported packets', () => {
    const good4 = tcp(CLIENT4, V4.addr, 44444, 80);
    const good6 = tcp(CLIENT6, V6.addr, 44444, 80);

    /** Runs a frame and checks the verdict, that it was not forwarded, and the counter it moved. */
    function expectOutcome(input: Buffer, verdict: number, reason: { drop?: DropReason; counter?: CounterName }, what: string) {
      const d0 = drops();
      const c0 = counters();
      const r = h.run(input);
      assert.equal(r.retval, verdict, what);
      if (verdict === XDP_PASS) assert.deepEqual(r.out, input, `${what}: passed untouched`);
      if (reason.drop) assert.equal(dropDelta(d0, reason.drop), 1n, `${what}: counted as ${reason.drop}`);
      if (reason.counter) assert.equal(cntDelta(c0, reason.counter), 1n, `${what}: counted as ${reason.counter}`);
    }

    it('handles every truncation of a TCP SYN', () => {
      for (const [good, ipOff] of [
        [good4, 14],
        [good6, 14],
      ] as const) {
        const ipHdr = good[ipOff]! >> 4 === 4 ? 20 : 40;
        for (let len = 0; len < good.length; len++) {
          const input = good.subarray(0, len);
          // The kernel never hands XDP a frame shorter than Ethernet; test runs refuse one.
          if (len < 14) assert.throws(() => h.run(input), { code: 'EINVAL' }, `len ${len}`);
          else if (len < ipOff + ipHdr) expectOutcome(input, XDP_DROP, { drop: 'malformed_l3' }, `len ${len}: IP header cut`);
          else expectOutcome(input, XDP_DROP, { drop: 'malformed_l3' }, `len ${len}: shorter than the IP length field`);
        }
      }
    });

    it('drops a VIP packet whose L4 header is cut, even with a consistent IP length', () => {
      for (const [src, dst] of [
        [CLIENT4, V4.addr],
        [CLIENT6, V6.addr],
      ] as const) {
        const seg = ipPacket({ src, dst, proto: 'tcp', dport: 80 });
        const ipLen = seg[0]! >> 4 === 4 ? 20 : 40;
        const s = dpAddr(src).family === 4 ? dpAddr(src).bytes.subarray(0, 4) : dpAddr(src).bytes;
        const dd = dpAddr(dst).family === 4 ? dpAddr(dst).bytes.subarray(0, 4) : dpAddr(dst).bytes;
        const cut = ipHeader(s, dd, IPPROTO_TCP, seg.subarray(ipLen, ipLen + 12));
        expectOutcome(ethFrame(cut, ipLen === 20 ? ETH_P_IP : ETH_P_IPV6), XDP_DROP, { drop: 'malformed_l4' }, 'TCP header of 12 bytes');
      }
      const udp = ipPacket({ src: CLIENT4, dst: UDP4.addr, proto: 'udp', dport: 53 });
      const cutUdp = ipHeader(
        dpAddr(CLIENT4).bytes.subarray(0, 4),
        dpAddr(UDP4.addr).bytes.subarray(0, 4),
        IPPROTO_UDP,
        udp.subarray(20, 24),
      );
      expectOutcome(ethFrame(cutUdp, ETH_P_IP), XDP_DROP, { drop: 'malformed_l4' }, 'UDP header of 4 bytes');
      // TCP data offset below 5.
      const badDoff = Buffer.from(good4);
      badDoff[14 + 20 + 12] = 4 << 4;
      expectOutcome(badDoff, XDP_DROP, { drop: 'malformed_l4' }, 'TCP data offset 4');
    });

    it('drops bad IPv4 headers and counts them', () => {
      const v = (mut: (b: Buffer) => void) => {
        const b = Buffer.from(good4);
        mut(b);
        return b;
      };
      expectOutcome(
        v((b) => {
          b[14] = 0x44;
        }),
        XDP_DROP,
        { drop: 'malformed_l3' },
        'IHL 4',
      );
      expectOutcome(
        v((b) => {
          b[14] = 0x55;
        }),
        XDP_DROP,
        { drop: 'malformed_l3' },
        'version 5',
      );
      expectOutcome(
        v((b) => {
          b.writeUInt16BE(19, 16);
        }),
        XDP_DROP,
        { drop: 'malformed_l3' },
        'total length below the header',
      );
      expectOutcome(
        v((b) => {
          b.writeUInt16BE(9000, 16);
        }),
        XDP_DROP,
        { drop: 'malformed_l3' },
        'total length beyond the frame',
      );
      expectOutcome(
        v((b) => {
          b[20] = 0x20;
        }),
        XDP_DROP,
        { drop: 'fragment' },
        'MF set',
      );
      expectOutcome(
        v((b) => {
          b.writeUInt16BE(0x0010, 20);
        }),
        XDP_DROP,
        { drop: 'fragment' },
        'fragment offset',
      );
      // IPv4 options (IHL 6, one NOP word) to a VIP.
      const l3 = parseEth(good4).l3;
      const withOpt = Buffer.concat([l3.subarray(0, 20), Buffer.from([1, 1, 1, 0]), l3.subarray(20)]);
      withOpt[0] = 0x46;
      withOpt.writeUInt16BE(withOpt.length, 2);
      withOpt.writeUInt16BE(0, 10);
      withOpt.writeUInt16BE(~csumAdd(withOpt.subarray(0, 24)) & 0xffff, 10);
      expectOutcome(ethFrame(withOpt, ETH_P_IP), XDP_DROP, { drop: 'ip_options' }, 'IPv4 options to a VIP');
      // The same to a non-VIP address passes untouched.
      const other = Buffer.from(withOpt);
      Buffer.from([198, 18, 0, 99]).copy(other, 16);
      expectOutcome(ethFrame(other, ETH_P_IP), XDP_PASS, { counter: 'pass_non_vip' }, 'IPv4 options to a non-VIP');
    });

    it('drops IPv6 extension headers and fragments to a VIP', () => {
      const l3 = parseEth(good6).l3;
      const withExt = (nh: number) => {
        const ext = Buffer.alloc(8);
        ext[0] = IPPROTO_TCP;
        const p = Buffer.concat([l3.subarray(0, 40), ext, l3.subarray(40)]);
        p[6] = nh;
        p.writeUInt16BE(p.length - 40, 4);
        return ethFrame(p, ETH_P_IPV6);
      };
      expectOutcome(withExt(44), XDP_DROP, { drop: 'fragment' }, 'fragment header');
      for (const nh of [0, 43, 60]) expectOutcome(withExt(nh), XDP_DROP, { drop: 'ipv6_exthdr' }, `extension header ${nh}`);
      const short = Buffer.from(good6);
      short[14] = 0x50;
      expectOutcome(short, XDP_DROP, { drop: 'malformed_l3' }, 'IPv6 version field wrong');
    });

    it('passes non-IP frames; zero-length frames never reach XDP', () => {
      assert.throws(() => h.run(Buffer.alloc(0)), { code: 'EINVAL' });
      const arp = Buffer.concat([MAC_LB, MAC_CLIENT, Buffer.from([0x08, 0x06]), Buffer.alloc(28)]);
      expectOutcome(arp, XDP_PASS, { counter: 'pass_non_ip' }, 'ARP');
      const vlanArp = Buffer.concat([MAC_LB, MAC_CLIENT, Buffer.from([0x81, 0x00, 0x00, 0x07, 0x08, 0x06]), Buffer.alloc(28)]);
      expectOutcome(vlanArp, XDP_PASS, { counter: 'pass_non_ip' }, 'VLAN-tagged ARP');
    });
  });
});

// Referenced so the suite documents the states it covers.
void BACKEND_ACTIVE;
