/**
 * The Kubernetes mode as ferryd assembles it (src/k8s/mode.ts), in process:
 * credentials (kubeconfig, in-cluster service account, and what is missing
 * when neither works); K8sMode over the test API server (TLS, in-cluster
 * credentials) into a real store and Controller: readiness, the API view
 * served by GET /v1/kubernetes exactly as the daemon builds it, a
 * ClusterIpConsumer receiving the list (its failures reported), and stop().
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import type { KubernetesConfig } from '../../../src/config/index.js';
import { defaultConfig } from '../../../src/config/index.js';
import { K8sMode, loadCredentials, type ClusterIpConsumer } from '../../../src/k8s/mode.js';
import type { ClusterIpEntry } from '../../../src/k8s/translate.js';
import { call, makeApi, problemOf } from '../../lib/api-fixture.js';
import { node, service, slice } from '../../lib/k8s-objects.js';
import { K8sTestServer } from '../../lib/k8s-server.js';
import { until } from '../../lib/until.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Sets process variables for the duration of the test (the library reads process.env). */
function setEnv(vars: Record<string, string | undefined>): void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  cleanups.push(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

class RecordingConsumer implements ClusterIpConsumer {
  readonly name = 'recording';
  lists: ClusterIpEntry[][] = [];
  failing: string | null = null;
  closed = 0;
  apply(all: ClusterIpEntry[]): void {
    if (this.failing !== null) throw new Error(this.failing);
    this.lists.push(all);
  }
  stats(): Record<string, number> {
    return { applied: this.lists.length };
  }
  close(): void {
    this.closed++;
  }
}

describe('k8s mode: credentials', () => {
  it("a kubeconfig, or the pod's service account; what is missing is said", async () => {
    const server = await K8sTestServer.start({ tls: true });
    cleanups.push(() => server.close());
    const kc = loadCredentials({ kubeconfig: server.writeKubeconfig() });
    assert.deepEqual([kc.source, kc.server], ['kubeconfig', server.url]);

    const dir = mkdtempSync(join(tmpdir(), 'ferry-cred-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    assert.throws(
      () => loadCredentials({ kubeconfig: join(dir, 'nope.yaml') }),
      /kubernetes: cannot use the kubeconfig .*nope\.yaml: ENOENT/,
    );
    writeFileSync(join(dir, 'empty.yaml'), 'apiVersion: v1\nkind: Config\n');
    assert.throws(
      () => loadCredentials({ kubeconfig: join(dir, 'empty.yaml') }),
      /cannot use the kubeconfig .*empty\.yaml: kubernetes: the kubeconfig has no current cluster/,
    );

    setEnv({ KUBERNETES_SERVICE_HOST: undefined, KUBERNETES_SERVICE_PORT: undefined });
    assert.throws(
      () => loadCredentials({ kubeconfig: null }),
      /KUBERNETES_SERVICE_HOST\/KUBERNETES_SERVICE_PORT are unset \(not in a pod\)/,
    );
    const sa = server.writeServiceAccount();
    setEnv(sa.env);
    const ic = loadCredentials({ kubeconfig: null }, { pathPrefix: sa.pathPrefix });
    assert.deepEqual([ic.source, ic.server], ['in-cluster', `https://127.0.0.1:${server.port}`]);
    assert.throws(() => loadCredentials({ kubeconfig: null }, { pathPrefix: dir }), /serviceaccount\/token is missing/);
  });
});

describe('k8s mode: assembled', () => {
  it('ready after the first sync; GET /v1/kubernetes serves its view; the ClusterIP consumer gets the list; stop() ends the watch', async () => {
    const server = await K8sTestServer.start({ tls: true });
    cleanups.push(() => server.close());
    server.upsert('nodes', node('node-a', [['InternalIP', '10.0.0.1']]));
    server.upsert('services', service('web', { type: 'LoadBalancer', clusterIP: '10.96.0.10', ingress: ['198.18.0.10'] }));
    server.upsert('endpointslices', slice('web-abc', ['10.244.0.1', '10.244.0.2']));
    server.upsert('services', service('external', { type: 'ExternalName', externalName: 'example.invalid' }));
    const api = await makeApi();
    cleanups.push(() => api.close());
    problemOf(await call(api.app, { url: '/v1/kubernetes' }), 404, 'not-kubernetes-mode');

    const sa = server.writeServiceAccount();
    setEnv(sa.env);
    const consumer = new RecordingConsumer();
    const config: KubernetesConfig = { ...defaultConfig().kubernetes, node_name: 'node-a', batch_delay_ms: 10, health_check_addresses: [] };
    const mode = new K8sMode({
      controller: api.controller,
      config,
      credentials: loadCredentials(config, { pathPrefix: sa.pathPrefix }),
      log: { debug() {}, info() {}, warn() {}, error() {} },
      clusterIps: consumer,
    });
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await mode.stop();
    });
    Object.assign(api.info, { kubernetes: () => mode.view() });
    assert.equal(mode.ready, false);
    assert.match(mode.waitingFor(), /first list of Services, EndpointSlices, Node/);
    mode.start();
    await until(() => mode.ready, 'the first sync');

    const res = await call(api.app, { url: '/v1/kubernetes' });
    assert.equal(res.statusCode, 200);
    const v = mode.view();
    assert.deepEqual(res.json(), JSON.parse(JSON.stringify(v)), 'the response schema carries every field of the view');
    assert.equal(v.credentials, 'in-cluster');
    assert.deepEqual(v.ignored, [{ service: 'default/external', reason: 'ExternalName Service: resolved by DNS, nothing to proxy' }]);
    // Applied by the first batch, and once more in full when the first sync completes (stale pinned entries go).
    // The ClusterIP, and the LoadBalancer IP for sockets on this node.
    assert.deepEqual(v.cluster_ips, { entries: 2, consumer: 'recording', consumer_stats: { applied: 2 }, last_error: null });
    assert.deepEqual(
      consumer.lists.at(-1)?.map((e) => [e.service, e.ip, e.port, e.backends.map((b) => b.address)]),
      [
        ['default/web', '10.96.0.10', 80, ['10.244.0.1', '10.244.0.2']],
        ['default/web', '198.18.0.10', 80, ['10.244.0.1', '10.244.0.2']],
      ],
    );
    assert.equal(
      (await call(api.app, { url: '/v1/vips' })).json<{ items: Array<{ owner: string }> }>().items[0]?.owner,
      'kubernetes:default/web',
    );

    // A failing consumer is reported, not fatal, and the whole list is applied again until it goes through.
    consumer.failing = 'map full';
    server.upsert('endpointslices', slice('web-abc', ['10.244.0.1']));
    await until(() => mode.view().cluster_ips.last_error === 'map full', 'the failure to show');
    assert.equal(mode.ready, true, 'readiness is latched');
    consumer.failing = null;
    await until(() => mode.view().cluster_ips.last_error === null, 'the retry to apply the list', 10_000);
    assert.deepEqual(
      consumer.lists.at(-1)?.[0]?.backends.map((b) => b.address),
      ['10.244.0.1'],
      'with no other change',
    );
    server.upsert('endpointslices', slice('web-abc', ['10.244.0.1', '10.244.0.3']));
    await until(() => consumer.lists.at(-1)?.[0]?.backends.length === 2, 'the next change to apply');
    assert.deepEqual(
      consumer.lists.at(-1)?.[0]?.backends.map((b) => b.address),
      ['10.244.0.1', '10.244.0.3'],
    );
    assert.equal(mode.view().cluster_ips.last_error, null);

    assert.ok(server.watchCount >= 3);
    await mode.stop();
    stopped = true;
    assert.equal(consumer.closed, 1);
    await until(() => server.watchCount === 0, 'the watches to end');
    const batches = mode.sync.stats.batches;
    server.upsert('endpointslices', slice('web-abc', ['10.244.0.9']));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(mode.sync.stats.batches, batches, 'nothing is written after stop()');
  });
});

describe('k8s mode: readiness needs a written first sync', () => {
  it('a first batch the store refuses as a whole does not make it ready; the retry that commits does', async () => {
    const server = await K8sTestServer.start({ tls: true });
    cleanups.push(() => server.close());
    server.upsert('nodes', node('node-a', [['InternalIP', '10.0.0.1']]));
    server.upsert('services', service('web', { type: 'LoadBalancer', clusterIP: '10.96.0.10', ingress: ['198.18.0.10'] }));
    server.upsert('endpointslices', slice('web-abc', ['10.244.0.1']));
    const api = await makeApi();
    cleanups.push(() => api.close());
    const sa = server.writeServiceAccount();
    setEnv(sa.env);
    const config: KubernetesConfig = { ...defaultConfig().kubernetes, node_name: 'node-a', batch_delay_ms: 10, health_check_addresses: [] };
    const controller = api.controller;
    const write = controller.write.bind(controller);
    let failing = true;
    controller.write = ((...args: Parameters<typeof write>) => {
      if (failing) throw new Error('disk I/O error');
      return write(...args);
    }) as typeof controller.write;
    const mode = new K8sMode({
      controller,
      config,
      credentials: loadCredentials(config, { pathPrefix: sa.pathPrefix }),
      log: { debug() {}, info() {}, warn() {}, error() {} },
    });
    cleanups.push(() => mode.stop());
    mode.start();
    await until(() => mode.view().sync.batches >= 2, 'two failed batches (the first and a retry)', 20_000);
    assert.equal(mode.ready, false, 'not ready on batches that wrote nothing');
    failing = false;
    await until(() => mode.ready, 'the next retry to commit', 20_000);
    assert.equal(
      (await call(api.app, { url: '/v1/vips' })).json<{ items: Array<{ owner: string }> }>().items[0]?.owner,
      'kubernetes:default/web',
    );
  });
});
