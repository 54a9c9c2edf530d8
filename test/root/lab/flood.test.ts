/**
 * Floods in the lab: TCP SYNs and UDP datagrams from random sources (10.200.0.0/16,
 * random ports), as fast as the client's link takes them (src/lab/flood.ts, AF_PACKET
 * sendmmsg), at a VIP on the same backends as a verified long-lived stream.
 * The stream must keep flowing on its backend with every byte echoed in order;
 * the figures (rate offered, packets the datapath saw, conntrack use, drops by
 * reason) are printed for the README.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { StatsBody } from '../../../src/model/status.js';
import { FERRY_CT_WAYS, type FlowKeyV } from '../../../src/datapath/abi.js';
import type { LbDatapath } from '../../../src/datapath/lb.js';
import { LbLab, type LabStream } from '../../../src/lab/lblab.js';
import { existingLabs, type LabHost } from '../../../src/lab/topology.js';
import { join } from 'node:path';
import { nsRun } from '../../../src/lab/exec.js';
import { packageRoot } from '../../../src/paths.js';
import { bpfUnavailable, flowOf } from '../../lib/harness.js';
import type { IdleFlowsSpec } from '../../lib/idle-flows.js';
import { IPPROTO_TCP } from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping the flood tests: ${skip}`);

const STREAM4 = '198.19.0.30';
const FLOOD4 = '198.19.0.40';
const FLOOD_MS = Number(process.env.TEST_FLOOD_MS ?? 3000);

/** Idle established flows recorded before each SYN flood: how many keep their conntrack entry. */
const IDLE_FLOWS = 2000;

interface FloodRun {
  seen: number;
  newFlows: number;
  synUnrecorded: number;
  ctBefore: number;
  ctAfter: number;
  idleKept: number | null;
  xdpNsPerPacket: number | null;
}

describe('floods in the lab', { skip }, () => {
  let lab: LbLab;
  let stream: LabStream;
  let owner: LabHost;
  let dp: LbDatapath;
  let statsFd: number | undefined;
  let idleBatch = 0;
  const runs: Record<string, FloodRun> = {};

  before(async () => {
    lab = await LbLab.start({ backends: 3, vips: [STREAM4, FLOOD4] });
    const be = lab.lab.backends;
    await lab.createVip({ name: 'stream', address: STREAM4, port: 0, protocol: 'tcp', backends: be.map((b) => ({ address: b.addr4 })) });
    await lab.createVip({ name: 'syn', address: FLOOD4, port: 80, protocol: 'tcp', backends: be.map((b) => ({ address: b.addr4 })) });
    await lab.createVip({ name: 'udp', address: FLOOD4, port: 53, protocol: 'udp', backends: be.map((b) => ({ address: b.addr4 })) });
    stream = await lab.stream(STREAM4);
    owner = lab.streamOwner(stream);
    await stream.flowing();
    dp = lab.datapath();
    // xdp_lb's run time per packet during each flood (statistics stay on while the fd is open).
    statsFd = dp.nat.enableStats();
  });

  after(() => {
    stream?.kill();
    if (statsFd !== undefined) dp.nat.closeFd(statsFd);
    const prefix = lab?.lab.prefix;
    lab?.stop();
    if (prefix) assert.ok(!existingLabs().includes(prefix), `lab ${prefix} left something behind`);
  });

  const vipOf = (s: StatsBody, name: string) => s.vips.find((v) => v.name === name)!;

  /** Idle established flows (a handshake each, then silence) recorded in the lab's conntrack. */
  function recordIdleFlows(): FlowKeyV[] {
    const spec: IdleFlowsSpec = {
      pinRoot: join(lab.lab.bpfRoot, 'lb'),
      vip: FLOOD4,
      port: 80,
      srcNet: `10.201.${idleBatch++}`,
      count: IDLE_FLOWS,
    };
    const out = nsRun(lab.lab.lb.ns, process.execPath, [join(packageRoot(), 'dist/test/lib/idle-flows.js'), JSON.stringify(spec)]);
    const { flows } = JSON.parse(out) as { flows: Array<[string, number]> };
    const keys = flows.map(([src, sport]) => flowOf(src, FLOOD4, sport, 80, IPPROTO_TCP));
    assert.equal(keys.filter((f) => dp.ct.get(f) !== undefined).length, IDLE_FLOWS, 'every idle flow is recorded');
    return keys;
  }

  /** One flood while the stream is checked; the figures, printed for the README. */
  async function flood(t: TestContext, name: string, kind: 'syn' | 'udp', port: number): Promise<FloodRun> {
    const idle = kind === 'syn' ? recordIdleFlows() : [];
    const s0 = await lab.stats();
    const c0 = lab.datapathCounters();
    const ct0 = dp.ct.count();
    const rt0 = lab.xdpRunTime();
    const flooding = lab.flood({ kind, vip: FLOOD4, port, srcNet: '10.200.0.0/16', milliseconds: FLOOD_MS, seed: 20261206 });
    // While the flood runs: the stream must go on moving verified bytes.
    let during = 0;
    let done = false;
    void flooding.finally(() => (done = true)).catch(() => undefined);
    while (!done) {
      await stream.flowing(32 * 1024, 30_000);
      during++;
    }
    const r = await flooding;
    const rt1 = lab.xdpRunTime();
    const s1 = await lab.stats();
    const c1 = lab.datapathCounters();
    const ct1 = dp.ct.count();
    await stream.flowing();
    assert.equal(lab.streamOwner(stream).name, owner.name, 'the stream moved');
    const seen = vipOf(s1, kind).packets - vipOf(s0, kind).packets;
    const drops = Object.fromEntries(
      Object.entries(s1.drops)
        .map(([k, n]) => [k, n - (s0.drops[k] ?? 0)])
        .filter(([, n]) => n !== 0),
    );
    assert.ok(r.sent > 0 && seen > 0, `flood sent ${r.sent}, the datapath saw ${seen}`);
    assert.ok(seen <= r.sent, `the datapath saw ${seen} of ${r.sent}`);
    assert.ok(during >= 1, 'the stream was checked while the flood ran');
    const run: FloodRun = {
      seen,
      newFlows: vipOf(s1, kind).new_flows - vipOf(s0, kind).new_flows,
      synUnrecorded: Number(c1.syn_unrecorded - c0.syn_unrecorded),
      ctBefore: ct0,
      ctAfter: ct1,
      idleKept: kind === 'syn' ? idle.filter((f) => dp.ct.get(f) !== undefined).length : null,
      // The kernel counts every run on eth0 (the stream's packets too); statistics may be off in a container.
      xdpNsPerPacket: rt1.runs > rt0.runs ? Math.round((rt1.ns - rt0.ns) / (rt1.runs - rt0.runs)) : null,
    };
    runs[name] = run;
    t.diagnostic(
      `flood ${JSON.stringify({
        name,
        offered_per_second: r.per_second,
        sent: r.sent,
        refused_by_link: r.refused,
        seconds: r.seconds,
        seen_by_xdp: seen,
        new_flows: run.newFlows,
        syn_unrecorded: run.synUnrecorded,
        conntrack_before: ct0,
        conntrack_after: ct1,
        conntrack_capacity: dp.ct.buckets * FERRY_CT_WAYS,
        idle_flows: idle.length,
        idle_flows_kept: run.idleKept,
        xdp_ns_per_packet: run.xdpNsPerPacket,
        drops,
        stream_checks_during: during,
      })}`,
    );
    return run;
  }

  it('a SYN flood from random sources, flows recorded on SYN: the stream keeps its backend', async (t) => {
    const run = await flood(t, 'syn, record_tcp_flows: on_syn', 'syn', 80);
    assert.equal(run.newFlows, run.seen, 'every SYN was a new flow');
    assert.equal(run.synUnrecorded, 0);
  });

  it('the same flood with record_tcp_flows: after_handshake: conntrack untouched, idle flows keep their entries', async (t) => {
    // Turned on as an operator would: config changed, ferryd restarted, the datapath forwarding throughout.
    await lab.reconfigureDaemon({ record_tcp_flows: 'after_handshake' });
    await stream.flowing();
    const run = await flood(t, 'syn, record_tcp_flows: after_handshake', 'syn', 80);
    assert.equal(run.newFlows, 0, 'no SYN became a recorded flow');
    assert.equal(run.synUnrecorded, run.seen, 'every SYN was balanced without an entry');
    assert.ok(run.ctAfter - run.ctBefore <= 8, `conntrack grew by ${run.ctAfter - run.ctBefore} during the flood`);
    assert.equal(run.idleKept, IDLE_FLOWS, 'every idle flow kept its entry');
    const undefended = runs['syn, record_tcp_flows: on_syn'];
    if (undefended) {
      t.diagnostic(
        `saving ${JSON.stringify({
          conntrack_entries_written: { on_syn: undefended.newFlows, after_handshake: run.newFlows },
          idle_flows_kept: { on_syn: undefended.idleKept, after_handshake: run.idleKept, of: IDLE_FLOWS },
          xdp_ns_per_packet: { on_syn: undefended.xdpNsPerPacket, after_handshake: run.xdpNsPerPacket },
        })}`,
      );
    }
  });

  it('a UDP flood from random sources: the stream keeps its backend', async (t) => {
    const run = await flood(t, 'udp', 'udp', 53);
    assert.ok(run.newFlows > 0, 'datagrams from new sources were new flows');
  });

  it('at the end every byte came back, in order, with no reset', async () => {
    const fin = await stream.stop();
    assert.equal(fin.error, null, JSON.stringify(fin));
    assert.equal(fin.closed_by_peer, false, JSON.stringify(fin));
    assert.equal(fin.first_mismatch, null, JSON.stringify(fin));
    assert.equal(fin.received, fin.sent, JSON.stringify(fin));
  });
});
