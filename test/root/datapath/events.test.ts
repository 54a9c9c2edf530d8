/**
 * Live events, datapath side: xdp_lb's ferry_events ring buffer under
 * BPF_PROG_TEST_RUN, read through the native addon's ring API. Sampled new
 * flows carry the right fields, every drop reason is reported with its
 * source, the per-second cap holds under a flood (the rest counted as
 * suppressed), a full ring counts what it refused, and events off means
 * none. Also the ring API's own contracts (non-blocking, bounded, errors).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BACKEND_DOWN,
  COUNTERS,
  CtBucket,
  CtEntry,
  DROP_REASONS,
  FERRY_AF_INET,
  FERRY_AF_INET6,
  FERRY_BACKEND_NONE,
  FERRY_EVENT_DROP,
  FERRY_EVENT_FLOW,
  FERRY_VIP_NONE,
  FLOW_REASONS,
  FerryEvent,
  FlowKey,
  LbConfig,
  POLICY_DENY,
  VIP_F_POLICY,
  VIP_F_SNAT,
  type CounterName,
  type DropReason,
  type FerryEventV,
} from '../../../src/datapath/abi.js';
import { mappedBytes, dpAddr, dpCidr } from '../../../src/datapath/addr.js';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { LbDatapath } from '../../../src/datapath/lb.js';
import { ctHash } from '../../../src/datapath/hash.js';
import { u32 } from '../../../src/datapath/maps.js';
import { eventBudget, onlineCpus, type ConfigProgram } from '../../../src/datapath/program.js';
import {
  BPF_MAP_TYPE_ARRAY,
  BPF_MAP_TYPE_LRU_HASH,
  BPF_MAP_TYPE_PERCPU_ARRAY,
  BPF_MAP_TYPE_RINGBUF,
  isNativeError,
} from '../../../src/datapath/native.js';
import { LbHarness, XDP_DROP, XDP_TX, bpfUnavailable, flowOf } from '../../lib/harness.js';
import {
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_SYN,
  csumAdd,
  ethFrame,
  frame,
  ipHeader,
  ipPacket,
  parseEth,
} from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping event tests: ${skip}`);

const CLIENT4 = '198.18.100.1';
const CLIENT6 = '2001:db8:100::1';
const V4 = { id: 0, addr: '198.18.0.10', port: 80 };
const V6 = { id: 1, addr: '2001:db8::10', port: 80 };
const UDP4 = { id: 2, addr: '198.18.0.10', port: 53 };
const POL = { id: 3, addr: '198.18.0.13', port: 80 };
const RL = { id: 4, addr: '198.18.0.14', port: 80 };
const EMPTY = { id: 5, addr: '198.18.0.15', port: 80 };
const FOREIGN = { id: 6, addr: '198.18.0.16', port: 80 };
const NAT = { id: 7, addr: '198.18.0.17', port: 80 };

const be4 = (base: number, n: number) => Array.from({ length: n }, (_, i) => ({ id: base + i, addr: `198.18.1.${base + i}` }));
const be6 = (base: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ id: base + i, addr: `2001:db8:1::${(base + i).toString(16)}` }));

const addr16 = (ip: string) => dpAddr(ip).bytes;

describe('live events', { skip }, () => {
  let h: LbHarness;
  let ring: number;

  const take = (max = 1 << 16): FerryEventV[] =>
    h.dp.nat.ringConsume(ring, max).map((b) => {
      assert.equal(b.length, FerryEvent.size, 'fixed-size records');
      return FerryEvent.decode(b);
    });
  const counter = (c: CounterName) => h.dp.counterValues()[c].packets;
  /** Events on: every flow, a cap far above what a test sends; the budget starts full. */
  const eventsOn = (o: { eventsFlowSample?: number; eventsPerSecond?: number; eventsCpus?: number; snat?: ConfigProgram['snat'] } = {}) => {
    h.setConfig({ eventsFlowSample: 1, eventsPerSecond: 1_000_000, ...o });
    h.dp.eventBudget.reset(0);
  };
  const tcp = (src: string, dst: string, sport: number, dport: number, flags = TCP_SYN) =>
    frame({ src, dst, proto: 'tcp', sport, dport, tcpFlags: flags, payload: Buffer.from('hi') });

  before(() => {
    h = new LbHarness(`/sys/fs/bpf/ferry-test-ev-${process.pid}`);
    h.vip({ ...V4, proto: 'tcp', backends: be4(10, 3) });
    h.vip({ ...V6, proto: 'tcp', backends: be6(20, 3) });
    h.vip({ ...UDP4, proto: 'udp', backends: be4(30, 2) });
    h.vip({ ...POL, proto: 'tcp', flags: VIP_F_POLICY, backends: be4(40, 2) });
    h.vip({ ...RL, proto: 'tcp', backends: be4(50, 2), rlIntervalNs: 60_000_000_000n, rlToleranceNs: 0n });
    h.vip({ ...EMPTY, proto: 'tcp', backends: [] });
    h.vip({ ...FOREIGN, proto: 'tcp', backends: [] });
    h.dp.setMaglevTable(FOREIGN.id, new Uint32Array(251).fill(10)); // backend 10 is V4's
    h.vip({ ...NAT, proto: 'tcp', flags: VIP_F_SNAT, backends: [{ id: 70, addr: '10.244.0.70', port: 8080 }] });
    const c = dpCidr('198.18.200.0/24');
    h.dp.policy.set({ prefixlen: 32 + 96 + c.prefix, vip_id: POL.id, addr: mappedBytes(c.addr) }, { action: POLICY_DENY });
    ring = h.dp.nat.ringOpen(h.dp.eventsFd);
  });
  after(() => {
    if (ring) h.dp.nat.ringClose(ring);
    h?.close();
  });

  it('struct ferry_event, flow reasons and event kinds match the C headers', () => {
    assert.equal(FerryEvent.size, 64);
    assert.deepEqual([...FLOW_REASONS], ['maglev', 'ct_stale']);
    assert.deepEqual([FERRY_EVENT_FLOW, FERRY_EVENT_DROP], [1, 2]);
    assert.ok(COUNTERS.indexOf('events_suppressed') > COUNTERS.indexOf('ct_stale'), 'new counters at the end');
    assert.equal(h.dp.nat.mapInfo(h.dp.eventsFd).type, BPF_MAP_TYPE_RINGBUF);
    assert.equal(h.dp.nat.mapInfo(h.dp.eventsFd).maxEntries, 1 << 20, 'ring size: the default 1 MiB');
  });

  it('events off: no flow and no drop events, nothing counted', () => {
    h.setConfig({ eventsFlowSample: 1, eventsPerSecond: 0 });
    take();
    const c0 = { e: counter('events'), s: counter('events_suppressed'), l: counter('events_lost') };
    assert.equal(h.run(tcp(CLIENT4, V4.addr, 1000, 80)).retval, XDP_TX);
    assert.equal(h.run(tcp('198.18.200.1', POL.addr, 1000, 80)).retval, XDP_DROP);
    assert.deepEqual(take(), []);
    assert.deepEqual({ e: counter('events'), s: counter('events_suppressed'), l: counter('events_lost') }, c0);
    // A cap but no flow sample: drops only.
    h.setConfig({ eventsFlowSample: 0, eventsPerSecond: 1000 });
    assert.equal(h.run(tcp(CLIENT4, V4.addr, 1001, 80)).retval, XDP_TX);
    assert.equal(h.run(tcp('198.18.200.1', POL.addr, 1001, 80)).retval, XDP_DROP);
    assert.deepEqual(
      take().map((e) => e.kind),
      [FERRY_EVENT_DROP],
    );
  });

  it('sample 1: every new flow is an event with client, VIP, backend, protocol and family', () => {
    eventsOn();
    take();
    const cases = [
      { client: CLIENT4, vip: V4, proto: IPPROTO_TCP, family: FERRY_AF_INET },
      { client: CLIENT6, vip: V6, proto: IPPROTO_TCP, family: FERRY_AF_INET6 },
      { client: CLIENT4, vip: UDP4, proto: IPPROTO_UDP, family: FERRY_AF_INET },
    ];
    const t0 = process.hrtime.bigint();
    for (const c of cases) {
      for (let sport = 2000; sport < 2010; sport++) {
        const f =
          c.proto === IPPROTO_TCP
            ? tcp(c.client, c.vip.addr, sport, c.vip.port)
            : frame({ src: c.client, dst: c.vip.addr, proto: 'udp', sport, dport: c.vip.port, payload: Buffer.from('q') });
        assert.equal(h.run(f).retval, XDP_TX);
        const evs = take();
        assert.equal(evs.length, 1, `one event for the new flow ${c.client} ${sport}`);
        const e = evs[0]!;
        const flow = flowOf(c.client, c.vip.addr, sport, c.vip.port, c.proto);
        assert.equal(e.kind, FERRY_EVENT_FLOW);
        assert.equal(FLOW_REASONS[e.reason], 'maglev');
        assert.deepEqual(e.src, addr16(c.client));
        assert.deepEqual(e.dst, addr16(c.vip.addr));
        assert.equal(e.sport, sport);
        assert.equal(e.dport, c.vip.port);
        assert.equal(e.proto, c.proto);
        assert.equal(e.family, c.family);
        assert.equal(e.vip_id, c.vip.id);
        assert.equal(e.backend_id, h.expectedBackend(c.vip.id, flow), 'the backend Maglev chose');
        assert.equal(e.frame_len, f.length);
        assert.equal(e.pad, 0);
        assert.ok(e.ts_ns >= t0 && e.ts_ns <= process.hrtime.bigint(), 'timestamp on the monotonic clock');
        // The flow's next packet hits conntrack: no event.
        const next = c.proto === IPPROTO_TCP ? tcp(c.client, c.vip.addr, sport, c.vip.port, TCP_ACK) : f;
        assert.equal(h.run(next).retval, XDP_TX);
        assert.deepEqual(take(), [], 'established packets are not events');
      }
    }
  });

  it('a flow whose backend went away is re-picked with reason ct_stale', () => {
    eventsOn();
    const sport = 3000;
    assert.equal(h.run(tcp(CLIENT4, V4.addr, sport, 80)).retval, XDP_TX);
    const first = take();
    assert.equal(first.length, 1);
    const old = first[0]!.backend_id;
    const spec = h.vipSpecs.get(V4.id)!;
    const b = spec.backends.find((x) => x.id === old)!;
    b.state = BACKEND_DOWN;
    h.backend(V4.id, b);
    h.rebuildTable(V4.id);
    try {
      assert.equal(h.run(tcp(CLIENT4, V4.addr, sport, 80, TCP_ACK)).retval, XDP_TX);
      const evs = take();
      assert.equal(evs.length, 1);
      assert.equal(FLOW_REASONS[evs[0]!.reason], 'ct_stale');
      assert.notEqual(evs[0]!.backend_id, old);
      assert.equal(evs[0]!.backend_id, h.expectedBackend(V4.id, flowOf(CLIENT4, V4.addr, sport, 80, IPPROTO_TCP)));
    } finally {
      delete b.state;
      h.backend(V4.id, b);
      h.rebuildTable(V4.id);
    }
  });

  it('sample N reports about 1 in N new flows', () => {
    const n = 4;
    const flows = 2000;
    eventsOn({ eventsFlowSample: n });
    take();
    for (let i = 0; i < flows; i++) h.run(tcp(`198.18.${101 + (i >> 8)}.${i & 255}`, V4.addr, 4000, 80));
    const got = take().filter((e) => e.kind === FERRY_EVENT_FLOW).length;
    // Binomial(2000, 1/4): mean 500, sd 19.4; allow 5 sd.
    assert.ok(got > 400 && got < 600, `${got} flow events for ${flows} flows at 1 in ${n}`);
  });

  it('every drop reason is an event with its reason, VIP (when known) and source', () => {
    eventsOn();
    take();
    const good4 = tcp(CLIENT4, V4.addr, 5000, 80);
    const l3 = parseEth(good4).l3;
    const mut = (f: (b: Buffer) => void) => {
      const b = Buffer.from(good4);
      f(b);
      return b;
    };
    const withOpt = Buffer.concat([l3.subarray(0, 20), Buffer.from([1, 1, 1, 0]), l3.subarray(20)]);
    withOpt[0] = 0x46;
    withOpt.writeUInt16BE(withOpt.length, 2);
    withOpt.writeUInt16BE(0, 10);
    withOpt.writeUInt16BE(~csumAdd(withOpt.subarray(0, 24)) & 0xffff, 10);
    const l36 = parseEth(tcp(CLIENT6, V6.addr, 5000, 80)).l3;
    const ext = Buffer.concat([l36.subarray(0, 40), Buffer.from([IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 0]), l36.subarray(40)]);
    ext[6] = 0; // hop-by-hop options
    ext.writeUInt16BE(ext.length - 40, 4);
    const seg = ipPacket({ src: CLIENT4, dst: V4.addr, proto: 'tcp', dport: 80 });
    const cutL4 = ipHeader(addr16(CLIENT4).subarray(0, 4), addr16(V4.addr).subarray(0, 4), IPPROTO_TCP, seg.subarray(20, 32));
    const badQuote = frame({
      src: '198.18.99.1',
      dst: V4.addr,
      proto: 'icmp',
      icmpType: 3,
      icmpCode: 4,
      icmpRest: Buffer.alloc(4),
      payload: Buffer.from('short'),
    });

    interface Case {
      reason: DropReason;
      frame: Buffer;
      src: string;
      sport: number;
      vip: number;
      setup?: () => void;
      undo?: () => void;
    }
    const cases: Case[] = [
      {
        reason: 'malformed_l3',
        frame: mut((b) => {
          b[14] = 0x44;
        }),
        src: CLIENT4,
        sport: 0,
        vip: FERRY_VIP_NONE,
      },
      { reason: 'malformed_l4', frame: ethFrame(cutL4, ETH_P_IP), src: CLIENT4, sport: 0, vip: FERRY_VIP_NONE },
      { reason: 'ip_options', frame: ethFrame(withOpt, ETH_P_IP), src: CLIENT4, sport: 0, vip: FERRY_VIP_NONE },
      {
        reason: 'fragment',
        frame: mut((b) => {
          b[20] = 0x20;
        }),
        src: CLIENT4,
        sport: 0,
        vip: FERRY_VIP_NONE,
      },
      { reason: 'ipv6_exthdr', frame: ethFrame(ext, ETH_P_IPV6), src: CLIENT6, sport: 0, vip: FERRY_VIP_NONE },
      { reason: 'policy', frame: tcp('198.18.200.9', POL.addr, 5001, 80), src: '198.18.200.9', sport: 5001, vip: POL.id },
      {
        reason: 'rate_limit',
        frame: tcp(CLIENT4, RL.addr, 5003, 80),
        src: CLIENT4,
        sport: 5003,
        vip: RL.id,
        setup: () => {
          h.run(tcp(CLIENT4, RL.addr, 5002, 80));
          take();
        },
      },
      { reason: 'no_backend', frame: tcp(CLIENT4, EMPTY.addr, 5004, 80), src: CLIENT4, sport: 5004, vip: EMPTY.id },
      { reason: 'bad_backend', frame: tcp(CLIENT4, FOREIGN.addr, 5005, 80), src: CLIENT4, sport: 5005, vip: FOREIGN.id },
      {
        reason: 'no_encap_source',
        frame: tcp(CLIENT4, V4.addr, 5006, 80),
        src: CLIENT4,
        sport: 5006,
        vip: V4.id,
        setup: () => {
          h.setConfig({ src4: null, eventsFlowSample: 0, eventsPerSecond: 1_000_000 });
        },
        undo: () => eventsOn(),
      },
      {
        reason: 'no_route',
        frame: tcp(CLIENT4, V4.addr, 5007, 80),
        src: CLIENT4,
        sport: 5007,
        vip: V4.id,
        setup: () => {
          h.setConfig({ gwMac: Buffer.alloc(6), eventsFlowSample: 0, eventsPerSecond: 1_000_000 });
        },
        undo: () => eventsOn(),
      },
      { reason: 'icmp_malformed', frame: badQuote, src: '198.18.99.1', sport: 0, vip: FERRY_VIP_NONE },
      // No source NAT configured. (Flow events off: the flow was balanced before the drop, as for no_encap_source.)
      {
        reason: 'no_snat_source',
        frame: tcp(CLIENT4, NAT.addr, 5008, 80),
        src: CLIENT4,
        sport: 5008,
        vip: NAT.id,
        setup: () => eventsOn({ eventsFlowSample: 0 }),
        undo: () => eventsOn(),
      },
      {
        reason: 'no_snat_port',
        frame: tcp(CLIENT4, NAT.addr, 5010, 80),
        src: CLIENT4,
        sport: 5010,
        vip: NAT.id,
        setup: () => {
          eventsOn({ eventsFlowSample: 0, snat: { src4: '198.18.0.2', src6: null, portMin: 61000, portMax: 61000 } });
          assert.equal(h.run(tcp(CLIENT4, NAT.addr, 5009, 80)).retval, XDP_TX, 'the one port taken');
          take();
        },
        undo: () => eventsOn(),
      },
    ];
    for (const c of cases) {
      c.setup?.();
      try {
        const d0 = h.dp.dropCounts()[c.reason].packets;
        assert.equal(h.run(c.frame).retval, XDP_DROP, c.reason);
        assert.equal(h.dp.dropCounts()[c.reason].packets - d0, 1n, `${c.reason} counted`);
        const evs = take();
        assert.equal(evs.length, 1, `${c.reason}: one event`);
        const e = evs[0]!;
        assert.equal(e.kind, FERRY_EVENT_DROP, c.reason);
        assert.equal(DROP_REASONS[e.reason], c.reason);
        assert.deepEqual(e.src, addr16(c.src), `${c.reason}: source address`);
        assert.equal(e.sport, c.sport, `${c.reason}: source port`);
        assert.equal(e.vip_id, c.vip, `${c.reason}: VIP id`);
        assert.equal(e.backend_id, FERRY_BACKEND_NONE);
        assert.equal(e.frame_len, c.frame.length);
      } finally {
        c.undo?.();
      }
    }
    // encap_failed and too_big cannot happen under BPF_PROG_TEST_RUN (ample headroom; lo's MTU is 65536).
    const covered = new Set(cases.map((c) => c.reason));
    assert.deepEqual(
      DROP_REASONS.filter((r) => r !== 'none' && !covered.has(r)),
      ['encap_failed', 'too_big'],
    );
  });

  it('the cap holds under a flood; the rest is counted as suppressed', () => {
    const cap = 100;
    const cpus = onlineCpus();
    eventsOn({ eventsPerSecond: cap });
    take();
    const c0 = { e: counter('events'), s: counter('events_suppressed'), l: counter('events_lost') };
    const junk = tcp(CLIENT4, V4.addr, 6000, 80);
    junk[20] = 0x20; // a fragment to a VIP: dropped, an event each
    const n = 10_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) h.run(junk);
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    // And one call that repeats the frame in the kernel: one CPU, as fast as it goes.
    h.dp.nat.progTestRun(h.dp.progFd, { data: junk, repeat: n });
    const total = Number(process.hrtime.bigint() - t0) / 1e9;
    const got = take().length;
    const emitted = Number(counter('events') - c0.e);
    const suppressed = Number(counter('events_suppressed') - c0.s);
    const lost = Number(counter('events_lost') - c0.l);
    const { intervalNs } = eventBudget(cap, cpus);
    assert.equal(got, emitted, 'every event written reached the reader');
    assert.equal(lost, 0);
    assert.equal(emitted + suppressed, 2 * n, 'every drop is an event or a suppressed one');
    const bound = cap * (total + 1) + cpus;
    assert.ok(emitted <= bound, `${emitted} events in ${total.toFixed(3)} s: at most cap x (t + 1 s) = ${bound.toFixed(0)}`);
    assert.ok(emitted >= Math.min(cap, 1e9 / Number(intervalNs)), `the budget is used: ${emitted} events (one CPU's share at least)`);
    console.log(
      `# flood: ${2 * n} drops in ${total.toFixed(3)} s (loop ${elapsed.toFixed(3)} s), ${emitted} events, ${suppressed} suppressed (cap ${cap}/s over ${cpus} CPUs)`,
    );
  });

  it('a full ring refuses events and counts them as lost; nothing blocks', () => {
    const small = new LbHarness(`/sys/fs/bpf/ferry-test-ev-small-${process.pid}`, { eventRingBytes: 4096 });
    let r = 0;
    try {
      assert.equal(small.dp.nat.mapInfo(small.dp.eventsFd).maxEntries, 4096);
      small.setConfig({ eventsPerSecond: 1_000_000 });
      small.vip({ ...EMPTY, proto: 'tcp', backends: [] });
      r = small.dp.nat.ringOpen(small.dp.eventsFd);
      const l0 = small.dp.counterValues().events_lost.packets;
      const e0 = small.dp.counterValues().events.packets;
      for (let i = 0; i < 200; i++) assert.equal(small.run(tcp(CLIENT4, EMPTY.addr, 7000 + i, 80)).retval, XDP_DROP);
      const written = Number(small.dp.counterValues().events.packets - e0);
      const lost = Number(small.dp.counterValues().events_lost.packets - l0);
      assert.equal(written + lost, 200);
      assert.equal(written, Math.floor(4096 / 72), '64-byte records with an 8-byte header: 56 fit in 4 KiB');
      const got = small.dp.nat.ringConsume(r, 1000);
      assert.equal(got.length, written);
      assert.deepEqual(
        got.map((b) => FerryEvent.decode(b).sport),
        Array.from({ length: written }, (_, i) => 7000 + i),
        'oldest first',
      );
      // Room again: the next drop is written.
      assert.equal(small.run(tcp(CLIENT4, EMPTY.addr, 9999, 80)).retval, XDP_DROP);
      assert.equal(small.dp.nat.ringConsume(r, 10).length, 1);
    } finally {
      if (r) small.dp.nat.ringClose(r);
      small.close();
    }
    // Checked before anything is created.
    const bad = `/sys/fs/bpf/ferry-test-ev-bad-${process.pid}`;
    assert.throws(() => LbDatapath.open({ pinRoot: bad, sizes: { eventRingBytes: 5000 } }), /power of 2/);
    assert.equal(existsSync(bad), false);
  });

  it('an upgrade recreates pinned maps whose layout changed (config, counters, ring, conntrack); a restart keeps conntrack', () => {
    const nat = h.dp.nat;
    const root = `/sys/fs/bpf/ferry-test-ev-up-${process.pid}`;
    const sizes = { ctSize: 4096, maxBackends: 1024, maxVips: 64, maxVipAddrs: 64, maxPolicyRules: 256 };
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root);
    const pin = (name: string, type: number, keySize: number, valueSize: number, maxEntries: number) => {
      const fd = nat.mapCreate({ type, name, keySize, valueSize, maxEntries });
      nat.objPin(fd, `${root}/${name}`);
      return fd;
    };
    // The layouts before live events: a 44-byte lb_config, 10 counters; a 64 KiB ring; an LRU conntrack.
    const fds = [
      pin('ferry_config', BPF_MAP_TYPE_ARRAY, 4, 44, 1),
      pin('ferry_counters', BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, 10),
      pin('ferry_events', BPF_MAP_TYPE_RINGBUF, 0, 0, 65536),
      pin('ferry_ct', BPF_MAP_TYPE_LRU_HASH, FlowKey.size, 16, 4096),
    ];
    for (const fd of fds) nat.closeFd(fd);
    const flow = flowOf(CLIENT4, V4.addr, 1234, 80, IPPROTO_TCP);
    let dp: LbDatapath | undefined;
    try {
      dp = LbDatapath.open({ pinRoot: root, sizes });
      assert.deepEqual(dp.replacedPins.sort(), ['ferry_config', 'ferry_counters', 'ferry_ct', 'ferry_events']);
      assert.equal(nat.mapInfo(dp.config.fd).valueSize, LbConfig.size);
      assert.equal(nat.mapInfo(dp.eventsFd).maxEntries, 1 << 20);
      // An entry as xdp_lb writes it, in the flow's bucket.
      const { bucketHash, fingerprint } = ctHash(flow);
      const bucket = Buffer.alloc(CtBucket.size);
      CtEntry.encodeInto({ fp: fingerprint, backend_id: 7, backend_gen: 3 }, bucket, 0);
      nat.mapUpdate(dp.ct.fd, u32((bucketHash & (dp.ct.buckets - 1)) >>> 0), bucket, 0);
      dp.close();
      dp = LbDatapath.open({ pinRoot: root, sizes });
      assert.deepEqual(dp.replacedPins, [], 'a matching pin is reused');
      assert.deepEqual(dp.ct.get(flow), { backend_id: 7, backend_gen: 3, last_seen: 0 }, 'flows survive a restart');
      dp.close();
      // A changed conntrack size starts an empty table: flows then follow their Maglev backend.
      dp = LbDatapath.open({ pinRoot: root, sizes: { ...sizes, ctSize: 8192 } });
      assert.deepEqual(dp.replacedPins.sort(), ['ferry_config', 'ferry_ct'], 'with the config that holds its mask');
      assert.equal(dp.ct.get(flow), undefined);
    } finally {
      dp?.close();
      rmSync(root, { recursive: true, force: true });
    }
  });

  describe('native ring API', () => {
    const nat = () => h.dp.nat;
    const code = (fn: () => unknown, c: string, msg?: RegExp) =>
      assert.throws(fn, (e: unknown) => {
        assert.ok(isNativeError(e), `a native error: ${String(e)}`);
        assert.equal(e.code, c, e.message);
        if (msg) assert.match(e.message, msg);
        return true;
      });

    it('consumes without blocking, at most maxRecords, oldest first', () => {
      eventsOn();
      take();
      assert.deepEqual(nat().ringConsume(ring, 10), [], 'empty ring: an empty array at once');
      for (let i = 0; i < 5; i++) h.run(tcp('198.18.200.1', POL.addr, 8000 + i, 80));
      const one = nat().ringConsume(ring, 1);
      assert.equal(one.length, 1);
      assert.ok(Buffer.isBuffer(one[0]));
      assert.equal(FerryEvent.decode(one[0]!).sport, 8000);
      assert.deepEqual(
        nat()
          .ringConsume(ring, 3)
          .map((b) => FerryEvent.decode(b).sport),
        [8001, 8002, 8003],
      );
      assert.deepEqual(
        nat()
          .ringConsume(ring, 100)
          .map((b) => FerryEvent.decode(b).sport),
        [8004],
      );
    });

    it('two handles on one ring share its position', () => {
      const other = nat().ringOpen(h.dp.eventsFd);
      try {
        h.run(tcp('198.18.200.1', POL.addr, 8100, 80));
        assert.equal(nat().ringConsume(other, 10).length, 1);
        assert.deepEqual(nat().ringConsume(ring, 10), []);
      } finally {
        nat().ringClose(other);
      }
    });

    it('refuses bad arguments and stale handles with errno errors', () => {
      const arr = nat().mapCreate({ type: BPF_MAP_TYPE_ARRAY, name: 'ferry_t_arr', keySize: 4, valueSize: 4, maxEntries: 1 });
      try {
        code(() => nat().ringOpen(arr), 'EINVAL', /not a ring buffer/);
      } finally {
        nat().closeFd(arr);
      }
      code(() => nat().ringOpen(h.dp.progFd), 'EINVAL', /BPF program/);
      code(() => nat().ringOpen(987654), 'EBADF');
      code(() => nat().ringOpen(-1), 'EINVAL');
      code(() => nat().ringOpen('3' as unknown as number), 'EINVAL');
      code(() => nat().ringConsume(ring, 0), 'EINVAL');
      code(() => nat().ringConsume(ring, 1.5), 'EINVAL');
      code(() => nat().ringConsume(ring, undefined as unknown as number), 'EINVAL');
      code(() => nat().ringConsume(424242, 1), 'EBADF', /no open ring buffer/);
      code(() => nat().ringConsume(0, 1), 'EINVAL');
      const hd = nat().ringOpen(h.dp.eventsFd);
      nat().ringClose(hd);
      code(() => nat().ringClose(hd), 'EBADF');
      code(() => nat().ringConsume(hd, 1), 'EBADF');
    });

    it('keeps reading after the map fd is closed (the ring maps the pages itself)', () => {
      const fd = nat().objGet(`${h.pinRoot}/ferry_events`);
      const hd = nat().ringOpen(fd);
      nat().closeFd(fd);
      try {
        eventsOn();
        take();
        h.run(tcp('198.18.200.1', POL.addr, 8200, 80));
        assert.deepEqual(
          nat()
            .ringConsume(hd, 10)
            .map((b) => FerryEvent.decode(b).sport),
          [8200],
        );
      } finally {
        nat().ringClose(hd);
      }
    });
  });
});
