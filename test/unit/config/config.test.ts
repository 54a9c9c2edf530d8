/**
 * ferryd's configuration: defaults, the shipped config/ferry.yaml, env
 * overrides, and a clear message naming the key for every kind of mistake.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultConfig, loadConfig, parseConfig } from '../../../src/config/index.js';
import { packageRoot } from '../../../src/paths.js';

/** Asserts that the text is refused with a problem containing each expected fragment. */
function refuses(text: string, ...fragments: string[]): void {
  assert.throws(
    () => parseConfig(text, 'test.yaml'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `ConfigError, got ${String(err)}`);
      for (const f of fragments) assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} names ${JSON.stringify(f)}`);
      assert.ok(err.message.includes('test.yaml'), 'names the file');
      return true;
    },
  );
}

describe('config', () => {
  it('an empty file gives the defaults', () => {
    const c = defaultConfig();
    assert.equal(c.state_dir, '/var/lib/ferry');
    assert.equal(c.bpf.pin_root, '/sys/fs/bpf/ferry');
    assert.equal(c.bpf.conntrack_entries, 1_000_000);
    assert.equal(c.api.socket, '/run/ferry/ferry.sock');
    assert.equal(c.datapath.drain_seconds, 300);
    assert.deepEqual(c.interfaces, []);
    assert.deepEqual(parseConfig('', 'empty.yaml'), c);
  });

  it('config/ferry.yaml documents exactly the defaults', () => {
    const shipped = loadConfig(join(packageRoot(), 'config', 'ferry.yaml'), {});
    assert.deepEqual(shipped, defaultConfig());
  });

  it('fills defaults inside given sections', () => {
    const c = parseConfig('interfaces:\n  - name: eth0\napi:\n  socket: /tmp/x.sock\n', 't');
    assert.deepEqual(c.interfaces, [{ name: 'eth0', mode: 'native', generic_fallback: false }]);
    assert.equal(c.api.socket, '/tmp/x.sock');
    assert.equal(c.api.socket_mode, '0660');
  });

  it('environment overrides any key with FERRY_PATH__KEY', () => {
    const c = parseConfig('log:\n  level: info\n', 't', {
      FERRY_LOG__LEVEL: 'debug',
      FERRY_DATAPATH__DRAIN_SECONDS: '5',
      FERRY_STATE_DIR: '/tmp/f',
      PATH: '/bin',
    });
    assert.equal(c.log.level, 'debug');
    assert.equal(c.datapath.drain_seconds, 5);
    assert.equal(c.state_dir, '/tmp/f');
    assert.throws(() => parseConfig('', 't', { FERRY_LOG__LEVEL: 'loud' }), /\/log\/level: must be one of/);
    assert.throws(() => parseConfig('', 't', { FERRY_LOG____LEVEL: 'x' }), /malformed variable name/);
  });

  it('names the key of every mistake', () => {
    refuses('nope: 1\n', '/nope: unknown key');
    refuses('bpf:\n  max_vips: many\n', '/bpf/max_vips: must be integer');
    refuses('bpf:\n  events_ring_bytes: 5000\n', '/bpf/events_ring_bytes: must be a power of 2');
    refuses('datapath:\n  events_per_second: -1\n', '/datapath/events_per_second: must be >= 0');
    refuses('bpf:\n  max_vips: 0\n', '/bpf/max_vips: must be >= 1');
    refuses('bpf:\n  pin_root: relative\n', '/bpf/pin_root: must match pattern');
    refuses('interfaces:\n  - mode: native\n', '/interfaces/0/name: is required');
    refuses('interfaces:\n  - name: eth0\n    mode: turbo\n', '/interfaces/0/mode: must be one of native, generic, auto');
    refuses('interfaces:\n  - name: eth0\n  - name: eth0\n', '/interfaces/1/name: eth0 is listed twice');
    refuses('interfaces:\n  - name: eth0\n    speed: 10\n', '/interfaces/0/speed: unknown key');
    refuses('datapath:\n  encap_source_v4: 10.0.0.1\n', '/datapath/encap_source_v4: must match pattern');
    refuses('datapath:\n  encap_source_v6: 2001:db8::/64\n', '/datapath/encap_source_v6: prefix length must be 96..128');
    refuses('datapath:\n  gateway_mac: 02:00:00:00:00\n', '/datapath/gateway_mac');
    refuses('datapath:\n  drain_seconds: -1\n', '/datapath/drain_seconds: must be >= 0');
    refuses('datapath:\n  record_tcp_flows: later\n', '/datapath/record_tcp_flows: must be one of on_syn, after_handshake');
    refuses('api:\n  listen: 127.0.0.1:8080\n', '/api/listen: a TCP listener needs /api/tokens_file');
    refuses('api:\n  listen: 127.0.0.1:8080\n  tokens_file: /etc/t\n  tls_cert: /c\n', 'give both or neither');
    refuses('api:\n  socket_mode: 999\n', '/api/socket_mode: must be string');
    refuses('log:\n  level: loud\n', '/log/level: must be one of');
    refuses('- a\n- b\n', 'the top level must be a mapping');
    refuses('a: [1, 2\n', 'test.yaml');
  });

  it('reports a missing file clearly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-config-'));
    try {
      assert.throws(() => loadConfig(join(dir, 'missing.yaml'), {}), /missing\.yaml.*cannot read/s);
      writeFileSync(join(dir, 'ok.yaml'), 'state_dir: /srv/ferry\n');
      assert.equal(loadConfig(join(dir, 'ok.yaml'), {}).state_dir, '/srv/ferry');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('kubernetes mode: node_name from the file or NODE_NAME, credentials from a kubeconfig or the pod', () => {
    const c = defaultConfig();
    assert.equal(c.mode, 'standalone');
    assert.deepEqual(c.kubernetes, {
      kubeconfig: null,
      node_name: null,
      proxy_name: null,
      drain_seconds: 30,
      batch_delay_ms: 200,
      batch_quiet_ms: 10,
      batch_max_events: 10000,
      resync_seconds: 600,
      node_port_address_types: ['InternalIP', 'ExternalIP'],
      health_check_addresses: ['0.0.0.0', '::'],
      socket_lb: { enabled: true, cgroup: null },
      nat: { enabled: true },
      external_path: 'xdp',
      lb_ipam: {
        enabled: false,
        pools: [],
        load_balancer_class: null,
        lease: {
          namespace: 'kube-system',
          name: 'ferry-lb-ipam',
          duration_seconds: 15,
          renew_deadline_seconds: 10,
          retry_period_seconds: 2,
        },
      },
    });
    assert.equal(c.api.probe_listen, null);
    // Standalone ignores the section's requirements (NODE_NAME is not read).
    assert.equal(parseConfig('', 't', { NODE_NAME: 'n1' }).kubernetes.node_name, null);
    const pod = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
    const k = parseConfig('mode: kubernetes\n', 't', { ...pod, NODE_NAME: 'worker-1.example' });
    assert.equal(k.kubernetes.node_name, 'worker-1.example');
    assert.equal(k.kubernetes.kubeconfig, null);
    const fromFile = parseConfig('mode: kubernetes\nkubernetes:\n  node_name: n2\n  kubeconfig: /etc/kube.yaml\n', 't', {
      NODE_NAME: 'other',
    });
    assert.equal(fromFile.kubernetes.node_name, 'n2', 'the file wins over NODE_NAME');
    const env = parseConfig('', 't', {
      FERRY_MODE: 'kubernetes',
      FERRY_KUBERNETES__NODE_NAME: 'n3',
      FERRY_KUBERNETES__KUBECONFIG: '/k',
      FERRY_KUBERNETES__BATCH_DELAY_MS: '50',
      FERRY_KUBERNETES__HEALTH_CHECK_ADDRESSES: '["127.0.0.1"]',
    });
    assert.deepEqual(
      [env.mode, env.kubernetes.node_name, env.kubernetes.kubeconfig, env.kubernetes.batch_delay_ms, env.kubernetes.health_check_addresses],
      ['kubernetes', 'n3', '/k', 50, ['127.0.0.1']],
    );
  });

  it('kubernetes mode: names the key of every mistake', () => {
    const refusesEnv = (text: string, env: NodeJS.ProcessEnv, ...fragments: string[]) => {
      assert.throws(
        () => parseConfig(text, 'test.yaml', env),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          for (const f of fragments) assert.ok(err.message.includes(f), `${JSON.stringify(err.message)} names ${JSON.stringify(f)}`);
          return true;
        },
      );
    };
    const pod = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
    refusesEnv('mode: kubernetes\n', pod, '/kubernetes/node_name: required in kubernetes mode', 'NODE_NAME');
    refusesEnv(
      'mode: kubernetes\n',
      { ...pod, NODE_NAME: 'Bad_Name' },
      '/kubernetes/node_name: NODE_NAME="Bad_Name" is not a valid node name',
    );
    refusesEnv('mode: kubernetes\nkubernetes:\n  node_name: n1\n', {}, '/kubernetes/kubeconfig: not set, and not running in a pod');
    refusesEnv('mode: kubernetes\nkubernetes:\n  node_name: n1\n', { KUBERNETES_SERVICE_HOST: '10.0.0.1' }, '/kubernetes/kubeconfig');
    refuses('mode: cluster\n', '/mode: must be one of standalone, kubernetes');
    refuses('kubernetes:\n  kubeconfig: relative.yaml\n', '/kubernetes/kubeconfig: must match pattern');
    refuses('kubernetes:\n  node_name: UPPER\n', '/kubernetes/node_name: must match pattern');
    refuses('kubernetes:\n  proxy_name: "no spaces"\n', '/kubernetes/proxy_name: must match pattern');
    refuses('kubernetes:\n  batch_max_events: 0\n', '/kubernetes/batch_max_events: must be >= 1');
    refuses('kubernetes:\n  drain_seconds: -1\n', '/kubernetes/drain_seconds: must be >= 0');
    refuses(
      'kubernetes:\n  node_port_address_types: [Hostname]\n',
      '/kubernetes/node_port_address_types/0: must be one of InternalIP, ExternalIP',
    );
    refuses('kubernetes:\n  health_check_addresses: [eth0]\n', '/kubernetes/health_check_addresses/0: "eth0" is not an IP address');
    refuses('kubernetes:\n  watch: true\n', '/kubernetes/watch: unknown key');
    refuses(
      'kubernetes:\n  external_path: nat\n  nat:\n    enabled: false\n',
      '/kubernetes/external_path: "nat" serves outside addresses through the kernel\'s NAT',
    );
    refuses('kubernetes:\n  external_path: ipvs\n', '/kubernetes/external_path: must be one of xdp, snat, nat');
    refuses('kubernetes:\n  socket_lb:\n    cgroup: relative\n', '/kubernetes/socket_lb/cgroup: must match pattern');
    refuses('api:\n  probe_listen: nowhere\n', '/api/probe_listen: must match pattern');
    refuses(
      'api:\n  listen: 127.0.0.1:8080\n  tokens_file: /t\n  probe_listen: 127.0.0.1:8080\n',
      '/api/probe_listen: must differ from /api/listen',
    );
  });
});
