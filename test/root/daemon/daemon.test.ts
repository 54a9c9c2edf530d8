/**
 * ferryd and ferryctl for real: the daemon attaches xdp_lb to a veth in a
 * namespace of its own, serves the API on a unix socket, and survives
 * SIGKILL, SIGTERM and SIGHUP; ferryctl drives it with scriptable exit codes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { XDP_TX, bpfUnavailable } from '../../lib/harness.js';
import { BACKEND_F_LOCAL } from '../../../src/datapath/abi.js';
import { formatAddr } from '../../../src/datapath/addr.js';
import { NodeDatapath } from '../../../src/datapath/node.js';
import { frame } from '../../lib/packet.js';
import { selfSignedCert } from '../../lib/tls.js';

/** One sample's value from an exposition text. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
import {
  FERRYD_SIZES,
  destroyFerrydEnv,
  ferryctl,
  ferryctlInNs,
  getText,
  makeFerrydEnv,
  openDaemonDatapath,
  mapVips,
  probe,
  startFerryd,
  stopFerryd,
  xdpProgId,
  type Ferryd,
  type FerrydEnv,
} from '../../lib/ferryd.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping daemon tests: ${skip}`);

describe('ferryd and ferryctl', { skip }, () => {
  let e: FerrydEnv;
  let d: Ferryd;

  before(async () => {
    e = makeFerrydEnv('d');
    d = await startFerryd(e);
  });
  after(async () => {
    if (d) await stopFerryd(d, 'SIGKILL');
    if (e) destroyFerrydEnv(e);
  });

  it('attaches xdp_lb, listens on a 0660 socket, and reports status', () => {
    assert.ok(xdpProgId(e, 'veth0') > 0, 'xdp_lb attached');
    assert.equal(statSync(e.socket).mode & 0o777, 0o660);
    const s = ferryctl(e, ['status', '--json']);
    assert.equal(s.code, 0, s.err);
    const st = JSON.parse(s.out) as { interfaces: Array<{ name: string; xdp_mode: string }>; applied_revision: number; revision: number };
    assert.deepEqual(st.interfaces, [{ name: 'veth0', xdp_mode: 'native' }]);
    assert.equal(st.applied_revision, st.revision);
  });

  it('ferryctl manages VIPs, backends and policies; the maps follow', () => {
    const ok = (args: string[]) => {
      const r = ferryctl(e, args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      return r.out;
    };
    ok(['policy', 'add', 'office', '--allow', '192.0.2.0/24']);
    assert.match(
      ok(['vip', 'add', 'web', '--address', '198.18.0.10', '--port', '80', '--protocol', 'tcp', '--policy', 'office']),
      /created vip web \(revision \d+\)/,
    );
    ok(['backend', 'add', 'web', '198.18.1.1']);
    ok(['backend', 'add', 'web', '198.18.1.2', '--weight', '50']);
    ok(['backend', 'set', 'web', '198.18.1.2', '--state', 'draining']);
    const list = JSON.parse(ok(['backend', 'list', 'web', '--json'])) as Array<{ address: string; weight: number; state: string }>;
    assert.deepEqual(
      list.map((b) => [b.address, b.weight, b.state]),
      [
        ['198.18.1.1', 100, 'active'],
        ['198.18.1.2', 50, 'draining'],
      ],
    );
    assert.match(ok(['vip', 'list']), /^NAME\s+ADDRESS.*\nweb\s+198\.18\.0\.10\s+80\s+tcp\s+2/m);
    ok(['vip', 'set', 'web', '--port', '8080']);
    assert.deepEqual(mapVips(e), ['198.18.0.10:8080']);
    const stats = JSON.parse(ok(['stats', '--json'])) as { vips: Array<{ name: string; backends: unknown[] }> };
    assert.equal(stats.vips[0]?.name, 'web');
    assert.equal(stats.vips[0]?.backends.length, 2);
  });

  it('a backend on this host on a port of its own: the node programs go on veth0 and hold its pair', () => {
    const ok = (args: string[]) => {
      const r = ferryctl(e, args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      return r.out;
    };
    const filters = (dir: string) =>
      spawnSync('nsenter', [`--net=/run/netns/${e.ns}`, '--', 'tc', 'filter', 'show', 'dev', 'veth0', dir], { encoding: 'utf8' }).stdout;
    ok(['vip', 'add', 'np', '--address', '198.18.0.40', '--port', '30080', '--protocol', 'tcp']);
    ok(['backend', 'add', 'np', '10.244.1.5', '--port', '8080', '--host', 'local']);
    assert.match(filters('ingress'), /tc_node_in/);
    assert.match(filters('egress'), /tc_node_out/);
    const pairs = () => {
      const node = NodeDatapath.open({ pinRoot: e.pinRoot });
      try {
        return node.endpoints
          .entries()
          .map(([k, v]) => `${formatAddr(k.family, k.vip)}:${k.vip_port} ${formatAddr(k.family, k.backend)}:${v.port}`);
      } finally {
        node.close();
      }
    };
    assert.deepEqual(pairs(), ['198.18.0.40:30080 10.244.1.5:8080']);
    const dp = openDaemonDatapath(e);
    try {
      const ids = Array.from({ length: FERRYD_SIZES.maxBackends }, (_, i) => dp.backends.get(i));
      const b = ids.find((v) => v.state !== 0 && formatAddr(v.family, v.addr) === '10.244.1.5');
      assert.equal(b?.flags, BACKEND_F_LOCAL, 'xdp_lb hands its packets up the stack');
    } finally {
      dp.close();
    }
    ok(['backend', 'set', 'np', '10.244.1.5', '--weight', '5']);
    const list = JSON.parse(ok(['backend', 'list', 'np', '--json'])) as Array<{ weight: number; port?: number; host?: string }>;
    assert.deepEqual(
      list.map((b) => [b.weight, b.port, b.host]),
      [[5, 8080, 'local']],
      'set keeps port and host',
    );
    ok(['backend', 'set', 'np', '10.244.1.5', '--port', '9090']);
    assert.deepEqual(pairs(), ['198.18.0.40:30080 10.244.1.5:9090']);
    ok(['vip', 'rm', 'np']);
    assert.deepEqual(pairs(), [], 'the pair goes with its VIP');
  });

  it('ferryctl exit codes: 2 for bad usage, 1 for a refused request, 3 when ferryd is unreachable', () => {
    assert.equal(ferryctl(e, ['vip', 'add', 'x', '--port', 'eighty']).code, 2);
    assert.equal(ferryctl(e, ['nonsense']).code, 2);
    assert.equal(ferryctl(e, ['vip', 'add', 'x']).code, 2, 'missing required options');
    const dup = ferryctl(e, ['vip', 'add', 'web2', '--address', '198.18.0.10', '--port', '8080', '--protocol', 'tcp']);
    assert.equal(dup.code, 1);
    assert.match(dup.err, /409/);
    const bad = ferryctl(e, ['vip', 'add', 'm', '--address', '224.0.0.1', '--port', '1', '--protocol', 'udp']);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /422[\s\S]*\/address/);
    const missing = ferryctl(e, ['vip', 'get', 'nope']);
    assert.equal(missing.code, 1);
    const away = ferryctl({ ...e, socket: join(e.dir, 'nobody.sock') }, ['status']);
    assert.equal(away.code, 3);
    assert.match(away.err, /cannot reach ferryd/);
    const help = ferryctl(e, ['vip', 'add', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, /--address/);
  });

  it('apply -f: dry run shows the diff, apply replaces the state', () => {
    const file = join(e.dir, 'state.yaml');
    writeFileSync(
      file,
      [
        'policies: []',
        'vips:',
        '  - name: dns',
        '    address: 2001:db8::53',
        '    port: 53',
        '    protocol: udp',
        '    backends:',
        '      - address: 2001:db8:1::1',
        '      - address: 198.18.1.9',
      ].join('\n'),
    );
    const dry = ferryctl(e, ['apply', '-f', file, '--dry-run']);
    assert.equal(dry.code, 0, dry.err);
    assert.match(dry.out, /delete\s+vip\s+web/);
    assert.match(dry.out, /would be applied \(dry run\)/);
    assert.deepEqual(mapVips(e), ['198.18.0.10:8080'], 'a dry run changes nothing');
    const real = ferryctl(e, ['apply', '-f', file]);
    assert.equal(real.code, 0, real.err);
    assert.deepEqual(mapVips(e), ['2001:db8::53:53']);
    const bad = join(e.dir, 'bad.yaml');
    writeFileSync(bad, 'vips: [ {name: x\n');
    assert.equal(ferryctl(e, ['apply', '-f', bad]).code, 2);
  });

  it('backup and restore round-trip the state', () => {
    const file = join(e.dir, 'backup.db');
    const b = ferryctl(e, ['backup', file]);
    assert.equal(b.code, 0, b.err);
    assert.equal(readFileSync(file).subarray(0, 15).toString(), 'SQLite format 3');
    assert.equal(ferryctl(e, ['vip', 'rm', 'dns']).code, 0);
    assert.deepEqual(mapVips(e), []);
    const r = ferryctl(e, ['restore', file]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(mapVips(e), ['2001:db8::53:53']);
  });

  it('/metrics counts exactly the packets sent through the datapath', async () => {
    // A second instance of xdp_lb on the daemon's pinned maps, driven by test runs.
    const dp = openDaemonDatapath(e);
    const scrape = () => getText(e.socket, '/metrics');
    try {
      const before = await scrape();
      const n = 37;
      for (let i = 0; i < n; i++) {
        const data = frame({
          src: '2001:db8:100::1',
          dst: '2001:db8::53',
          proto: 'udp',
          sport: 20000 + i,
          dport: 53,
          payload: Buffer.from('q'),
        });
        assert.equal(dp.nat.progTestRun(dp.progFd, { data }).retval, XDP_TX);
      }
      const junk = frame({ src: '2001:db8:100::1', dst: '2001:db8::53', proto: 'udp', dport: 53 });
      junk[14 + 6] = 44; // IPv6 fragment header: dropped by reason
      dp.nat.progTestRun(dp.progFd, { data: junk });
      const after = await scrape();
      const delta = (series: string) => (sample(after, series) ?? 0) - (sample(before, series) ?? 0);
      assert.equal(delta('ferry_vip_packets_total{vip="dns"}'), n);
      assert.equal(delta('ferry_vip_new_flows_total{vip="dns"}'), n);
      const perBackend =
        after
          .split('\n')
          .filter((l) => l.startsWith('ferry_backend_new_flows_total{vip="dns"'))
          .reduce((sum, l) => sum + Number(l.split(' ')[1]), 0) -
        before
          .split('\n')
          .filter((l) => l.startsWith('ferry_backend_new_flows_total{vip="dns"'))
          .reduce((sum, l) => sum + Number(l.split(' ')[1]), 0);
      assert.equal(perBackend, n, 'new flows per backend add up');
      assert.equal(delta('ferry_drops_total{reason="fragment"}'), 1);
      assert.equal(delta('ferry_datapath_packets_total{counter="rx"}'), n + 1, 'every packet seen');
      assert.match(after, /ferry_api_requests_total\{method="GET",route="\/metrics",status="200"\} \d+/);
    } finally {
      dp.close();
    }
  });

  it('SIGKILL and restart: same state, no drift, the link kept its program attached throughout', async () => {
    const before = ferryctl(e, ['vip', 'list', '--json']).out;
    const prog = xdpProgId(e, 'veth0');
    await stopFerryd(d, 'SIGKILL');
    assert.equal(await probe(e.socket, '/healthz'), 0, 'the daemon is gone');
    assert.ok(xdpProgId(e, 'veth0') > 0, 'xdp_lb stays attached without the daemon');
    assert.deepEqual(mapVips(e), ['2001:db8::53:53'], 'the maps keep the state without the daemon');
    d = await startFerryd(e);
    assert.equal(ferryctl(e, ['vip', 'list', '--json']).out, before);
    const st = JSON.parse(ferryctl(e, ['status', '--json']).out) as { last_reconcile: { changes: number } };
    assert.equal(st.last_reconcile.changes, 0, 'the restarted daemon found no drift');
    assert.notEqual(xdpProgId(e, 'veth0'), 0);
    assert.ok(prog > 0);
  });

  it('repairs drift made behind its back', async () => {
    const dp = openDaemonDatapath(e);
    try {
      for (const [k] of dp.vipIndex.entries()) dp.vipIndex.delete(k);
    } finally {
      dp.close();
    }
    assert.deepEqual(mapVips(e), []);
    const deadline = Date.now() + 10_000;
    while (mapVips(e).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(mapVips(e), ['2001:db8::53:53'], 'the periodic reconcile put the VIP back');
  });

  it('SIGHUP reloads the config; a bad config is refused and the old one kept', async () => {
    const original = readFileSync(e.config, 'utf8');
    try {
      writeFileSync(e.config, `${original}\nnot_a_key: 1\n`);
      d.proc.kill('SIGHUP');
      await new Promise((r) => setTimeout(r, 300));
      assert.match(d.logs(), /not_a_key: unknown key.*reload refused/);
      assert.equal(await probe(e.socket, '/readyz'), 200);
      writeFileSync(e.config, original.replace('level: info', 'level: debug'));
      d.proc.kill('SIGHUP');
      await new Promise((r) => setTimeout(r, 300));
      assert.match(d.logs(), /configuration reloaded/);
    } finally {
      writeFileSync(e.config, original);
    }
  });

  it('SIGTERM leaves the datapath forwarding; --detach removes it', async () => {
    assert.equal(await stopFerryd(d, 'SIGTERM'), 0);
    assert.ok(xdpProgId(e, 'veth0') > 0, 'still attached after a clean stop');
    d = await startFerryd(e, ['--detach']);
    assert.equal(await stopFerryd(d, 'SIGTERM'), 0);
    assert.equal(xdpProgId(e, 'veth0'), 0, 'detached');
  });

  it('tells systemd it is ready (sd_notify)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-sd-'));
    const sock = join(dir, 'notify');
    const py = spawn('python3', [
      '-c',
      [
        'import socket',
        's=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
        `s.bind(${JSON.stringify(sock)})`,
        'print("bound", flush=True)',
        's.settimeout(20)',
        'while True:',
        '  m=s.recv(4096).decode()',
        '  print(m, flush=True)',
        '  if "READY=1" in m: break',
      ].join('\n'),
    ]);
    let out = '';
    py.stdout.on('data', (b: Buffer) => (out += b.toString()));
    try {
      while (!out.includes('bound')) await new Promise((r) => setTimeout(r, 10));
      const exited = once(py, 'exit');
      d = await startFerryd(e, [], { NOTIFY_SOCKET: sock });
      await exited;
      assert.match(out, /STATUS=opening the store/);
      assert.match(out, /READY=1\nSTATUS=serving revision \d+/);
    } finally {
      py.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('ferryd ends a drain when it ends', { skip }, () => {
  let e: FerrydEnv;
  let d: Ferryd;

  before(async () => {
    e = makeFerrydEnv('dr');
    // The periodic pass far away: only the drain timer can end the drain in time.
    d = await startFerryd(e, [], { FERRY_DATAPATH__RECONCILE_INTERVAL_SECONDS: '3600', FERRY_DATAPATH__DRAIN_SECONDS: '2' });
  });
  after(async () => {
    if (d) await stopFerryd(d, 'SIGKILL');
    if (e) destroyFerrydEnv(e);
  });

  it("a removed backend keeps its id while it drains, and loses it at the drain's end", async () => {
    const ok = (args: string[]) => assert.equal(ferryctl(e, args).code, 0, args.join(' '));
    ok(['vip', 'add', 'web', '--address', '198.18.0.10', '--port', '80', '--protocol', 'tcp']);
    ok(['backend', 'add', 'web', '198.18.1.1']);
    ok(['backend', 'add', 'web', '198.18.1.2']);
    const inMap = (addr: string): boolean => {
      const dp = openDaemonDatapath(e);
      try {
        return Array.from({ length: FERRYD_SIZES.maxBackends }, (_, i) => dp.backends.get(i)).some(
          (v) => v.state !== 0 && formatAddr(v.family, v.addr) === addr,
        );
      } finally {
        dp.close();
      }
    };
    const removed = Date.now();
    ok(['backend', 'rm', 'web', '198.18.1.2']);
    assert.ok(inMap('198.18.1.2'), 'draining: its flows still find it');
    while (inMap('198.18.1.2')) {
      assert.ok(Date.now() - removed < 15_000, 'the drain of 2 s ended within 15 s (the periodic pass is an hour away)');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(Date.now() - removed >= 1900, 'not before the drain ended');
    assert.ok(inMap('198.18.1.1'), 'the other backend stays');
  });
});

const RATE_MAX = 20;

describe('ferryd over TCP with TLS and bearer tokens', { skip }, () => {
  let e: FerrydEnv;
  let d: Ferryd;
  let cert: string;

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-tls-'));
    const pem = selfSignedCert(dir);
    cert = pem.cert;
    const key = pem.key;
    const tokens = join(dir, 'tokens');
    writeFileSync(tokens, '# operators\nsecret-token-1\n');
    e = makeFerrydEnv('tls', [
      '  listen: 127.0.0.1:8443',
      `  tokens_file: ${tokens}`,
      `  tls_cert: ${cert}`,
      `  tls_key: ${key}`,
      '  rate_limit:',
      `    max: ${RATE_MAX}`,
      '    window_seconds: 600',
    ]);
    // Everything ferryd can log, so that the no-secrets check below sees it all.
    writeFileSync(e.config, readFileSync(e.config, 'utf8').replace('level: info', 'level: trace'));
    d = await startFerryd(e);
  });
  after(async () => {
    if (d) await stopFerryd(d, 'SIGKILL');
    if (e) destroyFerrydEnv(e);
    if (cert) rmSync(dirname(cert), { recursive: true, force: true });
  });

  it('serves HTTPS with the right token, 401 without or with a wrong one', () => {
    const env = { NODE_EXTRA_CA_CERTS: cert };
    const url = 'https://127.0.0.1:8443';
    const good = ferryctlInNs(e, ['--url', url, '--token', 'secret-token-1', 'status', '--json'], env);
    assert.equal(good.code, 0, good.err);
    assert.equal((JSON.parse(good.out) as { interfaces: unknown[] }).interfaces.length, 1);
    const none = ferryctlInNs(e, ['--url', url, 'status'], env);
    assert.equal(none.code, 1);
    assert.match(none.err, /401/);
    const wrong = ferryctlInNs(e, ['--url', url, '--token', 'secret-token-2', 'vip', 'list'], env);
    assert.equal(wrong.code, 1);
    assert.match(wrong.err, /401/);
    const plain = ferryctlInNs(e, ['--url', 'http://127.0.0.1:8443', '--token', 'secret-token-1', 'status'], env);
    assert.notEqual(plain.code, 0, 'plain HTTP to the TLS port fails');
    // The unix socket still needs no token.
    assert.equal(ferryctl(e, ['status']).code, 0);
  });

  /** curl inside the namespace: one status line per request, with the Retry-After header when there is one. */
  const curl = (urls: string[], token: string) =>
    spawnSync(
      'nsenter',
      [
        `--net=/run/netns/${e.ns}`,
        '--',
        'curl',
        '-s',
        '--cacert',
        cert,
        '-H',
        `Authorization: Bearer ${token}`,
        '-w',
        '%{http_code} %header{retry-after}\\n',
        ...urls.flatMap((u) => ['-o', '/dev/null', u]),
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );

  it('writes no token to its log, whatever the client sends', async () => {
    const r = curl(
      [
        'https://127.0.0.1:8443/v1/vips?token=secret-token-1',
        'https://127.0.0.1:8443/v1/secret-token-1',
        'https://127.0.0.1:8443/v1/status?access_token=secret-token-2',
      ],
      'secret-token-2',
    );
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(' ')[0]),
      ['401', '401', '401'],
    );
    const r2 = curl(['https://127.0.0.1:8443/v1/status?token=secret-token-1'], 'secret-token-1');
    assert.equal(r2.stdout.split(' ')[0], '200');
    // The log arrives through a pipe: wait for the last request's line.
    for (let i = 0; i < 100 && (d.logs().match(/request completed/g) ?? []).length < 4; i++) await new Promise((r) => setTimeout(r, 50));
    const logs = d.logs();
    assert.match(logs, /"url":"\/v1\/status\?token=\[redacted\]"/, 'requests are logged, tokens replaced');
    assert.ok(!logs.includes('secret-token'), `a token reached the log: ${logs.split('\n').find((l) => l.includes('secret-token'))}`);
  });

  it('answers 429 with Retry-After once a client passes the rate limit (last: it uses the window up)', () => {
    const r = curl(
      Array.from({ length: RATE_MAX + 5 }, () => 'https://127.0.0.1:8443/v1/status'),
      'secret-token-1',
    );
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const ok = lines.filter((l) => l.startsWith('200')).length;
    assert.ok(ok >= 1 && ok < RATE_MAX, `${ok} answered 200`);
    const limited = lines.filter((l) => l.startsWith('429'));
    assert.equal(ok + limited.length, lines.length, r.stdout);
    assert.ok(limited.length >= 5 && limited.every((l) => Number(l.split(' ')[1]) > 0), r.stdout);
    assert.equal(ferryctl(e, ['status']).code, 0, 'the unix socket is not limited');
  });
});
