/**
 * Kubernetes nodes, two with a ferryd of their own in kubernetes mode, and
 * ordinary pods (nothing of Ferry inside) on the second and third:
 *
 *   client ── node-a (lb: ferryd, xdp_lb) ─┬─ node-b (be1: ferryd, pods behind it)
 *                                          └─ node-c (be2: nothing of Ferry, a pod behind it)
 *
 * A client's packet reaches node-a's XDP, which encapsulates it unchanged to
 * the pod through node-b; node-b's tc_node_in translates it to the pod's
 * address and port, and tc_node_out gives the pod's reply the frontend's
 * address and port on its way out of node-b, straight to the client: node-a
 * never sees a reply. Covers NodePort, LoadBalancer IP and externalIPs with
 * externalTrafficPolicy Cluster and Local, session affinity and
 * loadBalancerSourceRanges, all through XDP (counters prove which stage
 * served them), with the client's own address kept up to the pod.
 *
 * A Service annotated for source NAT reaches the pod on node-c, which runs
 * nothing of Ferry: node-a's XDP sends the client's packet to the pod from
 * node-a's address and a port of its own, and translates the pod's reply
 * back on its way in, so replies cross node-a.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../../../src/cli/client.js';
import { NodeDatapath, type NodeCounterName } from '../../../src/datapath/node.js';
import { LabFerryd } from '../../../src/lab/ferryd.js';
import { LbLab, repliesBypassedLb } from '../../../src/lab/lblab.js';
import type { LabHost } from '../../../src/lab/topology.js';
import { getText } from '../../lib/ferryd.js';
import { bpfUnavailable } from '../../lib/harness.js';
import { startNetnsForwarder, UnixGate, writeKubeconfig } from '../../lib/k8s-netns.js';
import { node, service, slice } from '../../lib/k8s-objects.js';
import { K8sTestServer } from '../../lib/k8s-server.js';
import { until } from '../../lib/until.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping kubernetes two-node tests: ${skip}`);

const API_PORT = 6443;
/** web: LoadBalancer, externalTrafficPolicy Cluster, Service port 8080 → pods' 80. */
const WEB_LB = '198.19.0.71';
const WEB_EXTERNAL = '198.19.0.72';
const WEB_PORT = 8080;
const WEB_NODE_PORT = 30080;
/** sticky: ClientIP affinity and a source range letting only the client's own address in. */
const STICKY_LB = '198.19.0.73';
const STICKY_NODE_PORT = 30081;
/** local: externalTrafficPolicy Local (its endpoint lives on node-b only). */
const LOCAL_LB = '198.19.0.74';
const LOCAL_NODE_PORT = 30082;
/** natted: annotated ferry.io/external-path snat, its endpoint on node-c (no Ferry there). */
const NAT_LB = '198.19.0.75';
const NAT_NODE_PORT = 30083;
/** A second client address, outside sticky's source range. */
const STRANGER = '198.18.0.77';

const kubeSection = (kubeconfig: string, nodeName: string): string[] => [
  'mode: kubernetes',
  'kubernetes:',
  `  kubeconfig: ${kubeconfig}`,
  `  node_name: ${nodeName}`,
  '  drain_seconds: 1',
  '  batch_delay_ms: 20',
  '  health_check_addresses: []',
  '  socket_lb:',
  '    enabled: false',
];

describe('kubernetes mode on three nodes: pods on other nodes served through XDP, by direct return or source NAT', { skip }, () => {
  let lab: LbLab;
  let nodeB: LabHost;
  let ferrydB: LabFerryd;
  let pods: LabHost[];
  let nodeC: LabHost;
  let podC: LabHost;
  let server: K8sTestServer;
  let gate: UnixGate | undefined;
  const forwarders: Array<{ stop(): Promise<void> }> = [];
  const kubeconfig = `/tmp/ferry-k8s-nodes-${process.pid}.kubeconfig`;
  let nodeDp: NodeDatapath | undefined;
  /** node-b's node programs' counters (its pinned maps, made once it had pairs). */
  const nodeBCounts = (): Record<NodeCounterName, bigint> => (nodeDp ??= NodeDatapath.open({ pinRoot: ferrydB.o.pinRoot })).counts();
  type Vip = { name: string; address: string; port: number; backend_count: number };
  const vipsOf = async (api: Client): Promise<Vip[]> => (await api.get<{ items: Vip[] }>('/v1/vips')).items;
  let apiB: Client;

  before(async () => {
    server = await K8sTestServer.start({ tls: true });
    lab = await LbLab.start({
      backends: 2,
      vips: [],
      drainSeconds: 1,
      plainBackends: true,
      ferrydConfig: kubeSection(kubeconfig, 'node-a'),
      beforeDaemon: async (l) => {
        const b = l.backends[0]!;
        server.upsert('nodes', node('node-a', [['InternalIP', l.lb.addr4]]));
        server.upsert('nodes', node('node-b', [['InternalIP', b.addr4]]));
        server.upsert('nodes', node('node-c', [['InternalIP', l.backends[1]!.addr4]]));
        server.upsert(
          'services',
          service('web', {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.11',
            ingress: [WEB_LB],
            externalIPs: [WEB_EXTERNAL],
            ports: [{ name: 'http', port: WEB_PORT, targetPort: 80, nodePort: WEB_NODE_PORT, protocol: 'TCP' }],
          }),
        );
        server.upsert(
          'services',
          service('sticky', {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.12',
            ingress: [STICKY_LB],
            sessionAffinity: 'ClientIP',
            loadBalancerSourceRanges: [`${l.client.addr4}/32`],
            ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: STICKY_NODE_PORT, protocol: 'TCP' }],
          }),
        );
        server.upsert(
          'services',
          service('local', {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.13',
            ingress: [LOCAL_LB],
            externalTrafficPolicy: 'Local',
            ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: LOCAL_NODE_PORT, protocol: 'TCP' }],
          }),
        );
        const natted = service('natted', {
          type: 'LoadBalancer',
          clusterIP: '10.96.0.14',
          ingress: [NAT_LB],
          ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: NAT_NODE_PORT, protocol: 'TCP' }],
        });
        natted.metadata.annotations = { 'ferry.io/external-path': 'snat' };
        server.upsert('services', natted);
        gate = await UnixGate.start(join(l.dir, 'k8s-api.sock'), server.port);
        forwarders.push(await startNetnsForwarder(l.lb.ns, API_PORT, gate.path));
        forwarders.push(await startNetnsForwarder(b.ns, API_PORT, gate.path));
        writeKubeconfig(kubeconfig, `https://127.0.0.1:${API_PORT}`, server.caFile, server.token!);
      },
    });
    nodeB = lab.lab.backends[0]!;
    nodeC = lab.lab.backends[1]!;
    pods = [lab.lab.addPod(nodeB, 'podb1', '10.244.1', 5), lab.lab.addPod(nodeB, 'podb2', '10.244.2', 5)];
    podC = lab.lab.addPod(nodeC, 'podc1', '10.244.3', 5);
    for (const p of [...pods, podC]) await lab.startServer(p, []);
    ferrydB = new LabFerryd({
      ns: nodeB.ns,
      dir: join(lab.lab.dir, 'node-b'),
      pinRoot: join(lab.lab.bpfRoot, 'node-b'),
      drainSeconds: 1,
      extraConfig: kubeSection(kubeconfig, 'node-b'),
    });
    ferrydB.writeConfig();
    await ferrydB.start();
    apiB = new Client({ socket: ferrydB.socket });
    const onB = (p: LabHost): [string, { node: string }] => [p.addr4, { node: 'node-b' }];
    server.upsert('endpointslices', slice('web-abc', pods.map(onB)));
    server.upsert('endpointslices', slice('sticky-abc', pods.map(onB)));
    server.upsert('endpointslices', slice('local-abc', [onB(pods[0]!)]));
    server.upsert('endpointslices', slice('natted-abc', [[podC.addr4, { node: 'node-c' }]]));
  });
  after(async () => {
    nodeDp?.close();
    lab?.stop();
    for (const f of forwarders) await f.stop();
    await gate?.close();
    await server?.close();
    rmSync(kubeconfig, { force: true });
  });

  it('node-a takes the pods with their node as host; node-b takes them as local', async () => {
    await until(
      async () => (await vipsOf(lab.api)).filter((v) => v.backend_count === 2).length === 5,
      'web and sticky on node-a with both pods',
    );
    await until(async () => (await vipsOf(lab.api)).filter((v) => v.backend_count === 1).length === 2, 'natted on node-a with its pod');
    await until(async () => (await vipsOf(apiB)).filter((v) => v.backend_count >= 1).length === 9, 'every VIP of node-b with its pods');
    const a = await vipsOf(lab.api);
    const np = a.find((v) => v.port === WEB_NODE_PORT)!;
    const b = await lab.api.get<{ port?: number; host?: string }>(`/v1/vips/${np.name}/backends/${pods[0]!.addr4}`);
    assert.deepEqual([b.port, b.host], [80, nodeB.addr4], 'encapsulated to the pod through node-b, translated to port 80 there');
    // externalTrafficPolicy Local: node-a has none of the endpoints, so its VIPs have no backend.
    assert.deepEqual(
      a.filter((v) => v.address === LOCAL_LB || v.port === LOCAL_NODE_PORT).map((v) => v.backend_count),
      [0, 0],
    );
  });

  it('NodePort of node-a: served by the pods on node-b, replies leave node-b straight to the client', async () => {
    const n0 = nodeBCounts();
    const local0 = lab.datapathCounters().local;
    const lb0 = lab.linkCounters(lab.lab.lb);
    const c0 = lab.linkCounters(lab.lab.client);
    const r = await lab.client('http', lab.lab.lb.addr4, 60, { port: WEB_NODE_PORT });
    const lb1 = lab.linkCounters(lab.lab.lb);
    const c1 = lab.linkCounters(lab.lab.client);
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.deepEqual(Object.keys(r.per_backend).sort(), ['podb1', 'podb2'], 'both pods answered');
    assert.deepEqual(r.sources, { [lab.lab.lb.addr4]: 60 }, "every reply came from node-a's address");
    assert.deepEqual(r.peers, { [lab.lab.client.addr4]: 60 }, "the pods saw the client's own address");
    assert.equal(lab.datapathCounters().local, local0, 'nothing was handed up on node-a');
    const n1 = nodeBCounts();
    assert.ok(n1.dnat - n0.dnat >= 60n * 3n, `node-b translated the client's packets: ${n1.dnat - n0.dnat}`);
    assert.ok(n1.rev_nat - n0.rev_nat >= 60n * 2n, `node-b translated the replies: ${n1.rev_nat - n0.rev_nat}`);
    assert.equal(n1.error - n0.error, 0n);
    // node-b's ferryd reports the same counters in /metrics.
    const metrics = await getText(ferrydB.socket, '/metrics');
    for (const counter of ['dnat', 'rev_nat'] as const) {
      const m = new RegExp(`^ferry_node_packets_total\\{counter="${counter}"\\} (\\d+)$`, 'm').exec(metrics);
      assert.ok(m && BigInt(m[1]!) >= n1[counter], `ferry_node_packets_total{counter="${counter}"} in node-b's /metrics`);
    }
    const lbRx = lb1.rxPackets - lb0.rxPackets;
    const clientTx = c1.txPackets - c0.txPackets;
    const clientRx = c1.rxPackets - c0.rxPackets;
    assert.ok(
      repliesBypassedLb(lbRx, clientTx, clientRx),
      `node-a received ${lbRx} packets for ${clientTx} sent and ${clientRx} received by the client`,
    );
  });

  it('LoadBalancer IP and externalIP (Service port 8080, pods on 80)', async () => {
    for (const address of [WEB_LB, WEB_EXTERNAL]) {
      const name = (await vipsOf(lab.api)).find((v) => v.address === address && v.port === WEB_PORT)!.name;
      const s0 = (await lab.stats()).vips.find((v) => v.name === name)!;
      const r = await lab.client('http', address, 30, { port: WEB_PORT });
      assert.equal(r.errors, 0, `${address}: ${JSON.stringify(r)}`);
      assert.deepEqual(r.sources, { [address]: 30 }, `${address}: replies from the Service's address`);
      assert.deepEqual(Object.keys(r.per_backend).sort(), ['podb1', 'podb2']);
      const s1 = (await lab.stats()).vips.find((v) => v.name === name)!;
      assert.ok(s1.new_flows - s0.new_flows >= 30, `node-a's XDP balanced every connection of ${address}`);
    }
  });

  it('externalTrafficPolicy Local: node-b serves its own NodePort with the client address kept; node-a has nothing to serve', async () => {
    const r = await lab.client('http', nodeB.addr4, 20, { port: LOCAL_NODE_PORT });
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.deepEqual(r.per_backend, { podb1: 20 });
    assert.deepEqual(r.peers, { [lab.lab.client.addr4]: 20 });
    const d0 = (await lab.stats()).drops.no_backend ?? 0;
    const refused = await lab.client('http', lab.lab.lb.addr4, 3, { port: LOCAL_NODE_PORT, timeoutMs: 300 });
    assert.equal(refused.errors, 3, JSON.stringify(refused));
    assert.ok(((await lab.stats()).drops.no_backend ?? 0) > d0, 'node-a dropped them (no local endpoint), counted');
  });

  it('session affinity keeps one client on one pod; the source range lets only that client in', async () => {
    const r = await lab.client('http', STICKY_LB, 30);
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.equal(Object.keys(r.per_backend).length, 1, `one pod for every connection: ${JSON.stringify(r.per_backend)}`);
    lab.lab.addClientAddress(STRANGER);
    const d0 = (await lab.stats()).drops.policy ?? 0;
    const refused = await lab.client('http', STICKY_LB, 3, { source: STRANGER, timeoutMs: 300 });
    assert.equal(refused.errors, 3, JSON.stringify(refused));
    assert.ok(((await lab.stats()).drops.policy ?? 0) > d0, "node-a's XDP dropped them by policy");
  });

  it('source NAT: the pod on a node without Ferry is served; its replies come back through node-a, translated there', async () => {
    const a = await vipsOf(lab.api);
    const np = a.find((v) => v.port === NAT_NODE_PORT)!;
    const rec = await lab.api.get<{ forwarding?: string }>(`/v1/vips/${np.name}`);
    assert.equal(rec.forwarding, 'snat');
    for (const [address, port] of [
      [lab.lab.lb.addr4, NAT_NODE_PORT],
      [NAT_LB, 80],
    ] as const) {
      const c0 = lab.datapathCounters();
      const lb0 = lab.linkCounters(lab.lab.lb);
      const cl0 = lab.linkCounters(lab.lab.client);
      const r = await lab.client('http', address, 30, { port });
      const lb1 = lab.linkCounters(lab.lab.lb);
      const cl1 = lab.linkCounters(lab.lab.client);
      const c1 = lab.datapathCounters();
      assert.equal(r.errors, 0, `${address}:${port}: ${JSON.stringify(r)}`);
      assert.deepEqual(r.per_backend, { podc1: 30 });
      assert.deepEqual(r.sources, { [address]: 30 }, 'replies from the address the client used');
      assert.deepEqual(r.peers, { [lab.lab.lb.addr4]: 30 }, "the pod saw node-a's address (source NAT)");
      assert.ok(c1.snat - c0.snat >= 30n * 3n, `node-a translated the client's packets: ${c1.snat - c0.snat}`);
      assert.ok(c1.snat_reply - c0.snat_reply >= 30n * 2n, `node-a translated the replies back: ${c1.snat_reply - c0.snat_reply}`);
      const lbRx = lb1.rxPackets - lb0.rxPackets;
      assert.ok(
        !repliesBypassedLb(lbRx, cl1.txPackets - cl0.txPackets, cl1.rxPackets - cl0.rxPackets),
        `the replies crossed node-a: ${lbRx} received`,
      );
    }
  });
});
