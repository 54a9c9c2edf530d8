/**
 * Kubernetes → Ferry translation (src/k8s/translate.ts), pure: every rule
 * on hand-built Services, EndpointSlices and Nodes. Every desired state
 * produced is also checked with the store's own validation.
 * (The watch client is tested in k8s-watch.test.ts, the store sync in
 * k8s-sync.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  mergedDesired,
  resourceName,
  serviceKeyOfOwner,
  sourceRangesPolicyName,
  translate,
  translateService,
  vipName,
  type ServiceTranslation,
  type TranslateConfig,
} from '../../../src/k8s/translate.js';
import type { EndpointSlice, Node, Service } from '../../../src/k8s/types.js';
import { NAME_PATTERN, type VipWithBackends } from '../../../src/model/types.js';
import { validateDesiredState } from '../../../src/model/validate.js';
import { node, port, service, slice } from '../../lib/k8s-objects.js';

const CFG: TranslateConfig = { nodeName: 'node-a' };
const NODE: Node = node('node-a', [
  ['InternalIP', '10.0.0.1'],
  ['ExternalIP', '203.0.113.1'],
  ['Hostname', 'node-a'],
  ['InternalIP', 'fd00::1'],
]);
const NAME_RE = new RegExp(NAME_PATTERN);

/** Other nodes of the cluster: node-b has both families, node-c only its name. */
const NODE_B: Node = node('node-b', [
  ['InternalIP', '10.0.0.2'],
  ['InternalIP', 'fd00::2'],
  ['ExternalIP', '203.0.113.2'],
]);

function tr(
  svc: Service,
  slices: EndpointSlice[] = [],
  cfg: TranslateConfig = CFG,
  n: Node | null = NODE,
  others: Node[] = [NODE_B],
): ServiceTranslation {
  const nodes = new Map([...(n === null ? [] : [n]), ...others].map((x) => [x.metadata.name, x]));
  const t = translateService(svc, slices, n ?? undefined, cfg, nodes);
  assert.deepEqual(validateDesiredState(t.desired), [], `invalid desired state: ${JSON.stringify(t.desired)}`);
  for (const v of t.desired.vips) assert.match(v.name, NAME_RE);
  for (const p of t.desired.policies) assert.match(p.name, NAME_RE);
  return t;
}

const vipAt = (t: ServiceTranslation, address: string, p: number, proto = 'tcp'): VipWithBackends | undefined =>
  t.desired.vips.find((v) => v.address === address && v.port === p && v.protocol === proto);

const backendsOf = (v: VipWithBackends | undefined): Array<[string, string]> =>
  (v?.backends ?? []).map((b) => [b.address, b.state ?? 'active']);

const reasons = (t: ServiceTranslation): string => t.skipped.map((s) => s.reason).join('\n');

describe('k8s translate: VIPs from LoadBalancer ingress and externalIPs', () => {
  it('one VIP per Service port × address, TCP and UDP, owned by kubernetes:<ns>/<name>', () => {
    const svc = service('dns', {
      namespace: 'kube-system',
      type: 'LoadBalancer',
      clusterIP: '10.96.0.10',
      ingress: ['198.18.0.53'],
      externalIPs: ['198.18.1.53'],
      ports: [port(53, { name: 'dns', protocol: 'UDP', targetPort: 53 }), port(53, { name: 'dns-tcp', protocol: 'TCP', targetPort: 53 })],
    });
    const sl = slice('dns-abc', ['10.244.1.5', '10.244.2.7'], {
      namespace: 'kube-system',
      service: 'dns',
      ports: [
        { name: 'dns', port: 53, protocol: 'UDP' },
        { name: 'dns-tcp', port: 53, protocol: 'TCP' },
      ],
    });
    const t = tr(svc, [sl]);
    assert.equal(t.key, 'kube-system/dns');
    assert.equal(t.owner, 'kubernetes:kube-system/dns');
    assert.equal(serviceKeyOfOwner(t.owner), 'kube-system/dns');
    assert.equal(t.ignored, null);
    assert.equal(t.desired.vips.length, 4);
    for (const [addr, proto] of [
      ['198.18.0.53', 'udp'],
      ['198.18.0.53', 'tcp'],
      ['198.18.1.53', 'udp'],
      ['198.18.1.53', 'tcp'],
    ] as const) {
      const v = vipAt(t, addr, 53, proto);
      assert.ok(v, `${addr} 53/${proto}`);
      assert.equal(v.name, `k8s.kube-system.dns.${proto}53.${addr.replace(/\./g, '-')}`);
      assert.deepEqual(backendsOf(v), [
        ['10.244.1.5', 'active'],
        ['10.244.2.7', 'active'],
      ]);
      assert.equal(v.source_affinity, false);
    }
    assert.deepEqual(t.skipped, []);
  });

  it('ingress hostnames and ipMode Proxy are not programmed; an address in both ingress and externalIPs is one VIP', () => {
    const svc = service('web', {
      type: 'LoadBalancer',
      ingress: ['198.18.0.1', '198.18.0.2'],
      ingressModes: [undefined, 'Proxy'],
      externalIPs: ['198.18.0.1'],
    });
    svc.status!.loadBalancer!.ingress!.push({ hostname: 'lb.example.com' });
    const t = tr(svc, [slice('web-1', ['10.244.0.1'])]);
    assert.deepEqual(
      t.desired.vips.map((v) => `${v.address} ${v.port}`),
      ['198.18.0.1 80'],
    );
  });

  it('LoadBalancer ingress is used only while the type is LoadBalancer; externalIPs on any type', () => {
    const svc = service('web', { type: 'ClusterIP', clusterIP: '10.96.0.1', ingress: ['198.18.0.1'], externalIPs: ['198.18.0.9'] });
    const t = tr(svc, [slice('web-1', ['10.244.0.1'])]);
    assert.deepEqual(
      t.desired.vips.map((v) => v.address),
      ['198.18.0.9'],
    );
  });

  it('multiple ports and named targetPorts resolved per EndpointSlice', () => {
    const svc = service('app', {
      type: 'LoadBalancer',
      ingress: ['198.18.0.7'],
      ports: [port(80, { name: 'http', targetPort: 'web' }), port(443, { name: 'https', targetPort: 'tls' })],
    });
    // Two slices: the pods of one listen on 80/443, those of the other on 8080/443 for the same names.
    const a = slice('app-a', ['10.244.0.1', '10.244.0.2'], {
      ports: [
        { name: 'http', port: 80 },
        { name: 'https', port: 443 },
      ],
    });
    const b = slice('app-b', ['10.244.0.3'], {
      ports: [
        { name: 'http', port: 8080 },
        { name: 'https', port: 443 },
      ],
    });
    const t = tr(svc, [a, b]);
    assert.deepEqual(backendsOf(vipAt(t, '198.18.0.7', 80)), [
      ['10.244.0.1', 'active'],
      ['10.244.0.2', 'active'],
    ]);
    assert.deepEqual(backendsOf(vipAt(t, '198.18.0.7', 443)), [
      ['10.244.0.1', 'active'],
      ['10.244.0.2', 'active'],
      ['10.244.0.3', 'active'],
    ]);
    // 10.244.0.3 names no node: reached as its own host, which cannot translate 80 → 8080.
    assert.match(
      reasons(t),
      /endpoint 10\.244\.0\.3 listens on 8080 and its node \(none named\) is not known with an IPv4 address: left out/,
    );
  });
});

describe("k8s translate: port translation on the endpoint's node", () => {
  it('each endpoint with its own port and where it lives: this node "local", another its node\'s address; an unknown node\'s is left out', () => {
    const svc = service('web', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.5',
      ingress: ['198.18.0.5'],
      ports: [port(80, { name: 'http', targetPort: 8080 })],
    });
    const eps = slice(
      'web-1',
      [
        ['10.244.0.1', { node: 'node-a' }],
        ['10.244.1.1', { node: 'node-b' }],
        ['10.244.2.1', { node: 'node-c' }],
      ],
      {
        ports: [{ name: 'http', port: 8080 }],
      },
    );
    const t = tr(svc, [eps]);
    assert.deepEqual(vipAt(t, '198.18.0.5', 80)?.backends, [
      { address: '10.244.0.1', host: 'local', port: 8080, state: 'active' },
      { address: '10.244.1.1', host: '10.0.0.2', port: 8080, state: 'active' },
    ]);
    assert.match(reasons(t), /endpoint 10\.244\.2\.1 listens on 8080 and its node \(node-c\) is not known with an IPv4 address: left out/);
    assert.deepEqual(
      t.clusterIps[0]?.backends.map((b) => b.address),
      ['10.244.0.1', '10.244.1.1', '10.244.2.1'],
      'the socket-LB takes them all',
    );
    assert.deepEqual(t.nat, [], 'no kernel NAT on the XDP path');
  });

  it("the VIP's own port is no port of the backend; a node is reached on the endpoint's family; a hostNetwork endpoint is its own host", () => {
    const svc = service('dual', {
      type: 'LoadBalancer',
      ingress: ['198.18.0.6', '2001:db8::6'],
      ipFamilies: ['IPv4', 'IPv6'],
      ports: [port(80, { name: 'http' })],
    });
    const v4 = slice(
      'dual-4',
      [
        ['10.244.1.2', { node: 'node-b' }],
        ['10.0.0.2', { node: 'node-b' }],
      ],
      { ports: [{ name: 'http', port: 80 }] },
    );
    const v6 = slice('dual-6', [['fd00:244::2', { node: 'node-b' }]], { ports: [{ name: 'http', port: 80 }], addressType: 'IPv6' });
    const t = tr(svc, [v4, v6]);
    assert.deepEqual(vipAt(t, '198.18.0.6', 80)?.backends, [
      { address: '10.0.0.2', host: '10.0.0.2', state: 'active' },
      { address: '10.244.1.2', host: '10.0.0.2', state: 'active' },
    ]);
    assert.deepEqual(vipAt(t, '2001:db8::6', 80)?.backends, [{ address: 'fd00:244::2', host: 'fd00::2', state: 'active' }]);
  });

  it('with no endpoints yet the VIP is there, empty, whatever the targetPort', () => {
    const numeric = tr(service('a', { externalIPs: ['198.18.0.1'], ports: [port(80, { targetPort: 8080 })] }));
    assert.deepEqual(
      numeric.desired.vips.map((v) => [v.port, v.backends?.length]),
      [[80, 0]],
    );
    const named = tr(service('c', { externalIPs: ['198.18.0.1'], ports: [port(80, { targetPort: 'http' })] }));
    assert.deepEqual(
      named.desired.vips.map((v) => [v.port, v.backends?.length]),
      [[80, 0]],
    );
  });
});

describe('k8s translate: NodePorts', () => {
  it("on this node's InternalIP and ExternalIP addresses of the Service's families, on the node port", () => {
    const svc = service('np', {
      type: 'NodePort',
      clusterIP: '10.96.0.8',
      ports: [port(30080, { name: 'http', targetPort: 30080, nodePort: 30080 })],
    });
    const t = tr(svc, [slice('np-1', ['10.244.0.1'], { ports: [{ name: 'http', port: 30080 }] })]);
    assert.deepEqual(t.desired.vips.map((v) => `${v.address} ${v.port}`).sort(), ['10.0.0.1 30080', '203.0.113.1 30080']);
    assert.match(reasons(t), /node address fd00::1 .*no IPv6 family/);
  });

  it("a NodePort reaches endpoints on their own port; other nodes' NodePorts reach this node's endpoints (node pairs)", () => {
    const svc = service('np', { type: 'NodePort', ports: [port(80, { name: 'http', targetPort: 80, nodePort: 31000 })] });
    const eps = slice('np-1', [
      ['10.244.0.1', { node: 'node-a' }],
      ['10.244.1.1', { node: 'node-b' }],
    ]);
    const t = tr(svc, [eps]);
    assert.deepEqual(vipAt(t, '10.0.0.1', 31000)?.backends, [
      { address: '10.244.0.1', host: 'local', port: 80, state: 'active' },
      { address: '10.244.1.1', host: '10.0.0.2', port: 80, state: 'active' },
    ]);
    // node-b's IPv4 addresses × 31000 to this node's endpoint (node-b's XDP sends them here).
    assert.deepEqual(t.nodeEndpoints, [
      { vip: '10.0.0.2', vipPort: 31000, protocol: 'tcp', backend: '10.244.0.1', port: 80 },
      { vip: '203.0.113.2', vipPort: 31000, protocol: 'tcp', backend: '10.244.0.1', port: 80 },
    ]);
    const local = tr({ ...svc, spec: { ...svc.spec, externalTrafficPolicy: 'Local' } }, [eps]);
    assert.deepEqual(backendsOf(vipAt(local, '10.0.0.1', 31000)), [['10.244.0.1', 'active']], "Local: this node's endpoints only");
    assert.deepEqual(local.nodeEndpoints, [], 'Local: other nodes send only to their own endpoints');
    assert.deepEqual(tr(svc, [eps], { ...CFG, externalPath: 'nat' }).nodeEndpoints, [], 'none on the NAT path');
  });

  it("source NAT (node default or the Service's annotation): VIPs forward by snat, endpoints of unknown nodes kept, no node pairs", () => {
    const svc = service('np', { type: 'NodePort', ports: [port(80, { name: 'http', targetPort: 80, nodePort: 31000 })] });
    const eps = slice('np-1', [
      ['10.244.0.1', { node: 'node-a' }],
      ['10.244.1.1', { node: 'node-b' }],
      ['10.244.2.1', { node: 'node-c' }],
    ]);
    const expectSnat = (t: ReturnType<typeof tr>) => {
      const v = vipAt(t, '10.0.0.1', 31000);
      assert.equal(v?.forwarding, 'snat');
      assert.deepEqual(
        v?.backends,
        [
          { address: '10.244.0.1', host: 'local', port: 80, state: 'active' },
          { address: '10.244.1.1', host: '10.0.0.2', port: 80, state: 'active' },
          { address: '10.244.2.1', port: 80, state: 'active' },
        ],
        "the unknown node's endpoint is reached by this node's routes",
      );
      assert.deepEqual(t.nodeEndpoints, [], 'other nodes translate their own NodePort traffic');
    };
    expectSnat(tr(svc, [eps], { ...CFG, externalPath: 'snat' }));
    const annotated = { ...svc, metadata: { ...svc.metadata, annotations: { 'ferry.io/external-path': 'snat' } } };
    expectSnat(tr(annotated, [eps]));
    assert.equal(
      vipAt(tr(annotated, [eps], { ...CFG, externalPath: 'nat' }), '10.0.0.1', 31000)?.forwarding,
      'snat',
      'over a nat default too',
    );
    const direct = { ...svc, metadata: { ...svc.metadata, annotations: { 'ferry.io/external-path': 'xdp' } } };
    assert.equal(
      vipAt(tr(direct, [eps], { ...CFG, externalPath: 'snat' }), '10.0.0.1', 31000)?.forwarding,
      undefined,
      'xdp over a snat default',
    );
    const bad = tr({ ...svc, metadata: { ...svc.metadata, annotations: { 'ferry.io/external-path': 'ipvs' } } }, [eps]);
    assert.match(reasons(bad), /annotation ferry\.io\/external-path="ipvs" is not xdp or snat: xdp applies/);
    assert.equal(vipAt(bad, '10.0.0.1', 31000)?.forwarding, undefined);
  });

  it('sockets on the node reach the NodePort, LoadBalancer IPs and externalIPs through the socket-LB, with the targetPort', () => {
    const svc = service('np', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.7',
      ingress: ['198.18.0.7'],
      externalIPs: ['198.18.0.8', '198.18.0.7'],
      sessionAffinity: 'ClientIP',
      ports: [port(80, { name: 'http', targetPort: 8080, nodePort: 31000 })],
    });
    const slices = [slice('np-1', ['10.244.0.1', '10.244.0.2'], { ports: [{ name: 'http', port: 8080 }] })];
    const t = tr(svc, slices);
    const backends = [
      { address: '10.244.0.1', port: 8080 },
      { address: '10.244.0.2', port: 8080 },
    ];
    const entry = (ip: string, p: number) => ({
      service: 'default/np',
      portName: 'http',
      ip,
      port: p,
      protocol: 'tcp',
      backends,
      affinityTimeoutSeconds: 10800,
    });
    assert.deepEqual(t.clusterIps, [entry('10.96.0.7', 80)]);
    // Ingress and externalIPs once each (198.18.0.7 is in both); the node's IPv4 addresses of the default types
    // (the IPv6 one is not of the Service's family).
    assert.deepEqual(t.localAddresses, [
      entry('198.18.0.7', 80),
      entry('198.18.0.8', 80),
      entry('10.0.0.1', 31000),
      entry('203.0.113.1', 31000),
    ]);
    // With external_path nat, clients outside the node: the kernel's NAT, same endpoints, masqueraded (externalTrafficPolicy Cluster).
    const NAT = { ...CFG, externalPath: 'nat' as const };
    const nat = (address: string, p: number) => ({
      service: 'default/np',
      address,
      port: p,
      protocol: 'tcp',
      backends,
      masquerade: true,
      affinity: true,
      sourceRanges: null,
    });
    assert.deepEqual(tr(svc, slices, NAT).nat, [
      nat('198.18.0.7', 80),
      nat('198.18.0.8', 80),
      nat('10.0.0.1', 31000),
      nat('203.0.113.1', 31000),
    ]);
    // externalTrafficPolicy Local: this node's endpoints only, the client's address kept.
    const local = tr(
      { ...svc, spec: { ...svc.spec, externalTrafficPolicy: 'Local' } },
      [
        slice(
          'np-1',
          [
            ['10.244.0.1', { node: 'node-a' }],
            ['10.244.0.2', { node: 'node-b' }],
          ],
          { ports: [{ name: 'http', port: 8080 }] },
        ),
      ],
      NAT,
    );
    assert.deepEqual(
      local.nat.map((e) => [e.address, e.backends.map((b) => b.address), e.masquerade]),
      [
        ['198.18.0.7', ['10.244.0.1'], false],
        ['198.18.0.8', ['10.244.0.1'], false],
        ['10.0.0.1', ['10.244.0.1'], false],
        ['203.0.113.1', ['10.244.0.1'], false],
      ],
    );
  });

  it("external_path nat: every outside address through the kernel's NAT, none as an XDP VIP (ordinary pods)", () => {
    const svc = service('web', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.9',
      ingress: ['198.18.0.9'],
      ports: [port(80, { name: 'http', targetPort: 80, nodePort: 31080 })],
    });
    const slices = [slice('web-1', ['10.244.0.1'])];
    assert.equal(tr(svc, slices).desired.vips.length, 3, 'xdp (default): the LoadBalancer IP and the NodePorts are VIPs');
    const t = tr(svc, slices, { ...CFG, externalPath: 'nat' });
    assert.deepEqual(t.desired.vips, []);
    assert.deepEqual(
      t.nat.map((e) => [e.address, e.port, e.backends]),
      [
        ['198.18.0.9', 80, [{ address: '10.244.0.1', port: 80 }]],
        ['10.0.0.1', 31080, [{ address: '10.244.0.1', port: 80 }]],
        ['203.0.113.1', 31080, [{ address: '10.244.0.1', port: 80 }]],
      ],
    );
    assert.doesNotMatch(reasons(t), /endpoints listen on|port translation/, 'nothing is skipped for its ports');
    assert.equal(t.clusterIps.length, 1, "ClusterIPs are the socket-LB's either way");
    // loadBalancerSourceRanges hold on the NAT path too: the LoadBalancer IP's entry carries them; NodePorts do not.
    const ranged = tr({ ...svc, spec: { ...svc.spec, loadBalancerSourceRanges: ['192.0.2.0/24', '2001:db8::/32'] } }, slices, {
      ...CFG,
      externalPath: 'nat',
    });
    assert.deepEqual(
      ranged.nat.map((e) => [e.address, e.sourceRanges]),
      [
        ['198.18.0.9', ['192.0.2.0/24']],
        ['10.0.0.1', null],
        ['203.0.113.1', null],
      ],
    );
  });

  it("the node's address types are configurable; an unknown node is reported", () => {
    const svc = service('np', { type: 'NodePort', ports: [port(31000, { targetPort: 31000, nodePort: 31000 })] });
    const t = tr(svc, [], { nodeName: 'node-a', nodePortAddressTypes: ['ExternalIP'] });
    assert.deepEqual(
      t.desired.vips.map((v) => v.address),
      ['203.0.113.1'],
    );
    const none = tr(svc, [], CFG, null);
    assert.equal(none.desired.vips.length, 0);
    assert.match(reasons(none), /node node-a is not known yet: NodePorts not served/);
  });

  it('LoadBalancer Services get NodePorts too (unless allocateLoadBalancerNodePorts left them out)', () => {
    const svc = service('lb', {
      type: 'LoadBalancer',
      ingress: ['198.18.0.2'],
      ports: [port(31500, { targetPort: 31500, nodePort: 31500 })],
    });
    const t = tr(svc, [slice('lb-1', ['10.244.0.1'], { ports: [{ name: '', port: 31500 }] })]);
    assert.deepEqual(t.desired.vips.map((v) => v.address).sort(), ['10.0.0.1', '198.18.0.2', '203.0.113.1']);
  });
});

describe('k8s translate: ClusterIPs go to the socket-LB list, not to VIPs', () => {
  it('one entry per ClusterIP × port, backends with their own ports, no VIP', () => {
    const svc = service('api', {
      clusterIP: '10.96.1.1',
      clusterIPs: ['10.96.1.1'],
      ports: [port(80, { name: 'http', targetPort: 'http' }), port(9090, { name: 'metrics', targetPort: 9100, protocol: 'TCP' })],
    });
    const t = tr(svc, [
      slice('api-1', ['10.244.0.2', '10.244.0.1'], {
        ports: [
          { name: 'http', port: 8080 },
          { name: 'metrics', port: 9100 },
        ],
      }),
    ]);
    assert.deepEqual(t.desired.vips, []);
    assert.deepEqual(t.clusterIps, [
      {
        service: 'default/api',
        portName: 'http',
        ip: '10.96.1.1',
        port: 80,
        protocol: 'tcp',
        backends: [
          { address: '10.244.0.1', port: 8080 },
          { address: '10.244.0.2', port: 8080 },
        ],
      },
      {
        service: 'default/api',
        portName: 'metrics',
        ip: '10.96.1.1',
        port: 9090,
        protocol: 'tcp',
        backends: [
          { address: '10.244.0.1', port: 9100 },
          { address: '10.244.0.2', port: 9100 },
        ],
      },
    ]);
  });

  it("internalTrafficPolicy Local keeps only this node's endpoints in the ClusterIP list (and not in VIPs)", () => {
    const svc = service('loc', { clusterIP: '10.96.2.2', internalTrafficPolicy: 'Local', externalIPs: ['198.18.0.22'] });
    const t = tr(svc, [
      slice('loc-1', [
        ['10.244.0.1', { node: 'node-a' }],
        ['10.244.0.2', { node: 'node-b' }],
      ]),
    ]);
    assert.deepEqual(t.clusterIps[0]?.backends, [{ address: '10.244.0.1', port: 80 }]);
    assert.equal(vipAt(t, '198.18.0.22', 80)?.backends?.length, 2);
  });
});

describe('k8s translate: traffic policies, affinity, source ranges', () => {
  it("externalTrafficPolicy Local: VIPs take only this node's endpoints; the health-check node port counts them", () => {
    const svc = service('etp', {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32100,
      clusterIP: '10.96.3.3',
      ingress: ['198.18.0.33'],
    });
    const eps = [
      ['10.244.0.1', { node: 'node-a' }],
      ['10.244.0.2', { node: 'node-b' }],
      ['10.244.0.3', { node: 'node-a', ready: false }],
      '10.244.0.4',
    ] as const;
    const t = tr(svc, [slice('etp-1', eps)]);
    assert.deepEqual(backendsOf(vipAt(t, '198.18.0.33', 80)), [['10.244.0.1', 'active']]);
    assert.deepEqual(t.healthCheckNodePorts, [{ service: 'default/etp', port: 32100, localEndpoints: 1 }]);
    assert.equal(t.clusterIps[0]?.backends.length, 3, 'the ClusterIP list follows internalTrafficPolicy (Cluster), not external');
    const cluster = tr(service('etp', { type: 'LoadBalancer', ingress: ['198.18.0.33'] }), [slice('etp-1', eps)]);
    assert.equal(vipAt(cluster, '198.18.0.33', 80)?.backends?.length, 3);
    assert.deepEqual(cluster.healthCheckNodePorts, []);
    const none = tr(svc, [slice('etp-1', [['10.244.0.2', { node: 'node-b' }]])]);
    assert.deepEqual(
      backendsOf(vipAt(none, '198.18.0.33', 80)),
      [],
      'no local endpoint: the VIP has no backend (drops, as kube-proxy does)',
    );
    assert.deepEqual(none.healthCheckNodePorts, [{ service: 'default/etp', port: 32100, localEndpoints: 0 }]);
  });

  it('sessionAffinity ClientIP: source_affinity on VIPs, the timeout in the ClusterIP list (default 10800 s)', () => {
    const svc = service('aff', {
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
      clusterIP: '10.96.4.4',
      externalIPs: ['198.18.0.44'],
    });
    const t = tr(svc, [slice('aff-1', ['10.244.0.1'])]);
    assert.equal(vipAt(t, '198.18.0.44', 80)?.source_affinity, true);
    assert.equal(t.clusterIps[0]?.affinityTimeoutSeconds, 600);
    const dflt = tr(service('aff', { sessionAffinity: 'ClientIP', clusterIP: '10.96.4.4' }));
    assert.equal(dflt.clusterIps[0]?.affinityTimeoutSeconds, 10800);
    const off = tr(service('aff', { clusterIP: '10.96.4.4' }));
    assert.equal('affinityTimeoutSeconds' in off.clusterIps[0]!, false);
  });

  it('loadBalancerSourceRanges: a policy on the LoadBalancer-ingress VIPs only; host bits cleared; the other family denied', () => {
    const svc = service('fw', {
      type: 'LoadBalancer',
      ingress: ['198.18.0.55'],
      externalIPs: ['198.18.0.56'],
      loadBalancerSourceRanges: ['203.0.113.7/24', ' 192.0.2.0/25', 'bogus', '10.0.0.0/8'],
    });
    const t = tr(svc, [slice('fw-1', ['10.244.0.1'])]);
    const name = sourceRangesPolicyName('default', 'fw');
    assert.equal(name, 'k8s.default.fw.source-ranges');
    assert.deepEqual(t.desired.policies, [{ name, allow: ['10.0.0.0/8', '192.0.2.0/25', '203.0.113.0/24'], deny: ['::/0'] }]);
    assert.deepEqual(vipAt(t, '198.18.0.55', 80)?.policies, [name]);
    assert.equal(vipAt(t, '198.18.0.56', 80)?.policies, undefined, 'externalIPs are not filtered (kube-proxy semantics)');
    assert.match(reasons(t), /"bogus" is not a CIDR/);
    const v6only = tr(service('fw6', { type: 'LoadBalancer', ingress: ['198.18.0.57'], loadBalancerSourceRanges: ['2001:db8::/32'] }));
    assert.deepEqual(v6only.desired.policies[0]?.deny, ['0.0.0.0/0'], 'an IPv6-only list must not leave the IPv4 VIP open');
    const noLb = tr(service('fw', { externalIPs: ['198.18.0.56'], loadBalancerSourceRanges: ['10.0.0.0/8'] }));
    assert.deepEqual(noLb.desired.policies, [], 'no policy without a VIP that uses it');
  });
});

describe('k8s translate: endpoint conditions', () => {
  const svc = service('term', { externalIPs: ['198.18.0.66'], clusterIP: '10.96.6.6' });

  it('ready endpoints are active; serving-terminating ones drain; not-serving and not-ready ones are left out; nil conditions are ready', () => {
    const sl = slice('term-1', [
      '10.244.0.1',
      ['10.244.0.2', { ready: false, serving: true, terminating: true }],
      ['10.244.0.3', { ready: false, serving: false, terminating: true }],
      ['10.244.0.4', { ready: false }],
    ]);
    sl.endpoints!.push({ addresses: ['10.244.0.5'] });
    const t = tr(svc, [sl]);
    assert.deepEqual(backendsOf(vipAt(t, '198.18.0.66', 80)), [
      ['10.244.0.1', 'active'],
      ['10.244.0.2', 'draining'],
      ['10.244.0.5', 'active'],
    ]);
    assert.deepEqual(
      t.clusterIps[0]?.backends.map((b) => b.address),
      ['10.244.0.1', '10.244.0.5'],
      'the socket-LB list takes only the usable ones',
    );
  });

  it('with no ready endpoint left, serving-terminating endpoints take new flows', () => {
    const t = tr(svc, [
      slice('term-1', [
        ['10.244.0.2', { ready: false, serving: true, terminating: true }],
        ['10.244.0.3', { ready: false, serving: false, terminating: true }],
      ]),
    ]);
    assert.deepEqual(backendsOf(vipAt(t, '198.18.0.66', 80)), [['10.244.0.2', 'active']]);
    assert.deepEqual(
      t.clusterIps[0]?.backends.map((b) => b.address),
      ['10.244.0.2'],
    );
  });

  it('an endpoint in two slices (a handover) counts once, ready winning; invalid addresses are reported', () => {
    const t = tr(svc, [
      slice('term-1', [['10.244.0.1', { ready: false, serving: true, terminating: true }], '127.0.0.1']),
      slice('term-2', ['10.244.0.1']),
    ]);
    assert.deepEqual(backendsOf(vipAt(t, '198.18.0.66', 80)), [['10.244.0.1', 'active']]);
    assert.match(reasons(t), /endpoint address "127\.0\.0\.1" in EndpointSlice term-1 is not a usable IPv4 address/);
  });
});

describe('k8s translate: which Services are ours', () => {
  it('Services without selectors use the EndpointSlices someone else manages', () => {
    const svc = service('ext', { selector: undefined, externalIPs: ['198.18.0.77'] });
    const sl = slice('ext-manual', ['192.0.2.10'], {
      service: 'ext',
      labels: { 'endpointslice.kubernetes.io/managed-by': 'someone-else' },
    });
    assert.deepEqual(backendsOf(vipAt(tr(svc, [sl]), '198.18.0.77', 80)), [['192.0.2.10', 'active']]);
  });

  it('headless and ExternalName Services are ignored', () => {
    const headless = tr(service('h', { clusterIP: 'None', externalIPs: ['198.18.0.88'] }), [slice('h-1', ['10.244.0.1'])]);
    assert.match(headless.ignored ?? '', /headless/);
    assert.deepEqual([headless.desired.vips, headless.clusterIps], [[], []]);
    const ext = tr(service('e', { type: 'ExternalName', externalName: 'example.com' }));
    assert.match(ext.ignored ?? '', /ExternalName/);
  });

  it('service.kubernetes.io/service-proxy-name: ignored unless it names us', () => {
    const labelled = service('p', { labels: { 'service.kubernetes.io/service-proxy-name': 'other' }, externalIPs: ['198.18.0.99'] });
    assert.match(tr(labelled).ignored ?? '', /meant for another proxy/);
    const ours = service('p', { labels: { 'service.kubernetes.io/service-proxy-name': 'ferry' }, externalIPs: ['198.18.0.99'] });
    assert.equal(tr(ours, [], { nodeName: 'node-a', proxyName: 'ferry' }).ignored, null);
    assert.equal(tr(ours, [], CFG).ignored === null, false, 'labelled for "ferry" but we have no proxy name');
    assert.equal(
      tr(service('q', { externalIPs: ['198.18.0.99'] }), [], { nodeName: 'node-a', proxyName: 'ferry' }).ignored,
      null,
      'unlabelled Services stay ours',
    );
  });

  it('SCTP ports are reported and left out', () => {
    const t = tr(service('s', { externalIPs: ['198.18.0.1'], ports: [port(9999, { protocol: 'SCTP' }), port(80)] }));
    assert.deepEqual(
      t.desired.vips.map((v) => v.port),
      [80],
    );
    assert.match(reasons(t), /protocol SCTP is not supported/);
  });
});

describe('k8s translate: dual stack', () => {
  it('each family uses the EndpointSlices of its addressType; FQDN slices are ignored', () => {
    const svc = service('ds', {
      type: 'LoadBalancer',
      ipFamilies: ['IPv4', 'IPv6'],
      ipFamilyPolicy: 'RequireDualStack',
      clusterIP: '10.96.7.7',
      clusterIPs: ['10.96.7.7', 'fd00:96::7'],
      ingress: ['198.18.0.70', '2001:db8::70'],
    });
    const t = tr(svc, [
      slice('ds-v4', ['10.244.0.1']),
      slice('ds-v6', ['fd00:244::1', 'FD00:244:0::2'], { addressType: 'IPv6' }),
      slice('ds-fqdn', ['backend.example.com'], { addressType: 'FQDN' }),
    ]);
    assert.deepEqual(backendsOf(vipAt(t, '198.18.0.70', 80)), [['10.244.0.1', 'active']]);
    assert.deepEqual(backendsOf(vipAt(t, '2001:db8::70', 80)), [
      ['fd00:244::1', 'active'],
      ['fd00:244::2', 'active'],
    ]);
    assert.equal(vipAt(t, '2001:db8::70', 80)?.name, 'k8s.default.ds.tcp80.2001-db8--70');
    assert.deepEqual(
      t.clusterIps.map((c) => [c.ip, c.backends.length]),
      [
        ['10.96.7.7', 1],
        ['fd00:96::7', 2],
      ],
    );
    assert.deepEqual(t.skipped, []);
    // Single-stack IPv4: an IPv6 ingress address is skipped.
    const single = tr(service('ss', { type: 'LoadBalancer', clusterIP: '10.96.7.8', ingress: ['2001:db8::71'] }));
    assert.equal(single.desired.vips.length, 0);
    assert.match(reasons(single), /no IPv6 family/);
  });
});

describe('k8s translate: names and whole-cluster translation', () => {
  it('names are valid, deterministic, and shortened with a hash when too long', () => {
    assert.equal(vipName('default', 'web', 'tcp', 80, '198.18.0.1'), 'k8s.default.web.tcp80.198-18-0-1');
    const ns = 'a-very-long-namespace-name-for-testing-purposes';
    const long1 = vipName(ns, 'service-number-one-with-a-long-name', 'udp', 65535, '2001:db8:1234:5678:9abc:def0:1234:5678');
    const long2 = vipName(ns, 'service-number-two-with-a-long-name', 'udp', 65535, '2001:db8:1234:5678:9abc:def0:1234:5678');
    for (const n of [long1, long2]) {
      assert.equal(n.length, 63);
      assert.match(n, NAME_RE);
      assert.match(n, /-[0-9a-f]{12}$/);
    }
    assert.notEqual(long1, long2);
    assert.equal(long1, vipName(ns, 'service-number-one-with-a-long-name', 'udp', 65535, '2001:db8:1234:5678:9abc:def0:1234:5678'));
    assert.equal(resourceName(['-x', 'Y_Z']), 'k-x.y_z');
  });

  it('translate() joins slices to Services by label, sorts, and the merged state is valid', () => {
    const t = translate(
      {
        services: [
          service('b', { externalIPs: ['198.18.0.2'] }),
          service('a', { externalIPs: ['198.18.0.1'] }),
          service('h', { clusterIP: 'None' }),
        ],
        endpointSlices: [
          slice('a-1', ['10.244.0.1']),
          slice('b-1', ['10.244.0.2']),
          slice('orphan', ['10.244.0.3'], { labels: {} }),
          { ...slice('x', []), metadata: { name: 'x', namespace: 'default' } },
        ],
        node: NODE,
      },
      CFG,
    );
    assert.deepEqual([...t.services.keys()], ['default/a', 'default/b', 'default/h']);
    assert.deepEqual(
      t.ignored.map((i) => i.service),
      ['default/h'],
    );
    const merged = mergedDesired(t);
    assert.deepEqual(
      merged.vips.map((v) => [v.name, v.backends?.map((b) => b.address)]),
      [
        ['k8s.default.a.tcp80.198-18-0-1', ['10.244.0.1']],
        ['k8s.default.b.tcp80.198-18-0-2', ['10.244.0.2']],
      ],
    );
    assert.deepEqual(validateDesiredState(merged), []);
  });
});
