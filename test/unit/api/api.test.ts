/**
 * REST API tests through fastify.inject: real store (in memory), real
 * Controller and planner, fake Applier and DaemonInfo. Every response goes
 * through call(), which fails on any 500 and checks every error is a
 * problem+json; the one deliberate 500 (an unexpected exception) is tested
 * on its own.
 */
import { parseTokens } from '../../../src/api/auth.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { openApiText } from '../../../src/api/openapi-doc.js';
import { call, fields, makeApi, problemOf, type Api } from '../../lib/api-fixture.js';
import { VIP_F_SNAT } from '../../../src/datapath/abi.js';

interface VipBody { revision: number; vip: Record<string, unknown> & { name: string; updated_revision: number } }
interface BeBody { revision: number; backend: Record<string, unknown> & { address: string; updated_revision: number } }
interface PolBody { revision: number; policy: Record<string, unknown> & { name: string } }
interface PageBody { items: Array<Record<string, unknown>>; next: string | null }
interface StateBody { revision: number; dry_run: boolean; changes: Array<{ op: string; kind: string; name: string }> }

const web = { name: 'web', address: '198.18.0.10', port: 80, protocol: 'tcp' };
const web6 = { name: 'web6', address: '2001:db8::10', port: 443, protocol: 'tcp' };

describe('api: VIPs', () => {
  let api: Api;
  before(async () => { api = await makeApi(); });
  after(async () => { await api.close(); });

  it('POST creates: 201, Location, ETag, X-Ferry-Revision, {revision, vip}; the datapath got it', async () => {
    const before = api.store.revision();
    const res = await call(api.app, { method: 'POST', url: '/v1/vips', body: web });
    assert.equal(res.statusCode, 201, res.body);
    const b = res.json<VipBody>();
    assert.equal(b.revision, before + 1);
    assert.equal(b.revision, api.store.revision());
    assert.equal(res.headers['x-ferry-revision'], String(b.revision));
    assert.equal(res.headers.location, '/v1/vips/web');
    assert.equal(res.headers.etag, `"web-r${b.vip.updated_revision}-b0"`);
    assert.equal(b.vip.name, 'web');
    assert.equal(b.vip.encap, 'ipip');
    assert.equal(b.vip.backend_count, 0);
    assert.equal(b.vip.owner, null);
    assert.equal('dp_id' in b.vip, false, 'datapath ids stay inside');
    assert.deepEqual(api.applier.last?.vips.map((v) => v.name), ['web']);
    assert.equal(api.controller.appliedRevision, b.revision);
  });

  it('GET answers the VIP with its ETag; If-None-Match → 304; HEAD works', async () => {
    const res = await call(api.app, { url: '/v1/vips/web' });
    assert.equal(res.statusCode, 200);
    const tag = String(res.headers.etag);
    assert.match(tag, /^"web-r\d+-b0"$/);
    assert.equal(res.json<{ name: string }>().name, 'web');
    const nm = await call(api.app, { url: '/v1/vips/web', headers: { 'if-none-match': tag } });
    assert.equal(nm.statusCode, 304);
    assert.equal(nm.body, '');
    assert.equal((await call(api.app, { url: '/v1/vips/web', headers: { 'if-none-match': `"web-r0", W/${tag}` } })).statusCode, 304, 'weak comparison');
    assert.equal((await call(api.app, { url: '/v1/vips/web', headers: { 'if-none-match': '*' } })).statusCode, 304);
    assert.equal((await call(api.app, { url: '/v1/vips/web', headers: { 'if-none-match': '"web-r0"' } })).statusCode, 200);
    assert.equal((await call(api.app, { method: 'HEAD', url: '/v1/vips/web' })).statusCode, 200);
  });

  it('duplicates are 409: same name, same address/port/protocol', async () => {
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: web }), 409, 'conflict');
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: { ...web, name: 'other' } }), 409, 'conflict');
  });

  it('PUT creates (201) then replaces (200); the URL names the VIP', async () => {
    const c = await call(api.app, { method: 'PUT', url: '/v1/vips/web6', body: { address: web6.address, port: 443, protocol: 'tcp' } });
    assert.equal(c.statusCode, 201, c.body);
    assert.equal(c.headers.location, '/v1/vips/web6');
    assert.equal(c.json<VipBody>().vip.name, 'web6');
    const r = await call(api.app, { method: 'PUT', url: '/v1/vips/web6', body: { ...web6, source_affinity: true, maglev_m: 1021 } });
    assert.equal(r.statusCode, 200, r.body);
    const b = r.json<VipBody>();
    assert.equal(b.vip.source_affinity, true);
    assert.equal(b.vip.maglev_m, 1021);
    assert.equal(r.headers['x-ferry-revision'], String(b.revision));
    assert.equal(r.headers.etag, `"web6-r${b.vip.updated_revision}-b0"`);
    assert.equal(r.headers.location, undefined);
  });

  it('PUT is idempotent: the same body again changes nothing', async () => {
    const body = { ...web6, source_affinity: true, maglev_m: 1021 };
    const rev = api.store.revision();
    const r = await call(api.app, { method: 'PUT', url: '/v1/vips/web6', body });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(api.store.revision(), rev);
    assert.equal(r.json<VipBody>().revision, rev);
    assert.equal(r.json<VipBody>().vip.source_affinity, true);
  });

  it('PUT with another name in the body is 422 naming /name', async () => {
    const p = problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/web6', body: { ...web6, name: 'web' } }), 422, 'invalid');
    assert.deepEqual(fields(p), ['/name']);
  });

  it('If-Match: wrong tag 412, right tag 200, * on a missing VIP 412; If-None-Match: * on an existing VIP 412', async () => {
    const tag = String((await call(api.app, { url: '/v1/vips/web6' })).headers.etag);
    const rev = api.store.revision();
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/web6', headers: { 'if-match': '"web6-r0"' }, body: web6 }), 412, 'precondition-failed');
    problemOf(await call(api.app, { method: 'DELETE', url: '/v1/vips/web6', headers: { 'if-match': '"web6-r0"' } }), 412, 'precondition-failed');
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/nope', headers: { 'if-match': '*' }, body: { ...web6, name: undefined } }), 412);
    problemOf(await call(api.app, { method: 'DELETE', url: '/v1/vips/nope', headers: { 'if-match': '*' } }), 412);
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/web6', headers: { 'if-none-match': '*' }, body: web6 }), 412);
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/web6', headers: { 'if-match': `W/${tag}` }, body: web6 }), 412);
    assert.equal(api.store.revision(), rev, 'failed preconditions change nothing');
    const ok = await call(api.app, { method: 'PUT', url: '/v1/vips/web6', headers: { 'if-match': `"x-r1", ${tag}` }, body: { ...web6, port: 8443 } });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.notEqual(ok.headers.etag, tag);
    const star = await call(api.app, { method: 'PUT', url: '/v1/vips/web6', headers: { 'if-match': '*' }, body: { ...web6, port: 443 } });
    assert.equal(star.statusCode, 200, star.body);
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/web6', headers: { 'if-match': tag }, body: web6 }), 412);
  });

  it('DELETE answers 200 with the deleted VIP; then GET is 404', async () => {
    const tag = String((await call(api.app, { url: '/v1/vips/web6' })).headers.etag);
    const res = await call(api.app, { method: 'DELETE', url: '/v1/vips/web6', headers: { 'if-match': tag } });
    assert.equal(res.statusCode, 200, res.body);
    const b = res.json<VipBody>();
    assert.equal(b.vip.name, 'web6');
    assert.equal(b.revision, api.store.revision());
    assert.equal(res.headers['x-ferry-revision'], String(b.revision));
    problemOf(await call(api.app, { url: '/v1/vips/web6' }), 404, 'not-found');
    problemOf(await call(api.app, { method: 'DELETE', url: '/v1/vips/web6' }), 404, 'not-found');
    assert.deepEqual(api.applier.last?.vips.map((v) => v.name), ['web']);
  });

  it('semantic checks come from the store as 422: multicast, loopback, unspecified VIPs, CIDR host bits, non-prime M', async () => {
    for (const [body, field] of [
      [{ ...web, name: 'm', address: '224.0.0.1' }, '/address'],
      [{ ...web, name: 'l', address: '127.0.0.1' }, '/address'],
      [{ ...web, name: 'u', address: '::' }, '/address'],
      [{ ...web, name: 'h', port: 81, allow: ['10.0.0.1/8'] }, '/allow/0'],
      [{ ...web, name: 'p', port: 82, maglev_m: 1000 }, '/maglev_m'],
    ] as const) {
      const p = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body }), 422, 'invalid');
      assert.ok(fields(p).includes(field), `${JSON.stringify(body)}: ${JSON.stringify(p.errors)}`);
    }
  });
});

describe('api: request validation', () => {
  let api: Api;
  before(async () => { api = await makeApi({ bodyLimit: 4096 }); });
  after(async () => { await api.close(); });

  it('bad JSON is 400 bad-json', async () => {
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: '{"name": "web",' }), 400, 'bad-json');
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: '' }), 400, 'bad-json');
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: '{"__proto__": {"x": 1}}' }), 400);
  });

  it('no body is 400 naming the body', async () => {
    const p = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips' }), 400, 'schema');
    assert.deepEqual(fields(p), ['']);
  });

  it('wrong content type is 415', async () => {
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: 'name=web', contentType: 'application/x-www-form-urlencoded' }), 415, 'unsupported-media-type');
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: JSON.stringify(web), contentType: 'text/plain' }), 415);
  });

  it('an oversized body is 413', async () => {
    const body = { ...web, allow: Array.from({ length: 400 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`) };
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body }), 413, 'payload-too-large');
  });

  it('wrong types are 400 naming every field; nothing is coerced', async () => {
    const p = problemOf(await call(api.app, {
      method: 'POST', url: '/v1/vips',
      body: { name: 'web', address: 42, port: '80', protocol: 'sctp', source_affinity: 'yes', allow: '10.0.0.0/8', rate_limit: { new_flows_per_sec: 1.5, burst: -1 } },
    }), 400, 'schema');
    assert.deepEqual(fields(p).sort(), ['/address', '/allow', '/port', '/protocol', '/rate_limit/burst', '/rate_limit/new_flows_per_sec', '/source_affinity']);
    const port = p.errors?.find((e) => e.field === '/port');
    assert.equal(port?.reason, 'must be of type integer');
    assert.match(p.errors?.find((e) => e.field === '/protocol')?.reason ?? '', /tcp.*udp/);
    assert.match(p.detail ?? '', /\/port: must be of type integer/);
  });

  it('unknown fields are 400 naming them, nested too', async () => {
    const p = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: { ...web, colour: 'red', rate_limit: { new_flows_per_sec: 1, burst: 1, x: 1 } } }), 400);
    assert.deepEqual(fields(p).sort(), ['/colour', '/rate_limit/x']);
    assert.equal(p.errors?.[0]?.reason, 'is not a known field');
  });

  it('missing fields are 400 naming each', async () => {
    const p = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: { name: 'web' } }), 400);
    assert.deepEqual(fields(p).sort(), ['/address', '/port', '/protocol']);
    assert.ok(p.errors?.every((e) => e.reason === 'is required'));
  });

  it('addresses, names, CIDRs and ranges are checked by format', async () => {
    const p = problemOf(await call(api.app, {
      method: 'POST', url: '/v1/vips',
      body: { name: 'Web!', address: '198.18.0.300', port: 70000, protocol: 'tcp', allow: ['10.0.0.0/33', 'fe80::1%eth0', '10.0.0.0/8'] },
    }), 400);
    assert.deepEqual(fields(p).sort(), ['/address', '/allow/0', '/allow/1', '/name', '/port']);
    assert.equal(p.errors?.find((e) => e.field === '/address')?.reason, 'must be an IPv4 address or must be an IPv6 address');
    const be = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '198.19.0.1', weight: 65536, state: 'up' } }), 400);
    assert.deepEqual(fields(be).sort(), ['/state', '/weight']);
  });

  it('query and path parameters are validated: query/NAME, path/NAME', async () => {
    for (const q of ['limit=0', 'limit=1001', 'limit=ten', 'colour=red', 'cursor=']) {
      const p = problemOf(await call(api.app, { url: `/v1/vips?${q}` }), 400, 'schema');
      assert.match(fields(p)[0] ?? '', /^query\//, q);
    }
    const p = problemOf(await call(api.app, { url: '/v1/vips/UPPER' }), 400);
    assert.deepEqual(fields(p), ['path/name']);
    const a = problemOf(await call(api.app, { url: '/v1/vips/web/backends/not-an-ip' }), 400);
    assert.deepEqual(fields(a), ['path/address']);
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/state?dry_run=maybe', body: { vips: [] } }), 400);
    problemOf(await call(api.app, { url: '/v1/vips/%zz' }), 400, 'bad-url');
  });

  it('unknown routes are 404, other methods on known routes 405 with Allow', async () => {
    problemOf(await call(api.app, { url: '/v2/vips' }), 404, 'no-route');
    problemOf(await call(api.app, { url: '/v1/vips/web/backends/198.19.0.1/extra' }), 404);
    const r = await call(api.app, { method: 'PATCH', url: '/v1/vips/web' });
    problemOf(r, 405, 'method-not-allowed');
    assert.equal(r.headers.allow, 'GET, HEAD, PUT, DELETE');
    const s = await call(api.app, { method: 'POST', url: '/v1/state', body: { vips: [] } });
    problemOf(s, 405);
    assert.equal(s.headers.allow, 'GET, HEAD, PUT');
  });
});

describe('api: backends', () => {
  let api: Api;
  before(async () => {
    api = await makeApi({ drainSeconds: 30 });
    await call(api.app, { method: 'POST', url: '/v1/vips', body: web });
    await call(api.app, { method: 'POST', url: '/v1/vips', body: web6 });
  });
  after(async () => { await api.close(); });

  it('POST adds a backend: 201 with Location and ETag; the VIP counts it; the datapath has it', async () => {
    const res = await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '198.19.0.1' } });
    assert.equal(res.statusCode, 201, res.body);
    const b = res.json<BeBody>();
    assert.equal(b.backend.address, '198.19.0.1');
    assert.equal(b.backend.vip, 'web');
    assert.equal(b.backend.weight, 100);
    assert.equal(b.backend.state, 'active');
    assert.equal(res.headers.location, '/v1/vips/web/backends/198.19.0.1');
    assert.equal(res.headers.etag, `"198.19.0.1-r${b.backend.updated_revision}"`);
    assert.equal(res.headers['x-ferry-revision'], String(b.revision));
    const vip = await call(api.app, { url: '/v1/vips/web' });
    assert.equal(vip.json<{ backend_count: number }>().backend_count, 1);
    assert.match(String(vip.headers.etag), /-b1"$/, 'the VIP\'s ETag follows its backend count');
    assert.equal((await call(api.app, { url: '/v1/vips/web', headers: { 'if-none-match': String(vip.headers.etag).replace('-b1', '-b0') } })).statusCode, 200);
    assert.deepEqual(api.applier.last?.vips.find((v) => v.name === 'web')?.backends.map((x) => x.address), ['198.19.0.1']);
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '198.19.0.1' } }), 409, 'conflict');
  });

  it('IPv6 addresses work in the path, raw or percent-encoded, in any spelling', async () => {
    const c = await call(api.app, { method: 'PUT', url: '/v1/vips/web6/backends/2001:db8::1:1', body: { weight: 50 } });
    assert.equal(c.statusCode, 201, c.body);
    assert.equal(c.json<BeBody>().backend.address, '2001:db8::1:1');
    assert.equal(c.headers.location, '/v1/vips/web6/backends/2001:db8::1:1');
    const g = await call(api.app, { url: '/v1/vips/web6/backends/2001%3Adb8%3A%3A1%3A1' });
    assert.equal(g.statusCode, 200, g.body);
    assert.equal(g.json<{ weight: number }>().weight, 50);
    const u = await call(api.app, { url: '/v1/vips/web6/backends/2001:DB8:0:0::1:1' });
    assert.equal(u.statusCode, 200, u.body);
    assert.equal((await call(api.app, { url: '/v1/vips/web6/backends/2001:db8::1:1', headers: { 'if-none-match': String(g.headers.etag) } })).statusCode, 304);
  });

  it('PUT replaces (200), is idempotent, refuses another address in the body (422)', async () => {
    const r = await call(api.app, { method: 'PUT', url: '/v1/vips/web6/backends/2001:db8::1:1', body: { address: '2001:db8:0::1:1', weight: 7, state: 'draining' } });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json<BeBody>().backend.weight, 7);
    const rev = api.store.revision();
    const again = await call(api.app, { method: 'PUT', url: '/v1/vips/web6/backends/2001:db8::1:1', body: { weight: 7, state: 'draining' } });
    assert.equal(again.statusCode, 200);
    assert.equal(api.store.revision(), rev);
    const p = problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/web6/backends/2001:db8::1:1', body: { address: '2001:db8::2' } }), 422);
    assert.deepEqual(fields(p), ['/address']);
  });

  it('a backend on a port of its own, on this host: stored, planned with its port and host; without a host 422', async () => {
    const res = await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '10.244.1.5', port: 8080, host: 'local' } });
    assert.equal(res.statusCode, 201, res.body);
    const b = res.json<BeBody>().backend as BeBody['backend'] & { port?: number; host?: string };
    assert.deepEqual([b.port, b.host], [8080, 'local']);
    const planned = api.applier.last?.vips.find((v) => v.name === 'web')?.backends.find((x) => x.address === '10.244.1.5');
    assert.deepEqual([planned?.port, planned?.host], [8080, 'local']);
    const p = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '10.244.1.6', port: 8080 } }), 422, 'invalid');
    assert.deepEqual(fields(p), ['/port']);
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '10.244.1.6', port: 65536, host: 'local' } }), 400);
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '10.244.1.6', host: 7 } }), 400);
    await call(api.app, { method: 'DELETE', url: '/v1/vips/web/backends/10.244.1.5' });
  });

  it('forwarding snat: backends take their own port without a host; the VIP goes back to dsr only when they have one', async () => {
    const created = await call(api.app, { method: 'POST', url: '/v1/vips', body: { name: 'nat', address: '198.18.0.77', port: 80, protocol: 'tcp', forwarding: 'snat' } });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json<{ vip: { forwarding?: string } }>().vip.forwarding, 'snat');
    const b = await call(api.app, { method: 'POST', url: '/v1/vips/nat/backends', body: { address: '10.244.1.7', port: 8080 } });
    assert.equal(b.statusCode, 201, b.body);
    const other = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/nat/backends', body: { address: 'fd00::7', port: 8080 } }), 422, 'invalid');
    assert.deepEqual(fields(other), ['/address'], 'source NAT keeps the family');
    const planned = api.applier.last?.vips.find((v) => v.name === 'nat');
    assert.ok(planned && (planned.flags & VIP_F_SNAT) !== 0, 'planned with VIP_F_SNAT');
    assert.equal(planned.backends[0]?.port, 8080);
    const rev = api.store.revision();
    const p = problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/nat', body: { address: '198.18.0.77', port: 80, protocol: 'tcp' } }), 422, 'invalid');
    assert.deepEqual(fields(p), ['/forwarding']);
    assert.match(JSON.stringify(p), /backend 10\.244\.1\.7/);
    assert.equal(api.store.revision(), rev, 'nothing changed');
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: { name: 'bad', address: '198.18.0.78', port: 80, protocol: 'tcp', forwarding: 'tunnel' } }), 400);
    assert.equal((await call(api.app, { method: 'DELETE', url: '/v1/vips/nat' })).statusCode, 200);
  });

  it('backend addresses and weights are checked; an IPv6 backend of an IPv4 VIP is fine (4in6)', async () => {
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '224.0.0.5' } }), 422, 'invalid');
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '::' } }), 422, 'invalid');
    const mixed = await call(api.app, { method: 'POST', url: '/v1/vips/web6/backends', body: { address: '198.19.0.66' } });
    assert.equal(mixed.statusCode, 201, mixed.body);
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '198.19.0.9', weight: -1 } }), 400);
  });

  it('list paginates', async () => {
    for (let i = 2; i <= 5; i++) await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: `198.19.0.${i}`, weight: i } });
    const seen: string[] = [];
    let url = '/v1/vips/web/backends?limit=2';
    let pages = 0;
    for (;;) {
      const res = await call(api.app, { url });
      assert.equal(res.statusCode, 200, res.body);
      const page = res.json<PageBody>();
      assert.ok(page.items.length <= 2);
      seen.push(...page.items.map((i) => String(i.address)));
      pages++;
      if (page.next === null) break;
      url = `/v1/vips/web/backends?limit=2&cursor=${encodeURIComponent(page.next)}`;
    }
    assert.equal(pages, 3);
    assert.deepEqual(seen.sort(), ['198.19.0.1', '198.19.0.2', '198.19.0.3', '198.19.0.4', '198.19.0.5']);
  });

  it('unknown VIP or backend is 404', async () => {
    problemOf(await call(api.app, { url: '/v1/vips/nope/backends' }), 404, 'not-found');
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/nope/backends', body: { address: '198.19.0.1' } }), 404);
    problemOf(await call(api.app, { url: '/v1/vips/web/backends/198.19.9.9' }), 404);
    problemOf(await call(api.app, { method: 'DELETE', url: '/v1/vips/web/backends/198.19.9.9' }), 404);
  });

  it('DELETE answers the backend as it was and leaves a draining tombstone', async () => {
    const tag = String((await call(api.app, { url: '/v1/vips/web/backends/198.19.0.5' })).headers.etag);
    problemOf(await call(api.app, { method: 'DELETE', url: '/v1/vips/web/backends/198.19.0.5', headers: { 'if-match': '"198.19.0.5-r0"' } }), 412);
    const t0 = Date.now();
    const res = await call(api.app, { method: 'DELETE', url: '/v1/vips/web/backends/198.19.0.5', headers: { 'if-match': tag } });
    assert.equal(res.statusCode, 200, res.body);
    const b = res.json<BeBody>();
    assert.equal(b.backend.address, '198.19.0.5');
    assert.equal(res.headers['x-ferry-revision'], String(b.revision));
    const tombs = api.store.read((tx) => tx.snapshot().tombstones);
    const t = tombs.find((x) => x.address === '198.19.0.5');
    assert.ok(t, 'a tombstone drains the removed backend');
    assert.ok(t.expires_at >= t0 + 29_000 && t.expires_at <= Date.now() + 31_000, `expires_at ${t.expires_at}`);
    assert.equal(api.applier.last?.tombstones.some((x) => x.address === '198.19.0.5'), true);
    problemOf(await call(api.app, { url: '/v1/vips/web/backends/198.19.0.5' }), 404);
  });
});

describe('api: policies', () => {
  let api: Api;
  before(async () => { api = await makeApi(); });
  after(async () => { await api.close(); });

  it('CRUD, references, and 409 while referenced', async () => {
    const c = await call(api.app, { method: 'POST', url: '/v1/policies', body: { name: 'office', allow: ['192.0.2.0/24'], deny: ['2001:db8:bad::/48'] } });
    assert.equal(c.statusCode, 201, c.body);
    assert.equal(c.headers.location, '/v1/policies/office');
    assert.deepEqual(c.json<PolBody>().policy.allow, ['192.0.2.0/24']);
    problemOf(await call(api.app, { method: 'POST', url: '/v1/policies', body: { name: 'office' } }), 409);
    const g = await call(api.app, { url: '/v1/policies/office' });
    assert.equal(g.statusCode, 200);
    assert.equal((await call(api.app, { url: '/v1/policies/office', headers: { 'if-none-match': String(g.headers.etag) } })).statusCode, 304);
    const p = await call(api.app, { method: 'PUT', url: '/v1/policies/office', headers: { 'if-match': String(g.headers.etag) }, body: { allow: ['192.0.2.0/25'] } });
    assert.equal(p.statusCode, 200, p.body);
    assert.deepEqual(p.json<PolBody>().policy.deny, []);
    assert.equal((await call(api.app, { method: 'PUT', url: '/v1/policies/lab', body: { name: 'lab', deny: ['198.51.100.0/24'] } })).statusCode, 201);
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/policies/lab', body: { name: 'other' } }), 422);
    const list = (await call(api.app, { url: '/v1/policies' })).json<PageBody>();
    assert.deepEqual(list.items.map((i) => i.name), ['lab', 'office']);
    assert.equal(list.next, null);

    const v = await call(api.app, { method: 'POST', url: '/v1/vips', body: { ...web, policies: ['office'] } });
    assert.equal(v.statusCode, 201, v.body);
    assert.deepEqual(api.applier.last?.vips[0]?.allow, ['192.0.2.0/25']);
    const missing = await call(api.app, { method: 'POST', url: '/v1/vips', body: { ...web6, policies: ['nope'] } });
    assert.ok(missing.statusCode === 404 || missing.statusCode === 422, missing.body);
    problemOf(await call(api.app, { method: 'DELETE', url: '/v1/policies/office' }), 409, 'conflict');
    const d = await call(api.app, { method: 'DELETE', url: '/v1/policies/lab' });
    assert.equal(d.statusCode, 200, d.body);
    assert.equal(d.json<PolBody>().policy.name, 'lab');
    problemOf(await call(api.app, { url: '/v1/policies/lab' }), 404);
    const bad = problemOf(await call(api.app, { method: 'POST', url: '/v1/policies', body: { name: 'x', allow: ['nope'], extra: true } }), 400);
    assert.deepEqual(fields(bad).sort(), ['/allow/0', '/extra']);
  });
});

describe('api: pagination', () => {
  let api: Api;
  before(async () => {
    api = await makeApi();
    for (let i = 0; i < 7; i++) {
      await call(api.app, { method: 'POST', url: '/v1/vips', body: { name: `v${i}`, address: `198.18.1.${i + 1}`, port: 80, protocol: 'tcp' } });
    }
  });
  after(async () => { await api.close(); });

  it('walks every VIP once over several pages', async () => {
    const names: string[] = [];
    let url = '/v1/vips?limit=3';
    let pages = 0;
    for (;;) {
      const page = (await call(api.app, { url })).json<PageBody>();
      names.push(...page.items.map((i) => String(i.name)));
      pages++;
      if (page.next === null) break;
      url = `/v1/vips?limit=3&cursor=${encodeURIComponent(page.next)}`;
    }
    assert.equal(pages, 3);
    assert.deepEqual(names, ['v0', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6']);
    const all = (await call(api.app, { url: '/v1/vips' })).json<PageBody>();
    assert.equal(all.items.length, 7);
    assert.equal(all.next, null);
  });

  it('a cursor this list did not issue is refused naming query/cursor', async () => {
    const p = problemOf(await call(api.app, { url: '/v1/vips?cursor=garbage!' }), 422);
    assert.deepEqual(fields(p), ['query/cursor']);
    const polCursor = Buffer.from(JSON.stringify({ k: 'policy', a: 'x' })).toString('base64url');
    problemOf(await call(api.app, { url: `/v1/vips?cursor=${polCursor}` }), 422);
  });
});

describe('api: declarative state', () => {
  let api: Api;
  before(async () => {
    api = await makeApi();
    await call(api.app, { method: 'POST', url: '/v1/vips', body: { name: 'old', address: '198.18.9.9', port: 80, protocol: 'tcp' } });
  });
  after(async () => { await api.close(); });

  const desired = {
    policies: [{ name: 'office', allow: ['192.0.2.0/24'] }],
    vips: [
      { ...web, policies: ['office'], backends: [{ address: '198.19.0.1' }, { address: '198.19.0.2', weight: 50 }] },
      { ...web6, backends: [{ address: '2001:db8::1:1', state: 'draining' }] },
    ],
  };

  it('dry run answers the diff and changes nothing', async () => {
    const rev = api.store.revision();
    const applied = api.applier.states.length;
    const res = await call(api.app, { method: 'PUT', url: '/v1/state?dry_run=true', body: desired });
    assert.equal(res.statusCode, 200, res.body);
    const b = res.json<StateBody>();
    assert.equal(b.dry_run, true);
    assert.equal(b.revision, rev);
    assert.equal(res.headers['x-ferry-revision'], String(rev));
    const ops = b.changes.map((c) => `${c.op} ${c.kind} ${c.name}`).sort();
    assert.ok(ops.includes('create vip web'), ops.join());
    assert.ok(ops.includes('delete vip old'), ops.join());
    assert.ok(ops.includes('create policy office'), ops.join());
    assert.ok(ops.includes('create backend web/198.19.0.1'), ops.join());
    assert.equal(api.store.revision(), rev);
    assert.equal(api.applier.states.length, applied, 'a dry run never touches the datapath');
    assert.equal((await call(api.app, { url: '/v1/vips/old' })).statusCode, 200);
    problemOf(await call(api.app, { url: '/v1/vips/web' }), 404);
  });

  it('apply replaces the state in one revision and answers the diff; GET exports it', async () => {
    const rev = api.store.revision();
    const res = await call(api.app, { method: 'PUT', url: '/v1/state', body: desired });
    assert.equal(res.statusCode, 200, res.body);
    const b = res.json<StateBody>();
    assert.equal(b.dry_run, false);
    assert.equal(b.revision, rev + 1);
    assert.equal(res.headers['x-ferry-revision'], String(b.revision));
    assert.ok(b.changes.length >= 6);
    problemOf(await call(api.app, { url: '/v1/vips/old' }), 404);
    assert.deepEqual(api.applier.last?.vips.map((v) => v.name).sort(), ['web', 'web6']);
    const g = await call(api.app, { url: '/v1/state' });
    assert.equal(g.statusCode, 200);
    assert.equal(g.headers.etag, `"state-r${b.revision}"`);
    const state = g.json<{ vips: Array<{ name: string; backends?: unknown[] }>; policies?: unknown[] }>();
    assert.deepEqual(state.vips.map((v) => v.name).sort(), ['web', 'web6']);
    assert.equal(state.vips.find((v) => v.name === 'web')?.backends?.length, 2);
    assert.equal((await call(api.app, { url: '/v1/state', headers: { 'if-none-match': String(g.headers.etag) } })).statusCode, 304);
  });

  it('applying the exported state again is a no-op', async () => {
    const g = await call(api.app, { url: '/v1/state' });
    const rev = api.store.revision();
    const res = await call(api.app, { method: 'PUT', url: '/v1/state', headers: { 'if-match': String(g.headers.etag) }, body: g.json() });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json<StateBody>().changes, []);
    assert.equal(api.store.revision(), rev);
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/state', headers: { 'if-match': '"state-r0"' }, body: g.json() }), 412);
  });

  it('invalid states are refused whole: schema 400 with nested paths, semantic 422/409', async () => {
    const rev = api.store.revision();
    const p = problemOf(await call(api.app, {
      method: 'PUT', url: '/v1/state', body: { vips: [{ ...web, backends: [{ address: '198.19.0.1', weigth: 5 }] }], extra: 1 },
    }), 400);
    assert.deepEqual(fields(p).sort(), ['/extra', '/vips/0/backends/0/weigth']);
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/state', body: { policies: [] } }), 400);
    const dup = await call(api.app, { method: 'PUT', url: '/v1/state', body: { vips: [web, { ...web, name: 'twin' }] } });
    assert.ok(dup.statusCode === 409 || dup.statusCode === 422, dup.body);
    const fam = problemOf(await call(api.app, { method: 'PUT', url: '/v1/state', body: { vips: [{ ...web, allow: ['2001:db8::/32'] }] } }), 422);
    assert.deepEqual(fields(fam), ['/vips/0/allow/0']);
    assert.equal(api.store.revision(), rev);
  });

  it('a large state goes through under stateBodyLimit while other bodies keep bodyLimit', async () => {
    const big = await makeApi({ bodyLimit: 2048, stateBodyLimit: 1 << 20 });
    try {
      const vips = Array.from({ length: 40 }, (_, i) => ({ name: `v${i}`, address: `198.18.2.${i + 1}`, port: 80, protocol: 'tcp', backends: [{ address: `198.19.2.${i + 1}` }] }));
      const res = await call(big.app, { method: 'PUT', url: '/v1/state', body: { vips } });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.json<StateBody>().changes.length, 80);
      problemOf(await call(big.app, { method: 'POST', url: '/v1/policies', body: { name: 'p', allow: Array.from({ length: 200 }, () => '10.0.0.0/8') } }), 413);
    } finally {
      await big.close();
    }
  });
});

describe('api: datapath failures and capacity', () => {
  let api: Api;
  before(async () => { api = await makeApi({ maxVips: 2 }); });
  after(async () => { await api.close(); });

  it('a refused datapath apply is 503 and rolls the store back', async () => {
    await call(api.app, { method: 'POST', url: '/v1/vips', body: web });
    const rev = api.store.revision();
    api.applier.failing = 'map update failed: ENOSPC';
    try {
      const p = problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '198.19.0.1' } }), 503, 'datapath');
      assert.match(p.detail ?? '', /ENOSPC/);
      problemOf(await call(api.app, { method: 'PUT', url: '/v1/state', body: { vips: [] } }), 503);
    } finally {
      api.applier.failing = null;
    }
    assert.equal(api.store.revision(), rev);
    problemOf(await call(api.app, { url: '/v1/vips/web/backends/198.19.0.1' }), 404);
    assert.equal((await call(api.app, { url: '/v1/vips/web' })).json<{ backend_count: number }>().backend_count, 0);
  });

  it('exhausted capacity is 507', async () => {
    await call(api.app, { method: 'POST', url: '/v1/vips', body: web6 });
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: { name: 'third', address: '198.18.3.3', port: 80, protocol: 'udp' } }), 507, 'capacity');
  });

  it('resources another owner holds are 403', async () => {
    api.controller.write('k8s', 'test', (tx) => tx.deleteVip('web6'));
    api.controller.write('k8s', 'test', (tx) => tx.createVip({ ...web6, protocol: 'tcp' }, 'kubernetes:default/web6'));
    problemOf(await call(api.app, { method: 'PUT', url: '/v1/vips/web6', body: { ...web6, port: 444 } }), 403, 'read-only');
    problemOf(await call(api.app, { method: 'DELETE', url: '/v1/vips/web6' }), 403);
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips/web6/backends', body: { address: '2001:db8::9' } }), 403);
    assert.equal((await call(api.app, { url: '/v1/vips/web6' })).json<{ owner: string }>().owner, 'kubernetes:default/web6');
  });
});

describe('api: status, stats, probes, docs', () => {
  let api: Api;
  before(async () => { api = await makeApi(); });
  after(async () => { await api.close(); });

  it('status and stats come from DaemonInfo', async () => {
    await call(api.app, { method: 'POST', url: '/v1/vips', body: web });
    const s = await call(api.app, { url: '/v1/status' });
    assert.equal(s.statusCode, 200);
    const st = s.json<{ version: string; revision: number; applied_revision: number; maps: unknown[]; interfaces: unknown[] }>();
    assert.equal(st.version, '9.9.9-test');
    assert.equal(st.revision, api.store.revision());
    assert.equal(st.applied_revision, api.store.revision());
    assert.equal(st.maps.length, 2);
    const t = (await call(api.app, { url: '/v1/stats' })).json<{ vips: Array<{ rate_pps: number; backends: unknown[] }>; drops: Record<string, number> }>();
    assert.equal(t.vips[0]?.rate_pps, 1.5);
    assert.equal(t.vips[0]?.backends.length, 1);
    assert.deepEqual(t.drops, { policy: 3, fragment: 1 });
  });

  it('healthz always 200; readyz 503 until ready', async () => {
    assert.deepEqual((await call(api.app, { url: '/healthz' })).json(), { status: 'ok' });
    api.info.isReady = false;
    problemOf(await call(api.app, { url: '/readyz' }), 503, 'not-ready');
    assert.equal((await call(api.app, { url: '/healthz' })).statusCode, 200);
    api.info.isReady = true;
    assert.deepEqual((await call(api.app, { url: '/readyz' })).json(), { status: 'ok' });
  });

  it('an unexpected exception is a 500 problem with a generic detail (the one 500: a bug)', async () => {
    api.info.statusError = new Error('secret internals /var/lib/ferry');
    try {
      const res = await call(api.app, { url: '/v1/status' }, true);
      const p = problemOf(res, 500, 'internal');
      assert.doesNotMatch(res.body, /secret internals/);
      assert.match(p.detail ?? '', /bug/);
    } finally {
      api.info.statusError = null;
    }
  });

  it('serves the OpenAPI document and the UI', async () => {
    const doc = (await call(api.app, { url: '/openapi.json' })).json<{ openapi: string; info: { title: string; version: string }; paths: Record<string, unknown>; components: { schemas: Record<string, unknown>; securitySchemes: Record<string, unknown> } }>();
    assert.equal(doc.info.title, 'Ferry');
    assert.equal(doc.info.version, '9.9.9-test');
    assert.match(doc.openapi, /^3\./);
    for (const p of ['/v1/vips', '/v1/vips/{name}', '/v1/vips/{name}/backends', '/v1/vips/{name}/backends/{address}', '/v1/policies', '/v1/policies/{name}', '/v1/state', '/v1/status', '/v1/stats', '/healthz', '/readyz']) {
      assert.ok(p in doc.paths, p);
    }
    for (const s of ['VipSpec', 'VipRecord', 'BackendSpec', 'PolicySpec', 'DesiredState', 'Problem', 'StateResult']) assert.ok(s in doc.components.schemas, s);
    assert.ok('bearer' in doc.components.securitySchemes);
    const ui = await call(api.app, { url: '/docs' });
    assert.equal(ui.statusCode, 200);
    assert.match(ui.body, /swagger/i);
  });

  it('api/openapi.json is up to date', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const want = await openApiText(version);
    let have = '';
    try {
      have = readFileSync('api/openapi.json', 'utf8');
    } catch {
      // missing: reported below
    }
    assert.ok(have === want, 'api/openapi.json is out of date: run `npm run build:ts && node scripts/gen-openapi.mjs` and commit it');
  });
});

describe('api: bearer tokens', () => {
  let api: Api;
  const lines: string[] = [];
  const TOKEN = 's3cret-token-value';
  before(async () => {
    const sink = new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(chunk.toString()); cb(); } });
    api = await makeApi({ auth: { tokens: ['other-token', TOKEN] }, logger: pino({ level: 'info' }, sink) });
  });
  after(async () => { await api.close(); });

  it('no token: 401 with WWW-Authenticate: Bearer, on every route but the probes', async () => {
    for (const url of ['/v1/vips', '/v1/status', '/openapi.json', '/docs', '/no/such/route']) {
      const r = await call(api.app, { url });
      problemOf(r, 401, 'unauthorized');
      assert.match(String(r.headers['www-authenticate']), /^Bearer/);
    }
    problemOf(await call(api.app, { method: 'POST', url: '/v1/vips', body: web }), 401);
    assert.equal(api.store.revision(), api.controller.appliedRevision);
    assert.equal((await call(api.app, { url: '/healthz' })).statusCode, 200);
    assert.equal((await call(api.app, { url: '/readyz' })).statusCode, 200);
  });

  it('a wrong token or scheme is 401', async () => {
    for (const h of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${TOKEN}`, 'Bearer', `${TOKEN}`]) {
      const r = await call(api.app, { url: '/v1/vips', headers: { authorization: h } });
      problemOf(r, 401);
      assert.match(String(r.headers['www-authenticate']), /invalid_token/);
    }
  });

  it('the right token works, and the audit names the token, not its value', async () => {
    const r = await call(api.app, { method: 'POST', url: '/v1/vips', headers: { authorization: `Bearer ${TOKEN}` }, body: web });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal((await call(api.app, { url: '/v1/vips', headers: { authorization: `bearer ${TOKEN}` } })).statusCode, 200);
    const audit = api.store.audit({ limit: 1 });
    assert.equal(audit[0]?.actor, 'api:token#2');
    assert.equal(audit[0]?.action, 'vip.create');
  });

  it('a read-only token reads (whoami says so) and is refused every write with 403, changing nothing', async () => {
    const ro = await makeApi({ auth: { tokens: [TOKEN, 'reader-token'], readOnly: ['reader-token'] } });
    try {
      const as = (t: string) => ({ authorization: `Bearer ${t}` });
      assert.deepEqual(JSON.parse((await call(ro.app, { url: '/v1/whoami', headers: as('reader-token') })).body), { actor: 'api:token#2', writes: false });
      assert.deepEqual(JSON.parse((await call(ro.app, { url: '/v1/whoami', headers: as(TOKEN) })).body), { actor: 'api:token#1', writes: true });
      assert.equal((await call(ro.app, { url: '/v1/vips', headers: as('reader-token') })).statusCode, 200);
      const before = ro.store.revision();
      for (const [method, url, body] of [['POST', '/v1/vips', web], ['PUT', '/v1/vips/web', web], ['DELETE', '/v1/vips/web', undefined], ['PUT', '/v1/state', { vips: [] }]] as const) {
        const r = await call(ro.app, { method, url, headers: as('reader-token'), ...(body === undefined ? {} : { body }) });
        const p = problemOf(r, 403, 'read-only-token');
        assert.match(p.detail ?? '', /may only read/);
      }
      assert.equal(ro.store.revision(), before);
      assert.equal((await call(ro.app, { method: 'POST', url: '/v1/vips', headers: as(TOKEN), body: web })).statusCode, 201);
    } finally {
      await ro.close();
    }
    // The unix socket (no auth) may write.
    const local = await makeApi();
    try {
      assert.deepEqual(JSON.parse((await call(local.app, { url: '/v1/whoami' })).body), { actor: 'api:local', writes: true });
    } finally {
      await local.close();
    }
  });

  it('the tokens file: a token per line, "read" or "write" after it; anything else names the line', () => {
    assert.deepEqual(parseTokens('# ops\nalpha\nbeta read\n\ngamma write\n', 'f'), { tokens: ['alpha', 'beta', 'gamma'], readOnly: ['beta'] });
    assert.throws(() => parseTokens('alpha\nbeta admin\n', '/etc/ferry/tokens'), /\/etc\/ferry\/tokens line 2: expected "<token>" or "<token> read\|write"/);
    assert.throws(() => parseTokens('a read extra\n', 'f'), /f line 1:/);
    assert.throws(() => parseTokens('# none\n', 'f'), /f: no tokens/);
  });

  it('the status page\'s files answer without a token (they hold no data)', async () => {
    const r = await call(api.app, { url: '/ui/' });
    assert.equal(r.statusCode, 200);
    assert.match(String(r.headers['content-type']), /text\/html/);
    assert.match(r.body, /<title>Ferry<\/title>/);
    assert.equal((await call(api.app, { url: '/ui' })).statusCode, 301);
    for (const f of ['app.js', 'app.css', 'uplot.min.js', 'uplot.min.css']) assert.equal((await call(api.app, { url: `/ui/${f}` })).statusCode, 200, f);
    problemOf(await call(api.app, { url: '/ui/nothing.js' }), 404, 'not-found');
    problemOf(await call(api.app, { url: '/ui/a/b' }), 401, 'unauthorized');
  });

  it('logs requests at info and never the token', () => {
    const text = lines.join('');
    assert.match(text, /"msg":"request completed"/);
    assert.match(text, /"level":30/);
    assert.doesNotMatch(text, new RegExp(TOKEN));
  });
});

describe('api: no request produces a 500', () => {
  let api: Api;
  before(async () => {
    api = await makeApi({ bodyLimit: 64 * 1024 });
    await call(api.app, { method: 'POST', url: '/v1/vips', body: web });
    await call(api.app, { method: 'POST', url: '/v1/vips/web/backends', body: { address: '198.19.0.1' } });
    await call(api.app, { method: 'POST', url: '/v1/policies', body: { name: 'office' } });
  });
  after(async () => { await api.close(); });

  const bodies: unknown[] = [
    'null', '[]', '"text"', '42', 'true', '{}', '{"a":', '\u0000', '{"name":"web","name":"x"}', '1e400',
    { name: 'web', address: '198.18.0.10', port: 1e400, protocol: 'tcp' },
    { name: '\u0000', address: '::ffff:198.18.0.1', port: -1, protocol: 'TCP' },
    { name: 'a'.repeat(200), address: '198.18.0.1 ', port: 80.5, protocol: 'tcp', allow: [null, 1, {}] },
    { name: 'dup', address: '198.18.0.20', port: 80, protocol: 'tcp', allow: ['10.0.0.0/8', '10.0.0.0/8'], deny: ['10.0.0.0/8'] },
    { name: 'ra', address: '198.18.0.21', port: 80, protocol: 'udp', rate_limit: { new_flows_per_sec: 1, burst: 0 }, policies: ['nope', 'nope'] },
    { address: '198.19.0.1', weight: 0, state: 'disabled' },
    { address: '198.19.0.1', weight: 1.5 },
    { vips: [{ ...web, backends: [{ address: '198.19.0.7' }, { address: '198.19.0.7' }] }] },
    { vips: [{ ...web, policies: ['missing'] }], policies: [{ name: 'p' }, { name: 'p' }] },
    { vips: [web, { ...web, name: 'web' }] },
    { vips: [{ ...web, backends: [{ address: '0.0.0.0' }] }] },
    { vips: null },
    { allow: ['0.0.0.0/0', '::/0'], deny: ['255.255.255.255/32'] },
    { a: { b: { c: { d: { e: { f: [[[[[[[[[[]]]]]]]]]] } } } } } },
  ];
  const urls: Array<[NonNullable<Parameters<typeof call>[1]['method']>, string]> = [
    ['POST', '/v1/vips'], ['PUT', '/v1/vips/web'], ['PUT', '/v1/vips/new'], ['DELETE', '/v1/vips/zzz'],
    ['POST', '/v1/vips/web/backends'], ['PUT', '/v1/vips/web/backends/198.19.0.1'], ['PUT', '/v1/vips/web/backends/2001:db8::1'],
    ['POST', '/v1/vips/none/backends'], ['POST', '/v1/policies'], ['PUT', '/v1/policies/office'],
    ['PUT', '/v1/state'], ['PUT', '/v1/state?dry_run=true'], ['PATCH', '/v1/vips/web'], ['POST', '/v1/status'],
  ];

  it('malformed and hostile bodies on every write route are answered 4xx problems', async () => {
    let n = 0;
    for (const [method, url] of urls) {
      for (const body of bodies) {
        const res = await call(api.app, { method, url, body });
        assert.ok(res.statusCode < 500 || res.statusCode === 503 || res.statusCode === 507, `${method} ${url} ${JSON.stringify(body)}: ${res.statusCode}`);
        n++;
      }
    }
    assert.ok(n > 300);
  });

  it('odd URLs, queries and headers too', async () => {
    for (const url of [
      '/v1/vips?limit=1&limit=2', '/v1/vips?cursor=%00', '/v1/vips?limit=1e3', '/v1/vips?limit=-0', '/v1/vips/%00',
      '/v1/vips/web/backends/%3A%3A', '/v1/vips/web/backends/::ffff:1.2.3.4', '/v1/vips/web/backends/1.2.3.4%25eth0',
      '/v1/vips/web/backends?limit=1&cursor=eyJrIjoidmlwIiwiYSI6IngifQ', '//v1//vips', '/v1/vips/', '/v1/state?dry_run=1',
      `/v1/vips/${'x'.repeat(5000)}`, '/v1/policies?cursor=' + 'A'.repeat(1024),
    ]) {
      await call(api.app, { url });
      await call(api.app, { url, headers: { 'if-none-match': '"unterminated', 'if-match': ',,,' } });
      await call(api.app, { method: 'DELETE', url, headers: { 'if-match': 'W/"x"' } });
    }
  });
});

describe('api: backup and restore', () => {
  let api: Api;
  before(async () => {
    api = await makeApi();
    await call(api.app, {
      method: 'PUT', url: '/v1/state',
      body: { policies: [{ name: 'office', allow: ['192.0.2.0/24'] }], vips: [{ ...web, policies: ['office'], backends: [{ address: '198.19.0.1' }, { address: '198.19.0.2', weight: 7 }] }] },
    });
  });
  after(async () => { await api.close(); });

  const raw = (method: 'GET' | 'POST', url: string, payload?: Buffer, type = 'application/vnd.sqlite3') =>
    api.app.inject({ method, url, ...(payload ? { payload, headers: { 'content-type': type } } : {}) });

  it('GET /v1/backup is the database file at a revision; POST /v1/restore brings that state back as a new revision', async () => {
    const exported = (await call(api.app, { url: '/v1/state' })).json();
    const b = await raw('GET', '/v1/backup');
    assert.equal(b.statusCode, 200, b.body);
    assert.equal(b.headers['content-type'], 'application/vnd.sqlite3');
    assert.equal(b.headers['x-ferry-revision'], String(api.store.revision()));
    const file = b.rawPayload;
    assert.equal(file.subarray(0, 16).toString('latin1'), 'SQLite format 3\0');
    // Change everything, then restore.
    await call(api.app, { method: 'PUT', url: '/v1/state', body: { vips: [{ ...web6, backends: [{ address: '2001:db8::1:1' }] }] } });
    const rev = api.store.revision();
    const r = await raw('POST', '/v1/restore', file);
    assert.equal(r.statusCode, 200, r.body);
    const body = r.json<StateBody>();
    assert.equal(body.revision, rev + 1, 'a restore moves the revision forward');
    assert.ok(body.changes.some((c) => c.op === 'delete' && c.name === 'web6'), JSON.stringify(body.changes));
    assert.deepEqual((await call(api.app, { url: '/v1/state' })).json(), exported);
    assert.deepEqual(api.applier.last?.vips.map((v) => v.name), ['web'], 'applied to the datapath');
  });

  it('refuses what is not a backup, and other content types, changing nothing', async () => {
    const rev = api.store.revision();
    const junk = await raw('POST', '/v1/restore', Buffer.from('definitely not sqlite'));
    assertProblemLike(junk.statusCode, junk.body, 422, 'not a usable Ferry backup');
    const json = await raw('POST', '/v1/restore', Buffer.from('{}'), 'application/json');
    assert.equal(json.statusCode, 415, json.body);
    const empty = await api.app.inject({ method: 'POST', url: '/v1/restore' });
    assert.ok(empty.statusCode === 415 || empty.statusCode === 422, empty.body);
    assert.equal(api.store.revision(), rev);
  });
});

function assertProblemLike(status: number, body: string, want: number, phrase: string): void {
  assert.equal(status, want, body);
  assert.ok(body.includes(phrase), body);
}
