/**
 * config/kubernetes/: the manifests parse, RBAC grants exactly get/list/watch
 * on Services, EndpointSlices and Nodes (what the watch reads) and, for the
 * LoadBalancer IP allocator, Service status updates and its Lease, the
 * ConfigMap's ferry.yaml is a valid ferryd config once the DaemonSet's
 * environment is applied, and the DaemonSet mounts, probes and runs what
 * that config names.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { parseConfig, type FerryConfig } from '../../../src/config/index.js';
import { ENDPOINTSLICES_PATH, NODES_PATH, SERVICES_PATH } from '../../../src/k8s/informer.js';
import { packageRoot } from '../../../src/paths.js';

const dir = join(packageRoot(), 'config', 'kubernetes');

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [k: string]: unknown;
}

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Probe {
  httpGet: { host?: string; port: number; path: string };
}
interface Container {
  name: string;
  command: string[];
  env: EnvVar[];
  volumeMounts: Mount[];
  securityContext: { privileged?: boolean; capabilities: { add: string[]; drop: string[] } };
  livenessProbe: Probe;
  readinessProbe: Probe;
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
}
interface Volume {
  name: string;
  hostPath?: { path: string };
  configMap?: { name: string };
}
interface PodSpec {
  serviceAccountName: string;
  automountServiceAccountToken?: boolean;
  hostNetwork: boolean;
  tolerations: unknown[];
  containers: Container[];
  volumes: Volume[];
}

function load(): Obj[] {
  const out: Obj[] = [];
  for (const f of readdirSync(dir)
    .filter((n) => n.endsWith('.yaml'))
    .sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      assert.deepEqual(
        doc.errors.map((e) => e.message),
        [],
        `${f} parses`,
      );
      const o = doc.toJS() as Obj | null;
      if (o === null) continue;
      assert.ok(o.apiVersion && o.kind, `${f}: apiVersion and kind`);
      if (o.kind !== 'Kustomization') assert.ok(o.metadata?.name, `${f}: metadata.name`);
      out.push(o);
    }
  }
  return out;
}

const objs = load();
const one = (kind: string): Obj => {
  const found = objs.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0]!;
};
const named = (kind: string, name: string): Obj => {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name);
  assert.equal(found.length, 1, `exactly one ${kind} ${name}`);
  return found[0]!;
};

/** "group/resource:verb" of every rule (no resourceNames, no non-resource URLs). */
function grantsOf(role: Obj): Set<string> {
  const grants = new Set<string>();
  for (const r of role['rules'] as Rule[]) {
    assert.equal(r.resourceNames, undefined);
    assert.equal(r.nonResourceURLs, undefined);
    for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) grants.add(`${g}/${res}:${v}`);
  }
  return grants;
}

/** The binding of that kind naming `role` binds it to the ServiceAccount, and only to it. */
function assertBound(kind: 'ClusterRoleBinding' | 'RoleBinding', role: Obj, sa: Obj): void {
  const binding = objs.find((o) => o.kind === kind && (o['roleRef'] as { name: string }).name === role.metadata.name) as
    (Obj & { roleRef: object; subjects: object[] }) | undefined;
  assert.ok(binding, `a ${kind} for ${role.metadata.name}`);
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: role.kind, name: role.metadata.name });
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  if (kind === 'RoleBinding') assert.equal(binding.metadata.namespace, role.metadata.namespace);
}

const daemonSet = one('DaemonSet');
const pod = (daemonSet['spec'] as { template: { spec: PodSpec } }).template.spec;
const container = pod.containers[0]!;

/** The container's environment as a pod on node-1 (10.0.0.5) sees it, with the variables every pod gets. */
function podEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
  const fields: Record<string, string> = { 'spec.nodeName': 'node-1', 'status.hostIP': '10.0.0.5' };
  for (const v of container.env) {
    if (v.valueFrom?.fieldRef)
      env[v.name] = fields[v.valueFrom.fieldRef.fieldPath] ?? assert.fail(`unexpected fieldRef ${v.valueFrom.fieldRef.fieldPath}`);
    else
      env[v.name] = (v.value ?? '').replace(
        /\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
        (_m, n: string) => env[n] ?? assert.fail(`$(${n}) is not defined before ${v.name}`),
      );
  }
  return env;
}

function configMapConfig(): FerryConfig {
  const cm = one('ConfigMap');
  const text = (cm['data'] as Record<string, string>)['ferry.yaml'];
  assert.ok(text, 'the ConfigMap holds ferry.yaml');
  return parseConfig(text, 'configmap ferry.yaml', podEnv());
}

/** The volume mounted at a folder holding `path`. */
function mountOf(path: string): { mount: Mount; volume: Volume } {
  const m = container.volumeMounts
    .filter((v) => path === v.mountPath || path.startsWith(`${v.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  assert.ok(m, `a volume is mounted over ${path}`);
  const volume = pod.volumes.find((v) => v.name === m.name);
  assert.ok(volume, `volume ${m.name} exists`);
  return { mount: m, volume };
}

describe('kubernetes manifests', () => {
  it('every file parses; kustomization lists them all; one namespace', () => {
    const kust = one('Kustomization') as Obj & { resources: string[] };
    const files = readdirSync(dir)
      .filter((n) => n.endsWith('.yaml') && n !== 'kustomization.yaml')
      .sort();
    assert.deepEqual([...kust.resources].sort(), files);
    const namespaced = objs.filter((o) => ['ServiceAccount', 'ConfigMap', 'DaemonSet', 'Role', 'RoleBinding'].includes(o.kind));
    assert.deepEqual([...new Set(namespaced.map((o) => o.metadata.namespace))], ['kube-system']);
  });

  it("RBAC: exactly get, list and watch on services, nodes and discovery.k8s.io endpointslices, bound to the DaemonSet's ServiceAccount", () => {
    const role = named('ClusterRole', 'ferry');
    const grants = grantsOf(role);
    const want = ['/services', '/nodes', 'discovery.k8s.io/endpointslices'].flatMap((r) =>
      ['get', 'list', 'watch'].map((v) => `${r}:${v}`),
    );
    assert.deepEqual([...grants].sort(), want.sort());
    // What the watch reads is exactly what is granted.
    assert.deepEqual(
      [SERVICES_PATH, NODES_PATH, ENDPOINTSLICES_PATH],
      ['/api/v1/services', '/api/v1/nodes', '/apis/discovery.k8s.io/v1/endpointslices'],
    );

    const sa = one('ServiceAccount');
    assertBound('ClusterRoleBinding', role, sa);
    assert.equal(pod.serviceAccountName, sa.metadata.name);
    assert.notEqual(pod.automountServiceAccountToken, false, 'the in-cluster credentials need the token');
  });

  it('RBAC for the LoadBalancer IP allocator: Service status updates, and its Lease in kube-system only', () => {
    const sa = one('ServiceAccount');
    const cluster = named('ClusterRole', 'ferry-lb-ipam');
    assert.deepEqual([...grantsOf(cluster)], ['/services/status:update']);
    assertBound('ClusterRoleBinding', cluster, sa);
    const lease = named('Role', 'ferry-lb-ipam');
    assert.equal(lease.metadata.namespace, 'kube-system');
    const defaults = parseConfig('mode: standalone\n', 'defaults').kubernetes.lb_ipam.lease;
    assert.equal(lease.metadata.namespace, defaults.namespace, 'where the allocator keeps its Lease by default');
    assert.deepEqual([...grantsOf(lease)].sort(), [
      'coordination.k8s.io/leases:create',
      'coordination.k8s.io/leases:get',
      'coordination.k8s.io/leases:update',
    ]);
    assertBound('RoleBinding', lease, sa);
  });

  it("the ConfigMap's ferry.yaml validates with the DaemonSet's environment: kubernetes mode, in-cluster, node name and encap source per node", () => {
    const c = configMapConfig();
    assert.equal(c.mode, 'kubernetes');
    assert.equal(c.kubernetes.kubeconfig, null, 'in-cluster service account');
    assert.equal(c.kubernetes.node_name, 'node-1', 'NODE_NAME from spec.nodeName');
    assert.equal(c.datapath.encap_source_v4, '10.0.0.5/32', "the node's own address");
    assert.notEqual(c.api.probe_listen, null);
    // Without the DaemonSet's NODE_NAME it is refused, naming the key.
    const env = podEnv();
    delete env['NODE_NAME'];
    const text = (one('ConfigMap')['data'] as Record<string, string>)['ferry.yaml']!;
    assert.throws(() => parseConfig(text, 'cm', env), /\/kubernetes\/node_name: required/);
  });

  it('the DaemonSet runs ferryd on that config and mounts, probes and privileges what it uses', () => {
    const c = configMapConfig();
    assert.equal(pod.hostNetwork, true);
    assert.ok(pod.tolerations.length > 0);
    const strategy = (daemonSet['spec'] as { updateStrategy: { type: string } }).updateStrategy;
    assert.equal(strategy.type, 'RollingUpdate');

    // --config names the ConfigMap's key where its volume is mounted.
    const cfgPath = container.command[container.command.indexOf('--config') + 1]!;
    const cfg = mountOf(cfgPath);
    assert.equal(cfg.volume.configMap?.name, one('ConfigMap').metadata.name);
    assert.equal(cfgPath, `${cfg.mount.mountPath}/ferry.yaml`);
    assert.equal(container.command[0], 'ferryd');

    // State, pins, socket: on the host, so they outlive the pod.
    const hostPathOf = (p: string): string => {
      const { mount, volume } = mountOf(p);
      assert.ok(volume.hostPath, `${p} is on a hostPath volume`);
      assert.notEqual(mount.readOnly, true, `${p} is writable`);
      return join(volume.hostPath.path, p.slice(mount.mountPath.length));
    };
    assert.equal(hostPathOf(c.state_dir), c.state_dir);
    assert.equal(hostPathOf(c.bpf.pin_root), c.bpf.pin_root);
    assert.equal(mountOf(c.bpf.pin_root).mount.mountPath, '/sys/fs/bpf', "the host's bpffs");
    assert.equal(hostPathOf(dirname(c.api.socket)), dirname(c.api.socket));
    const cgroup = mountOf('/sys/fs/cgroup');
    assert.equal(cgroup.volume.hostPath?.path, '/sys/fs/cgroup', "the host's cgroup v2 root");

    // NODE_NAME from the downward API.
    assert.deepEqual(container.env.find((v) => v.name === 'NODE_NAME')?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });

    // Probes on the config's probe listener.
    const [host, port] = [c.api.probe_listen!.split(':')[0], Number(c.api.probe_listen!.split(':')[1])];
    assert.deepEqual(container.livenessProbe.httpGet, { host, port, path: '/healthz' });
    assert.deepEqual(container.readinessProbe.httpGet, { host, port, path: '/readyz' });

    // Capabilities instead of privileged.
    const sc = container.securityContext;
    assert.notEqual(sc.privileged, true);
    assert.deepEqual(sc.capabilities.drop, ['ALL']);
    assert.deepEqual([...sc.capabilities.add].sort(), ['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_ADMIN', 'SYS_RESOURCE']);
    assert.ok(container.resources.requests?.['cpu'] && container.resources.requests['memory'] && container.resources.limits?.['memory']);
  });
});
