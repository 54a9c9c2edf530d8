/**
 * Ordinary pods behind XDP, in the lab: ferryd in kubernetes mode on the lb
 * namespace (the node), a pod namespace behind it on a veth, with a plain
 * HTTP server on port 80 and nothing of Ferry inside. The Service's NodePort
 * (30080 → 80) and LoadBalancer IP (80 → 80) are XDP VIPs whose backend is
 * the pod, "local": xdp_lb hands the packet up encapsulated, tc_node_in
 * translates it to the pod's address and port, tc_node_out gives the reply
 * the Service's address and port. The counters prove each stage saw it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { NodeDatapath, type NodeCounterName } from '../../../src/datapath/node.js';
import { LbLab } from '../../../src/lab/lblab.js';
import type { LabHost } from '../../../src/lab/topology.js';
import { bpfUnavailable } from '../../lib/harness.js';
import { startNetnsForwarder, UnixGate, writeKubeconfig } from '../../lib/k8s-netns.js';
import { node, service, slice } from '../../lib/k8s-objects.js';
import { K8sTestServer } from '../../lib/k8s-server.js';
import { until } from '../../lib/until.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping kubernetes pod tests: ${skip}`);

const LB_IP = '198.19.0.71';
const NODE_PORT = 30080;
const API_PORT = 6443;
const NODE = 'lab-node';
const POD_NET = '10.244.0';

describe('kubernetes mode: ordinary pods served through XDP with the port translated on their node', { skip }, () => {
  let lab: LbLab;
  let pod: LabHost;
  let server: K8sTestServer;
  let gate: UnixGate | undefined;
  let forwarder: { stop(): Promise<void> } | undefined;
  const kubeconfig = `/tmp/ferry-k8s-pods-${process.pid}.kubeconfig`;

  /** The node programs' pinned maps, opened once ferryd has made them (the first test waits for that). */
  let nodeDp: NodeDatapath | undefined;
  const nodeMaps = (): NodeDatapath => (nodeDp ??= NodeDatapath.open({ pinRoot: lab.ferryd.o.pinRoot }));
  const nodeCounts = (): Record<NodeCounterName, bigint> => nodeMaps().counts();

  before(async () => {
    server = await K8sTestServer.start({ tls: true });
    lab = await LbLab.start({
      backends: 1,
      vips: [LB_IP],
      drainSeconds: 1,
      reconcileIntervalSeconds: 2,
      ferrydConfig: [
        'mode: kubernetes',
        'kubernetes:',
        `  kubeconfig: ${kubeconfig}`,
        `  node_name: ${NODE}`,
        '  drain_seconds: 1',
        '  batch_delay_ms: 20',
        '  health_check_addresses: []',
        '  socket_lb:',
        '    enabled: false',
      ],
      beforeDaemon: async (l) => {
        server.upsert('nodes', node(NODE, [['InternalIP', l.lb.addr4]]));
        server.upsert(
          'services',
          service('web', {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.11',
            ingress: [LB_IP],
            ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: NODE_PORT, protocol: 'TCP' }],
          }),
        );
        gate = await UnixGate.start(join(l.dir, 'k8s-api.sock'), server.port);
        forwarder = await startNetnsForwarder(l.lb.ns, API_PORT, gate.path);
        writeKubeconfig(kubeconfig, `https://127.0.0.1:${API_PORT}`, server.caFile, server.token!);
      },
    });
    pod = lab.lab.addPod(lab.lab.lb, 'pod1', POD_NET, 5);
    await lab.startServer(pod, []);
    server.upsert('endpointslices', slice('web-abc', [[pod.addr4, { node: NODE }]]));
  });
  after(async () => {
    nodeDp?.close();
    lab?.stop();
    await forwarder?.stop();
    await gate?.close();
    await server?.close();
    rmSync(kubeconfig, { force: true });
  });

  it('the NodePort and the LoadBalancer IP take the pod as a local backend on its own port', async () => {
    type Item = { address: string; port: number; backend_count: number; name: string };
    await until(async () => {
      const items = (await lab.api.get<{ items: Item[] }>('/v1/vips')).items;
      return items.filter((v) => v.backend_count === 1).length === 2;
    }, 'both VIPs with the pod');
    const np = (await lab.api.get<{ items: Item[] }>('/v1/vips')).items.find((v) => v.port === NODE_PORT)!;
    const b = await lab.api.get<{ port?: number; host?: string }>(`/v1/vips/${np.name}/backends/${pod.addr4}`);
    assert.deepEqual([b.port, b.host], [80, 'local']);
  });

  it('clients outside reach the pod on the NodePort: through xdp_lb, translated on the node, answered from the node port', async () => {
    const local0 = lab.datapathCounters().local;
    const n0 = nodeCounts();
    const r = await lab.client('http', lab.lab.lb.addr4, 40, { port: NODE_PORT });
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.deepEqual(r.per_backend, { pod1: 40 }, 'the ordinary pod answered every request');
    const n1 = nodeCounts();
    assert.ok(lab.datapathCounters().local - local0 >= 40n * 3n, 'xdp_lb handed every client packet up (at least 3 per request)');
    assert.ok(n1.dnat - n0.dnat >= 40n * 3n, `tc_node_in translated them: ${n1.dnat - n0.dnat}`);
    assert.ok(n1.rev_nat - n0.rev_nat >= 40n * 2n, `tc_node_out gave the replies the node port back: ${n1.rev_nat - n0.rev_nat}`);
    assert.equal(n1.error - n0.error, 0n);
  });

  it('and on the LoadBalancer IP (same port: only the address is translated)', async () => {
    const n0 = nodeCounts();
    const r = await lab.client('http', LB_IP, 20);
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.deepEqual(r.per_backend, { pod1: 20 });
    assert.ok(nodeCounts().dnat - n0.dnat >= 20n * 3n);
  });

  it('the pod leaving the Service stops new connections; its pair stays while it drains, then goes', async () => {
    server.upsert('endpointslices', slice('web-abc', []));
    await until(
      async () => (await lab.api.get<{ items: Array<{ backend_count: number }> }>('/v1/vips')).items.every((v) => v.backend_count === 0),
      'the pod removed',
    );
    nodeMaps().reread();
    assert.equal(nodeMaps().endpointCount, 2, 'both pairs kept for the draining connections');
    const r = await lab.client('http', lab.lab.lb.addr4, 3, { port: NODE_PORT, timeoutMs: 300 });
    assert.equal(r.errors, 3, JSON.stringify(r));
    await until(() => {
      nodeMaps().reread();
      return nodeMaps().endpointCount === 0;
    }, 'no pair left once the drain (1 s) has ended');
  });
});
