/**
 * End to end: the Kubernetes API test server → the real watch client →
 * K8sSync → a real store + Controller with a fake Applier and the real
 * REST API (test/lib/api-fixture.ts). Resources appear owned by
 * kubernetes:<ns>/<name>, the API shows them and refuses writes (403);
 * endpoint changes, drains, deletions, conflicts with API-owned VIPs,
 * datapath refusals, restarts (stale owners swept, nothing written before
 * the caches synced), node address changes; a batch written in several
 * transactions with the event loop running between them; and a burst of
 * 10,000 Services × 10 endpoints converging in a few dozen transactions.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { K8sSync, type BatchReport, type ClusterIpChanges, type K8sSyncOptions } from '../../../src/k8s/sync.js';
import type { ClusterIpEntry, HealthCheckNodePort } from '../../../src/k8s/translate.js';
import { loadKubeConfig } from '../../../src/k8s/client.js';
import { K8sWatch } from '../../../src/k8s/informer.js';
import type { KubeObject } from '../../../src/k8s/types.js';
import { call, makeApi, problemOf, type Api } from '../../lib/api-fixture.js';
import { node, port, service, slice } from '../../lib/k8s-objects.js';
import { K8sTestServer, type ResourceName } from '../../lib/k8s-server.js';
import { until } from '../../lib/until.js';

interface Rig {
  server: K8sTestServer;
  api: Api;
  sync: K8sSync;
  watch: K8sWatch;
  batches: BatchReport[];
  clusterIps: ClusterIpEntry[][];
  /** What each list handed over said it changed. */
  clusterIpChanges: Array<ClusterIpChanges | null>;
  hcnp: HealthCheckNodePort[][];
  close(): Promise<void>;
}

const rigs = new Set<Rig>();

interface RigOptions {
  maxVips?: number;
  maxBackends?: number;
  maxDelayMs?: number;
  quietMs?: number;
  caps?: Pick<K8sSyncOptions, 'servicesPerTransaction' | 'maxTransactionsPerBatch' | 'retry'>;
  seed?: (s: K8sTestServer) => void;
  before?: (api: Api) => void;
}

async function rig(o: RigOptions = {}): Promise<Rig> {
  const server = await K8sTestServer.start();
  const api = await makeApi({ maxVips: o.maxVips ?? 256, maxBackends: o.maxBackends ?? 4096 });
  o.before?.(api);
  o.seed?.(server);
  const batches: BatchReport[] = [];
  const clusterIps: ClusterIpEntry[][] = [];
  const clusterIpChanges: Array<ClusterIpChanges | null> = [];
  const hcnp: HealthCheckNodePort[][] = [];
  const sync = new K8sSync({
    controller: api.controller,
    translate: { nodeName: 'node-a' },
    drainSeconds: 30,
    maxDelayMs: o.maxDelayMs ?? 20,
    ...(o.quietMs !== undefined ? { quietMs: o.quietMs } : {}),
    retry: { initialMs: 20, maxMs: 100 },
    ...o.caps,
    onBatch: (b) => batches.push(b),
    onClusterIps: (all, changes) => {
      clusterIps.push(all);
      clusterIpChanges.push(changes);
    },
    onHealthCheckNodePorts: (all) => hcnp.push(all),
  });
  const watch = new K8sWatch({
    kubeConfig: loadKubeConfig({ kubeconfig: server.writeKubeconfig() }),
    nodeName: 'node-a',
    handler: sync,
    backoff: { initialMs: 10, maxMs: 100 },
    resyncMs: 0,
  });
  watch.start();
  const r: Rig = {
    server,
    api,
    sync,
    watch,
    batches,
    clusterIps,
    clusterIpChanges,
    hcnp,
    close: async () => {
      rigs.delete(r);
      await watch.stop();
      sync.stop();
      await server.close();
      await api.close();
    },
  };
  rigs.add(r);
  return r;
}

afterEach(async () => {
  for (const r of [...rigs]) await r.close();
});

/**
 * Every list handed to the socket-LB is the one before it (the first: none)
 * without the entries its changes say left and with those they say are new:
 * the same objects, as a consumer that keeps the last list may rely on.
 */
function assertChangesAddUp(r: Rig): void {
  let before: ClusterIpEntry[] = [];
  r.clusterIps.forEach((all, k) => {
    const changes = r.clusterIpChanges[k];
    if (changes !== null && changes !== undefined) {
      const count = new Map<ClusterIpEntry, number>();
      const add = (e: ClusterIpEntry, n: number): void => {
        count.set(e, (count.get(e) ?? 0) + n);
      };
      for (const e of before) add(e, 1);
      for (const e of changes.removed) add(e, -1);
      for (const e of changes.added) add(e, 1);
      for (const e of all) add(e, -1);
      const off = [...count].filter(([, n]) => n !== 0).map(([e, n]) => `${e.ip}:${e.port} ${n}`);
      assert.deepEqual(off, [], `list ${k}: the changes do not turn the list before into it`);
      assert.ok(changes.removed.length + changes.added.length > 0, `list ${k} handed over without a change`);
    }
    before = all;
  });
}

/** The informers hold what the server holds, and the sync has written all of it. */
async function settle(r: Rig, ms = 10_000): Promise<void> {
  const caches: Record<Exclude<ResourceName, 'leases'>, Map<string, KubeObject>> = {
    services: r.watch.services.cache,
    endpointslices: r.watch.endpointSlices.cache,
    nodes: r.watch.nodes.cache,
  };
  const caughtUp = (): boolean =>
    (['services', 'endpointslices'] as const).every((res) => {
      const keys = r.server.keys(res);
      return (
        caches[res].size === keys.length &&
        keys.every((k) => caches[res].get(k)?.metadata.resourceVersion === r.server.get(res, k)?.metadata.resourceVersion)
      );
    });
  await until(() => r.watch.synced && caughtUp() && r.sync.idle, 'the sync to settle', ms);
}

interface VipItem {
  name: string;
  owner: string | null;
  address: string;
  port: number;
  backend_count: number;
  source_affinity: boolean;
  policies: string[];
}

async function vips(r: Rig): Promise<VipItem[]> {
  const res = await call(r.api.app, { url: '/v1/vips?limit=1000' });
  return res.json<{ items: VipItem[] }>().items;
}

async function backends(r: Rig, vip: string): Promise<Array<[string, string]>> {
  const res = await call(r.api.app, { url: `/v1/vips/${vip}/backends?limit=1000` });
  return res.json<{ items: Array<{ address: string; state: string; owner: string }> }>().items.map((b) => [b.address, b.state]);
}

const WEB_VIP = 'k8s.default.web.tcp80.198-18-0-10';

describe('k8s sync: into the store, through the API', () => {
  it('Services become VIPs owned by kubernetes:<ns>/<name>: visible through the API, writes refused with 403', async () => {
    const r = await rig({
      seed: (s) => {
        s.upsert('nodes', node('node-a', [['InternalIP', '10.0.0.1']]));
        s.upsert(
          'services',
          service('web', {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.10',
            ingress: ['198.18.0.10'],
            loadBalancerSourceRanges: ['203.0.113.0/24'],
            sessionAffinity: 'ClientIP',
          }),
        );
        s.upsert('endpointslices', slice('web-abc', ['10.244.0.1', '10.244.0.2', '10.244.0.3']));
      },
    });
    await settle(r);
    const list = await vips(r);
    assert.deepEqual(
      list.map((v) => [v.name, v.owner, v.address, v.port, v.backend_count, v.source_affinity]),
      [[WEB_VIP, 'kubernetes:default/web', '198.18.0.10', 80, 3, true]],
    );
    assert.deepEqual(list[0]?.policies, ['k8s.default.web.source-ranges']);
    assert.deepEqual(await backends(r, WEB_VIP), [
      ['10.244.0.1', 'active'],
      ['10.244.0.2', 'active'],
      ['10.244.0.3', 'active'],
    ]);
    const pol = await call(r.api.app, { url: '/v1/policies/k8s.default.web.source-ranges' });
    assert.equal(pol.json<{ owner: string }>().owner, 'kubernetes:default/web');
    // The datapath got it (committed and applied together).
    assert.equal(r.api.applier.last?.vips.find((v) => v.name === WEB_VIP)?.backends.length, 3);
    assert.equal(r.api.controller.appliedRevision, r.api.store.revision());
    const audit = r.api.store.audit({ limit: 5 });
    assert.equal(audit[0]?.actor, 'kubernetes');
    assert.equal(audit[0]?.action, 'k8s.sync');

    // Read-only through the API, with a clear error.
    const put = problemOf(
      await call(r.api.app, {
        method: 'PUT',
        url: `/v1/vips/${WEB_VIP}`,
        body: { name: WEB_VIP, address: '198.18.0.10', port: 81, protocol: 'tcp' },
      }),
      403,
      'read-only',
    );
    assert.match(put.detail ?? '', /kubernetes:default\/web/);
    problemOf(await call(r.api.app, { method: 'DELETE', url: `/v1/vips/${WEB_VIP}` }), 403);
    problemOf(await call(r.api.app, { method: 'POST', url: `/v1/vips/${WEB_VIP}/backends`, body: { address: '10.244.9.9' } }), 403);
    problemOf(await call(r.api.app, { method: 'DELETE', url: `/v1/vips/${WEB_VIP}/backends/10.244.0.1` }), 403);
    problemOf(await call(r.api.app, { method: 'DELETE', url: '/v1/policies/k8s.default.web.source-ranges' }), 403);
    // A declarative apply of the API's own state leaves them alone.
    const apply = await call(r.api.app, { method: 'PUT', url: '/v1/state', body: { vips: [] } });
    assert.equal(apply.statusCode, 200, apply.body);
    assert.equal((await vips(r)).length, 1);
    // The socket-LB list got the ClusterIP, and the Service's outside address for sockets on this node.
    assert.deepEqual(
      r.clusterIps.at(-1)?.map((c) => [c.service, c.ip, c.port, c.backends.length, c.affinityTimeoutSeconds]),
      [
        ['default/web', '10.96.0.10', 80, 3, 10800],
        ['default/web', '198.18.0.10', 80, 3, 10800],
      ],
    );
  });

  it('endpoint changes follow: terminating endpoints drain, removed ones go, and a deleted Service takes its VIPs along', async () => {
    const r = await rig({
      seed: (s) => {
        s.upsert('services', service('web', { externalIPs: ['198.18.0.10'] }));
        s.upsert('endpointslices', slice('web-abc', ['10.244.0.1', '10.244.0.2']));
      },
    });
    await settle(r);
    r.server.upsert(
      'endpointslices',
      slice('web-abc', ['10.244.0.1', ['10.244.0.2', { ready: false, serving: true, terminating: true }], '10.244.0.3']),
    );
    await settle(r);
    assert.deepEqual(await backends(r, WEB_VIP), [
      ['10.244.0.1', 'active'],
      ['10.244.0.2', 'draining'],
      ['10.244.0.3', 'active'],
    ]);
    r.server.upsert('endpointslices', slice('web-abc', ['10.244.0.3']));
    await settle(r);
    assert.deepEqual(await backends(r, WEB_VIP), [['10.244.0.3', 'active']]);
    const tombstones = r.api.store.read((tx) =>
      tx
        .snapshot()
        .tombstones.map((t) => t.address)
        .sort(),
    );
    assert.deepEqual(tombstones, ['10.244.0.1', '10.244.0.2'], 'removed backends drain (tombstones)');
    r.server.remove('services', 'default/web');
    await settle(r);
    assert.deepEqual(await vips(r), []);
    assert.deepEqual(r.clusterIps.at(-1), [], "the deleted Service's entries left the socket-LB list");
    assertChangesAddUp(r);
  });

  it('a new Service waits up to the coalescing window for its first EndpointSlice: written once, with its endpoints', async () => {
    const r = await rig({ maxDelayMs: 150 });
    await settle(r);
    const written = r.sync.stats.servicesWritten;
    r.server.upsert('services', service('web', { externalIPs: ['198.18.0.10'] }));
    // Longer than a batch would wait for the Service alone, shorter than the window from its arrival.
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.deepEqual(await vips(r), [], 'not written without its endpoints yet');
    r.server.upsert('endpointslices', slice('web-abc', ['10.244.0.1', '10.244.0.2']));
    await settle(r);
    assert.deepEqual(await backends(r, WEB_VIP), [
      ['10.244.0.1', 'active'],
      ['10.244.0.2', 'active'],
    ]);
    assert.equal(r.sync.stats.servicesWritten - written, 1, 'one write, not an empty one and then another');

    // A Service no EndpointSlice ever names (no selector, nothing managed) is written when the wait ends.
    const t = performance.now();
    r.server.upsert('services', service('bare', { externalIPs: ['198.18.0.11'] }));
    await settle(r);
    assert.ok(performance.now() - t >= 140, 'it waited for the window');
    assert.deepEqual(
      (await vips(r)).map((v) => [v.name, v.backend_count]),
      [
        ['k8s.default.bare.tcp80.198-18-0-11', 0],
        [WEB_VIP, 2],
      ],
    );
  });

  it('a lone change is written once the streams are quiet, not at the end of the coalescing window', async () => {
    const r = await rig({
      maxDelayMs: 5000,
      seed: (s) => {
        s.upsert('services', service('web', { externalIPs: ['198.18.0.10'] }));
        s.upsert('endpointslices', slice('web-abc', ['10.244.0.1']));
      },
    });
    await settle(r);
    // Past the quarter window after the last batch, before which a quiet stream does not start one.
    await new Promise((resolve) => setTimeout(resolve, 1300));
    const t = performance.now();
    r.server.upsert('endpointslices', slice('web-abc', ['10.244.0.2']));
    await settle(r);
    const ms = performance.now() - t;
    assert.deepEqual(await backends(r, WEB_VIP), [['10.244.0.2', 'active']]);
    assert.ok(ms < 1000, `written after ${Math.round(ms)} ms, the window is 5000 ms`);
  });

  /**
   * A rig holding one Service per name, settled and idle for `idleMs` (past the quarter window after its last
   * batch), then each Service's endpoints changed `gapMs` apart; the batches that wrote those changes.
   */
  async function trickle(
    o: { maxDelayMs: number; quietMs: number; idleMs: number; gapMs: number },
    names: string[],
  ): Promise<BatchReport[]> {
    const r = await rig({
      maxDelayMs: o.maxDelayMs,
      quietMs: o.quietMs,
      seed: (s) => {
        names.forEach((n, i) => {
          s.upsert('services', service(n, { externalIPs: [`198.18.0.${20 + i}`] }));
          s.upsert('endpointslices', slice(`${n}-x`, ['10.244.1.1'], { service: n }));
        });
      },
    });
    await settle(r);
    await new Promise((resolve) => setTimeout(resolve, o.idleMs));
    const batches = r.batches.length;
    for (const [i, n] of names.entries()) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, o.gapMs));
      r.server.upsert('endpointslices', slice(`${n}-x`, ['10.244.1.2'], { service: n }));
    }
    await settle(r);
    return r.batches.slice(batches);
  }

  it('changes that keep coming within the quiet time are written as one batch', async () => {
    const names = ['a', 'b', 'c', 'd', 'e'];
    // Past the quarter window after the last batch: only the quiet time holds the changes together.
    const batches = await trickle({ maxDelayMs: 2000, quietMs: 150, idleMs: 600, gapMs: 20 }, names);
    assert.deepEqual(
      batches.map((b) => b.written),
      [names.length],
    );
  });

  it('changes that trickle in, each after a quiet moment, wait for a quarter window after the last batch', async () => {
    const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const batches = await trickle({ maxDelayMs: 4000, quietMs: 5, idleMs: 1100, gapMs: 30 }, names);
    // The first change after the quiet, the rest 1,000 ms after that batch began: two batches, not eight.
    const written = batches.map((b) => b.written);
    assert.ok(written.length <= 3, `batches: ${JSON.stringify(written)}`);
    assert.equal(
      written.reduce((a, b) => a + b, 0),
      names.length,
    );
  });

  it('ClusterIP-only changes touch the socket-LB list, not the store', async () => {
    const http = [port(80, { name: 'http', targetPort: 8080 })];
    const r = await rig({
      seed: (s) => {
        s.upsert('services', service('api', { clusterIP: '10.96.1.1', ports: http }));
        s.upsert('services', service('zoo', { clusterIP: '10.96.1.2', ports: http }));
      },
    });
    await settle(r);
    const rev = r.api.store.revision();
    r.server.upsert('endpointslices', slice('api-1', ['10.244.1.1'], { ports: [{ name: 'http', port: 8080 }] }));
    await settle(r);
    assert.equal(r.api.store.revision(), rev, 'no store revision for a ClusterIP-only change');
    const list = () => r.sync.clusterIps().map((c) => [c.ip, c.port, c.backends.map((b) => b.address)]);
    assert.deepEqual(list(), [
      ['10.96.1.1', 80, ['10.244.1.1']],
      ['10.96.1.2', 80, []],
    ]);
    assert.deepEqual(
      r.clusterIpChanges.at(-1)?.added.map((c) => [c.ip, c.backends.length]),
      [['10.96.1.1', 1]],
      'the last list says what it changed: the ClusterIP with its endpoint',
    );
    // The second Service in key order changes: its own place in the list.
    r.server.upsert('endpointslices', slice('zoo-1', ['10.244.2.1'], { service: 'zoo', ports: [{ name: 'http', port: 8080 }] }));
    await settle(r);
    assert.deepEqual(list(), [
      ['10.96.1.1', 80, ['10.244.1.1']],
      ['10.96.1.2', 80, ['10.244.2.1']],
    ]);
    assert.deepEqual(r.clusterIps.at(-1), r.sync.clusterIps());
    assertChangesAddUp(r);
    // A Service written again as it was is translated again: its entries stay the objects handed over, which the
    // changes of the next list (another Service's) take as the ones it still holds.
    const zoo = r.sync.clusterIps()[1];
    r.server.upsert('services', service('zoo', { clusterIP: '10.96.1.2', ports: http }));
    const batches = r.batches.length;
    await until(() => r.batches.length > batches && r.sync.idle, 'the batch of the rewritten Service');
    r.server.upsert('endpointslices', slice('api-1', ['10.244.1.1', '10.244.1.2'], { ports: [{ name: 'http', port: 8080 }] }));
    await settle(r);
    assert.equal(r.sync.clusterIps()[1], zoo, "zoo's entry is the object handed over before");
    assert.deepEqual(list()[0], ['10.96.1.1', 80, ['10.244.1.1', '10.244.1.2']]);
    assertChangesAddUp(r);
  });

  it('health-check node ports follow the local endpoints (externalTrafficPolicy Local)', async () => {
    const r = await rig({
      seed: (s) => {
        s.upsert(
          'services',
          service('etp', { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 32000, ingress: ['198.18.0.30'] }),
        );
        s.upsert(
          'endpointslices',
          slice('etp-1', [
            ['10.244.0.1', { node: 'node-a' }],
            ['10.244.0.2', { node: 'node-b' }],
          ]),
        );
      },
    });
    await settle(r);
    assert.deepEqual(r.sync.healthCheckNodePorts(), [{ service: 'default/etp', port: 32000, localEndpoints: 1 }]);
    assert.deepEqual(await backends(r, 'k8s.default.etp.tcp80.198-18-0-30'), [['10.244.0.1', 'active']]);
    r.server.upsert('endpointslices', slice('etp-1', [['10.244.0.2', { node: 'node-b' }]]));
    await settle(r);
    assert.deepEqual(r.hcnp.at(-1), [{ service: 'default/etp', port: 32000, localEndpoints: 0 }]);
  });

  it("a VIP refused by the store (address taken by an API VIP) leaves the Service's other VIPs up, and is retried", async () => {
    const r = await rig();
    const created = await call(r.api.app, {
      method: 'POST',
      url: '/v1/vips',
      body: { name: 'mine', address: '198.18.0.20', port: 80, protocol: 'tcp' },
    });
    assert.equal(created.statusCode, 201);
    r.server.upsert('services', service('two', { externalIPs: ['198.18.0.20', '198.18.0.21'] }));
    r.server.upsert('endpointslices', slice('two-1', ['10.244.2.1']));
    await settle(r);
    await until(() => r.sync.skipped().some((s) => /198\.18\.0\.20/.test(s.reason)), 'the refusal');
    assert.deepEqual(
      (await vips(r)).map((v) => [v.name, v.owner]),
      [
        ['k8s.default.two.tcp80.198-18-0-21', 'kubernetes:default/two'],
        ['mine', null],
      ],
    );
    assert.match(
      r.sync
        .skipped()
        .map((s) => s.reason)
        .join('\n'),
      /k8s\.default\.two\.tcp80\.198-18-0-20 .*refused by the store: .*already used by vip "mine"/,
    );
    await call(r.api.app, { method: 'DELETE', url: '/v1/vips/mine' });
    await until(() => r.sync.skipped().length === 0, 'the retry');
    assert.deepEqual(
      (await vips(r)).map((v) => v.name),
      ['k8s.default.two.tcp80.198-18-0-20', 'k8s.default.two.tcp80.198-18-0-21'],
    );
  });

  it('a datapath refusal rolls the batch back; it is retried until it applies', async () => {
    const r = await rig();
    await settle(r);
    r.api.applier.failing = 'maps are full';
    r.server.upsert('services', service('web', { externalIPs: ['198.18.0.10'] }));
    await until(() => r.sync.stats.failedTransactions >= 2, 'failed attempts');
    assert.deepEqual(await vips(r), []);
    r.api.applier.failing = null;
    await until(() => r.api.store.revision() > 0 && r.sync.idle, 'the retry');
    await settle(r);
    assert.deepEqual(
      (await vips(r)).map((v) => v.name),
      [WEB_VIP],
    );
  });

  it('while a failed batch waits for its backoff, new events do not start batches of their own', async () => {
    const r = await rig({ caps: { retry: { initialMs: 2000, maxMs: 2000 } } });
    await settle(r);
    r.api.applier.failing = 'maps are full';
    r.server.upsert('services', service('web', { externalIPs: ['198.18.0.10'] }));
    await until(() => r.sync.stats.failedTransactions >= 1, 'the first failure');
    const failedAt = r.sync.stats.batches;
    // Events every 20 ms (the batch delay) for 300 ms: within the backoff (1 to 2 s with jitter), none may start a batch.
    for (let i = 0; i < 15; i++) {
      r.server.upsert('endpointslices', slice('web-abc', [`10.244.0.${i + 1}`]));
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(r.sync.stats.batches, failedAt, 'no batch ran during the backoff');
    r.api.applier.failing = null;
    await until(() => r.api.store.revision() > 0 && r.sync.idle, 'the retry after the backoff');
    await settle(r);
    assert.deepEqual(
      (await vips(r)).map((v) => v.name),
      [WEB_VIP],
    );
  });

  it('events that came while a failing batch ran wait for its backoff, not for their own timer', async () => {
    const r = await rig({ caps: { servicesPerTransaction: 1, maxTransactionsPerBatch: 1000, retry: { initialMs: 2000, maxMs: 2000 } } });
    await settle(r);
    r.api.applier.failing = 'maps are full';
    const objs: Array<readonly [ResourceName, KubeObject]> = [];
    for (let i = 0; i < 40; i++) {
      objs.push(['services', service(`s${i}`, { externalIPs: [`198.18.1.${i}`] })]);
      objs.push(['endpointslices', slice(`s${i}-x`, ['10.244.0.1'], { service: `s${i}` })]);
    }
    r.server.upsertMany(objs);
    // While its 40 failing transactions are written one per turn, another Service changes now and then.
    let k = 0;
    const tick = setInterval(() => r.server.upsert('endpointslices', slice('s0-x', [`10.244.1.${++k}`], { service: 's0' })), 3);
    try {
      await until(() => r.sync.stats.failedTransactions >= 40, 'the failing batch');
    } finally {
      clearInterval(tick);
    }
    const failedAt = r.sync.stats.batches;
    await new Promise((res) => setTimeout(res, 400));
    assert.equal(r.sync.stats.batches, failedAt, 'no batch ran during the backoff');
  });

  it('nothing is written before every informer listed; then owners of vanished Services are swept', async () => {
    const r = await rig({
      before: (api) => {
        api.controller.write('kubernetes', 'k8s.sync', (tx) => {
          tx.replaceState(
            {
              vips: [
                {
                  name: 'k8s.default.gone.tcp80.198-18-0-99',
                  address: '198.18.0.99',
                  port: 80,
                  protocol: 'tcp',
                  backends: [{ address: '10.244.9.9' }],
                },
              ],
            },
            30,
            'kubernetes:default/gone',
          );
          tx.replaceState(
            {
              vips: [
                {
                  name: WEB_VIP,
                  address: '198.18.0.10',
                  port: 80,
                  protocol: 'tcp',
                  backends: [{ address: '10.244.0.1' }, { address: '10.244.0.2' }],
                },
              ],
            },
            30,
            'kubernetes:default/web',
          );
        });
      },
      seed: (s) => {
        s.upsert('services', service('web', { externalIPs: ['198.18.0.10'] }));
        s.upsert('endpointslices', slice('web-abc', ['10.244.0.1', '10.244.0.2']));
        s.failNext(8, 503, /endpointslices\?limit/);
      },
    });
    const rev = r.api.store.revision();
    await until(() => r.watch.services.synced, 'Services listed');
    await new Promise((res) => setTimeout(res, 60));
    assert.equal(r.watch.endpointSlices.synced, false);
    assert.equal(r.api.store.revision(), rev, 'no write while EndpointSlices are not listed (web would have lost its backends)');
    await settle(r);
    assert.deepEqual(
      (await vips(r)).map((v) => [v.name, v.backend_count]),
      [[WEB_VIP, 2]],
    );
    assert.equal(r.api.store.revision(), rev + 1, 'one transaction: the sweep; web was already right');
  });

  it("a change of this node's addresses moves its NodePort VIPs; heartbeats do not", async () => {
    const r = await rig({
      seed: (s) => {
        s.upsert('nodes', node('node-a', [['InternalIP', '10.0.0.1']]));
        s.upsert(
          'services',
          service('np', { type: 'NodePort', ports: [port(30500, { name: 'http', targetPort: 30500, nodePort: 30500 })] }),
        );
        s.upsert('endpointslices', slice('np-1', ['10.244.0.1'], { ports: [{ name: 'http', port: 30500 }] }));
      },
    });
    await settle(r);
    assert.deepEqual(
      (await vips(r)).map((v) => `${v.address}:${v.port}`),
      ['10.0.0.1:30500'],
    );
    const batches = r.sync.stats.batches;
    const hb = node('node-a', [['InternalIP', '10.0.0.1']]);
    hb.metadata.annotations = { heartbeat: 'now' };
    r.server.upsert('nodes', hb);
    await until(() => r.watch.nodes.cache.get('node-a')?.metadata.annotations?.heartbeat === 'now', 'the heartbeat');
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(r.sync.stats.batches, batches, 'no batch for a heartbeat');
    r.server.upsert(
      'nodes',
      node('node-a', [
        ['InternalIP', '10.0.0.2'],
        ['ExternalIP', '203.0.113.2'],
      ]),
    );
    await until(() => r.sync.stats.batches > batches && r.sync.idle, 'the address change');
    assert.deepEqual((await vips(r)).map((v) => `${v.address}:${v.port}`).sort(), ['10.0.0.2:30500', '203.0.113.2:30500']);
  });
});

describe('k8s sync: a burst', () => {
  it('a batch of several transactions lets the event loop run between them; what changes meanwhile is written next', async () => {
    const N = 600;
    const r = await rig({
      maxVips: 1024,
      maxBackends: 4096,
      maxDelayMs: 100,
      caps: { servicesPerTransaction: 40, maxTransactionsPerBatch: 1000 },
    });
    await settle(r);
    const rev0 = r.api.store.revision();
    const ip = (n: number, a: number): string => `${a}.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
    const name = (i: number): string => `svc-${String(i).padStart(3, '0')}`;
    const objs: Array<readonly [ResourceName, KubeObject]> = [];
    for (let i = 0; i < N; i++) {
      objs.push(['services', service(name(i), { clusterIP: ip(i + 1, 10), externalIPs: [`198.18.${i >> 8}.${i & 255}`] })]);
      objs.push(['endpointslices', slice(`${name(i)}-x`, [ip(i + 1, 11)], { service: name(i) })]);
    }
    // A timer notes every revision it sees; the first one inside a batch changes a Service that batch already wrote.
    const seen = new Set<number>();
    let changed = false;
    const tick = setInterval(() => {
      const rev = r.api.store.revision();
      seen.add(rev);
      if (!changed && rev > rev0 && !r.sync.idle) {
        changed = true;
        r.server.upsert('endpointslices', slice(`${name(0)}-x`, ['10.250.0.1', '10.250.0.2'], { service: name(0) }));
      }
    }, 1);
    try {
      r.server.upsertMany(objs);
      await until(() => r.watch.services.cache.size === N && r.watch.endpointSlices.cache.size === N, 'the burst', 60_000);
      await settle(r, 60_000);
    } finally {
      clearInterval(tick);
    }
    assert.ok(changed, 'no timer ran while a batch was being written');
    // Batches of more than one transaction, with a timer run between two of them (a revision no batch ended on).
    const multi = r.batches.filter((b) => b.transactions > 1);
    assert.ok(multi.length > 0, `batches: ${JSON.stringify(r.batches.map((b) => b.transactions))}`);
    const batchEnds = new Set(r.batches.map((b) => b.revision));
    const inside = [...seen].filter((v) => v > rev0 && !batchEnds.has(v));
    assert.ok(inside.length > 0, `timers saw only batch ends: ${[...seen].sort((a, b) => a - b).join(',')}`);
    for (const b of r.batches) assert.ok(b.longestStepMs > 0 && b.longestStepMs <= b.ms);
    // The socket-LB is fed after every step, not once a batch: more lists than batches, the last one complete.
    assert.ok(r.clusterIps.length > r.batches.length, `${r.clusterIps.length} lists for ${r.batches.length} batches`);
    assert.deepEqual(r.clusterIps.at(-1), r.sync.clusterIps());
    assertChangesAddUp(r);
    // Everything is written, including the change made while its batch was running.
    const list = await vips(r);
    assert.equal(list.length, N);
    assert.deepEqual(await backends(r, `k8s.default.${name(0)}.tcp80.198-18-0-0`), [
      ['10.250.0.1', 'active'],
      ['10.250.0.2', 'active'],
    ]);
    assert.deepEqual(await backends(r, `k8s.default.${name(N - 1)}.tcp80.198-18-2-87`), [[ip(N, 11), 'active']]);
    assert.equal(r.api.controller.appliedRevision, r.api.store.revision());
  });

  it('10,000 Services × 10 endpoints converge in a few dozen transactions', async () => {
    const N = 10_000;
    const E = 10;
    const r = await rig({ maxVips: 16_384, maxBackends: 131_072, maxDelayMs: 200 });
    await settle(r);
    const rev0 = r.api.store.revision();
    const batches0 = r.sync.stats.batches;
    const ip = (n: number, a: number): string => `${a}.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
    const objs: Array<readonly [ResourceName, KubeObject]> = [];
    for (let i = 0; i < N; i++) {
      const name = `svc-${i}`;
      objs.push([
        'services',
        service(name, { namespace: 'burst', clusterIP: ip(i + 1, 10), externalIPs: [`198.18.${(i >> 8) & 255}.${i & 255}`] }),
      ]);
      objs.push([
        'endpointslices',
        slice(
          `${name}-x`,
          Array.from({ length: E }, (_, j) => ip(i * E + j + 1, 11)),
          { namespace: 'burst', service: name },
        ),
      ]);
    }
    const t0 = performance.now();
    r.server.upsertMany(objs);
    await until(() => r.sync.idle && r.watch.endpointSlices.cache.size === N && r.watch.services.cache.size === N, 'the burst', 240_000);
    const ms = performance.now() - t0;
    const revisions = r.api.store.revision() - rev0;
    const counts = r.api.store.read((tx) => {
      const s = tx.snapshot();
      return { vips: s.vips.length, backends: s.backends.length };
    });
    console.log(
      `# burst of ${N} Services × ${E} endpoints: ${Math.round(ms)} ms to committed + applied, ${revisions} store revisions, ${r.sync.stats.batches} batches`,
    );
    assert.deepEqual(counts, { vips: N, backends: N * E });
    // Steps of 500 Services (the default), one revision each: at least N / 500. A Service whose slice came in a later
    // batch than the Service itself is written twice, and every batch may end on a partial step.
    const batches = r.sync.stats.batches - batches0;
    assert.ok(revisions >= N / 500 && revisions <= (2 * N) / 500 + batches, `${revisions} revisions in ${batches} batches`);
    // Each Service's ClusterIP and its external IP for local sockets.
    assert.equal(r.sync.clusterIps().length, 2 * N);
    assert.equal(r.api.controller.appliedRevision, r.api.store.revision());
  });
});
