/**
 * Changes cost what they change: IncrementalPlanner plans only what a
 * write touched and reports it as changes, and the Reconciler applies just
 * those. Checked against the ground truth after every step of a seeded
 * random walk of writes through the real store, controller and datapath:
 * the plan equals a full plan of the same state, its changes name exactly
 * the VIPs that differ from the previous plan, unchanged VIPs keep their
 * objects, and the maps hold exactly what a full reconcile would write
 * (verify finds no difference).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Controller } from '../../../src/control/controller.js';
import { LbDatapath } from '../../../src/datapath/lb.js';
import type { DpState, DpVip } from '../../../src/model/dpstate.js';
import { IncrementalPlanner, planState } from '../../../src/reconcile/plan.js';
import { Reconciler } from '../../../src/reconcile/reconciler.js';
import { openStore } from '../../../src/store/store.js';
import type { Store, StoreTx } from '../../../src/store/types.js';
import { bpfUnavailable, ensureBpffs } from '../../lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping incremental planning tests: ${skip}`);

const SIZES = { ctSize: 4096, maxBackends: 1024, maxVips: 64, maxVipAddrs: 64, maxPolicyRules: 256, maglevSlots: 1 << 20 };
const CONFIG = { seed: 0, src4: '198.19.255.0/24', src6: '2001:db8:ff::/112', skipFib: true };
const STEPS = 150;

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const byName = (s: DpState): Map<string, DpVip> => new Map(s.vips.map((v) => [v.name, v]));

describe('incremental planning and apply', { skip }, () => {
  const root = `/sys/fs/bpf/ferry-test-incr-${process.pid}`;
  let dir: string;
  let store: Store;
  let dp: LbDatapath;

  before(() => {
    ensureBpffs();
    rmSync(root, { recursive: true, force: true });
    dir = mkdtempSync(join(tmpdir(), 'ferry-incr-'));
    store = openStore(join(dir, 'ferry.db'), { maxVips: SIZES.maxVips, maxBackends: SIZES.maxBackends });
    dp = LbDatapath.open({ pinRoot: root, sizes: SIZES });
  });
  after(() => {
    dp?.close();
    store?.close();
    rmSync(root, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it('a random walk of writes: every plan equals a full plan, its changes are exact, the maps never drift', (t) => {
    const seed = CONFIG.seed;
    const rec = new Reconciler(dp, { ...CONFIG, seed: store.read((tx) => tx.snapshot().hash_seed) });
    const planner = new IncrementalPlanner();
    const plans: DpState[] = [];
    const controller = new Controller(store, rec, (state) => {
      const p = planner.plan(state);
      plans.push(p);
      return p;
    });
    void seed;
    let appliedByChanges = 0;
    controller.onApply = (r) => {
      if ((r as { byChanges?: boolean }).byChanges) appliedByChanges++;
    };
    controller.reconcile();
    const random = rng(0x5eed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const vipNames = Array.from({ length: 12 }, (_, i) => `v${i}`);
    const policyNames = ['p0', 'p1', 'p2'];
    let byChanges = 0;
    const ops: Array<[string, (tx: StoreTx) => void]> = [
      [
        'put vip',
        (tx) => {
          const name = pick(vipNames);
          const i = vipNames.indexOf(name);
          tx.putVip({
            name,
            address: `198.18.0.${i + 1}`,
            port: 80,
            protocol: 'tcp',
            policies: random() < 0.3 ? [pick(policyNames)] : [],
            source_affinity: random() < 0.2,
          });
        },
      ],
      ['delete vip', (tx) => tx.deleteVip(pick(vipNames))],
      [
        'put backend',
        (tx) => {
          tx.putBackend(pick(vipNames), {
            address: `198.18.1.${1 + Math.floor(random() * 40)}`,
            weight: pick([0, 1, 50, 100]),
            state: pick(['active', 'active', 'draining', 'disabled'] as const),
          });
        },
      ],
      [
        'delete backend',
        (tx) => {
          const vip = pick(vipNames);
          const backends = tx.listBackends(vip, { limit: 1000 }).items;
          if (backends.length > 0) tx.deleteBackend(vip, pick(backends).address, 30);
        },
      ],
      [
        'put policy',
        (tx) => {
          tx.putPolicy({
            name: pick(policyNames),
            allow: random() < 0.5 ? [`10.${Math.floor(random() * 4)}.0.0/16`] : [],
            deny: ['192.0.2.0/24'],
          });
        },
      ],
    ];
    for (let step = 0; step < STEPS; step++) {
      const [what, op] = pick(ops);
      const planned = plans.length;
      try {
        controller.write('test', what, op);
      } catch {
        continue; // a refused write (not found, conflict, a policy still in use): nothing changed
      }
      if (plans.length === planned) continue; // it changed nothing: no plan
      const p = plans.at(-1)!;
      const prev = plans.at(-2);
      const state = store.read((tx) => tx.state());
      // The plan is the full plan of the committed state.
      const full = byName(planState(state));
      const got = byName(p);
      assert.deepEqual([...got.keys()].sort(), [...full.keys()].sort(), `step ${step} (${what}): the VIPs`);
      for (const [name, v] of full) assert.deepEqual(got.get(name), v, `step ${step} (${what}): VIP ${name}`);
      // Its changes name exactly what differs from the previous plan, and the rest are the same objects.
      const changes = p.changes;
      if (prev !== undefined && changes !== undefined && changes.since === prev.serial) {
        byChanges++;
        const before = byName(prev);
        const changedIds = new Set(changes.vips.map((v) => v.id));
        for (const [name, v] of got) {
          const old = before.get(name);
          if (!changedIds.has(v.id)) assert.equal(v, old, `step ${step} (${what}): ${name} unchanged keeps its object`);
          else assert.notEqual(v, old, `step ${step} (${what}): ${name} is listed as changed`);
        }
        for (const [name, v] of before) {
          if (!got.has(name)) assert.ok(changes.removed.includes(v.id), `step ${step} (${what}): ${name} listed as removed`);
        }
      }
      assert.deepEqual(rec.verify(p), [], `step ${step} (${what}): the maps equal a full reconcile`);
    }
    t.diagnostic(
      `${plans.length} plans, ${byChanges} compared change by change; planner ${JSON.stringify(planner.stats)}; ` +
        `${appliedByChanges} applied by changes`,
    );
    assert.ok(byChanges >= plans.length - 2, `${byChanges} of ${plans.length} plans went by changes`);
    assert.ok(planner.stats.byDelta >= plans.length - 2, 'the planner looked only at what each write touched');
    assert.ok(appliedByChanges >= plans.length - 2, 'the reconciler applied just the changes');
  });

  it('health changes replan only the VIPs they concern', () => {
    const verdicts = new Map<string, 'up' | 'down'>();
    const log: string[] = [];
    const opts = {
      health: (vip: string, address: string) => verdicts.get(`${vip}/${address}`),
      healthEpoch: (vip: string) => log.lastIndexOf(vip) + 1,
      healthChanges: (since: number) => ({ seq: log.length, vips: new Set(log.slice(since)) }),
    };
    const state = store.read((tx) => tx.state());
    const withBackends = [...state.backends.entries()].filter(([, b]) => b.some((x) => x.state === 'active' && x.weight > 0));
    assert.ok(withBackends.length >= 2, 'the walk left VIPs with serving backends');
    const planner = new IncrementalPlanner();
    const first = planner.plan(state, opts);
    const [vip, backends] = withBackends[0]!;
    const serving = backends.filter((x) => x.state === 'active' && x.weight > 0);
    verdicts.set(`${vip}/${serving[0]!.address}`, 'down');
    log.push(vip);
    const second = planner.plan(state, opts);
    assert.equal(planner.stats.byDelta, 1);
    assert.deepEqual(
      second.changes?.vips.map((v) => v.name),
      [vip],
    );
    assert.deepEqual(byName(second), byName(planState(state, opts)));
    for (const v of first.vips) if (v.name !== vip) assert.equal(byName(second).get(v.name), v);
  });
});
