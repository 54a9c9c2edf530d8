/**
 * BGP announcements (src/bgp): the BIRD config ferryd renders (parsed by
 * the real BIRD), the status parser, the announcer following real plans
 * (full and incremental) with a recording BIRD, the host drain kept across
 * restarts, the config checks, /v1/bgp and the ferry_bgp_* metrics.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Announcer } from '../../../src/bgp/announcer.js';
import { BirdError, parseProtocols, renderBirdConfig, type BirdControl, type BirdProtocol } from '../../../src/bgp/bird.js';
import { ConfigError, parseConfig, type BgpConfig } from '../../../src/config/index.js';
import { Controller } from '../../../src/control/controller.js';
import { FerryMetrics } from '../../../src/metrics/index.js';
import type { BgpView } from '../../../src/model/bgp.js';
import { IncrementalPlanner } from '../../../src/reconcile/plan.js';
import { openStore } from '../../../src/store/store.js';
import { call, FakeApplier, idleMetricsSource, makeApi } from '../../lib/api-fixture.js';

const silent = pino({ level: 'silent' });
const hasBird = spawnSync('bird', ['--version']).status === 0;

function bgpConfig(yaml: string): BgpConfig {
  return parseConfig(yaml, 'test').bgp;
}

const FULL = bgpConfig(`
bgp:
  enabled: true
  local_as: 65010
  neighbors:
    - { address: 192.0.2.1, as: 65000 }
    - { address: "2001:db8::1", as: 65000, port: 1179, password: s3cret, multihop: 2 }
  med: 50
  communities: ["65010:100", "65010:7:9"]
  next_hop_v6: "2001:db8::42"
`);

/** Records reloads; fails while `failing` is set. */
class FakeBird implements BirdControl {
  configures = 0;
  failing: BirdError | null = null;
  sessions: BirdProtocol[] = [];

  async configure(): Promise<void> {
    this.configures += 1;
    if (this.failing) throw this.failing;
  }

  async protocols(): Promise<BirdProtocol[]> {
    if (this.failing) throw this.failing;
    return this.sessions;
  }
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'ferry-bgp-'));
}

/** The static routes a rendered file announces. */
function routesIn(file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(/route (\S+) blackhole;/g)].map((m) => m[1]!).sort();
}

/** A store, a real Controller with the incremental planner, and an announcer following its applies. */
function rig(dir: string, o: { local?: string[]; prefixes?: string[] } = {}) {
  const config = { ...FULL, bird_config: join(dir, 'bird.conf'), prefixes: o.prefixes ?? [] };
  const store = openStore(':memory:', { maxVips: 64, maxBackends: 1024 });
  const planner = new IncrementalPlanner();
  const applier = new FakeApplier();
  const controller = new Controller(store, applier, (s) => planner.plan(s));
  const bird = new FakeBird();
  const make = () =>
    new Announcer({
      config,
      routerId: '192.0.2.10',
      bird,
      drainFile: join(dir, 'bgp-drain.json'),
      localAddresses: () => new Set(o.local ?? []),
      log: silent,
    });
  let announcer = make();
  controller.onApply = (_r, plan) => announcer.observe(plan);
  controller.reconcile();
  announcer.start();
  return {
    store,
    controller,
    bird,
    config,
    get announcer() {
      return announcer;
    },
    /** A new announcer (a restarted ferryd) following the same controller. */
    restart: async () => {
      await announcer.stop();
      announcer = make();
      controller.reconcile();
      announcer.start();
      await announcer.settled();
    },
    vip: (name: string, address: string, backends: Array<{ address: string; weight?: number }>, port = 80) =>
      controller.write('test', 'create', (tx) => {
        tx.createVip({ name, address, port, protocol: 'tcp' });
        for (const b of backends) tx.createBackend(name, { address: b.address, weight: b.weight ?? 1 });
      }),
    close: async () => {
      await announcer.stop();
      store.close();
    },
  };
}

describe('bgp: BIRD config', () => {
  it('renders sessions, attributes and the announced addresses', () => {
    const text = renderBirdConfig({ config: FULL, routerId: '192.0.2.10', announce: ['198.51.100.7', '2001:db8:f::1'] });
    assert.match(text, /router id 192\.0\.2\.10;/);
    assert.match(text, /protocol static ferry_vips4 \{\n {2}ipv4;\n {2}route 198\.51\.100\.7\/32 blackhole;\n\}/);
    assert.match(text, /route 2001:db8:f::1\/128 blackhole;/);
    assert.match(text, /bgp_med = 50;/);
    assert.match(text, /bgp_community\.add\(\(65010, 100\)\);/);
    assert.match(text, /bgp_large_community\.add\(\(65010, 7, 9\)\);/);
    // The IPv4 neighbor carries IPv4 VIPs with next hop self; the IPv6 one IPv6 VIPs from the configured next hop.
    assert.match(text, /neighbor 192\.0\.2\.1 port 179 as 65000;\n {2}direct;[^}]*ipv4 \{[^}]*next hop self;/);
    assert.match(
      text,
      /neighbor 2001:db8::1 port 1179 as 65000;\n {2}multihop 2;\n {2}password "s3cret";[^}]*ipv6 \{[^}]*next hop address 2001:db8::42;/,
    );
  });

  it('is a config the real BIRD accepts (bird -p)', { skip: hasBird ? false : 'bird (Debian bird2) is not installed' }, () => {
    const dir = tmp();
    try {
      const include = join(dir, 'site.conf');
      writeFileSync(include, 'protocol bfd site_bfd {}\n');
      for (const announce of [[], ['198.51.100.7', '198.51.100.8', '2001:db8:f::1']]) {
        const file = join(dir, 'bird.conf');
        writeFileSync(file, renderBirdConfig({ config: { ...FULL, include }, routerId: '192.0.2.10', announce }));
        const r = spawnSync('bird', ['-p', '-c', file], { encoding: 'utf8' });
        assert.equal(r.status, 0, `${r.stderr}\n${readFileSync(file, 'utf8')}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads `show protocols`', () => {
    const text = [
      'BIRD 2.0.12 ready.',
      'Name       Proto      Table      State  Since         Info',
      'ferry_device Device   ---        up     2026-12-07 03:16:12  ',
      'ferry_peer1 BGP        ---        up     2026-12-07 03:16:15  Established   ',
      'ferry_peer2 BGP        ---        start  2026-12-07 03:16:24  Active        Socket: Connection closed',
    ].join('\n');
    assert.deepEqual(
      parseProtocols(text).map((p) => [p.name, p.state, p.since, p.info]),
      [
        ['ferry_device', 'up', '2026-12-07 03:16:12', ''],
        ['ferry_peer1', 'up', '2026-12-07 03:16:15', 'Established'],
        ['ferry_peer2', 'start', '2026-12-07 03:16:24', 'Active        Socket: Connection closed'],
      ],
    );
  });
});

describe('bgp: config checks', () => {
  const problems = (yaml: string): string[] => {
    try {
      parseConfig(yaml, 'test');
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    return [];
  };

  it('names each bad key and changes nothing', () => {
    assert.deepEqual(problems('bgp: { enabled: true }'), ['/bgp/neighbors: bgp is enabled but names no neighbor to announce the VIPs to']);
    const p = problems(`
bgp:
  router_id: 300.1.1.1
  neighbors: [{ address: nope, as: 65000 }, { address: 192.0.2.1, as: 65000 }, { address: 192.0.2.01, as: 1 }]
  communities: ["70000:1", "1:2:3"]
  next_hop_v4: "999.0.0.1"
  prefixes: ["198.51.100.1/24"]
`);
    assert.deepEqual(p.sort(), [
      '/bgp/communities/0: 70000:1: a standard community is ASN:VALUE with both <= 65535, a large one ASN:X:Y with each <= 4294967295',
      '/bgp/neighbors/0/address: "nope" is not an IP address',
      '/bgp/neighbors/2/address: "192.0.2.01" is not an IP address',
      '/bgp/next_hop_v4: 999.0.0.1 is not an IPv4 address',
      '/bgp/prefixes/0: has host bits set; did you mean 198.51.100.0/24?',
      '/bgp/router_id: 300.1.1.1 is not an IPv4 address',
    ]);
    assert.match(
      problems('bgp: { neighbors: [{ address: 192.0.2.1, as: 1, password: "a\\"b" }] }')[0]!,
      /^\/bgp\/neighbors\/0\/password: must match/,
    );
    assert.match(problems('bgp: { local_as: 0 }')[0]!, /^\/bgp\/local_as: must be >= 1/);
    // Pasted into BIRD's config between quotes: a quote or backslash is refused.
    assert.match(problems('bgp: { include: "/etc/bird/a\\"b.conf" }')[0]!, /^\/bgp\/include: must match/);
    assert.match(problems('bgp: { color: blue }')[0]!, /^\/bgp\/color: unknown key/);
  });
});

describe('bgp: the announcer', () => {
  it('announces addresses with an active backend, following full and incremental plans', async () => {
    const dir = tmp();
    const r = rig(dir, { local: ['192.0.2.10'] });
    try {
      await r.announcer.settled();
      assert.deepEqual(routesIn(r.config.bird_config), []);
      r.vip('a', '198.51.100.1', [{ address: '10.0.0.1' }]);
      r.vip('b', '198.51.100.2', [{ address: '10.0.0.2', weight: 0 }]);
      r.vip('node-port', '192.0.2.10', [{ address: '10.0.0.3' }]);
      r.vip('v6', '2001:db8:f::1', [{ address: '2001:db8::10' }]);
      await r.announcer.settled();
      // b has no weight; the host's own address is never announced.
      assert.deepEqual(routesIn(r.config.bird_config), ['198.51.100.1/32', '2001:db8:f::1/128']);
      const view = r.announcer.view();
      assert.deepEqual(
        view.prefixes.map((p) => [p.prefix, p.reason]),
        [
          ['192.0.2.10/32', 'address of this host'],
          ['198.51.100.1/32', null],
          ['198.51.100.2/32', 'no active backend'],
          ['2001:db8:f::1/128', null],
        ],
      );
      assert.equal(view.bird.in_sync, true);
      // A second VIP on a's address without backends does not withdraw it; a's last backend going does.
      r.vip('a-443', '198.51.100.1', [], 443);
      r.controller.write('test', 'weight', (tx) => tx.putBackend('b', { address: '10.0.0.2', weight: 3 }));
      r.controller.write('test', 'rm', (tx) => tx.deleteBackend('a', '10.0.0.1', 0));
      await r.announcer.settled();
      assert.deepEqual(routesIn(r.config.bird_config), ['198.51.100.2/32', '2001:db8:f::1/128']);
      const a = r.announcer.view().prefixes.find((p) => p.prefix === '198.51.100.1/32');
      assert.deepEqual(a, { prefix: '198.51.100.1/32', announced: false, reason: 'no active backend', vips: 2, serving: 0 });
      r.controller.write('test', 'drain', (tx) => tx.putBackend('b', { address: '10.0.0.2', state: 'draining' }));
      r.controller.write('test', 'rm', (tx) => tx.deleteVip('v6'));
      await r.announcer.settled();
      assert.deepEqual(routesIn(r.config.bird_config), []);
      // The periodic full pass (no changes list) agrees with what the incremental ones built.
      r.controller.reconcile();
      assert.deepEqual(
        r.announcer.view().prefixes.map((p) => [p.prefix, p.serving]),
        [
          ['192.0.2.10/32', 1],
          ['198.51.100.1/32', 0],
          ['198.51.100.2/32', 0],
        ],
      );
    } finally {
      await r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('announces only inside bgp.prefixes', async () => {
    const dir = tmp();
    const r = rig(dir, { prefixes: ['198.51.100.0/30'] });
    try {
      r.vip('in', '198.51.100.3', [{ address: '10.0.0.1' }]);
      r.vip('out', '198.51.100.4', [{ address: '10.0.0.1' }]);
      await r.announcer.settled();
      assert.deepEqual(routesIn(r.config.bird_config), ['198.51.100.3/32']);
      assert.equal(r.announcer.view().prefixes.find((p) => p.prefix === '198.51.100.4/32')?.reason, 'outside bgp.prefixes');
    } finally {
      await r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('withdraws everything while drained, across a restart, until undrained', async () => {
    const dir = tmp();
    const r = rig(dir);
    try {
      r.vip('a', '198.51.100.1', [{ address: '10.0.0.1' }]);
      await r.announcer.settled();
      r.announcer.drain('maintenance');
      await r.announcer.settled();
      assert.deepEqual(routesIn(r.config.bird_config), []);
      const since = r.announcer.view().drained?.since;
      assert.equal(r.announcer.view().drained?.reason, 'maintenance');
      await r.restart();
      assert.deepEqual(routesIn(r.config.bird_config), []);
      assert.deepEqual(r.announcer.view().drained, { since, reason: 'maintenance' });
      assert.equal(r.announcer.view().prefixes[0]?.reason, 'host drained');
      r.announcer.undrain();
      await r.announcer.settled();
      assert.deepEqual(routesIn(r.config.bird_config), ['198.51.100.1/32']);
      assert.equal(existsSync(join(dir, 'bgp-drain.json')), false);
      // A drain record that cannot be read keeps the host drained (an operator asked for it).
      writeFileSync(join(dir, 'bgp-drain.json'), '{"since": tor');
      await r.restart();
      assert.deepEqual(routesIn(r.config.bird_config), []);
      assert.equal(r.announcer.view().drained?.reason, null);
    } finally {
      await r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the file current while BIRD is unreachable and reloads it once BIRD answers', async () => {
    const dir = tmp();
    const r = rig(dir);
    try {
      r.bird.failing = new BirdError('birdc configure: Unable to connect to server control socket', true);
      r.vip('a', '198.51.100.1', [{ address: '10.0.0.1' }]);
      await r.announcer.settled();
      assert.deepEqual(routesIn(r.config.bird_config), ['198.51.100.1/32'], 'written before the reload');
      let v = r.announcer.view();
      assert.equal(v.bird.in_sync, false);
      assert.equal(v.bird.reachable, false);
      assert.match(v.bird.last_error ?? '', /Unable to connect/);
      r.bird.failing = null;
      r.bird.sessions = [{ name: 'ferry_peer1', proto: 'BGP', state: 'up', since: '2026-12-07 03:16:15', info: 'Established' }];
      const before = r.bird.configures;
      await r.announcer.refresh();
      await r.announcer.settled();
      v = r.announcer.view();
      assert.equal(r.bird.configures, before + 1);
      assert.equal(v.bird.in_sync, true);
      assert.equal(v.bird.last_error, null);
      assert.deepEqual(
        v.neighbors.map((n) => [n.address, n.session, n.established]),
        [
          ['192.0.2.1', 'Established', true],
          ['2001:db8::1', null, false],
        ],
      );
    } finally {
      await r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bgp: an unwritable config file', () => {
  it('is reported, counted as a failed reload, and retried', async () => {
    const dir = tmp();
    try {
      writeFileSync(join(dir, 'not-a-dir'), '');
      const bird = new FakeBird();
      const a = new Announcer({
        config: { ...FULL, bird_config: join(dir, 'not-a-dir', 'bird.conf') },
        routerId: '192.0.2.10',
        bird,
        drainFile: join(dir, 'bgp-drain.json'),
        localAddresses: () => new Set(),
        log: silent,
      });
      a.start();
      await a.settled();
      await a.refresh();
      await a.settled();
      const v = a.view().bird;
      assert.equal(v.in_sync, false);
      assert.match(v.last_error ?? '', /^cannot write BIRD's config .*not-a-dir.*(EEXIST|ENOTDIR)/);
      assert.ok(v.failed_reloads >= 2 && v.failed_reloads <= v.reloads, JSON.stringify(v));
      assert.equal(bird.configures, 0, 'BIRD is not asked to load a file that was not written');
      await a.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bgp: API and metrics', () => {
  it('/v1/bgp answers 404 when bgp is not enabled', async () => {
    const api = await makeApi();
    try {
      for (const [method, url] of [
        ['GET', '/v1/bgp'],
        ['PUT', '/v1/bgp/drain'],
        ['DELETE', '/v1/bgp/drain'],
      ] as const) {
        const res = await call(api.app, { method, url, ...(method === 'PUT' ? { body: {} } : {}) });
        assert.equal(res.statusCode, 404, `${method} ${url}`);
        assert.match(res.json<{ type: string }>().type, /bgp-disabled$/);
      }
    } finally {
      await api.close();
    }
  });

  it('shows the announcement, drains and undrains; bad bodies and unwritable records change nothing', async () => {
    const dir = tmp();
    const r = rig(dir);
    r.vip('a', '198.51.100.1', [{ address: '10.0.0.1' }]);
    const api = await makeApi({ bgp: r.announcer });
    try {
      await r.announcer.settled();
      let res = await call(api.app, { url: '/v1/bgp' });
      assert.equal(res.statusCode, 200);
      assert.equal(res.json<BgpView>().announced, 1);
      res = await call(api.app, { method: 'PUT', url: '/v1/bgp/drain', body: { reason: 'x', extra: 1 } });
      assert.equal(res.statusCode, 400);
      res = await call(api.app, { method: 'PUT', url: '/v1/bgp/drain', body: { reason: '' } });
      assert.equal(res.statusCode, 400);
      assert.equal(r.announcer.view().drained, null);
      res = await call(api.app, { method: 'PUT', url: '/v1/bgp/drain', body: { reason: 'kernel upgrade' } });
      assert.equal(res.statusCode, 200);
      assert.equal(res.json<BgpView>().drained?.reason, 'kernel upgrade');
      assert.equal(res.json<BgpView>().announced, 0);
      assert.deepEqual(routesIn(r.config.bird_config), []);
      res = await call(api.app, { method: 'DELETE', url: '/v1/bgp/drain' });
      assert.equal(res.statusCode, 200);
      assert.equal(res.json<BgpView>().announced, 1);
      // The drain record's folder is a file: 503, and the host stays announced.
      const blocked = join(dir, 'blocked');
      writeFileSync(blocked, '');
      const stuck = new Announcer({
        config: { ...r.config, bird_config: join(dir, 'b.conf') },
        routerId: '192.0.2.10',
        bird: new FakeBird(),
        drainFile: join(blocked, 'bgp-drain.json'),
        localAddresses: () => new Set(),
        log: silent,
      });
      const api2 = await makeApi({ bgp: stuck });
      try {
        res = await call(api2.app, { method: 'PUT', url: '/v1/bgp/drain', body: {} });
        assert.equal(res.statusCode, 503);
        assert.match(res.json<{ detail: string }>().detail, /could not be recorded/);
        assert.equal(stuck.view().drained, null);
      } finally {
        await api2.close();
      }
    } finally {
      await api.close();
      await r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exports ferry_bgp_* metrics', async () => {
    const dir = tmp();
    const r = rig(dir);
    try {
      r.vip('a', '198.51.100.1', [{ address: '10.0.0.1' }]);
      r.bird.sessions = [{ name: 'ferry_peer1', proto: 'BGP', state: 'up', since: '2026-12-07 03:16:15', info: 'Established' }];
      await r.announcer.refresh();
      await r.announcer.settled();
      const m = new FerryMetrics(idleMetricsSource({ bgpView: () => r.announcer.view() }), { bgp: true });
      const text = await m.render();
      assert.match(text, /^ferry_bgp_announced_prefixes 1$/m);
      assert.match(text, /^ferry_bgp_host_drained 0$/m);
      assert.match(text, /^ferry_bgp_neighbor_established\{neighbor="192\.0\.2\.1"\} 1$/m);
      assert.match(text, /^ferry_bgp_neighbor_established\{neighbor="2001:db8::1"\} 0$/m);
      assert.match(text, /^ferry_bgp_bird_in_sync 1$/m);
      assert.match(text, /^ferry_bgp_bird_reloads_total\{result="ok"\} [1-9]/m);
    } finally {
      await r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
