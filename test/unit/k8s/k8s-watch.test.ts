/**
 * The list+watch client (src/k8s/client.ts, informer.ts, backoff.ts) against the Kubernetes API test
 * server (test/lib/k8s-server.ts) over real HTTP(S): initial paged list,
 * incremental events, watch restarts after dropped or ended connections,
 * 410 Gone (as an ERROR event and as HTTP 410) → re-list with the
 * difference delivered, bookmarks, backoff on API errors, silent
 * connections, credentials (kubeconfig token, CA, in-cluster service
 * account), the Node field selector and the periodic resync.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Node, Service } from '../../../src/k8s/types.js';
import { backoffDelay } from '../../../src/k8s/backoff.js';
import { ApiClient, loadKubeConfig } from '../../../src/k8s/client.js';
import { Informer, K8sWatch, SERVICES_PATH, type EventType, type InformerOptions } from '../../../src/k8s/informer.js';
import { K8sTestServer } from '../../lib/k8s-server.js';
import { node, service, slice } from '../../lib/k8s-objects.js';

const FAST = { backoff: { initialMs: 10, maxMs: 80 } };

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

class Recorder<T extends Service | Node> {
  events: Array<[EventType, string]> = [];
  synced = 0;
  handler = {
    onEvent: (type: EventType, obj: T): void => {
      this.events.push([type, obj.metadata.name]);
    },
    onSynced: (): void => {
      this.synced++;
    },
  };

  take(): Array<[EventType, string]> {
    return this.events.splice(0);
  }
}

const running = new Set<Informer<Service>>();

function serviceInformer(kc: KubeConfig, rec: Recorder<Service>, o: Partial<InformerOptions> = {}): Informer<Service> {
  const inf = new Informer<Service>(new ApiClient(kc), { path: SERVICES_PATH, kind: 'Service', ...FAST, ...o }, rec.handler);
  inf.start();
  running.add(inf);
  return inf;
}

/** Stops what a test left running (a failed test must not disturb the next). */
async function stopAll(): Promise<void> {
  await Promise.all([...running].map((i) => i.stop()));
  running.clear();
}

const lastWatchRv = (server: K8sTestServer): string | undefined => server.watchRequests('services').at(-1)?.query.resourceVersion;

describe('k8s watch: list and watch', () => {
  let server: K8sTestServer;
  let kc: KubeConfig;
  before(async () => {
    server = await K8sTestServer.start();
    kc = loadKubeConfig({ kubeconfig: server.writeKubeconfig() });
  });
  after(async () => {
    await server.close();
  });
  afterEach(async () => {
    await stopAll();
    server.removeMany(
      ['services', 'endpointslices', 'nodes'].flatMap((r) => server.keys(r as 'services').map((k) => [r as 'services', k] as const)),
    );
    server.goneMode = 'event';
  });

  it('lists in pages, delivers ADDED for each object, reports synced, then watches from the list resourceVersion with bookmarks', async () => {
    for (const n of ['a', 'b', 'c', 'd', 'e']) server.upsert('services', service(n));
    const rec = new Recorder<Service>();
    const inf = serviceInformer(kc, rec, { pageSize: 2 });
    await inf.waitSynced();
    assert.deepEqual(
      rec.take().map(([t, n]) => `${t} ${n}`),
      ['ADDED a', 'ADDED b', 'ADDED c', 'ADDED d', 'ADDED e'],
    );
    assert.equal(rec.synced, 1);
    assert.equal(inf.cache.size, 5);
    assert.equal(server.listRequests('services').length, 3, 'pages of 2: three requests');
    assert.ok(server.listRequests('services')[1]?.query.continue, 'continue token sent');
    await until(() => server.watchRequests('services').length === 1, 'the watch');
    const w = server.watchRequests('services')[0]!.query;
    assert.equal(w.resourceVersion, String(server.rv));
    assert.equal(w.allowWatchBookmarks, 'true');
    assert.ok(Number(w.timeoutSeconds) >= 300 && Number(w.timeoutSeconds) < 600, w.timeoutSeconds);

    server.upsert('services', service('f'));
    server.upsert('services', service('a', { externalIPs: ['198.18.0.1'] }));
    server.remove('services', 'default/b');
    await until(() => rec.events.length === 3, 'three events');
    assert.deepEqual(rec.take(), [
      ['ADDED', 'f'],
      ['MODIFIED', 'a'],
      ['DELETED', 'b'],
    ]);
    assert.equal(inf.resourceVersion, String(server.rv));
    assert.deepEqual(inf.cache.get('default/a')?.spec?.externalIPs, ['198.18.0.1']);
    assert.equal(inf.cache.has('default/b'), false);
    await inf.stop();
    for (const n of ['a', 'c', 'd', 'e', 'f']) server.remove('services', n);
  });

  it('a dropped or ended watch restarts from the last resourceVersion without re-listing; changes in between are not lost', async () => {
    const rec = new Recorder<Service>();
    server.upsert('services', service('w1'));
    const inf = serviceInformer(kc, rec);
    await inf.waitSynced();
    await until(() => server.watchCount === 1, 'watching');
    rec.take();
    const lists = server.listRequests('services').length;
    const watches = server.watchRequests('services').length;
    const rvBefore = inf.resourceVersion;

    server.dropWatches(); // connection reset, no terminating chunk
    server.upsert('services', service('w2'));
    server.upsert('services', service('w1', { externalIPs: ['198.18.0.2'] }));
    await until(() => rec.events.length === 2, 'events after the drop');
    assert.deepEqual(rec.take(), [
      ['ADDED', 'w2'],
      ['MODIFIED', 'w1'],
    ]);
    assert.equal(server.listRequests('services').length, lists, 'no re-list');
    assert.equal(server.watchRequests('services').length, watches + 1);
    assert.equal(lastWatchRv(server), rvBefore, 're-watched from the last resourceVersion it had');

    server.endWatches(); // clean end, as a server-side timeout
    server.remove('services', 'w2');
    await until(() => rec.events.length === 1, 'event after the end');
    assert.deepEqual(rec.take(), [['DELETED', 'w2']]);
    assert.equal(server.listRequests('services').length, lists, 'still no re-list');
    await inf.stop();
    server.remove('services', 'w1');
  });

  for (const mode of ['event', 'http'] as const) {
    it(`410 Gone (${mode === 'event' ? 'ERROR event with a Status code 410' : 'HTTP 410'}) → re-list, and the difference is delivered`, async () => {
      server.goneMode = mode;
      const rec = new Recorder<Service>();
      server.upsert('services', service('g1'));
      server.upsert('services', service('g2'));
      const inf = serviceInformer(kc, rec);
      await inf.waitSynced();
      await until(() => server.watchCount === 1, 'watching');
      rec.take();
      const lists = server.listRequests('services').length;

      server.dropWatches();
      server.remove('services', 'g1');
      server.upsert('services', service('g3'));
      server.upsert('services', service('g2', { externalIPs: ['198.18.0.3'] }));
      server.expireHistory(); // the client's resourceVersion is now too old
      await until(() => rec.events.length === 3, 'the re-list difference');
      assert.deepEqual(rec.take().sort(), [
        ['ADDED', 'g3'],
        ['DELETED', 'g1'],
        ['MODIFIED', 'g2'],
      ]);
      assert.equal(server.listRequests('services').length, lists + 1, 'one re-list');
      assert.equal(inf.stats.gone, 1);
      assert.equal(rec.synced, 2);
      assert.deepEqual([...inf.cache.keys()].sort(), ['default/g2', 'default/g3']);
      await until(() => server.watchCount === 1, 'watching again');
      assert.equal(lastWatchRv(server), String(server.rv));
      await inf.stop();
      server.removeMany([
        ['services', 'g2'],
        ['services', 'g3'],
      ]);
      server.goneMode = 'event';
    });
  }

  it('an ERROR 410 on a live stream (the watch cache fell behind) re-lists too', async () => {
    const rec = new Recorder<Service>();
    const inf = serviceInformer(kc, rec);
    await inf.waitSynced();
    await until(() => server.watchCount === 1, 'watching');
    const lists = server.listRequests('services').length;
    server.goneWatches();
    await until(() => server.listRequests('services').length === lists + 1, 're-list');
    assert.equal(inf.stats.gone, 1);
    await inf.stop();
  });

  it('bookmarks advance the resourceVersion, so a restart after history expired needs no re-list', async () => {
    const rec = new Recorder<Service>();
    server.upsert('services', service('bm'));
    const inf = serviceInformer(kc, rec);
    await inf.waitSynced();
    await until(() => server.watchCount === 1, 'watching');
    // Other resources move the global resourceVersion; the Service watch sees none of it.
    for (let i = 0; i < 5; i++) server.upsert('nodes', node(`n${i}`, []));
    assert.notEqual(inf.resourceVersion, String(server.rv));
    server.sendBookmarks();
    await until(() => inf.resourceVersion === String(server.rv), 'the bookmark');
    assert.equal(inf.stats.bookmarks, 1);
    assert.deepEqual(rec.take(), [['ADDED', 'bm']], 'a bookmark is not an event');
    const lists = server.listRequests('services').length;
    server.expireHistory();
    server.dropWatches();
    await until(() => server.watchCount === 1, 'watching again');
    assert.equal(lastWatchRv(server), String(server.rv));
    assert.equal(server.listRequests('services').length, lists, 'no re-list');
    assert.equal(inf.stats.gone, 0);
    await inf.stop();
    server.remove('services', 'bm');
  });

  it('API errors are retried with backoff: failed lists, then failed watches (no re-list for those)', async () => {
    const rec = new Recorder<Service>();
    server.upsert('services', service('err'));
    server.failNext(3, 500, /\/services\?limit/);
    const inf = serviceInformer(kc, rec);
    await inf.waitSynced();
    assert.equal(inf.stats.errors, 3);
    await until(() => server.watchCount === 1, 'watching');
    const lists = server.listRequests('services').length;
    server.failNext(2, 429, /watch=true/);
    server.dropWatches();
    // The dropped connection is one error, the two 429s two more.
    await until(() => inf.stats.errors === 6 && server.watchCount === 1, 'retried watches');
    assert.equal(server.listRequests('services').length, lists);
    server.upsert('services', service('err', { externalIPs: ['198.18.0.4'] }));
    await until(() => rec.events.length === 2, 'events flow again');
    assert.deepEqual(rec.take(), [
      ['ADDED', 'err'],
      ['MODIFIED', 'err'],
    ]);
    await inf.stop();
    server.remove('services', 'err');
  });

  it('a watch that stays silent is aborted and restarted', async () => {
    const rec = new Recorder<Service>();
    const base = server.watchRequests('services').length;
    const inf = serviceInformer(kc, rec, { idleTimeoutMs: 150 });
    await inf.waitSynced();
    await until(() => server.watchRequests('services').length >= base + 3, 'restarts of the silent watch', 3000);
    assert.ok(inf.stats.errors >= 2);
    assert.equal(inf.stats.lists, 1);
    await inf.stop();
  });

  it('backoff delays double up to the maximum, with jitter in [base/2, base]', () => {
    const b = { initialMs: 100, maxMs: 1000 };
    assert.deepEqual(
      [1, 2, 3, 4, 5, 9].map((n) => backoffDelay(b, n, () => 1)),
      [100, 200, 400, 800, 1000, 1000],
    );
    assert.deepEqual(
      [1, 2, 5].map((n) => backoffDelay(b, n, () => 0)),
      [50, 100, 500],
    );
  });
});

describe('k8s watch: credentials', () => {
  it('a kubeconfig with a CA over HTTPS and a bearer token', async () => {
    const server = await K8sTestServer.start({ tls: true });
    try {
      server.upsert('services', service('tls'));
      const rec = new Recorder<Service>();
      const inf = serviceInformer(loadKubeConfig({ kubeconfig: server.writeKubeconfig() }), rec);
      await inf.waitSynced();
      assert.deepEqual(rec.take(), [['ADDED', 'tls']]);
      await inf.stop();
    } finally {
      await server.close();
    }
  });

  it('the in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, token file, ca.crt)', async () => {
    const server = await K8sTestServer.start({ tls: true, token: 'sa-token-123' });
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    try {
      const sa = server.writeServiceAccount();
      Object.assign(process.env, sa.env);
      const kc = loadKubeConfig({ inCluster: true, pathPrefix: sa.pathPrefix });
      assert.equal(kc.getCurrentCluster()?.server, server.url);
      server.upsert('services', service('incluster'));
      const rec = new Recorder<Service>();
      const inf = serviceInformer(kc, rec);
      await inf.waitSynced();
      assert.deepEqual(rec.take(), [['ADDED', 'incluster']]);
      await inf.stop();
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', saved.host],
        ['KUBERNETES_SERVICE_PORT', saved.port],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await server.close();
    }
  });

  it('a wrong token is refused (401) and retried, never synced', async () => {
    const server = await K8sTestServer.start({ token: 'right' });
    try {
      const path = server.writeKubeconfig().replace(/kubeconfig\.yaml$/, 'bad.yaml');
      const { readFileSync, writeFileSync } = await import('node:fs');
      writeFileSync(path, readFileSync(server.writeKubeconfig(), 'utf8').replace('token: right', 'token: wrong'));
      const rec = new Recorder<Service>();
      const inf = serviceInformer(loadKubeConfig({ kubeconfig: path }), rec);
      await until(() => inf.stats.errors >= 3, 'retries');
      assert.equal(inf.synced, false);
      await inf.stop();
    } finally {
      await server.close();
    }
  });
});

describe('k8s watch: K8sWatch (three informers)', () => {
  it('watches every node, reports each kind synced, and resyncs periodically', async () => {
    const server = await K8sTestServer.start();
    try {
      server.upsert('nodes', node('node-a', [['InternalIP', '10.0.0.1']]));
      server.upsert('nodes', node('node-b', [['InternalIP', '10.0.0.2']]));
      server.upsert('services', service('web'));
      server.upsert('endpointslices', slice('web-1', ['10.244.0.1']));
      const seen: string[] = [];
      const synced: string[] = [];
      let resyncs = 0;
      const w = new K8sWatch({
        kubeConfig: loadKubeConfig({ kubeconfig: server.writeKubeconfig() }),
        nodeName: 'node-a',
        resyncMs: 50,
        ...FAST,
        handler: {
          service: (t, o) => seen.push(`${t} Service ${o.metadata.namespace}/${o.metadata.name}`),
          endpointSlice: (t, o) => seen.push(`${t} EndpointSlice ${o.metadata.namespace}/${o.metadata.name}`),
          node: (t, o) => seen.push(`${t} Node ${o.metadata.name}`),
          synced: (k) => synced.push(k),
          resync: () => resyncs++,
        },
      });
      w.start();
      await w.waitSynced();
      assert.equal(w.synced, true);
      assert.deepEqual(seen.sort(), [
        'ADDED EndpointSlice default/web-1',
        'ADDED Node node-a',
        'ADDED Node node-b',
        'ADDED Service default/web',
      ]);
      assert.deepEqual(synced.sort(), ['EndpointSlice', 'Node', 'Service']);
      assert.equal(server.listRequests('nodes')[0]?.query.fieldSelector, undefined, 'no field selector: endpoints live on every node');
      server.upsert('nodes', node('node-b', [['InternalIP', '10.0.0.3']]));
      server.upsert('nodes', node('node-a', [['InternalIP', '10.0.0.4']]));
      await until(() => seen.length === 6, 'the node changes');
      assert.deepEqual(seen.slice(4), ['MODIFIED Node node-b', 'MODIFIED Node node-a']);
      await until(() => resyncs >= 2, 'resyncs');
      const stats = w.stats();
      assert.equal(stats.services.objects, 1);
      assert.equal(stats.nodes.objects, 2);
      await w.stop();
    } finally {
      await server.close();
    }
  });
});
