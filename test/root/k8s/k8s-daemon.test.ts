/**
 * ferryd in kubernetes mode, for real: the daemon in a namespace of its
 * own (xdp_lb on its veth), the Kubernetes API test server reached through
 * a forwarder on the namespace's loopback (test/lib/k8s-netns.ts), over
 * TLS with a bearer token from a kubeconfig. A LoadBalancer Service
 * becomes a VIP in the store and the maps, owned by its Service and
 * read-only through the API; readiness waits for the first sync; metrics,
 * GET /v1/kubernetes and ferryctl show the sync; the health-check node
 * port answers as kube-proxy's; deleting the Service removes the VIP;
 * SIGTERM stops the watch first; bad credentials or no node name stop the
 * start with a clear message.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { KubernetesView } from '../../../src/model/kubernetes.js';
import type { Service } from '../../../src/k8s/types.js';
import { packageRoot } from '../../../src/paths.js';
import { bpfUnavailable } from '../../lib/harness.js';
import {
  destroyFerrydEnv,
  ferryctl,
  getText,
  makeFerrydEnv,
  mapVips,
  probe,
  startFerryd,
  stopFerryd,
  type Ferryd,
  type FerrydEnv,
} from '../../lib/ferryd.js';
import { createCgroup, DEFAULT_CGROUP2_ROOT, removeCgroup, removeStaleCgroups } from '../../../src/lab/cgroup.js';
import { startNetnsForwarder, UnixGate, writeKubeconfig } from '../../lib/k8s-netns.js';
import { node, service, slice } from '../../lib/k8s-objects.js';
import { K8sTestServer } from '../../lib/k8s-server.js';
import { until } from '../../lib/until.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping kubernetes daemon tests: ${skip}`);

const API_PORT = 6443;
const HCNP = 32100;
const PROBES = '127.0.0.1:9402';
const VIP = 'k8s.default.web.tcp80.198-18-0-10';
const NODE_PORT_VIP = 'k8s.default.web.tcp30080.198-18-0-1';
const POOL = '198.18.0.10-198.18.0.19';

/** A request over the daemon's unix socket. */
function call(socket: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath: socket,
        path,
        method,
        headers: text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
      },
      (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (b += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

/** curl inside the namespace: status, headers (lower case) and body; status 0 when nothing listens. */
function curlInNs(ns: string, url: string): { status: number; headers: Record<string, string>; body: string } {
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, '--', 'curl', '-s', '-i', '--max-time', '3', url], { encoding: 'utf8' });
  if (r.status !== 0) return { status: 0, headers: {}, body: r.stderr };
  const [head = '', ...rest] = r.stdout.split('\r\n\r\n');
  const lines = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(lines[0]?.split(' ')[1]), headers, body: rest.join('\r\n\r\n') };
}

async function view(e: FerrydEnv): Promise<KubernetesView> {
  const r = await call(e.socket, 'GET', '/v1/kubernetes');
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body) as KubernetesView;
}

interface VipItem {
  name: string;
  owner: string | null;
  address: string;
  port: number;
  backend_count: number;
}

async function vips(e: FerrydEnv): Promise<VipItem[]> {
  return (JSON.parse((await call(e.socket, 'GET', '/v1/vips')).body) as { items: VipItem[] }).items;
}

async function backends(e: FerrydEnv, vip: string): Promise<Array<[string, string, string | null]>> {
  const r = await call(e.socket, 'GET', `/v1/vips/${vip}/backends`);
  return (JSON.parse(r.body) as { items: Array<{ address: string; state: string; owner: string | null }> }).items.map((b) => [
    b.address,
    b.state,
    b.owner,
  ]);
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Runs ferryd to its exit (a start that must fail); returns the code and what it printed. */
async function failingStart(config: string, ns: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  const script = join(packageRoot(), 'dist', 'src', 'daemon', 'ferryd.js');
  const proc = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, script, '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  const [code] = (await once(proc, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, out };
}

describe('ferryd in kubernetes mode', { skip }, () => {
  let e: FerrydEnv;
  let server: K8sTestServer;
  let gate: UnixGate;
  let forwarder: { stop(): Promise<void> } | undefined;
  let d: Ferryd | undefined;
  let bird: ChildProcess | undefined;
  /** The socket-LB serves this cgroup only (not the whole host). */
  const cgroup = join(DEFAULT_CGROUP2_ROOT, `ferrytest-k8sd-${process.pid}`);

  before(async () => {
    removeStaleCgroups('ferrytest-k8sd-');
    createCgroup(`ferrytest-k8sd-${process.pid}`);
    server = await K8sTestServer.start({ tls: true });
    server.upsert('nodes', node('node-a', [['InternalIP', '198.18.0.1']]));
    server.upsert(
      'services',
      service('web', {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        ingress: ['198.18.0.10'],
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: HCNP,
        ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: 30080, protocol: 'TCP' }],
      }),
    );
    server.upsert(
      'endpointslices',
      slice('web-abc', [
        ['10.244.0.1', { node: 'node-a' }],
        ['10.244.0.2', { node: 'node-a' }],
        ['10.244.1.1', { node: 'node-b' }],
      ]),
    );
    server.upsert('services', service('dns', { clusterIP: 'None' }));
    e = makeFerrydEnv('k8sd', [`  probe_listen: "${PROBES}"`]);
    gate = await UnixGate.start(join(e.dir, 'k8s-api.sock'), server.port, { hold: true });
    forwarder = await startNetnsForwarder(e.ns, API_PORT, gate.path);
    const kubeconfig = join(e.dir, 'kubeconfig.yaml');
    writeKubeconfig(kubeconfig, `https://127.0.0.1:${API_PORT}`, server.caFile, server.token!);
    appendFileSync(
      e.config,
      [
        '',
        'mode: kubernetes',
        'kubernetes:',
        `  kubeconfig: ${kubeconfig}`,
        '  drain_seconds: 1',
        '  batch_delay_ms: 20',
        '  health_check_addresses: ["127.0.0.1"]',
        '  socket_lb:',
        `    cgroup: ${cgroup}`,
        // web's address is in the pool (kept); a Service without one gets the next.
        '  lb_ipam:',
        '    enabled: true',
        `    pools: [{ name: edge, addresses: ["${POOL}"] }]`,
        '    lease: { duration_seconds: 2, renew_deadline_seconds: 1.5, retry_period_seconds: 0.2 }',
        'bgp:',
        '  enabled: true',
        '  router_id: 198.18.0.1',
        `  bird_config: ${join(e.dir, 'bird.conf')}`,
        `  bird_socket: ${join(e.dir, 'bird.ctl')}`,
        '  prefixes: ["198.18.0.0/24"]',
        // A session that never comes up (nothing listens on the namespace's loopback): BIRD's table is what is checked.
        '  neighbors: [{ address: 127.0.0.2, as: 65000, port: 1179 }]',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    bird?.kill('SIGKILL');
    if (d) await stopFerryd(d, 'SIGKILL');
    await forwarder?.stop();
    await gate?.close();
    await server?.close();
    if (e) destroyFerrydEnv(e);
    removeCgroup(cgroup);
  });

  it('/readyz answers 503 until the cluster is listed and written, then 200 (API socket and probe port)', async () => {
    d = await startFerryd(e, [], { NODE_NAME: 'node-a' }, '/healthz');
    await until(() => gate.heldCount > 0, 'the daemon to ask the API server');
    const r = await call(e.socket, 'GET', '/readyz');
    assert.equal(r.status, 503);
    assert.match(JSON.parse(r.body).detail, /waiting for the first list of Services, EndpointSlices, Node/);
    assert.equal(curlInNs(e.ns, `http://${PROBES}/readyz`).status, 503);
    assert.equal(curlInNs(e.ns, `http://${PROBES}/healthz`).status, 200);
    const before = await view(e);
    assert.deepEqual([before.ready, before.synced, before.sync.batches], [false, false, 0]);
    assert.deepEqual(await vips(e), [], 'nothing written before the caches synced');

    gate.release();
    await until(async () => (await probe(e.socket, '/readyz')) === 200, 'readiness');
    const p = curlInNs(e.ns, `http://${PROBES}/readyz`);
    assert.equal(p.status, 200);
    assert.deepEqual(JSON.parse(p.body), { status: 'ok' });
    assert.equal(curlInNs(e.ns, `http://${PROBES}/v1/vips`).status, 404, 'the probe port serves only the probes');
  });

  it('a LoadBalancer Service becomes a VIP owned by its Service: REST, ferryctl and the maps', async () => {
    const list = await vips(e);
    assert.deepEqual(
      list.map((v) => [v.name, v.owner, v.address, v.port, v.backend_count]),
      [
        [NODE_PORT_VIP, 'kubernetes:default/web', '198.18.0.1', 30080, 2],
        [VIP, 'kubernetes:default/web', '198.18.0.10', 80, 2],
      ],
    );
    // externalTrafficPolicy Local: this node's endpoints only.
    assert.deepEqual(await backends(e, VIP), [
      ['10.244.0.1', 'active', 'kubernetes:default/web'],
      ['10.244.0.2', 'active', 'kubernetes:default/web'],
    ]);
    const ctl = ferryctl(e, ['vip', 'list']);
    assert.equal(ctl.code, 0, ctl.err);
    assert.match(
      ctl.out,
      new RegExp(`^${VIP.replace(/\./g, '\\.')}\\s+198\\.18\\.0\\.10\\s+80\\s+tcp\\s+2\\s.*kubernetes:default/web$`, 'm'),
    );
    assert.deepEqual(mapVips(e), ['198.18.0.10:80', '198.18.0.1:30080'], 'in the datapath');
    // The NodePort's endpoints listen on 80 on this node: translated here, by the node programs on veth0.
    const np = await call(e.socket, 'GET', `/v1/vips/${NODE_PORT_VIP}/backends/10.244.0.1`);
    assert.deepEqual((({ port, host }) => ({ port, host }))(JSON.parse(np.body) as { port?: number; host?: string }), {
      port: 80,
      host: 'local',
    });
    const filters = spawnSync('nsenter', [`--net=/run/netns/${e.ns}`, '--', 'tc', 'filter', 'show', 'dev', 'veth0', 'ingress'], {
      encoding: 'utf8',
    });
    assert.match(filters.stdout, /tc_node_in/);
    const st = JSON.parse(ferryctl(e, ['status', '--json']).out) as { revision: number; applied_revision: number };
    assert.equal(st.applied_revision, st.revision);
  });

  it('writes to it are refused with 403 (REST and ferryctl); the datapath keeps it', async () => {
    const put = await call(e.socket, 'PUT', `/v1/vips/${VIP}`, { address: '198.18.0.10', port: 81, protocol: 'tcp' });
    assert.equal(put.status, 403, put.body);
    assert.match(JSON.parse(put.body).detail, /kubernetes:default\/web/);
    assert.equal((await call(e.socket, 'DELETE', `/v1/vips/${VIP}`)).status, 403);
    const add = ferryctl(e, ['backend', 'add', VIP, '10.244.9.9']);
    assert.equal(add.code, 1);
    assert.match(add.err, /403/);
    assert.deepEqual(mapVips(e), ['198.18.0.10:80', '198.18.0.1:30080']);
    assert.equal((await vips(e))[1]?.backend_count, 2);
  });

  it('GET /v1/kubernetes and ferryctl kubernetes show the sync, the ClusterIP list, skipped and ignored Services', async () => {
    const v = await view(e);
    assert.equal(v.node_name, 'node-a', 'from NODE_NAME');
    assert.equal(v.credentials, 'kubeconfig');
    assert.equal(v.server, `https://127.0.0.1:${API_PORT}`);
    assert.deepEqual([v.ready, v.synced, v.services], [true, true, 2]);
    assert.deepEqual([v.informers.services.objects, v.informers.endpoint_slices.objects, v.informers.nodes.objects], [2, 1, 1]);
    assert.ok(v.sync.batches >= 1 && v.sync.transactions >= 1 && v.sync.services_written >= 1);
    // web's ClusterIP, and for sockets on the node its LoadBalancer IP and NodePort: 3 entries, 3 endpoints each.
    assert.deepEqual([v.cluster_ips.entries, v.cluster_ips.consumer, v.cluster_ips.last_error], [3, 'socket-lb', null], 'programmed');
    const cs = v.cluster_ips.consumer_stats;
    assert.deepEqual([cs['services'], cs['backends']], [3, 9], `the socket-LB holds them with every endpoint: ${JSON.stringify(cs)}`);
    assert.deepEqual(
      v.ignored.map((i) => i.service),
      ['default/dns'],
    );
    assert.match(v.ignored[0]!.reason, /headless/);
    assert.deepEqual(
      v.skipped.filter((s) => s.service === 'default/web'),
      [],
      "served whole: the NodePort's port is translated",
    );
    assert.deepEqual(v.node_endpoints, { entries: 0, last_error: null }, 'externalTrafficPolicy Local: no other node sends here');
    const text = ferryctl(e, ['kubernetes']);
    assert.equal(text.code, 0, text.err);
    assert.match(text.out, /^ready\s+yes$/m);
    assert.match(text.out, /^cluster IPs\s+3 entries programmed by socket-lb$/m);
    assert.match(text.out, /ignored Services:\nSERVICE\s+REASON\ndefault\/dns\s+headless/);
    const ignored = ferryctl(e, ['kubernetes', 'ignored', '--json']);
    assert.deepEqual(JSON.parse(ignored.out), v.ignored);
  });

  it('/metrics shows the watch and sync counters', async () => {
    const m = await getText(e.socket, '/metrics');
    assert.equal(sample(m, 'ferry_k8s_ready'), 1);
    assert.equal(sample(m, 'ferry_k8s_informer_objects{resource="services"}'), 2);
    assert.equal(sample(m, 'ferry_k8s_informer_objects{resource="endpointslices"}'), 1);
    assert.ok((sample(m, 'ferry_k8s_informer_lists_total{resource="nodes"}') ?? 0) >= 1);
    assert.ok((sample(m, 'ferry_k8s_informer_watches_total{resource="services"}') ?? 0) >= 1);
    assert.equal(sample(m, 'ferry_k8s_informer_events_total{resource="services"}'), 2);
    assert.ok((sample(m, 'ferry_k8s_sync_batches_total') ?? 0) >= 1);
    assert.ok((sample(m, 'ferry_k8s_sync_transactions_total') ?? 0) >= 1);
    assert.equal(sample(m, 'ferry_k8s_ignored_services'), 1);
    assert.equal(sample(m, 'ferry_k8s_cluster_ip_entries'), 3);
    assert.ok((sample(m, 'ferry_k8s_batch_duration_seconds_count') ?? 0) >= 1);
    assert.equal(sample(m, 'ferry_k8s_health_check_node_port_listeners{state="listening"}'), 1);
  });

  it('the health-check node port answers 200 with the local endpoint count, and 503 when none is left', async () => {
    const ok = curlInNs(e.ns, `http://127.0.0.1:${HCNP}/`);
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(JSON.parse(ok.body), { service: { namespace: 'default', name: 'web' }, localEndpoints: 2 });
    assert.equal(ok.headers['content-type'], 'application/json');
    assert.equal(ok.headers['x-content-type-options'], 'nosniff');

    server.upsert(
      'endpointslices',
      slice('web-abc', [
        ['10.244.1.1', { node: 'node-b' }],
        ['10.244.1.2', { node: 'node-b' }],
      ]),
    );
    await until(() => curlInNs(e.ns, `http://127.0.0.1:${HCNP}/`).status === 503, 'the count to reach zero');
    const none = curlInNs(e.ns, `http://127.0.0.1:${HCNP}/healthz`);
    assert.deepEqual(JSON.parse(none.body), { service: { namespace: 'default', name: 'web' }, localEndpoints: 0 });
    // The VIP follows the same rule: no endpoint on this node, no backend.
    await until(async () => (await vips(e))[0]?.backend_count === 0, 'the VIP to lose its local backends');
    const v = await view(e);
    assert.deepEqual(
      v.health_check_node_ports.ports.map((p) => [p.service, p.port, p.local_endpoints, p.listeners]),
      [['default/web', HCNP, 0, [{ address: '127.0.0.1', listening: true, error: null }]]],
    );
    assert.ok(v.health_check_node_ports.requests >= 2);
  });

  it('deleting the Service removes its VIP (REST and maps) and closes its health-check port', async () => {
    server.remove('services', 'default/web');
    await until(async () => (await vips(e)).length === 0, 'the VIP to go');
    assert.deepEqual(mapVips(e), []);
    await until(() => curlInNs(e.ns, `http://127.0.0.1:${HCNP}/`).status === 0, 'the port to close');
    const v = await view(e);
    assert.deepEqual([v.services, v.cluster_ips.entries, v.health_check_node_ports.ports.length], [1, 0, 0]);
    assert.equal(v.cluster_ips.consumer_stats['services'], 0, 'and the socket-LB forgot it');
  });

  it('LB-IPAM: a LoadBalancer Service without an address gets one from the pool, becomes a VIP and is announced through BIRD', async () => {
    const birdc = (args: string[]): string =>
      spawnSync('nsenter', [`--net=/run/netns/${e.ns}`, '--', 'birdc', '-s', join(e.dir, 'bird.ctl'), ...args], { encoding: 'utf8' })
        .stdout;
    bird = spawn(
      'nsenter',
      [`--net=/run/netns/${e.ns}`, '--', 'bird', '-f', '-c', join(e.dir, 'bird.conf'), '-s', join(e.dir, 'bird.ctl')],
      { stdio: 'ignore' },
    );
    await until(() => /BIRD .* ready/.test(birdc(['show', 'status'])), 'BIRD to start');
    server.upsert(
      'services',
      service('edge', {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.20',
        ports: [{ name: 'http', port: 8080, targetPort: 80, nodePort: 30081, protocol: 'TCP' }],
      }),
    );
    server.upsert('endpointslices', slice('edge-abc', [['10.244.0.7', { node: 'node-a' }]]));
    await until(
      () => (server.get('services', 'default/edge') as Service | undefined)?.status?.loadBalancer?.ingress?.[0]?.ip === '198.18.0.10',
      "the allocator to write edge's status",
    );
    // web (deleted above) gave its address back: the lowest free one is edge's now.
    await until(async () => (await vips(e)).some((v) => v.address === '198.18.0.10' && v.port === 8080), 'the VIP from the status');
    await until(() => /198\.18\.0\.10\/32/.test(birdc(['show', 'route'])), 'BIRD to hold the route');
    const bgp = JSON.parse((await call(e.socket, 'GET', '/v1/bgp')).body) as { prefixes: Array<{ prefix: string; announced: boolean }> };
    // (198.18.0.1, the NodePort VIP's, is announced too here: the Node object's address is not on this namespace's interfaces.)
    assert.ok(
      bgp.prefixes.some((p) => p.prefix === '198.18.0.10/32' && p.announced),
      JSON.stringify(bgp.prefixes),
    );
    const v = (await view(e)).lb_ipam!;
    assert.deepEqual(
      [v.leader, v.holder, v.lease, v.services, v.pending, v.writes],
      [true, 'node-a', 'kube-system/ferry-lb-ipam', 1, [], 1],
    );
    assert.deepEqual(v.pools, [{ name: 'edge', addresses: [POOL], allocated: 1 }]);
    const text = ferryctl(e, ['kubernetes']);
    assert.match(text.out, /^LB-IPAM\s+leader, 1 Services, 0 pending, 1 writes$/m);
    assert.match(text.out, /LoadBalancer address pools:\nPOOL\s+ALLOCATED\s+ADDRESSES\nedge\s+1\s+198\.18\.0\.10-198\.18\.0\.19/);
    const m = await getText(e.socket, '/metrics');
    assert.equal(sample(m, 'ferry_k8s_lb_ipam_leader'), 1);
    assert.equal(sample(m, 'ferry_k8s_lb_ipam_allocated{pool="edge"}'), 1);
    assert.equal(sample(m, 'ferry_k8s_lb_ipam_writes_total'), 1);
    // The Service goes: its VIP and its route go with it.
    server.remove('services', 'default/edge');
    await until(() => !/198\.18\.0\.10\/32/.test(birdc(['show', 'route'])), 'the route to be withdrawn');
    bird.kill('SIGTERM');
    bird = undefined;
  });

  it('SIGHUP keeps the kubernetes section (a restart applies it) and stays ready', async () => {
    const original = readFileSync(e.config, 'utf8');
    try {
      const changed = original.replace('  drain_seconds: 1\n  batch_delay_ms', '  drain_seconds: 7\n  batch_delay_ms');
      assert.notEqual(changed, original);
      writeFileSync(e.config, changed);
      d!.proc.kill('SIGHUP');
      await until(
        () => /"key":"kubernetes".*needs a restart/.test(d!.logs()) && d!.logs().includes('configuration reloaded'),
        'the reload',
      );
      assert.equal(await probe(e.socket, '/readyz'), 200);
      assert.equal((await view(e)).ready, true);
    } finally {
      writeFileSync(e.config, original);
    }
  });

  it('SIGTERM stops the watch, then the daemon, cleanly', async () => {
    assert.ok(server.watchCount >= 3, 'watching the three resources');
    const code = await stopFerryd(d!, 'SIGTERM');
    const logs = d!.logs();
    d = undefined;
    assert.equal(code, 0, logs);
    const stopped = logs.indexOf('kubernetes: stopped watching');
    assert.ok(stopped > logs.indexOf('"msg":"stopping"'), 'the watch stopped after the signal');
    assert.ok(!existsSync(e.socket), 'the socket is removed');
    await until(() => server.watchCount === 0, 'the server to see the watches end', 5000);
  });

  it('start-up fails with a clear message: a kubeconfig that cannot be used (1), no node name (2)', async () => {
    const env = { ...process.env };
    delete env['NODE_NAME'];
    delete env['KUBERNETES_SERVICE_HOST'];
    const original = readFileSync(e.config, 'utf8');
    const bad = join(e.dir, 'bad-kubeconfig.yaml');
    writeFileSync(bad, original.replace(/kubeconfig: .*/, `kubeconfig: ${join(e.dir, 'no-such-kubeconfig')}`));
    const r1 = await failingStart(bad, e.ns, { ...env, NODE_NAME: 'node-a' });
    assert.equal(r1.code, 1, r1.out);
    assert.match(r1.out, /start failed/);
    assert.match(r1.out, /kubernetes: cannot use the kubeconfig [^ ]*no-such-kubeconfig: ENOENT/);

    const noNode = join(e.dir, 'no-node.yaml');
    writeFileSync(noNode, original);
    const r2 = await failingStart(noNode, e.ns, env);
    assert.equal(r2.code, 2, r2.out);
    assert.match(r2.out, /ferryd: invalid configuration .*no-node\.yaml:\n\s+\/kubernetes\/node_name: required in kubernetes mode/);

    const noCreds = join(e.dir, 'no-creds.yaml');
    writeFileSync(noCreds, original.replace(/ {2}kubeconfig: .*\n/, ''));
    const r3 = await failingStart(noCreds, e.ns, { ...env, NODE_NAME: 'node-a' });
    assert.equal(r3.code, 2, r3.out);
    assert.match(r3.out, /\/kubernetes\/kubeconfig: not set, and not running in a pod/);
  });
});
