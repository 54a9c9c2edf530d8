/**
 * End to end, with real traffic through real kernel paths: the lab's client
 * namespace talks to VIPs on xdp_lb (native XDP on veth), which the real
 * ferryd attached and programs from its REST API; tc_decap on the backends
 * decapsulates, and the backends' servers answer the client directly.
 *
 * Statistical checks state their tolerance: a backend's share of new flows
 * is within ±8 percentage points of weight / total weight, over 600 flows
 * (that is 4 standard deviations of the binomial spread or more, so a
 * correct balancer fails it about once in 30,000 runs; Maglev's own table
 * shares are within ~1% at M ≥ 100 × backends).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { StatsBody } from '../../../src/model/status.js';
import type { ClientResult, StreamReport } from '../../../src/lab/client.js';
import { LbLab, repliesBypassedLb, type LabStream } from '../../../src/lab/lblab.js';
import { existingLabs, type LabHost } from '../../../src/lab/topology.js';
import type { VipRecord, VipWithBackends } from '../../../src/model/types.js';
import { bpfUnavailable } from '../../lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping end-to-end tests: ${skip}`);

const VIP4 = '198.19.0.10';
const VIP6 = '2001:db8:f::10';
const ANY4 = '198.19.0.20';
const STREAM4 = '198.19.0.30';
const GUARDED4 = '198.19.0.40';
const LIMITED4 = '198.19.0.41';
const SVC4 = '198.19.0.50';
const GUARDED6 = '2001:db8:f::40';
const ALL_VIPS = [VIP4, ANY4, STREAM4, GUARDED4, LIMITED4, SVC4, VIP6, GUARDED6];

/** Client sources for the policy tests (in the client's /24 and /64, so backends answer them directly). */
const SRC_ALLOWED4 = '198.18.0.101';
const SRC_DENIED4 = '198.18.0.102';
const SRC_OTHER6 = '2001:db8::65';

const N = 600;
const TOLERANCE = 0.08;

/** Each backend's share of `per` is within TOLERANCE of its weight's share; backends without weight got nothing. */
function assertWeights(per: Record<string, number>, weights: Record<string, number>, what: string): void {
  const total = Object.values(per).reduce((a, b) => a + b, 0);
  const wsum = Object.values(weights).reduce((a, b) => a + b, 0);
  assert.ok(total > 0, `${what}: no flows at all`);
  for (const [name, n] of Object.entries(per)) {
    assert.ok(name in weights, `${what}: ${name} got ${n} flows but takes none (${JSON.stringify(per)})`);
  }
  for (const [name, w] of Object.entries(weights)) {
    const share = (per[name] ?? 0) / total;
    const want = w / wsum;
    assert.ok(
      Math.abs(share - want) <= TOLERANCE,
      `${what}: ${name} share ${share.toFixed(3)}, weight share ${want.toFixed(3)} ± ${TOLERANCE} (${JSON.stringify(per)})`,
    );
  }
}

/** The shared VIPs (backends be1..be3), created before the tests; the balancing tests check each. */
const CASES: Array<{ what: string; kind: 'http' | 'udp'; weights: number[]; vip: (three: LabHost[]) => VipWithBackends }> = [
  {
    what: 'TCP to an IPv4 VIP, IPv4 backends (IPIP), weights 1:2:3',
    kind: 'http',
    weights: [100, 200, 300],
    vip: (three) => ({
      name: 'web4',
      address: VIP4,
      port: 80,
      protocol: 'tcp',
      backends: three.map((b, i) => ({ address: b.addr4, weight: 100 * (i + 1) })),
    }),
  },
  {
    what: 'UDP to an IPv4 VIP, IPv6 backends (4in6), weights 1:2:3',
    kind: 'udp',
    weights: [100, 200, 300],
    vip: (three) => ({
      name: 'dns4',
      address: VIP4,
      port: 53,
      protocol: 'udp',
      backends: three.map((b, i) => ({ address: b.addr6, weight: 100 * (i + 1) })),
    }),
  },
  {
    what: 'TCP to an IPv6 all-port VIP, IPv6 backends (IP6IP6), equal weights',
    kind: 'http',
    weights: [100, 100, 100],
    vip: (three) => ({ name: 'any6', address: VIP6, port: 0, protocol: 'tcp', backends: three.map((b) => ({ address: b.addr6 })) }),
  },
  {
    what: 'UDP to an IPv6 VIP, IPv4 backends (6in4), weights 3:2:1',
    kind: 'udp',
    weights: [300, 200, 100],
    vip: (three) => ({
      name: 'dns6',
      address: VIP6,
      port: 53,
      protocol: 'udp',
      backends: three.map((b, i) => ({ address: b.addr4, weight: 300 - 100 * i })),
    }),
  },
  {
    what: 'TCP to an IPv4 all-port VIP, IPv4 backends, equal weights',
    kind: 'http',
    weights: [100, 100, 100],
    vip: (three) => ({ name: 'any4', address: ANY4, port: 0, protocol: 'tcp', backends: three.map((b) => ({ address: b.addr4 })) }),
  },
];

const json = (v: unknown) => JSON.stringify(v);

describe('end to end: real traffic through ferryd and xdp_lb', { skip }, () => {
  let lab: LbLab;
  let be: LabHost[];
  /** Backend name by address (both families). */
  const nameOf = new Map<string, string>();

  const vipStats = (s: StatsBody, name: string) => {
    const v = s.vips.find((x) => x.name === name);
    assert.ok(v, `no stats for VIP ${name}`);
    return v;
  };
  /** New flows the LB counted per backend name for a VIP, between two stats samples. */
  const newFlowsByBackend = (a: StatsBody, b: StatsBody, vip: string): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const x of vipStats(b, vip).backends) {
      const prev = vipStats(a, vip).backends.find((y) => y.address === x.address)?.new_flows ?? 0;
      if (x.new_flows - prev > 0) out[nameOf.get(x.address)!] = x.new_flows - prev;
    }
    return out;
  };
  const dropDelta = (a: StatsBody, b: StatsBody): Record<string, number> =>
    Object.fromEntries(
      Object.keys(b.drops)
        .map((k) => [k, b.drops[k]! - (a.drops[k] ?? 0)])
        .filter(([, n]) => n !== 0),
    );

  before(async () => {
    lab = await LbLab.start({ backends: 4, vips: ALL_VIPS, drainSeconds: 5 });
    be = lab.lab.backends;
    for (const b of be) {
      nameOf.set(b.addr4, b.name);
      nameOf.set(b.addr6, b.name);
    }
    for (const a of [SRC_ALLOWED4, SRC_DENIED4, SRC_OTHER6]) lab.lab.addClientAddress(a);
    for (const c of CASES) await lab.createVip(c.vip(be.slice(0, 3)));
  });
  after(() => {
    const prefix = lab?.lab.prefix;
    lab?.stop();
    if (prefix) assert.ok(!existingLabs().includes(prefix), `lab ${prefix} left something behind`);
  });

  describe('balancing: TCP and UDP, IPv4 and IPv6 VIPs, all-port VIPs', () => {
    for (const c of CASES) {
      it(`${c.what}: every request answered from the VIP, spread by weight, replies bypass the LB`, async () => {
        const v = c.vip(be.slice(0, 3));
        const weights = Object.fromEntries(be.slice(0, 3).map((b, i) => [b.name, c.weights[i]!]));
        const s0 = await lab.stats();
        const lb0 = lab.linkCounters(lab.lab.lb);
        const c0 = lab.linkCounters(lab.lab.client);
        const r = await lab.client(c.kind, v.address, N);
        const lb1 = lab.linkCounters(lab.lab.lb);
        const c1 = lab.linkCounters(lab.lab.client);
        const s1 = await lab.stats();

        assert.equal(r.errors, 0, json(r));
        // For TCP the handshake itself proves it (a SYN-ACK from elsewhere would not complete it); the
        // UDP client's socket is unconnected and reports whatever address a reply came from.
        assert.deepEqual(r.sources, { [v.address]: N }, 'every reply came from the VIP address');
        assertWeights(r.per_backend, weights, 'answers');
        assertWeights(newFlowsByBackend(s0, s1, v.name), weights, "the LB's new-flow counters");
        const lbRx = lb1.rxPackets - lb0.rxPackets;
        const cTx = c1.txPackets - c0.txPackets;
        const cRx = c1.rxPackets - c0.rxPackets;
        assert.ok(cRx >= N, `the client received ${cRx} packets`);
        assert.ok(repliesBypassedLb(lbRx, cTx, cRx), `replies crossed the LB: it received ${lbRx}; client sent ${cTx}, received ${cRx}`);
        assert.ok(vipStats(s1, v.name).packets - vipStats(s0, v.name).packets >= N, 'xdp_lb counted the requests');
        assert.deepEqual(dropDelta(s0, s1), {}, 'nothing dropped');
      });
    }

    for (const [vip, name] of [
      [ANY4, 'IPv4'],
      [VIP6, 'IPv6'],
    ] as const) {
      it(`an ${name} all-port VIP carries other ports too: a stream to the echo port comes back byte for byte`, async () => {
        const s = await lab.stream(vip);
        await s.flowing(512 * 1024);
        const fin = await s.stop();
        assert.equal(fin.error, null);
        assert.equal(fin.first_mismatch, null);
        assert.equal(fin.received, fin.sent);
        assert.equal(fin.remote_address, vip);
      });
    }
  });

  describe('a long-lived TCP stream survives everything an operator does', () => {
    let s: LabStream;
    let owner: LabHost;
    let removed: LabHost;
    const weights: Record<string, number> = {};

    /** The backends holding the stream's connection: always exactly the one it started on. */
    const assertOwner = () => assert.equal(lab.streamOwner(s).name, owner.name, 'the stream stays on its backend');
    /** New HTTP flows to the stream's VIP: all answered, by backends that take new flows. */
    const newFlows = async (n = 200): Promise<ClientResult> => {
      const r = await lab.client('http', STREAM4, n);
      assert.equal(r.errors, 0, json(r));
      return r;
    };
    const stateNow = async () => ({ state: await lab.state(), vips: await lab.api.list<VipRecord>('/v1/vips') });

    before(async () => {
      await lab.createVip({
        name: 'stream',
        address: STREAM4,
        port: 0,
        protocol: 'tcp',
        backends: be.slice(0, 3).map((b) => ({ address: b.addr4 })),
      });
      for (const b of be.slice(0, 3)) weights[b.name] = 100;
      s = await lab.stream(STREAM4);
      owner = lab.streamOwner(s);
      removed = be.slice(0, 3).find((b) => b !== owner)!;
      await s.flowing();
    });
    after(() => s?.kill());

    it('a backend is added: the stream flows on, the new backend gets new flows', async () => {
      await lab.addBackend('stream', { address: be[3]!.addr4 });
      weights[be[3]!.name] = 100;
      await s.flowing();
      assertOwner();
      const r = await newFlows();
      assert.ok((r.per_backend[be[3]!.name] ?? 0) > 0, `be4 got no new flows: ${json(r.per_backend)}`);
    });

    it('another backend is removed: the stream flows on, the removed one gets no new flows', async () => {
      await lab.removeBackend('stream', removed.addr4);
      delete weights[removed.name];
      await s.flowing();
      assertOwner();
      const r = await newFlows();
      assert.equal(r.per_backend[removed.name] ?? 0, 0, json(r.per_backend));
    });

    it('the Maglev table is rebuilt (new weights, then a new M): the stream flows on', async () => {
      const other = be.find((b) => b !== owner && b !== removed)!;
      await lab.setBackend('stream', other.addr4, { weight: 300 });
      weights[other.name] = 300;
      await s.flowing();
      await lab.updateVip('stream', { maglev_m: 2039 });
      const v = await lab.api.get<VipRecord>('/v1/vips/stream');
      assert.equal(v.maglev_m, 2039);
      await s.flowing();
      assertOwner();
      const r = await newFlows(N);
      assertWeights(r.per_backend, weights, 'new flows after the rebuild');
    });

    it('the streaming backend is drained: it keeps the stream and gets no new flows', async () => {
      await lab.setBackend('stream', owner.addr4, { state: 'draining' });
      delete weights[owner.name];
      await s.flowing();
      assertOwner();
      const r = await newFlows();
      assert.equal(r.per_backend[owner.name] ?? 0, 0, json(r.per_backend));
      await s.flowing();
    });

    it('ferryd is killed with SIGKILL and restarted: the stream flows on, same state, no drift, new flows balanced', async () => {
      const before = await stateNow();
      const prog = lab.xdpProgId();
      await lab.killDaemon();
      await s.flowing();
      const whileDead = await newFlows(100);
      assert.equal(whileDead.per_backend[owner.name] ?? 0, 0, 'the datapath keeps the drain without the daemon');
      await lab.startDaemon();
      const st = await lab.status();
      assert.equal(st.last_reconcile.changes, 0, 'the restarted daemon found the maps as the store says (no drift)');
      assert.equal(st.applied_revision, st.revision);
      assert.deepEqual(await stateNow(), before, 'the API shows the same state');
      assert.notEqual(lab.xdpProgId(), 0);
      assert.ok(prog > 0);
      await s.flowing();
      assertOwner();
      assertWeights((await newFlows(N)).per_backend, weights, 'new flows after the restart');
    });

    it('ferryd is upgraded in place (SIGTERM, a new process on the same pins and database): the stream flows on', async () => {
      const before = await stateNow();
      const prog = lab.xdpProgId();
      await lab.upgradeDaemon();
      const after = lab.xdpProgId();
      assert.ok(after > 0 && after !== prog, `the new process swapped its program into the pinned link (${prog} → ${after})`);
      const st = await lab.status();
      assert.equal(st.last_reconcile.changes, 0, 'no drift after the upgrade');
      assert.deepEqual(await stateNow(), before, 'the API shows the same state');
      await s.flowing();
      assertOwner();
      assertWeights((await newFlows(N)).per_backend, weights, 'new flows after the upgrade');
    });

    it('at the end every byte came back, in order, with no reset', async () => {
      const fin: StreamReport = await s.stop();
      assert.equal(fin.error, null, json(fin));
      assert.equal(fin.closed_by_peer, false, json(fin));
      assert.equal(fin.first_mismatch, null, json(fin));
      assert.equal(fin.received, fin.sent, json(fin));
      // Ten flowing() checks above, each 256 KiB of verified echo.
      assert.ok(fin.sent >= 2.5 * 1024 * 1024, `the stream carried ${fin.sent} bytes`);
    });
  });

  describe('source policy and rate limits drop exactly what they should, counted by reason', () => {
    it('allow 198.18.0.96/28 and deny 198.18.0.102: allowed sources are answered, the others dropped as "policy"', async () => {
      await lab.createVip({
        name: 'guarded4',
        address: GUARDED4,
        port: 53,
        protocol: 'udp',
        allow: ['198.18.0.96/28'],
        deny: [`${SRC_DENIED4}/32`],
        backends: be.slice(0, 3).map((b) => ({ address: b.addr4 })),
      });
      const s0 = await lab.stats();
      const ok = await lab.client('udp', GUARDED4, 30, { source: SRC_ALLOWED4 });
      const denied = await lab.client('udp', GUARDED4, 30, { source: SRC_DENIED4, timeoutMs: 500, parallel: 30 });
      const outside = await lab.client('udp', GUARDED4, 30, { source: lab.lab.client.addr4, timeoutMs: 500, parallel: 30 });
      const s1 = await lab.stats();
      assert.equal(ok.errors, 0, json(ok));
      assert.deepEqual(ok.sources, { [GUARDED4]: 30 });
      assert.equal(denied.errors, 30, json(denied));
      assert.equal(outside.errors, 30, json(outside));
      assert.deepEqual(dropDelta(s0, s1), { policy: 60 }, 'exactly the 60 datagrams of the two refused sources, as "policy"');
      assert.equal(vipStats(s1, 'guarded4').drops - vipStats(s0, 'guarded4').drops, 60);
    });

    it('deny an IPv6 source: its datagrams are dropped as "policy", another source is answered', async () => {
      await lab.createVip({
        name: 'guarded6',
        address: GUARDED6,
        port: 53,
        protocol: 'udp',
        deny: [`${lab.lab.client.addr6}/128`],
        backends: be.slice(0, 3).map((b) => ({ address: b.addr6 })),
      });
      const s0 = await lab.stats();
      const denied = await lab.client('udp', GUARDED6, 20, { source: lab.lab.client.addr6, timeoutMs: 500, parallel: 20 });
      const ok = await lab.client('udp', GUARDED6, 20, { source: SRC_OTHER6 });
      const s1 = await lab.stats();
      assert.equal(denied.errors, 20, json(denied));
      assert.equal(ok.errors, 0, json(ok));
      assert.deepEqual(dropDelta(s0, s1), { policy: 20 });
    });

    it('a new-flow rate limit (2/s, burst 10) admits the burst and drops the rest as "rate_limit"', async () => {
      const rate = 2;
      const burst = 10;
      const n = 60;
      await lab.createVip({
        name: 'limited4',
        address: LIMITED4,
        port: 53,
        protocol: 'udp',
        rate_limit: { new_flows_per_sec: rate, burst },
        backends: be.slice(0, 3).map((b) => ({ address: b.addr4 })),
      });
      const s0 = await lab.stats();
      const t0 = Date.now();
      // All sockets at once: n distinct source ports, so n new flows.
      const r = await lab.client('udp', LIMITED4, n, { timeoutMs: 1000, parallel: n });
      const seconds = (Date.now() - t0) / 1000;
      const s1 = await lab.stats();
      const admitted = vipStats(s1, 'limited4').new_flows - vipStats(s0, 'limited4').new_flows;
      const answered = n - r.errors;
      assert.deepEqual(dropDelta(s0, s1), { rate_limit: r.errors }, `every unanswered datagram was dropped as rate_limit (${json(r)})`);
      assert.equal(admitted, answered, 'every admitted new flow was answered');
      assert.ok(admitted >= burst, `the burst passes: ${admitted} admitted`);
      // GCRA admits burst + 1 at once, then `rate` per second over the run.
      assert.ok(
        admitted <= burst + 1 + Math.ceil(seconds * rate),
        `${admitted} admitted in ${seconds.toFixed(2)} s at ${rate}/s, burst ${burst}`,
      );
    });
  });

  describe('ICMP', () => {
    it('an echo request to a VIP is answered by the LB, from the VIP address (IPv4 and IPv6)', () => {
      const echos = () =>
        be.reduce((n, b) => {
          const s = lab.snmp(b);
          return n + (s['Icmp.InEchos'] ?? 0) + (s['Icmp6InEchos'] ?? 0);
        }, 0);
      const e0 = echos();
      const c0 = lab.datapathCounters();
      for (const vip of [VIP4, VIP6]) {
        const r = lab.ping(vip, 3);
        assert.equal(r.received, 3, `${vip}: ${json(r)}`);
        assert.deepEqual(r.from, { [vip]: 3 });
      }
      const c1 = lab.datapathCounters();
      assert.equal(c1.icmp_echo - c0.icmp_echo, 6n, "xdp_lb's echo counter");
      assert.equal(echos() - e0, 0, 'no backend saw the echo requests');
    });

    for (const [vip, vipName, counter, family] of [
      [ANY4, 'any4', 'Icmp.InDestUnreachs', 'IPv4 frag-needed'],
      [VIP6, 'any6', 'Icmp6InPktTooBigs', 'IPv6 packet-too-big'],
    ] as const) {
      it(`an ${family} from a router, quoting a flow, reaches the backend that owns the flow (even when draining)`, async () => {
        const s = await lab.stream(vip, { rate: 100_000 });
        try {
          await s.flowing(64 * 1024);
          const owner = lab.streamOwner(s);
          const ownerAddr = vip.includes(':') ? owner.addr6 : owner.addr4;
          // Maglev would send no new flow to a draining backend: only the flow's conntrack entry leads there.
          await lab.setBackend(vipName, ownerAddr, { state: 'draining' });
          const before = be.map((b) => lab.snmp(b)[counter] ?? 0);
          const c0 = lab.datapathCounters();
          lab.sendTooBig(vip, 'tcp', 7, s.localAddress, s.localPort, 1400, 3);
          const deadline = Date.now() + 5000;
          let got: number[] = [];
          for (;;) {
            got = be.map((b, i) => (lab.snmp(b)[counter] ?? 0) - before[i]!);
            if (got.reduce((a, b) => a + b, 0) >= 3 || Date.now() > deadline) break;
            await new Promise((r) => setTimeout(r, 50));
          }
          const want = be.map((b) => (b === owner ? 3 : 0));
          assert.deepEqual(got, want, `${counter} per backend (owner ${owner.name})`);
          assert.equal(lab.datapathCounters().icmp_steered - c0.icmp_steered, 3n, "xdp_lb's steered counter");
          await s.flowing(64 * 1024);
          await lab.setBackend(vipName, ownerAddr, { state: 'active' });
        } finally {
          const fin = await s.stop();
          assert.equal(fin.error, null, json(fin));
          assert.equal(fin.received, fin.sent, json(fin));
        }
      });
    }
  });

  describe('a backend whose server stops', () => {
    type Listed = { address: string; health: { status: string } };
    /** Waits until the health checker reports `address` of `vip` in `status` (checks every 200 ms, fall/rise 2). */
    const healthIs = async (vip: string, address: string, status: string): Promise<void> => {
      const started = Date.now();
      let seen = '';
      while (Date.now() - started < 10_000) {
        const page = await lab.api.get<{ items: Listed[] }>(`/v1/vips/${vip}/backends`);
        seen = page.items.find((b) => b.address === address)?.health.status ?? 'missing';
        if (seen === status) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.fail(`${vip}/${address}: health ${seen}, waited 10 s for ${status}`);
    };

    it('is taken out by its health check, gets no new flows, and returns once it serves again', async () => {
      const three = be.slice(0, 3);
      const victim = three[2]!;
      await lab.createVip({
        name: 'svc',
        address: SVC4,
        port: 80,
        protocol: 'tcp',
        health_check: { type: 'http', path: '/', interval_ms: 200, timeout_ms: 150, rise: 2, fall: 2 },
        backends: three.map((b) => ({ address: b.addr4 })),
      });
      for (const b of three) await healthIs('svc', b.addr4, 'up');
      const all = await lab.client('http', SVC4, 150);
      assert.equal(all.errors, 0, json(all));
      assert.deepEqual(Object.keys(all.per_backend).sort(), ['be1', 'be2', 'be3']);

      await lab.stopServer(victim);
      try {
        await healthIs('svc', victim.addr4, 'down');
        const healed = await lab.client('http', SVC4, N);
        assert.equal(healed.errors, 0, json(healed));
        assertWeights(healed.per_backend, { be1: 1, be2: 1 }, 'with be3 down');
      } finally {
        await lab.startServer(victim);
      }
      await healthIs('svc', victim.addr4, 'up');
      const back = await lab.client('http', SVC4, 150);
      assert.equal(back.errors, 0, json(back));
      assert.ok((back.per_backend[victim.name] ?? 0) > 0, json(back.per_backend));
    });
  });
});
