/**
 * NodeEndpoints (src/reconcile/node.ts): the node programs' pairs follow
 * every plan, written around the XDP apply in the safe order, and a removed
 * local backend keeps its pair while it drains.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { endpointKey, type NodeEndpoint } from '../../../src/datapath/node.js';
import type { Applier, DpBackend, DpState, DpTombstone, DpVip, ReconcileReport } from '../../../src/model/dpstate.js';
import { NodeEndpoints } from '../../../src/reconcile/node.js';

const vip = (id: number, backends: DpBackend[]): DpVip => ({
  id,
  name: `v${id}`,
  address: `198.18.0.${id}`,
  port: 30080,
  protocol: 'tcp',
  flags: 0,
  m: 251,
  rlIntervalNs: 0n,
  rlToleranceNs: 0n,
  allow: [],
  deny: [],
  backends,
});
const local = (id: number, address: string): DpBackend => ({ id, gen: 1, address, weight: 100, state: 'active', port: 80, host: 'local' });
const tomb = (b: DpBackend, vipId: number): DpTombstone => ({ ...b, weight: 0, state: 'draining', vipId });

describe('node pairs around the XDP apply', () => {
  const log: string[] = [];
  const keys = (l: readonly NodeEndpoint[]) => l.map((e) => `${endpointKey(e)}:${e.port}`).sort();
  const inner: Applier = { apply: (): ReconcileReport => (log.push('xdp'), {} as ReconcileReport) };
  const sink = { setEndpoints: (l: readonly NodeEndpoint[]) => log.push(`pairs ${keys(l).join(' ')}`) };
  const ne = new NodeEndpoints(inner, sink);
  const run = (state: DpState): string[] => {
    log.length = 0;
    ne.apply(state);
    return [...log];
  };
  const pod1 = local(1, '10.244.0.5');
  const pod2 = local(2, '10.244.0.6');
  const k1 = keys([{ vip: '198.18.0.1', vipPort: 30080, protocol: 'tcp', backend: '10.244.0.5', port: 80 }])[0]!;
  const k2 = keys([{ vip: '198.18.0.1', vipPort: 30080, protocol: 'tcp', backend: '10.244.0.6', port: 80 }])[0]!;

  it('a new pair is written before the XDP maps', () => {
    assert.deepEqual(run({ vips: [vip(1, [pod1])], tombstones: [] }), [`pairs ${k1}`, 'xdp', `pairs ${k1}`]);
  });

  it('a removed local backend keeps its pair while its tombstone lasts; the pair goes with the tombstone, after the XDP maps', () => {
    assert.deepEqual(run({ vips: [vip(1, [pod2])], tombstones: [tomb(pod1, 1)] }), [`pairs ${k1} ${k2}`, 'xdp', `pairs ${k1} ${k2}`]);
    assert.deepEqual(run({ vips: [vip(1, [pod2])], tombstones: [] }), [`pairs ${k1} ${k2}`, 'xdp', `pairs ${k2}`]);
  });

  it('a tombstone of a backend elsewhere or of a VIP no longer planned adds nothing', () => {
    const remote: DpBackend = { ...pod1, host: '198.18.0.12' };
    assert.deepEqual(run({ vips: [vip(1, [pod2])], tombstones: [tomb(remote, 1), tomb(pod1, 9)] }).at(-1), `pairs ${k2}`);
  });
});
