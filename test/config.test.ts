/**
 * ferryd's configuration: defaults, the shipped config/ferry.yaml, env
 * overrides, and a clear message naming the key for every kind of mistake.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultConfig, loadConfig, parseConfig } from '../src/config/index.js';
import { packageRoot } from '../src/paths.js';

/** Asserts that the text is refused with a problem containing each expected fragment. */
function refuses(text: string, ...fragments: string[]): void {
  assert.throws(() => parseConfig(text, 'test.yaml'), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `ConfigError, got ${String(err)}`);
    for (const f of fragments) assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} names ${JSON.stringify(f)}`);
    assert.ok(err.message.includes('test.yaml'), 'names the file');
    return true;
  });
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
      FERRY_LOG__LEVEL: 'debug', FERRY_DATAPATH__DRAIN_SECONDS: '5', FERRY_STATE_DIR: '/tmp/f', PATH: '/bin',
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
});
