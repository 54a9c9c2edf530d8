/**
 * The in-cluster mode end to end, in the lab: ferryd runs in kubernetes mode
 * in the lb namespace (native XDP on its veth), watching the Kubernetes API
 * test server through a forwarder on that namespace's loopback. A
 * LoadBalancer Service whose endpoints are the lab's backends becomes an XDP
 * VIP: the client's real connections are balanced over the endpoints and
 * answered directly by them (they name no node: each is its own host and
 * decapsulates); endpoint changes and the Service's deletion reach the
 * datapath. With external_path nat the LoadBalancer IP and the NodePort
 * (30080 → 80) are served by the kernel's NAT in ferryd's nftables table
 * instead. The Service's ClusterIP is served by the socket-LB
 * ferryd attaches to a cgroup of the test's own: a process in it, in the lb
 * namespace (which has no route to the ClusterIP), connects to the ClusterIP
 * and reaches an endpoint.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCgroup, inCgroup, removeCgroup, removeStaleCgroups } from '../../../src/lab/cgroup.js';
import type { ClientResult } from '../../../src/lab/client.js';
import { LbLab, repliesBypassedLb } from '../../../src/lab/lblab.js';
import type { LabHost } from '../../../src/lab/topology.js';
import { bpfUnavailable } from '../../lib/harness.js';
import { startNetnsForwarder, UnixGate, writeKubeconfig } from '../../lib/k8s-netns.js';
import { node, service, slice } from '../../lib/k8s-objects.js';
import { K8sTestServer } from '../../lib/k8s-server.js';
import { until } from '../../lib/until.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping kubernetes end-to-end tests: ${skip}`);

const LB_IP = '198.19.0.70';
const CLUSTER_IP = '10.96.0.10';
const NODE_PORT = 30080;
const API_PORT = 6443;
const NODE = 'lab-node';
const OWNER = 'kubernetes:default/web';

interface VipItem {
  name: string;
  owner: string | null;
  address: string;
  port: number;
  backend_count: number;
}

describe(
  'kubernetes mode end to end in the lab: LoadBalancer IP through XDP, ClusterIP and local NodePort through the socket-LB, the kernel NAT as the fallback',
  { skip },
  () => {
    let lab: LbLab;
    let be: LabHost[];
    let server: K8sTestServer;
    let gate: UnixGate | undefined;
    let forwarder: { stop(): Promise<void> } | undefined;
    const kubeconfig = `/tmp/ferry-k8s-e2e-${process.pid}.kubeconfig`;
    let cgroup = '';
    /** curl http://CLUSTER_IP/ (or another URL) from the lb namespace, inside the test's cgroup or not: exit code and body. */
    const curlClusterIp = (inside: boolean, url = `http://${CLUSTER_IP}/`): { code: number | null; body: string } => {
      const curl = ['curl', '-s', '--max-time', '3', url] as const;
      const [cmd, args] = inside ? inCgroup(cgroup, curl[0], curl.slice(1)) : [curl[0], curl.slice(1)];
      const r = spawnSync('nsenter', [`--net=/run/netns/${lab.lab.lb.ns}`, '--', cmd, ...args], { encoding: 'utf8' });
      return { code: r.status, body: r.stdout.trim() };
    };
    const clusterIpSpread = (n: number): Record<string, number> => {
      const per: Record<string, number> = {};
      for (let i = 0; i < n; i++) {
        const r = curlClusterIp(true);
        assert.equal(r.code, 0, `curl ${CLUSTER_IP} from the cgroup: exit ${r.code}`);
        per[r.body] = (per[r.body] ?? 0) + 1;
      }
      return per;
    };

    const webVips = async (): Promise<VipItem[]> =>
      (await lab.api.get<{ items: VipItem[] }>('/v1/vips')).items.filter((v) => v.owner === OWNER);
    /** HTTP requests to the LoadBalancer IP from the client; whether the replies bypassed the node (interface counters). */
    const httpToLbIp = async (n: number): Promise<{ r: ClientResult; bypassed: boolean }> => {
      const lb0 = lab.linkCounters(lab.lab.lb);
      const c0 = lab.linkCounters(lab.lab.client);
      const r = await lab.client('http', LB_IP, n);
      const lb1 = lab.linkCounters(lab.lab.lb);
      const c1 = lab.linkCounters(lab.lab.client);
      return { r, bypassed: repliesBypassedLb(lb1.rxPackets - lb0.rxPackets, c1.txPackets - c0.txPackets, c1.rxPackets - c0.rxPackets) };
    };
    // The lab's backends name no node: each is its own host (Ferry's tc_decap, the VIP held), classic direct
    // server return on the Service's port. Ordinary pods behind nodes: test/root/k8s/k8s-pods.test.ts.
    const endpoints = (hosts: readonly LabHost[]) =>
      slice(
        'web-abc',
        hosts.map((h) => h.addr4),
      );

    before(async () => {
      removeStaleCgroups('ferrytest-k8se2e-');
      cgroup = createCgroup(`ferrytest-k8se2e-${process.pid}`);
      server = await K8sTestServer.start({ tls: true });
      lab = await LbLab.start({
        backends: 3,
        vips: [LB_IP],
        drainSeconds: 1,
        ferrydConfig: [
          'mode: kubernetes',
          'kubernetes:',
          `  kubeconfig: ${kubeconfig}`,
          `  node_name: ${NODE}`,
          '  drain_seconds: 1',
          '  batch_delay_ms: 20',
          '  health_check_addresses: ["127.0.0.1"]',
          '  socket_lb:',
          `    cgroup: ${cgroup}`,
        ],
        beforeDaemon: async (l) => {
          server.upsert('nodes', node(NODE, [['InternalIP', l.lb.addr4]]));
          server.upsert(
            'services',
            service('web', {
              type: 'LoadBalancer',
              clusterIP: CLUSTER_IP,
              ingress: [LB_IP],
              ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: NODE_PORT, protocol: 'TCP' }],
            }),
          );
          server.upsert('endpointslices', endpoints(l.backends));
          gate = await UnixGate.start(join(l.dir, 'k8s-api.sock'), server.port);
          forwarder = await startNetnsForwarder(l.lb.ns, API_PORT, gate.path);
          writeKubeconfig(kubeconfig, `https://127.0.0.1:${API_PORT}`, server.caFile, server.token!);
        },
      });
      be = lab.lab.backends;
    });
    after(async () => {
      lab?.stop();
      await forwarder?.stop();
      await gate?.close();
      await server?.close();
      rmSync(kubeconfig, { force: true });
      if (cgroup) removeCgroup(cgroup);
    });

    it('the Service is a VIP owned by it, with its endpoints as backends', async () => {
      await until(async () => (await webVips()).some((v) => v.address === LB_IP && v.backend_count === 3), 'the VIP');
      const [vip] = (await webVips()).filter((v) => v.address === LB_IP);
      assert.equal(vip?.port, 80);
    });

    it('client connections to the LoadBalancer IP are balanced over the endpoints and answered directly', async () => {
      const { r, bypassed } = await httpToLbIp(300);
      assert.equal(r.errors, 0, JSON.stringify(r));
      assert.deepEqual(Object.keys(r.per_backend).sort(), ['be1', 'be2', 'be3'], JSON.stringify(r.per_backend));
      for (const n of Object.values(r.per_backend)) assert.ok(n >= 50, `each endpoint gets a share: ${JSON.stringify(r.per_backend)}`);
      assert.ok(bypassed, 'the replies did not cross the load balancer');
    });

    it('a process in a cgroup of its own reaches the endpoints through the ClusterIP (socket-LB)', async () => {
      const per = clusterIpSpread(30);
      assert.ok(
        Object.keys(per).every((n) => ['be1', 'be2', 'be3'].includes(n)),
        JSON.stringify(per),
      );
      assert.ok(Object.keys(per).length >= 2, `spread over the endpoints: ${JSON.stringify(per)}`);
      // Outside the cgroup nothing translates, and the namespace has no route to the ClusterIP.
      assert.notEqual(curlClusterIp(false).code, 0, 'a process outside the cgroup does not reach the ClusterIP');
    });

    it("a process on the node reaches the NodePort on the node's address, translated to the endpoints' port (socket-LB)", async () => {
      const url = `http://${lab.lab.lb.addr4}:${NODE_PORT}/`;
      const names = new Set<string>();
      for (let i = 0; i < 12; i++) {
        const r = curlClusterIp(true, url);
        assert.equal(r.code, 0, `curl ${url} from the cgroup: exit ${r.code}`);
        names.add(r.body);
      }
      assert.ok(
        [...names].every((n) => ['be1', 'be2', 'be3'].includes(n)),
        [...names].join(','),
      );
      // Nothing listens on the node port itself: outside the cgroup the connection is refused (curl: 7).
      assert.equal(curlClusterIp(false, url).code, 7);
    });

    it('endpoints that are their own hosts cannot take the NodePort (30080 → 80): left out, and said so', async () => {
      const view = await lab.api.get<{ skipped: Array<{ service: string; reason: string }>; nat: { entries: number } }>('/v1/kubernetes');
      assert.ok(
        view.skipped.some((x) => x.service === 'default/web' && /listens on 80 and its node \(none named\) is not known/.test(x.reason)),
        JSON.stringify(view.skipped),
      );
      assert.equal(view.nat.entries, 0, 'no kernel NAT on the XDP path');
    });

    it('an endpoint leaving the EndpointSlice stops getting new connections', async () => {
      server.upsert('endpointslices', endpoints(be.slice(0, 2)));
      await until(async () => (await webVips()).some((v) => v.address === LB_IP && v.backend_count === 2), 'two backends');
      const r = await lab.client('http', LB_IP, 200);
      assert.equal(r.errors, 0, JSON.stringify(r));
      assert.deepEqual(Object.keys(r.per_backend).sort(), ['be1', 'be2'], JSON.stringify(r.per_backend));
      const per = clusterIpSpread(20);
      assert.ok(
        Object.keys(per).every((n) => n === 'be1' || n === 'be2'),
        `the ClusterIP follows: ${JSON.stringify(per)}`,
      );
    });

    it('external_path nat: after a restart with it, the LoadBalancer IP is served by the kernel NAT, not XDP', async () => {
      const cfg = readFileSync(lab.ferryd.config, 'utf8');
      writeFileSync(lab.ferryd.config, cfg.replace('\nkubernetes:\n', '\nkubernetes:\n  external_path: nat\n'));
      try {
        await lab.upgradeDaemon();
        await until(async () => {
          const v = await lab.api.get<{ nat: { entries: number } }>('/v1/kubernetes');
          return (await webVips()).length === 0 && v.nat.entries === 2;
        }, 'the VIP to go and the NAT to take both addresses');
        const { r, bypassed } = await httpToLbIp(60);
        assert.equal(r.errors, 0, JSON.stringify(r));
        assert.deepEqual(Object.keys(r.per_backend).sort(), ['be1', 'be2'], JSON.stringify(r.per_backend));
        assert.ok(!bypassed, 'masqueraded: the replies come back through the node');
        // The NodePort too, port translated (30080 → 80) by the kernel.
        const np = await lab.client('http', lab.lab.lb.addr4, 60, { port: NODE_PORT });
        assert.equal(np.errors, 0, JSON.stringify(np));
        assert.deepEqual(Object.keys(np.per_backend).sort(), ['be1', 'be2'], JSON.stringify(np.per_backend));
        // loadBalancerSourceRanges hold on this path too: a range without the client shuts it out, one with it lets it in.
        const withRanges = (ranges: string[]) =>
          service('web', {
            type: 'LoadBalancer',
            clusterIP: CLUSTER_IP,
            ingress: [LB_IP],
            loadBalancerSourceRanges: ranges,
            ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: NODE_PORT, protocol: 'TCP' }],
          });
        const natApplied = async (): Promise<boolean> => {
          const v = await lab.api.get<{ nat: { last_error: string | null } }>('/v1/kubernetes');
          return v.nat.last_error === null;
        };
        server.upsert('services', withRanges(['203.0.113.0/24']));
        await until(
          async () => (await natApplied()) && (await lab.client('http', LB_IP, 3, { timeoutMs: 300 })).errors === 3,
          'the client to be shut out',
        );
        server.upsert('services', withRanges([`${lab.lab.client.addr4}/32`]));
        await until(
          async () => (await natApplied()) && (await lab.client('http', LB_IP, 3, { timeoutMs: 1000 })).errors === 0,
          'the client to be let in',
        );
      } finally {
        writeFileSync(lab.ferryd.config, cfg);
      }
    });

    it('deleting the Service removes what served it: NAT entries, the ClusterIP, the NodePort', async () => {
      assert.ok(server.remove('services', 'default/web'));
      // No VIP (XDP) and no NAT entry (its LoadBalancer IP and NodePort, since external_path nat) left.
      await until(
        async () => (await webVips()).length === 0 && (await lab.api.get<{ nat: { entries: number } }>('/v1/kubernetes')).nat.entries === 0,
        'no VIP and no NAT entry',
      );
      const r = await lab.client('http', LB_IP, 20, { timeoutMs: 300 });
      assert.equal(r.errors, 20, `nothing answers the address any more: ${JSON.stringify(r)}`);
      // The socket-LB forgot the ClusterIP: a connect to it fails (curl: exit 7, could not connect).
      await until(async () => curlClusterIp(true).code === 7, 'the ClusterIP to stop answering');
      const np = await lab.client('http', lab.lab.lb.addr4, 5, { port: NODE_PORT, timeoutMs: 300 });
      assert.equal(np.errors, 5, JSON.stringify(np));
    });
  },
);
