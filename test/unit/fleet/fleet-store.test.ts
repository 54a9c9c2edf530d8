/**
 * The fleet store (src/fleet) against a real etcd (Debian's etcd-server) on
 * loopback: members here are the real API, store, Controller and fleet
 * client with a fake datapath, several in one process. A write through one
 * member reaches every member; refused writes reach none; concurrent writes
 * through two members all land; etcd down: reads served, writes 503, then
 * convergence; a member that was away while etcd compacted catches up; the
 * first member seeds the prefix and the seed; keys a member cannot apply
 * are reported; GET /v1/fleet lists the members with their tables.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import type { FleetConfig } from '../../../src/config/index.js';
import { Fleet } from '../../../src/fleet/index.js';
import { Etcd } from '../../../src/lab/etcd.js';
import { FerryMetrics } from '../../../src/metrics/index.js';
import { planChecksums } from '../../../src/maglev/index.js';
import { compareMembers } from '../../../src/cli/fleet.js';
import type { FleetMember, FleetView } from '../../../src/model/fleet.js';
import type { VipRecord } from '../../../src/model/types.js';
import { call, idleMetricsSource, makeApi, type Api } from '../../lib/api-fixture.js';
import { until } from '../../lib/until.js';

const silent = pino({ level: process.env.FLEET_LOG ?? 'silent' });

interface Member {
  name: string;
  api: Api;
  fleet: Fleet;
  /** Seeds the fleet handed this member. */
  seeds: number[];
  close(): Promise<void>;
}

const seedOf = (api: Api): number => api.store.read((tx) => tx.snapshot().hash_seed);

async function member(name: string, url: string, prefix: string, dbPath?: string): Promise<Member> {
  let fleet: Fleet | undefined;
  const api = await makeApi({ fleet: { view: () => fleet!.view() }, ...(dbPath === undefined ? {} : { dbPath }) });
  const seeds: number[] = [];
  const config: FleetConfig = {
    etcd: { endpoints: [url], prefix, dial_timeout_ms: 1000 },
    host_name: name,
    api_url: `http://${name}.invalid:8080`,
    member_ttl_seconds: 5,
    write_timeout_ms: 3000,
  };
  fleet = new Fleet({
    config,
    controller: api.controller,
    drainSeconds: () => 30,
    log: silent,
    localSeed: () => seedOf(api),
    onSeed: (s) => seeds.push(s),
    tables: () => ({
      version: 'test',
      revision: api.store.revision(),
      applied_revision: api.controller.appliedRevision,
      hash_seed: seedOf(api),
      vips: planChecksums(api.applier.last, seedOf(api)),
    }),
  });
  fleet.start();
  const m = {
    name,
    api,
    fleet,
    seeds,
    close: async () => {
      await fleet!.stop();
      await api.close();
    },
  };
  await until(() => fleet!.view().connected, `${name} connected to etcd`);
  return m;
}

const view = async (m: Member): Promise<FleetView> => (await call(m.api.app, { url: '/v1/fleet' })).json() as FleetView;
const vipNames = (m: Member): string[] => m.api.store.read((tx) => tx.listVips({ limit: 1000 }).items.map((v) => v.name)).sort();
const webVip = (name: string, n: number) => ({ name, address: `198.51.100.${n}`, port: 80, protocol: 'tcp' });
const withBackends = (name: string, n: number, backends = ['10.1.0.1', '10.1.0.2']) => ({
  ...webVip(name, n),
  backends: backends.map((address) => ({ address })),
});

/** Creates a VIP and its backends through one member's API, one write each. */
async function createWeb(m: Member, name: string, n: number, backends = ['10.1.0.1', '10.1.0.2']): Promise<void> {
  const res = await call(m.api.app, { method: 'POST', url: '/v1/vips', body: webVip(name, n) });
  assert.equal(res.statusCode, 201, res.body);
  for (const address of backends) {
    const be = await call(m.api.app, { method: 'POST', url: `/v1/vips/${name}/backends`, body: { address } });
    assert.equal(be.statusCode, 201, be.body);
  }
}

/** Waits until every member holds exactly these VIP names. */
async function converged(ms: Member[], names: string[]): Promise<void> {
  const want = [...names].sort();
  await until(() => ms.every((m) => JSON.stringify(vipNames(m)) === JSON.stringify(want)), `every member holding ${want.join(', ')}`);
}

describe('fleet store on etcd', () => {
  let dir: string;
  let etcd: Etcd;
  let client: Etcd3;
  let n = 0;
  /** A prefix of its own per test: tests do not see each other's keys. */
  const prefix = (): string => `/ferry-test-${process.pid}-${++n}/`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-etcd-'));
    etcd = await Etcd.start({ dir });
    client = new Etcd3({ hosts: etcd.url });
  });
  after(async () => {
    client?.close();
    await etcd?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a write through one member reaches every member, named in their audit rows', async () => {
    const p = prefix();
    const [a, b, c] = [await member('a', etcd.url, p), await member('b', etcd.url, p), await member('c', etcd.url, p)];
    try {
      const res = await call(a.api.app, { method: 'POST', url: '/v1/vips', body: webVip('web', 1) });
      assert.equal(res.statusCode, 201, res.body);
      // The answer is a's own committed result.
      assert.equal((res.json() as { vip: VipRecord }).vip.name, 'web');
      for (const address of ['10.1.0.1', '10.1.0.2']) {
        assert.equal((await call(a.api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address } })).statusCode, 201);
      }
      await converged([a, b, c], ['web']);
      await until(
        () => [b, c].every((m) => m.api.store.read((tx) => tx.listBackends('web').items.length) === 2),
        'both backends everywhere',
      );
      for (const m of [b, c]) {
        const got = (await call(m.api.app, { url: '/v1/vips/web/backends' })).json() as { items: Array<{ address: string }> };
        assert.deepEqual(
          got.items.map((x) => x.address),
          ['10.1.0.1', '10.1.0.2'],
          `${m.name} holds the backends`,
        );
        const audit = m.api.store.audit({ limit: 3 });
        assert.deepEqual(
          audit.map((x) => x.action),
          ['vip.create', 'backend.create', 'backend.create'],
        );
        assert.ok(
          audit.every((x) => x.actor === 'api:local@a'),
          JSON.stringify(audit.map((x) => x.actor)),
        );
        // The datapath was given the VIP.
        assert.ok(m.api.applier.last?.vips.some((v) => v.name === 'web'));
      }
      // One key per VIP, holding it with its backends.
      const stored = JSON.parse((await client.get(`${p}vips/web`).string())!) as { backends: unknown[] };
      assert.equal(stored.backends.length, 2);

      // A backend removed through c leaves every member.
      const del = await call(c.api.app, { method: 'DELETE', url: '/v1/vips/web/backends/10.1.0.2' });
      assert.equal(del.statusCode, 200, del.body);
      await until(
        () => [a, b].every((m) => m.api.store.read((tx) => tx.listBackends('web').items.length) === 1),
        'the backend gone everywhere',
      );
      // Every member's tables are alike: the same digest in each member record.
      await until(async () => {
        const v = await view(b);
        return (
          v.members.length === 3 && new Set(v.members.map((x) => x.tables)).size === 1 && v.members.every((x) => x.revision === v.revision)
        );
      }, 'three members with the same tables at one revision');
      const v = await view(a);
      assert.deepEqual(
        v.members.map((x) => x.name),
        ['a', 'b', 'c'],
      );
      assert.equal(compareMembers(v).same, true);
      assert.equal(v.members[0]!.api_url, 'http://a.invalid:8080');
      assert.equal(v.connected, true);
      assert.deepEqual(v.rejected, []);
      const metrics = new FerryMetrics(idleMetricsSource({ fleetView: () => a.fleet.view() }), { fleet: true });
      const text = await metrics.render();
      assert.match(text, /^ferry_fleet_connected 1$/m);
      assert.match(text, new RegExp(`^ferry_fleet_revision ${v.revision}$`, 'm'));
      assert.match(text, /^ferry_fleet_members 3$/m);
      assert.match(text, /^ferry_fleet_rejected_keys 0$/m);
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
    }
  });

  it('a refused write changes nothing anywhere; a write of what is already there touches no key', async () => {
    const p = prefix();
    const [a, b] = [await member('a', etcd.url, p), await member('b', etcd.url, p)];
    try {
      await createWeb(a, 'web', 1);
      await converged([a, b], ['web']);
      await until(() => b.api.store.read((tx) => tx.listBackends('web').items.length) === 2, 'the backends on b');
      const before = Number((await client.get(`${p}fence`).exec()).header.revision);
      const clash = await call(b.api.app, { method: 'POST', url: '/v1/vips', body: webVip('other', 1) });
      assert.equal(clash.statusCode, 409, 'the same address and port as web');
      const bad = await call(b.api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: 'not-an-ip' } });
      assert.ok(bad.statusCode === 400 || bad.statusCode === 422, bad.body);
      const same = await call(b.api.app, { method: 'PUT', url: '/v1/vips/web/backends/10.1.0.1', body: {} });
      assert.equal(same.statusCode, 200, same.body);
      assert.equal(Number((await client.get(`${p}fence`).exec()).header.revision), before, 'etcd was not written');
      await converged([a, b], ['web']);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('writes through two members at once all land, in one order on both', async () => {
    const p = prefix();
    const [a, b] = [await member('a', etcd.url, p), await member('b', etcd.url, p)];
    try {
      const writes = [];
      for (let i = 1; i <= 8; i++) {
        writes.push(call(a.api.app, { method: 'POST', url: '/v1/vips', body: webVip(`a${i}`, i) }));
        writes.push(call(b.api.app, { method: 'POST', url: '/v1/vips', body: webVip(`b${i}`, 100 + i) }));
      }
      const answers = await Promise.all(writes);
      assert.deepEqual(
        answers.map((r) => r.statusCode),
        answers.map(() => 201),
        answers.map((r) => r.body).join('\n'),
      );
      const names = Array.from({ length: 8 }, (_, i) => [`a${i + 1}`, `b${i + 1}`]).flat();
      await converged([a, b], names);
      // PUT /v1/state through one member: many keys in one etcd transaction.
      const state = { vips: [withBackends('one', 7), withBackends('two', 8)], policies: [{ name: 'edge', deny: ['192.0.2.0/24'] }] };
      const put = await call(b.api.app, { method: 'PUT', url: '/v1/state', body: state });
      assert.equal(put.statusCode, 200, put.body);
      await converged([a, b], ['one', 'two']);
      assert.deepEqual(
        a.api.store.read((tx) => tx.listPolicies().items.map((x) => x.name)),
        ['edge'],
      );
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('etcd down: reads served, writes refused with 503 and nothing changed; back up: writes land everywhere', async () => {
    const p = prefix();
    const [a, b] = [await member('a', etcd.url, p), await member('b', etcd.url, p)];
    try {
      assert.equal((await call(a.api.app, { method: 'POST', url: '/v1/vips', body: webVip('web', 1) })).statusCode, 201);
      await converged([a, b], ['web']);
      await etcd.kill();
      await until(() => !a.fleet.view().connected && !b.fleet.view().connected, 'both members seeing etcd gone');
      const revision = a.api.store.revision();
      const refused = await call(a.api.app, { method: 'POST', url: '/v1/vips', body: webVip('new', 2) });
      assert.equal(refused.statusCode, 503, refused.body);
      assert.match(refused.json<{ type: string; detail: string }>().type, /fleet-unavailable/);
      assert.match(refused.json<{ detail: string }>().detail, /unreachable/);
      assert.equal(a.api.store.revision(), revision, 'nothing changed');
      assert.equal((await call(b.api.app, { url: '/v1/vips/web' })).statusCode, 200, 'the mirrored state is served');
      assert.equal((await view(b)).connected, false);
      await etcd.run();
      await until(() => a.fleet.view().connected && b.fleet.view().connected, 'both members back', 20_000);
      assert.equal((await call(b.api.app, { method: 'POST', url: '/v1/vips', body: webVip('new', 2) })).statusCode, 201);
      await converged([a, b], ['new', 'web']);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a member away while etcd compacted its revisions catches up from its stored mark', async () => {
    const p = prefix();
    const db = join(dir, `c-${n}.db`);
    const a = await member('a', etcd.url, p);
    let c = await member('c', etcd.url, p, db);
    try {
      assert.equal((await call(a.api.app, { method: 'POST', url: '/v1/vips', body: webVip('gone', 1) })).statusCode, 201);
      await converged([a, c], ['gone']);
      const mark = c.api.store.read((tx) => tx.fleetMark());
      assert.equal(mark?.prefix, p);
      assert.ok(mark!.revision > 0);
      await c.close();
      // While c is away: one VIP deleted, one created, and the history compacted.
      assert.equal((await call(a.api.app, { method: 'DELETE', url: '/v1/vips/gone' })).statusCode, 200);
      assert.equal((await call(a.api.app, { method: 'POST', url: '/v1/vips', body: webVip('kept', 2) })).statusCode, 201);
      const now = Number((await client.get(`${p}fence`).exec()).header.revision);
      await client.kv.compact({ revision: now });
      c = await member('c', etcd.url, p, db);
      await converged([a, c], ['kept']);
      assert.ok(c.api.store.read((tx) => tx.fleetMark())!.revision >= now);
    } finally {
      await Promise.all([a.close(), c.close()]);
    }
  });

  it("the first member seeds the prefix and the seed; a later one takes the fleet's state and seed", async () => {
    const p = prefix();
    // Each member has resources of its own before it joins.
    const local = async (name: string, vip: string) => {
      const api = await makeApi({ dbPath: join(dir, `${name}-${n}.db`) });
      assert.equal((await call(api.app, { method: 'POST', url: '/v1/vips', body: webVip(vip, name === 'a' ? 1 : 2) })).statusCode, 201);
      const seed = seedOf(api);
      await api.close();
      return seed;
    };
    const seedA = await local('a', 'from-a');
    const seedB = await local('b', 'from-b');
    assert.notEqual(seedA, seedB);
    const a = await member('a', etcd.url, p, join(dir, `a-${n}.db`));
    const b = await member('b', etcd.url, p, join(dir, `b-${n}.db`));
    try {
      await converged([a, b], ['from-a']);
      assert.equal(await client.get(`${p}seed`).string(), String(seedA));
      assert.equal(seedOf(b.api), seedA);
      assert.deepEqual(b.seeds, [seedA], "b was told to rebuild with the fleet's seed");
      assert.deepEqual(a.seeds, [], 'a kept its own');
      assert.equal((await view(b)).hash_seed, seedA);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a key a member cannot apply is reported and the rest applies; fixed, it applies', async () => {
    const p = prefix();
    const a = await member('a', etcd.url, p);
    try {
      await client.put(`${p}vips/bad`).value('{not json');
      await client.put(`${p}vips/misnamed`).value(JSON.stringify(withBackends('other', 3)));
      await client.put(`${p}vips/invalid`).value(JSON.stringify({ ...withBackends('invalid', 4), port: 70000 }));
      await client.put(`${p}vips/good`).value(JSON.stringify(withBackends('good', 5)));
      await until(() => vipNames(a).includes('good'), 'the good key applied');
      await until(() => a.fleet.view().rejected.length === 3, 'three keys rejected');
      const rejected = (await view(a)).rejected;
      assert.deepEqual(rejected.map((r) => r.key).sort(), ['vips/bad', 'vips/invalid', 'vips/misnamed']);
      assert.match(rejected.find((r) => r.key === 'vips/bad')!.reason, /not JSON/);
      assert.match(rejected.find((r) => r.key === 'vips/misnamed')!.reason, /value is named "other"/);
      assert.match(rejected.find((r) => r.key === 'vips/invalid')!.reason, /port/);
      assert.deepEqual(vipNames(a), ['good']);
      await client.put(`${p}vips/bad`).value(JSON.stringify(withBackends('bad', 6)));
      await until(() => vipNames(a).includes('bad'), 'the mended key applied');
      assert.equal(
        a.fleet.view().rejected.some((r) => r.key === 'vips/bad'),
        false,
      );
    } finally {
      await a.close();
    }
  });

  it('a member whose datapath refuses a revision retries it, refuses writes meanwhile, then catches up', async () => {
    const p = prefix();
    const [a, b] = [await member('a', etcd.url, p), await member('b', etcd.url, p)];
    try {
      b.api.applier.failing = 'the VIP map is full';
      assert.equal((await call(a.api.app, { method: 'POST', url: '/v1/vips', body: webVip('web', 1) })).statusCode, 201);
      await until(() => b.fleet.view().last_error?.includes('the VIP map is full') ?? false, 'b reporting the refusal');
      assert.deepEqual(vipNames(b), []);
      const refused = await call(b.api.app, { method: 'POST', url: '/v1/vips', body: webVip('other', 2) });
      assert.equal(refused.statusCode, 503, refused.body);
      assert.match(refused.json<{ detail: string }>().detail, /behind the fleet store/);
      b.api.applier.failing = null;
      await converged([a, b], ['web']);
      assert.equal(b.fleet.view().last_error, null);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('fleet status: a member with other tables or behind the others does not agree', () => {
    const m = (name: string, revision: number, seed: number, tables: string): FleetMember => ({
      name,
      api_url: null,
      version: '1',
      revision,
      store_revision: 9,
      applied_revision: 9,
      hash_seed: seed,
      tables,
      vips: 2,
      updated: '',
    });
    const v: FleetView = {
      host: 'a',
      endpoints: [],
      prefix: '/ferry/',
      connected: true,
      revision: 12,
      cluster: '1',
      hash_seed: 7,
      last_error: null,
      rejected: [],
      members: [m('a', 12, 7, 'x'), m('b', 12, 7, 'x'), m('c', 12, 8, 'y'), m('d', 11, 7, 'x')],
    };
    const r = compareMembers(v);
    assert.equal(r.same, false);
    assert.deepEqual(
      r.members.map((x) => [x.name, x.agrees]),
      [
        ['a', true],
        ['b', true],
        ['c', false],
        ['d', false],
      ],
    );
    assert.equal(compareMembers({ ...v, members: v.members.slice(0, 2) }).same, true);
  });

  it('GET /v1/fleet answers 404 on a host that is not a member', async () => {
    const api = await makeApi();
    try {
      const res = await call(api.app, { url: '/v1/fleet' });
      assert.equal(res.statusCode, 404);
      assert.match(res.json<{ type: string }>().type, /fleet-disabled/);
    } finally {
      await api.close();
    }
  });
});
