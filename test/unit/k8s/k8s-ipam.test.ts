/**
 * LoadBalancer IP allocation (src/k8s/ipam.ts, lease.ts, lbipam.ts): the
 * allocation rules on their own; then nodes in one process, each a real
 * K8sMode (watch, sync, store, Controller) against the Kubernetes API test
 * server, electing a leader through a coordination.k8s.io Lease: the leader
 * writes Service status, every node turns the address into a VIP, and the
 * leader's loss (crash, release, deposed, API unreachable) hands the work to
 * another without giving an address twice.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { ConfigError, parseConfig, type KubernetesConfig } from '../../../src/config/index.js';
import { allocate, parsePools, type Pool } from '../../../src/k8s/ipam.js';
import type { Lease } from '../../../src/k8s/lease.js';
import { K8sMode } from '../../../src/k8s/mode.js';
import type { Service } from '../../../src/k8s/types.js';
import { loadKubeConfig } from '../../../src/k8s/client.js';
import { makeApi, type Api } from '../../lib/api-fixture.js';
import { service, slice } from '../../lib/k8s-objects.js';
import { K8sTestServer } from '../../lib/k8s-server.js';
import { until } from '../../lib/until.js';

const silent = pino({ level: 'silent' });

function pools(...list: Array<[string, string[]]>): Pool[] {
  const { pools: out, problems } = parsePools(
    list.map(([name, addresses]) => ({ name, addresses })),
    '/pools',
  );
  assert.deepEqual(problems, []);
  return out;
}

let age = 0;
/** A LoadBalancer Service created after the previous one (creation time decides who keeps a contested address). */
function lb(name: string, o: Parameters<typeof service>[1] & { annotations?: Record<string, string> } = {}): Service {
  const { annotations, ...rest } = o;
  const s = service(name, { type: 'LoadBalancer', clusterIP: '10.96.0.1', ...rest });
  s.metadata.creationTimestamp = new Date(Date.UTC(2026, 0, 1, 0, 0, age++)).toISOString();
  if (annotations !== undefined) s.metadata.annotations = annotations;
  return s;
}

describe('lb-ipam: allocation rules', () => {
  const P = pools(['main', ['198.51.100.0/30', '2001:db8:5::10-2001:db8:5::11']], ['spare', ['203.0.113.7-203.0.113.8']]);
  const run = (svcs: Service[], cls: string | null = null) => allocate(svcs, { pools: P, loadBalancerClass: cls });
  const desired = (svcs: Service[], cls: string | null = null): Record<string, string[]> => Object.fromEntries(run(svcs, cls).desired);

  it("gives the lowest free address, skipping an IPv4 CIDR's network and broadcast, then the next pool", () => {
    const r = run([lb('a'), lb('b'), lb('c'), lb('d')]);
    assert.deepEqual(Object.fromEntries(r.desired), {
      'default/a': ['198.51.100.1'],
      'default/b': ['198.51.100.2'],
      'default/c': ['203.0.113.7'],
      'default/d': ['203.0.113.8'],
    });
    assert.deepEqual(Object.fromEntries(r.allocated), { main: 2, spare: 2 });
    const full = run([lb('a'), lb('b'), lb('c'), lb('d'), lb('e')]);
    assert.deepEqual(full.pending, [{ service: 'default/e', reason: 'no free IPv4 address in pool(s) main, spare' }]);
    assert.deepEqual(full.desired.get('default/e'), []);
  });

  it('keeps valid addresses; the older of two Services carrying one keeps it; addresses outside the pools are replaced', () => {
    const old = lb('old', { ingress: ['198.51.100.2'] });
    const young = lb('young', { ingress: ['198.51.100.2'] });
    const stray = lb('stray', { ingress: ['192.0.2.99'] });
    assert.deepEqual(desired([young, stray, old]), {
      'default/old': ['198.51.100.2'],
      'default/young': ['198.51.100.1'],
      'default/stray': ['203.0.113.7'],
    });
  });

  it("serves one class; another class's addresses are never given out; non-LoadBalancer Services are ignored", () => {
    const theirs = lb('theirs', { loadBalancerClass: 'example.com/other', ingress: ['198.51.100.1'] });
    const mine = lb('mine', { loadBalancerClass: 'ferry.io/lb' });
    const plain = lb('plain');
    const cip = service('cip', { clusterIP: '10.96.0.9' });
    assert.deepEqual(desired([theirs, mine, plain, cip]), { 'default/plain': ['198.51.100.2'] });
    assert.deepEqual(desired([theirs, mine, plain, cip], 'ferry.io/lb'), { 'default/mine': ['198.51.100.2'] });
  });

  it('asked-for addresses and pools (annotations, spec.loadBalancerIP), with the reason when they cannot be had', () => {
    const r = run([
      lb('ann', { annotations: { 'ferry.io/load-balancer-ips': '203.0.113.8' } }),
      lb('spec', { loadBalancerIP: '198.51.100.2' }),
      lb('taken', { loadBalancerIP: '198.51.100.2' }),
      lb('outside', { loadBalancerIP: '192.0.2.1' }),
      lb('pool', { annotations: { 'ferry.io/load-balancer-pools': 'spare' } }),
      lb('nopool', { annotations: { 'ferry.io/load-balancer-pools': 'gold' } }),
      lb('bad', { annotations: { 'ferry.io/load-balancer-ips': '198.51.100.300' } }),
    ]);
    assert.deepEqual(Object.fromEntries(r.desired), {
      'default/ann': ['203.0.113.8'],
      'default/spec': ['198.51.100.2'],
      'default/taken': [],
      'default/outside': [],
      'default/pool': ['203.0.113.7'],
      'default/nopool': [],
      'default/bad': [],
    });
    assert.deepEqual(
      r.pending.map((p) => [p.service, p.reason]).sort(),
      [
        [
          'default/bad',
          'asked-for address "198.51.100.300": not an IP address: "198.51.100.300" (IPv4 is written as four decimal octets, a.b.c.d)',
        ],
        ['default/nopool', 'ferry.io/load-balancer-pools names no configured pool: gold'],
        ['default/outside', '192.0.2.1 is in no pool this Service may use'],
        ['default/taken', '198.51.100.2 is in use by another Service'],
      ].sort(),
    );
  });

  it('dual stack: one address per family in ipFamilies order; RequireDualStack takes both or none', () => {
    assert.deepEqual(desired([lb('ds', { ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'PreferDualStack' })]), {
      'default/ds': ['2001:db8:5::10', '198.51.100.1'],
    });
    const v6only = pools(['v6', ['2001:db8:6::/127']]);
    const r = allocate(
      [
        lb('v6', { ipFamilies: ['IPv6'] }),
        lb('need-both', { ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'RequireDualStack' }),
        lb('prefer', { ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' }),
      ],
      { pools: v6only, loadBalancerClass: null },
    );
    // need-both could have the second IPv6 address but no IPv4: it takes none, and prefer gets it.
    assert.deepEqual(Object.fromEntries(r.desired), {
      'default/v6': ['2001:db8:6::'],
      'default/need-both': [],
      'default/prefer': ['2001:db8:6::1'],
    });
    assert.deepEqual(
      r.pending.map((p) => p.service),
      ['default/need-both', 'default/prefer'],
    );
  });

  it('a large IPv6 pool and 2,000 Services: each gets its own address', () => {
    const many = Array.from({ length: 2000 }, (_, i) => lb(`s${i}`, { ipFamilies: ['IPv6'] }));
    const r = allocate(many, { pools: pools(['big', ['2001:db8:7::/64']]), loadBalancerClass: null });
    const all = [...r.desired.values()].flat();
    assert.equal(new Set(all).size, 2000);
    assert.equal(all[1999], '2001:db8:7::7cf');
  });

  it("config: pools are checked (bad entries, overlaps, duplicate names), and the Lease's times must be in order", () => {
    const bad = `
kubernetes:
  lb_ipam:
    enabled: true
    pools:
      - { name: a, addresses: ["198.51.100.0/24", "198.51.100.9-198.51.100.3", "10.0.0.1-2001:db8::1", "nonsense"] }
      - { name: a, addresses: ["198.51.100.128/25"] }
    lease: { duration_seconds: 5, renew_deadline_seconds: 5, retry_period_seconds: 6 }
`;
    assert.throws(
      () => parseConfig(bad, 'test'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const text = err.message;
        for (const want of [
          '/kubernetes/lb_ipam/pools/0/addresses/1: "198.51.100.9-198.51.100.3": the first address is above the last',
          '/kubernetes/lb_ipam/pools/0/addresses/2: "10.0.0.1-2001:db8::1": both ends must be of one family',
          '/kubernetes/lb_ipam/pools/0/addresses/3: "nonsense" is neither a CIDR nor a "first-last" range',
          '/kubernetes/lb_ipam/pools/1/name: "a" is used by an earlier pool',
          '/kubernetes/lb_ipam/pools/1/addresses/0: "198.51.100.128/25" overlaps /kubernetes/lb_ipam/pools/0/addresses/0',
          '/kubernetes/lb_ipam/lease/renew_deadline_seconds: must be below duration_seconds (5)',
          '/kubernetes/lb_ipam/lease/retry_period_seconds: must be below renew_deadline_seconds (5)',
        ])
          assert.ok(text.includes(want), `${want}\nin: ${text}`);
        return true;
      },
    );
    assert.throws(
      () => parseConfig('kubernetes:\n  lb_ipam: { enabled: true }\n', 'test'),
      /lb_ipam\/pools: the allocator is enabled but has no pool/,
    );
    const ok = parseConfig('kubernetes:\n  lb_ipam: { enabled: true, pools: [{ name: a, addresses: ["198.51.100.0/24"] }] }\n', 'test');
    assert.deepEqual(ok.kubernetes.lb_ipam.lease, {
      namespace: 'kube-system',
      name: 'ferry-lb-ipam',
      duration_seconds: 15,
      renew_deadline_seconds: 10,
      retry_period_seconds: 2,
    });
  });
});

// ---------------------------------------------------------------- nodes

interface NodeRig {
  name: string;
  api: Api;
  mode: K8sMode;
}

const LEASE = {
  namespace: 'kube-system',
  name: 'ferry-lb-ipam',
  duration_seconds: 1,
  renew_deadline_seconds: 0.6,
  retry_period_seconds: 0.1,
};

function k8sConfig(nodeName: string, addresses: string[]): KubernetesConfig {
  const c = parseConfig('mode: standalone\n', 'test').kubernetes;
  return {
    ...c,
    node_name: nodeName,
    batch_delay_ms: 10,
    health_check_addresses: [],
    lb_ipam: { enabled: true, pools: [{ name: 'main', addresses }], load_balancer_class: null, lease: LEASE },
  };
}

const running = new Set<NodeRig>();

async function startNode(server: K8sTestServer, name: string, addresses = ['198.51.100.10-198.51.100.12']): Promise<NodeRig> {
  const api = await makeApi({ maxVips: 64, maxBackends: 256 });
  const mode = new K8sMode({
    controller: api.controller,
    config: k8sConfig(name, addresses),
    log: silent,
    credentials: { kubeConfig: loadKubeConfig({ kubeconfig: server.writeKubeconfig() }), source: 'kubeconfig', server: server.url },
  });
  mode.start();
  const n = { name, api, mode };
  running.add(n);
  return n;
}

/** Stops a node: released (graceful) or abandoned (a crash: the Lease stays until it expires). */
async function stopNode(n: NodeRig, release = true): Promise<void> {
  running.delete(n);
  await n.mode.lbIpam?.stop(release);
  await n.mode.stop();
  await n.api.close();
}

afterEach(async () => {
  for (const n of [...running]) await stopNode(n);
});

const ingressOf = (server: K8sTestServer, key: string): string[] =>
  ((server.get('services', key) as Service | undefined)?.status?.loadBalancer?.ingress ?? []).map((i) => i.ip ?? `hostname:${i.hostname}`);
const leaseOf = (server: K8sTestServer): Lease['spec'] => (server.get('leases', 'kube-system/ferry-lb-ipam') as Lease | undefined)?.spec;
const vipAddresses = (n: NodeRig): string[] =>
  n.api.store
    .read((tx) => tx.listVips({ limit: 1000 }))
    .items.filter((v) => v.owner !== null)
    .map((v) => v.address)
    .sort();
const leaderOf = (nodes: NodeRig[]): NodeRig[] => nodes.filter((n) => n.mode.lbIpam!.elector.isLeader);

async function withServer(fn: (server: K8sTestServer) => Promise<void>): Promise<void> {
  const server = await K8sTestServer.start();
  try {
    await fn(server);
  } finally {
    for (const n of [...running]) await stopNode(n);
    await server.close();
  }
}

function seedWeb(server: K8sTestServer, name: string, endpoint: string): void {
  server.upsert('services', lb(name));
  server.upsert('endpointslices', slice(`${name}-x`, [[endpoint, { node: 'node-a' }]]));
}

describe('lb-ipam: nodes electing a leader', () => {
  it('one leader writes the status; every node makes the address a VIP; the Lease names the leader', async () => {
    await withServer(async (server) => {
      seedWeb(server, 'web', '10.244.0.1');
      server.upsert('services', lb('theirs', { loadBalancerClass: 'example.com/other' }));
      const nodes = [await startNode(server, 'node-a'), await startNode(server, 'node-b')];
      await until(() => ingressOf(server, 'default/web').length === 1, 'an address for web');
      assert.deepEqual(ingressOf(server, 'default/web'), ['198.51.100.10']);
      assert.equal((server.get('services', 'default/web') as Service).status?.loadBalancer?.ingress?.[0]?.ipMode, 'VIP');
      assert.deepEqual(ingressOf(server, 'default/theirs'), [], 'another class is not ours');
      const leaders = leaderOf(nodes);
      assert.equal(leaders.length, 1);
      assert.equal(leaseOf(server)?.holderIdentity, leaders[0]!.name);
      for (const n of nodes) await until(() => vipAddresses(n).includes('198.51.100.10'), `the VIP on ${n.name}`);
      // The status writes were made by the leader only, through the status subresource.
      const puts = server.requests.filter((r) => r.method === 'PUT' && r.path.endsWith('/status'));
      assert.equal(puts.length, 1);
      await until(() => nodes.every((n) => n.mode.view().lb_ipam!.holder !== null), 'both nodes to read the Lease');
      const v = nodes.map((n) => n.mode.view().lb_ipam!);
      assert.deepEqual(v.map((x) => x.leader).sort(), [false, true]);
      assert.deepEqual(
        v.map((x) => x.holder),
        [leaders[0]!.name, leaders[0]!.name],
      );
      assert.deepEqual(
        v.map((x) => [x.services, x.pools[0]!.allocated, x.pending.length]),
        [
          [1, 1, 0],
          [1, 1, 0],
        ],
      );
      assert.equal(v.find((x) => x.leader)!.writes, 1);

      // A deleted Service's address goes to the next one; the pool's exhaustion is reported, not forced.
      server.remove('services', 'default/web');
      seedWeb(server, 'one', '10.244.0.2');
      seedWeb(server, 'two', '10.244.0.3');
      seedWeb(server, 'three', '10.244.0.4');
      seedWeb(server, 'four', '10.244.0.5');
      // The API server stamps creation times: of four made in one instant, which three win is the allocator's choice.
      const four = ['one', 'two', 'three', 'four'].map((s) => `default/${s}`);
      const served = (): string[] => four.filter((k) => ingressOf(server, k).length === 1);
      await until(() => served().length === 3, 'three addresses');
      assert.deepEqual(
        served()
          .map((k) => ingressOf(server, k)[0]!)
          .sort(),
        ['198.51.100.10', '198.51.100.11', '198.51.100.12'],
      );
      const left = four.find((k) => !served().includes(k))!;
      await until(() => leaders[0]!.mode.view().lb_ipam!.pending.length === 1, 'the fourth reported pending');
      assert.deepEqual(leaders[0]!.mode.view().lb_ipam!.pending, [{ service: left, reason: 'no free IPv4 address in pool(s) main' }]);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(served().length, 3, 'the fourth is not given an address taken by another');
    });
  });

  it('a leader that crashes is replaced once its Lease expires; the successor continues from the status, no address twice', async () => {
    await withServer(async (server) => {
      seedWeb(server, 'a', '10.244.0.1');
      const first = await startNode(server, 'node-a');
      await until(() => ingressOf(server, 'default/a').length === 1, 'an address for a');
      const second = await startNode(server, 'node-b');
      await until(() => second.mode.view().lb_ipam!.holder === 'node-a', 'node-b to see the holder');
      assert.equal(second.mode.lbIpam!.elector.isLeader, false);
      const crashedAt = Date.now();
      await stopNode(first, false); // kill -9: the Lease still names node-a
      assert.equal(leaseOf(server)?.holderIdentity, 'node-a');
      seedWeb(server, 'b', '10.244.0.2');
      await until(() => second.mode.lbIpam!.elector.isLeader, 'node-b to take over', 5000);
      const tookMs = Date.now() - crashedAt;
      assert.ok(tookMs >= LEASE.duration_seconds * 1000 * 0.9, `took over after ${tookMs} ms, before the Lease expired`);
      await until(() => ingressOf(server, 'default/b').length === 1, 'an address for b');
      assert.deepEqual([ingressOf(server, 'default/a'), ingressOf(server, 'default/b')], [['198.51.100.10'], ['198.51.100.11']]);
      const l = leaseOf(server)!;
      assert.equal(l.holderIdentity, 'node-b');
      assert.equal(l.leaseTransitions, 1);
    });
  });

  it('a leader that stops releases the Lease: the successor takes over within a retry period, not a Lease duration', async () => {
    await withServer(async (server) => {
      const first = await startNode(server, 'node-a');
      await until(() => first.mode.lbIpam!.elector.isLeader, 'node-a to lead');
      const second = await startNode(server, 'node-b');
      await until(() => second.mode.view().lb_ipam!.holder === 'node-a', 'node-b to see the holder');
      const stoppedAt = Date.now();
      await stopNode(first, true);
      assert.equal(leaseOf(server)?.holderIdentity, '');
      await until(() => second.mode.lbIpam!.elector.isLeader, 'node-b to take over', 5000);
      assert.ok(Date.now() - stoppedAt < LEASE.duration_seconds * 1000, 'before the released Lease would have expired');
      seedWeb(server, 'c', '10.244.0.3');
      await until(() => ingressOf(server, 'default/c').length === 1, 'an address for c from node-b');
    });
  });

  it('a leader deposed (another holder in the Lease) or cut off from the API server stops writing', async () => {
    await withServer(async (server) => {
      const n = await startNode(server, 'node-a');
      await until(() => n.mode.lbIpam!.elector.isLeader, 'node-a to lead');
      // Another holder, freshly renewed: node-a sees it at its next renewal and steps down at once.
      const l = server.get('leases', 'kube-system/ferry-lb-ipam') as Lease;
      server.upsert('leases', {
        ...l,
        spec: { ...l.spec, holderIdentity: 'elsewhere', renewTime: new Date().toISOString(), leaseDurationSeconds: 30 },
      } as Lease);
      await until(() => !n.mode.lbIpam!.elector.isLeader, 'node-a to step down');
      seedWeb(server, 'd', '10.244.0.4');
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(ingressOf(server, 'default/d'), [], 'a standby writes nothing');
      assert.equal(n.mode.view().lb_ipam!.holder, 'elsewhere');

      // The Lease released: node-a leads again; then the API server refuses every Lease request.
      server.upsert('leases', { ...l, spec: { ...l.spec, holderIdentity: '' } } as Lease);
      await until(() => n.mode.lbIpam!.elector.isLeader, 'node-a to lead again');
      await until(() => ingressOf(server, 'default/d').length === 1, 'd served by the new leader');
      server.failNext(1000, 503, /leases/);
      const cutAt = Date.now();
      await until(() => !n.mode.lbIpam!.elector.isLeader, 'node-a to step down after its renew deadline', 5000);
      const after = Date.now() - cutAt;
      assert.ok(after < LEASE.duration_seconds * 1000 + 300, `stepped down after ${after} ms: before another could take the Lease`);
      assert.match(n.mode.view().lb_ipam!.last_error ?? '', /503/);
      seedWeb(server, 'e', '10.244.0.5');
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(ingressOf(server, 'default/e'), []);
    });
  });

  it('a Service changed while its status is being written (409) is redone from its newer version', async () => {
    await withServer(async (server) => {
      const n = await startNode(server, 'node-a');
      await until(() => n.mode.lbIpam!.elector.isLeader, 'node-a to lead');
      server.failNext(1, 409, /\/services\/f\/status/);
      seedWeb(server, 'f', '10.244.0.6');
      // The server holds the status before its answer reaches the node, which then counts the write.
      await until(
        () => ingressOf(server, 'default/f').length === 1 && n.mode.view().lb_ipam!.writes > 0,
        'an address for f after the conflict',
      );
      const v = n.mode.view().lb_ipam!;
      assert.deepEqual([v.conflicts, v.writes], [1, 1]);
      // A status edited by hand to an address outside the pools is put back into the pools.
      const s = server.get('services', 'default/f') as Service;
      const edited: Service = { ...s, status: { loadBalancer: { ingress: [{ ip: '192.0.2.50' }, { hostname: 'lb.example' }] } } };
      server.upsert('services', edited);
      await until(
        () => ingressOf(server, 'default/f')[0] === '198.51.100.10' && ingressOf(server, 'default/f').length === 1,
        'f back in the pool',
      );
    });
  });
});
