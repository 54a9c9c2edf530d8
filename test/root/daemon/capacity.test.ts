/**
 * Maps at capacity. The API refuses what the datapath cannot hold with 507
 * naming the setting to raise, and changes nothing (VIP and backend ids:
 * test/unit/store/store.test.ts and test/unit/api/api.test.ts); a full conntrack never
 * moves an established flow: the entry evicted, the Maglev table (unchanged)
 * answers with the same backend.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { LbDatapath } from '../../../src/datapath/lb.js';
import { Reconciler } from '../../../src/reconcile/reconciler.js';
import { planState } from '../../../src/reconcile/plan.js';
import { call, makeApi, problemOf, type Api } from '../../lib/api-fixture.js';
import { LbHarness, XDP_TX, bpfUnavailable, ensureBpffs, flowOf } from '../../lib/harness.js';
import { IPPROTO_TCP, TCP_ACK, TCP_SYN, frame, parseEth, parseIp } from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping capacity tests: ${skip}`);

const CONFIG = { seed: 1, src4: '198.19.255.0/24', src6: '2001:db8:ff::/112', skipFib: true };

describe('capacity: the API refuses what the maps cannot hold (real datapath)', { skip }, () => {
  const pinRoot = `/sys/fs/bpf/ferry-test-capacity-${process.pid}`;
  let dp: LbDatapath;
  let api: Api;

  before(async () => {
    ensureBpffs();
    rmSync(pinRoot, { recursive: true, force: true });
    // Room for 8 source rules and for one 251-slot table beside its replacement (+ a spare slot), not two.
    dp = LbDatapath.open({
      pinRoot,
      sizes: { maxVips: 8, maxVipAddrs: 8, maxBackends: 64, ctSize: 1024, maxPolicyRules: 8, maglevSlots: 600 },
    });
    const applier = new Reconciler(dp, CONFIG);
    api = await makeApi({ maxVips: 8, maxBackends: 64, applier });
  });
  after(async () => {
    await api?.close();
    dp?.close();
    rmSync(pinRoot, { recursive: true, force: true });
  });

  /** The maps equal the committed state: nothing of a refused change stayed behind. */
  function assertMapsMatchStore(): void {
    const state = api.store.read((tx) => tx.state());
    const reconciler = new Reconciler(dp, CONFIG);
    assert.deepEqual(reconciler.verify(planState(state)), []);
  }

  it('source rules beyond bpf.max_policy_rules: 507, nothing written', async () => {
    const cidrs = (n: number) => Array.from({ length: n }, (_, i) => `203.0.${i}.0/24`);
    const ok = await call(api.app, {
      method: 'POST',
      url: '/v1/vips',
      body: { name: 'a', address: '198.18.0.1', port: 80, protocol: 'tcp', maglev_m: 251, allow: cidrs(6) },
    });
    assert.equal(ok.statusCode, 201);
    const rev = api.store.revision();
    const p = problemOf(
      await call(api.app, {
        method: 'POST',
        url: '/v1/vips',
        body: { name: 'b', address: '198.18.0.2', port: 80, protocol: 'tcp', deny: cidrs(3) },
      }),
      507,
      'capacity',
    );
    assert.match(p.detail ?? '', /bpf\.max_policy_rules = 8/);
    assert.equal(api.store.revision(), rev);
    problemOf(await call(api.app, { url: '/v1/vips/b' }), 404);
    assertMapsMatchStore();
  });

  it('Maglev tables beyond bpf.maglev_slots: 507, nothing written', async () => {
    const rev = api.store.revision();
    const p = problemOf(
      await call(api.app, {
        method: 'POST',
        url: '/v1/vips',
        body: { name: 'c', address: '198.18.0.3', port: 80, protocol: 'tcp', maglev_m: 251 },
      }),
      507,
      'capacity',
    );
    assert.match(p.detail ?? '', /bpf\.maglev_slots = 600/);
    assert.equal(api.store.revision(), rev);
    assertMapsMatchStore();
  });
});

describe('capacity: a full conntrack keeps established flows on their backend', { skip }, () => {
  let h: LbHarness;
  before(() => {
    // 64 entries asked: 22 buckets of 3 rounded up to 32 (96 entries).
    h = new LbHarness(`/sys/fs/bpf/ferry-test-ctfull-${process.pid}`, { ctSize: 64 });
    h.vip({
      id: 0,
      addr: '198.18.0.10',
      port: 80,
      proto: 'tcp',
      backends: Array.from({ length: 8 }, (_, i) => ({ id: i, addr: `198.18.1.${i + 1}` })),
    });
  });
  after(() => h?.close());

  const backendOf = (out: Buffer): string => [...parseIp(parseEth(out).l3).dst].join('.');

  it('evicted by a flood of new flows, the established flows still reach the same backends', () => {
    const client = (i: number) => `198.51.100.${1 + (i % 200)}`;
    const established = Array.from({ length: 50 }, (_, i) => ({ src: client(i), sport: 10_000 + i }));
    const chosen = established.map((f) => {
      const r = h.run(frame({ src: f.src, dst: '198.18.0.10', proto: 'tcp', sport: f.sport, dport: 80, tcpFlags: TCP_SYN }));
      assert.equal(r.retval, XDP_TX);
      return backendOf(r.out);
    });
    assert.ok(new Set(chosen).size > 1, 'the flows are spread over backends');
    // 20,000 new flows through a 96-entry table: every established entry is evicted many times over.
    for (let i = 0; i < 20_000; i++) {
      const r = h.run(
        frame({
          src: `203.0.113.${i % 250}`,
          dst: '198.18.0.10',
          proto: 'tcp',
          sport: 20_000 + (i % 40_000),
          dport: 80,
          tcpFlags: TCP_SYN,
        }),
      );
      assert.equal(r.retval, XDP_TX);
    }
    const evicted = established.filter((f) => h.dp.ct.get(flowOf(f.src, '198.18.0.10', f.sport, 80, IPPROTO_TCP)) === undefined).length;
    assert.ok(evicted >= 45, `the flood evicted the established entries (${evicted} of 50)`);
    established.forEach((f, i) => {
      const r = h.run(frame({ src: f.src, dst: '198.18.0.10', proto: 'tcp', sport: f.sport, dport: 80, tcpFlags: TCP_ACK }));
      assert.equal(r.retval, XDP_TX);
      assert.equal(backendOf(r.out), chosen[i], `flow ${f.src}:${f.sport} stays on its backend`);
    });
  });
});
