/**
 * End to end through the lab: real TCP and UDP connections from a client
 * namespace to VIPs on xdp_lb (native XDP on veth), decapsulated by tc_decap
 * on three backends that answer the client directly.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BACKEND_DRAINING } from '../src/datapath/abi.js';
import type { VipProgram } from '../src/datapath/program.js';
import { LbLab, repliesBypassedLb } from '../src/lab/lblab.js';
import { bpfUnavailable } from './lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping lab tests: ${skip}`);

const VIP4 = '198.19.0.20';
const VIP6 = '2001:db8:f::20';
const N = 300;

describe('lab: real traffic through xdp_lb', { skip }, () => {
  let lab: LbLab;
  let http4: VipProgram;

  before(async () => {
    lab = await LbLab.start({ backends: 3, vips: [VIP4, VIP6] });
    const be = lab.lab.backends;
    http4 = { id: 0, addr: VIP4, port: 80, proto: 'tcp', m: 1021, backends: be.map((b, i) => ({ id: i, addr: b.addr4 })) };
    lab.programVip(http4);
    lab.programVip({ id: 1, addr: VIP4, port: 53, proto: 'udp', m: 1021, backends: be.map((b, i) => ({ id: 10 + i, addr: b.addr4 })) });
    lab.programVip({ id: 2, addr: VIP6, port: 0, proto: 'tcp', m: 1021, backends: be.map((b, i) => ({ id: 20 + i, addr: b.addr6 })) });
    lab.programVip({ id: 3, addr: VIP6, port: 53, proto: 'udp', m: 1021, backends: be.map((b, i) => ({ id: 30 + i, addr: b.addr4 })) });
  });
  after(() => lab?.stop());

  /** Every backend answered, each within ±40% of an even share. */
  function assertSpread(per: Record<string, number>, total: number, names: string[]): void {
    for (const n of names) {
      const got = per[n] ?? 0;
      assert.ok(got > (total / names.length) * 0.6 && got < (total / names.length) * 1.4, `${n}: ${got} of ${total} (${JSON.stringify(per)})`);
    }
  }

  for (const [kind, vip, what] of [
    ['http', VIP4, 'TCP over IPv4 in IPv4'],
    ['http', VIP6, 'TCP over IPv6 in IPv6 to an all-port VIP'],
    ['udp', VIP4, 'UDP over IPv4 in IPv4'],
    ['udp', VIP6, 'UDP over IPv6 in IPv4'],
  ] as const) {
    it(`${what}: every request answered, spread over the backends, replies bypass the LB`, async () => {
      const lbBefore = lab.linkCounters(lab.lab.lb);
      const cBefore = lab.linkCounters(lab.lab.client);
      const r = await lab.client(kind, vip, N);
      const lbAfter = lab.linkCounters(lab.lab.lb);
      const cAfter = lab.linkCounters(lab.lab.client);
      assert.equal(r.errors, 0);
      assertSpread(r.per_backend, N, ['be1', 'be2', 'be3']);
      const lbRx = lbAfter.rxPackets - lbBefore.rxPackets;
      const cTx = cAfter.txPackets - cBefore.txPackets;
      const cRx = cAfter.rxPackets - cBefore.rxPackets;
      assert.ok(repliesBypassedLb(lbRx, cTx, cRx), `LB received ${lbRx}; client sent ${cTx}, received ${cRx}`);
    });
  }

  it('follows weights: 2:1:1 gives the first backend about half the flows', async () => {
    http4.backends.forEach((b, i) => (b.weight = i === 0 ? 2 : 1));
    lab.programVip(http4);
    const r = await lab.client('http', VIP4, 400);
    assert.equal(r.errors, 0);
    const share = (r.per_backend['be1'] ?? 0) / 400;
    assert.ok(share > 0.4 && share < 0.6, `be1 share ${share} (${JSON.stringify(r.per_backend)})`);
    http4.backends.forEach((b) => delete b.weight);
    lab.programVip(http4);
  });

  it('a draining backend gets no new flows', async () => {
    http4.backends[0]!.state = BACKEND_DRAINING;
    lab.programVip(http4);
    const r = await lab.client('http', VIP4, 200);
    assert.equal(r.errors, 0);
    assert.equal(r.per_backend['be1'] ?? 0, 0, JSON.stringify(r.per_backend));
    assertSpread(r.per_backend, 200, ['be2', 'be3']);
  });

  it('counts what it forwarded and dropped nothing', () => {
    const st = lab.dp.vipStats.sum(0);
    assert.ok(st.packets > 0n && st.new_flows > 0n && st.ct_hits > 0n, JSON.stringify(st, (_, v) => (typeof v === 'bigint' ? String(v) : v)));
    const drops = Object.entries(lab.dp.dropCounts()).filter(([, c]) => c.packets > 0n);
    assert.deepEqual(drops, []);
    const c = lab.dp.counterValues();
    assert.equal(c.fib_fallback.packets, 0n, 'next hops came from bpf_fib_lookup');
    assert.ok(c.tx.packets > 0n);
  });
});
