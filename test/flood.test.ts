/**
 * Floods in the lab: TCP SYNs and UDP datagrams from random sources (10.200.0.0/16,
 * random ports), as fast as the client's link takes them (src/lab/flood.ts, AF_PACKET
 * sendmmsg), at a VIP on the same backends as a verified long-lived stream.
 * The stream must keep flowing on its backend with every byte echoed in order;
 * the figures (rate offered, packets the datapath saw, conntrack use, drops by
 * reason) are printed for the README.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatsBody } from '../src/api/types.js';
import { FERRY_CT_WAYS } from '../src/datapath/abi.js';
import { LbDatapath } from '../src/datapath/lb.js';
import { LAB_SIZES } from '../src/lab/ferryd.js';
import { LbLab, type LabStream } from '../src/lab/lblab.js';
import { existingLabs, type LabHost } from '../src/lab/topology.js';
import { bpfUnavailable } from './lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping the flood tests: ${skip}`);

const STREAM4 = '198.19.0.30';
const FLOOD4 = '198.19.0.40';
const FLOOD_MS = Number(process.env.TEST_FLOOD_MS ?? 3000);

describe('floods in the lab', { skip }, () => {
  let lab: LbLab;
  let stream: LabStream;
  let owner: LabHost;
  let dp: LbDatapath;

  before(async () => {
    lab = await LbLab.start({ backends: 3, vips: [STREAM4, FLOOD4] });
    const be = lab.lab.backends;
    await lab.createVip({ name: 'stream', address: STREAM4, port: 0, protocol: 'tcp', backends: be.map((b) => ({ address: b.addr4 })) });
    await lab.createVip({ name: 'syn', address: FLOOD4, port: 80, protocol: 'tcp', backends: be.map((b) => ({ address: b.addr4 })) });
    await lab.createVip({ name: 'udp', address: FLOOD4, port: 53, protocol: 'udp', backends: be.map((b) => ({ address: b.addr4 })) });
    stream = await lab.stream(STREAM4);
    owner = lab.streamOwner(stream);
    await stream.flowing();
    dp = LbDatapath.open({ pinRoot: join(lab.lab.bpfRoot, 'lb'), sizes: LAB_SIZES });
  });

  after(() => {
    stream?.kill();
    dp?.close();
    const prefix = lab?.lab.prefix;
    lab?.stop();
    if (prefix) assert.ok(!existingLabs().includes(prefix), `lab ${prefix} left something behind`);
  });

  const vipOf = (s: StatsBody, name: string) => s.vips.find((v) => v.name === name)!;

  for (const [kind, vip, port] of [['syn', 'syn', 80], ['udp', 'udp', 53]] as const) {
    it(`a ${kind === 'syn' ? 'SYN' : 'UDP'} flood from random sources: the stream keeps its backend, every byte in order`, async (t) => {
      const s0 = await lab.stats();
      const ct0 = dp.ct.count();
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
      const s1 = await lab.stats();
      const ct1 = dp.ct.count();
      await stream.flowing();
      assert.equal(lab.streamOwner(stream).name, owner.name, 'the stream moved');
      const seen = vipOf(s1, vip).packets - vipOf(s0, vip).packets;
      const newFlows = vipOf(s1, vip).new_flows - vipOf(s0, vip).new_flows;
      const drops = Object.fromEntries(Object.entries(s1.drops).map(([k, n]) => [k, n - (s0.drops[k] ?? 0)]).filter(([, n]) => n !== 0));
      assert.ok(r.sent > 0 && seen > 0, `flood sent ${r.sent}, the datapath saw ${seen}`);
      assert.ok(seen <= r.sent, `the datapath saw ${seen} of ${r.sent}`);
      assert.ok(during >= 1, 'the stream was checked while the flood ran');
      t.diagnostic(`flood ${JSON.stringify({
        kind, offered_per_second: r.per_second, sent: r.sent, refused_by_link: r.refused, seconds: r.seconds,
        seen_by_xdp: seen, new_flows: newFlows, conntrack_before: ct0, conntrack_after: ct1, conntrack_capacity: dp.ct.buckets * FERRY_CT_WAYS,
        drops, stream_checks_during: during,
      })}`);
    });
  }

  it('at the end every byte came back, in order, with no reset', async () => {
    const fin = await stream.stop();
    assert.equal(fin.error, null, JSON.stringify(fin));
    assert.equal(fin.closed_by_peer, false, JSON.stringify(fin));
    assert.equal(fin.first_mismatch, null, JSON.stringify(fin));
    assert.equal(fin.received, fin.sent, JSON.stringify(fin));
  });
});
