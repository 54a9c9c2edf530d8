/**
 * The socket-LB's list planner (src/datapath/socket-lb-plan.ts, ListPlanner):
 * a plan of the changes since the last list written leaves the installed
 * view exactly as a plan of the whole list would, for any sequence of lists
 * (entries kept as the same objects, replaced, removed, added, given again
 * as copies); bad lists throw and record nothing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatAddr } from '../../../src/datapath/addr.js';
import { SockEndpoint } from '../../../src/datapath/socket-lb-abi.js';
import {
  ListPlanner,
  ServiceIds,
  type InstalledService,
  type ListChanges,
  type LiveCounts,
  type SocketLbService,
  liveCounts,
} from '../../../src/datapath/socket-lb-plan.js';

/** A planner with its installed view, each plan committed as if written. */
class Rig {
  readonly planner = new ListPlanner();
  readonly ids = new ServiceIds();
  installed = new Map<string, InstalledService>();
  live: LiveCounts = { slots: 0, members: 0 };

  apply(all: readonly SocketLbService[], changes?: ListChanges) {
    const listed = this.planner.plan(all, this.installed, this.ids, changes);
    this.installed = listed.commit(this.installed);
    this.live = listed.liveAfter(this.live);
    return listed;
  }

  /** The installed view as text: "tcp 10.96.0.1:80 → 10.0.0.1:8080,… (timeout)". */
  view(): string[] {
    return [...this.installed.values()]
      .map((s) => {
        const backends = s.backends.map((b) => {
          const e = SockEndpoint.decode(b);
          return `${formatAddr(e.family, e.addr)}:${e.port}`;
        });
        return `${s.keyStr} → ${backends.join(',')} (${s.timeout})`;
      })
      .sort();
  }
}

/** What `all` should install, in the view's form. */
function wanted(all: readonly SocketLbService[]): string[] {
  return all
    .map(
      (e) =>
        `${e.protocol} ${e.ip}:${e.port} → ${e.backends.map((b) => `${b.address}:${b.port}`).join(',')} (${e.affinityTimeoutSeconds ?? 0})`,
    )
    .sort();
}

const svc = (ip: number, backends: number[], timeout?: number): SocketLbService => ({
  service: `ns/svc-${ip}`,
  ip: `10.96.0.${ip}`,
  port: 80,
  protocol: 'tcp',
  backends: backends.map((b) => ({ address: `10.0.0.${b}`, port: 8080 })),
  ...(timeout !== undefined ? { affinityTimeoutSeconds: timeout } : {}),
});

describe('socket-LB list planner', () => {
  it('plans only what changed: kept entries cost nothing, a replaced one is an update, a gone one a removal', () => {
    const rig = new Rig();
    const a = svc(1, [1, 2]);
    const b = svc(2, [3]);
    const c = svc(3, [4, 5], 30);
    const first = rig.apply([a, b, c]);
    assert.deepEqual(first.plan.counts, { added: 3, updated: 0, retimed: 0, removed: 0, unchanged: 0 });
    const same = rig.apply([a, b, c]);
    assert.deepEqual(same.plan.counts, { added: 0, updated: 0, retimed: 0, removed: 0, unchanged: 3 });
    assert.deepEqual([same.plan.slots.count, same.plan.svcKeys.length, same.plan.svcDels.length], [0, 0, 0]);
    const b2 = svc(2, [3, 6]);
    const changed = rig.apply([a, b2]);
    assert.deepEqual(changed.plan.counts, { added: 0, updated: 1, retimed: 0, removed: 1, unchanged: 1 });
    assert.equal(changed.plan.slots.count, 2, "only the changed service's new buffer is written");
    assert.deepEqual(rig.view(), wanted([a, b2]));
    const copies = rig.apply([{ ...a }, { ...b2 }]);
    assert.deepEqual(copies.plan.counts, { added: 0, updated: 0, retimed: 0, removed: 0, unchanged: 2 }, 'equal copies change nothing');
  });

  it('a duplicate throws and records nothing: a new entry on a kept service, one object twice, a bad entry', () => {
    const rig = new Rig();
    const a = svc(1, [1]);
    const b = svc(2, [2]);
    rig.apply([a, b]);
    assert.throws(
      () => rig.apply([a, b, svc(1, [9])]),
      /^RangeError: socket-LB service #2 \(ns\/svc-1\): tcp 10\.96\.0\.1:80 appears twice$/,
    );
    assert.throws(() => rig.apply([a, b, a]), /^RangeError: socket-LB service #2 \(ns\/svc-1\): tcp 10\.96\.0\.1:80 appears twice$/);
    assert.throws(() => rig.apply([a, { ...b, port: 0 }]), /^RangeError: socket-LB service #1 \(ns\/svc-2\): port must be/);
    assert.deepEqual(rig.view(), wanted([a, b]), 'the installed view is as before');
    const next = rig.apply([a, svc(2, [3])]);
    assert.deepEqual(next.plan.counts, { added: 0, updated: 1, retimed: 0, removed: 0, unchanged: 1 });
    assert.deepEqual(rig.view(), wanted([a, svc(2, [3])]));
  });

  it('after reset() every service is compared again: one read back broken is rewritten though its entry is kept', () => {
    const rig = new Rig();
    const a = svc(1, [1, 2]);
    const b = svc(2, [3]);
    rig.apply([a, b]);
    const readBack = new Map([...rig.installed].map(([k, s]) => [k, { ...s, from: undefined, broken: k === 'tcp 10.96.0.1:80' }]));
    rig.installed = readBack;
    rig.planner.reset();
    const repaired = rig.apply([a, b]);
    assert.deepEqual(repaired.plan.counts, { added: 0, updated: 1, retimed: 0, removed: 0, unchanged: 1 });
    assert.deepEqual(rig.view(), wanted([a, b]));
  });

  it('any sequence of lists leaves the installed view equal to the last list, with distinct ids, whatever changes are said', () => {
    // A step: for each of 6 ClusterIPs, keep its entry object, give a copy, replace it (new backends or
    // timeout), drop it, or (when absent) add it. The list comes with no changes, with its changes, with its
    // changes but copies left out (as the sync leaves out entries that did not change), with a kept entry said
    // to leave and come back, or with changes that do not agree with the last list (an entry said to leave that
    // was not in it, one said to be new twice, one left out): those must be noticed and the whole list compared.
    const action = fc.constantFrom('keep', 'keep', 'copy', 'replace', 'drop', 'add');
    const said = fc.constantFrom('none', 'true', 'true', 'no-copies', 'stranger', 'kept-as-new', 'twice', 'short');
    const step = fc.record({
      actions: fc.array(action, { minLength: 6, maxLength: 6 }),
      seed: fc.nat(1000),
      reset: fc.boolean(),
      said,
    });
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 12 }), (steps) => {
        const rig = new Rig();
        let current: Array<SocketLbService | undefined> = [];
        let before = new Set<string>();
        for (const { actions, seed, reset, said } of steps) {
          const next = actions.map((act, ip) => {
            const e = current[ip];
            const fresh = () =>
              svc(ip + 1, [seed % 5, ((seed + ip) % 7) + 10].slice(0, 1 + (seed % 2)), seed % 3 === 0 ? 5 + ip : undefined);
            if (e === undefined) return act === 'add' || act === 'replace' ? fresh() : undefined;
            if (act === 'drop') return undefined;
            if (act === 'copy') return { ...e, backends: e.backends.map((x) => ({ ...x })) };
            if (act === 'replace') return fresh();
            return e;
          });
          const list = next.filter((e): e is SocketLbService => e !== undefined);
          if (reset) rig.planner.reset();
          const last = current.filter((e): e is SocketLbService => e !== undefined);
          const removed = last.filter((e) => !list.includes(e));
          const added = list.filter((e) => !last.includes(e));
          const copied = (e: SocketLbService): boolean => actions[Number(e.ip.split('.')[3]) - 1] === 'copy';
          const kept = list.filter((e) => last.includes(e)).slice(0, 1);
          const changes: ListChanges | undefined =
            said === 'none'
              ? undefined
              : said === 'true'
                ? { removed, added }
                : said === 'no-copies'
                  ? { removed: removed.filter((e) => !copied(e)), added: added.filter((e) => !copied(e)) }
                  : said === 'stranger'
                    ? { removed: [...removed, svc(99, [1])], added: [...added, svc(98, [1])] }
                    : said === 'kept-as-new'
                      ? { removed: [...removed, ...kept], added: [...added, ...kept] }
                      : said === 'twice'
                        ? { removed: [...removed, ...kept], added: [...added, ...added.slice(0, 1)] }
                        : { removed: removed.slice(1), added };
          const { plan } = rig.apply(list, changes);
          const c = plan.counts;
          assert.equal(c.added + c.updated + c.retimed + c.unchanged, list.length, JSON.stringify(c));
          const now = new Set(list.map((e) => `tcp ${e.ip}:80`));
          assert.equal(c.removed, [...before].filter((k) => !now.has(k)).length);
          assert.deepEqual(rig.view(), wanted(list));
          assert.deepEqual(rig.live, liveCounts(rig.installed.values()), 'the live counts kept with the view');
          const ids = [...rig.installed.values()].map((s) => s.id);
          assert.equal(new Set(ids).size, ids.length, 'ids are distinct');
          current = next;
          before = now;
        }
      }),
      { seed: 20261207, numRuns: 300 },
    );
  });
});
