/**
 * API fuzzing generated from api/openapi.json (fast-check): every operation
 * with path, query and header parameters and bodies drawn from its schema,
 * then broken (wrong types, missing and extra fields, boundary numbers,
 * huge strings and arrays), plus random JSON, deep and huge bodies and odd
 * encodings. Shared by test/unit/api/fuzz-api.test.ts and the soak.
 *
 * Invariants for every request: never a 5xx; every 4xx is an
 * application/problem+json body whose status matches; a refused request
 * (4xx) leaves the database files byte for byte as they were.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import fc from 'fast-check';
import { packageRoot } from '../../src/paths.js';
import type { Api } from './api-fixture.js';

type Schema = Record<string, unknown>;

interface Operation {
  method: string;
  path: string;
  params: Array<{ in: string; name: string; schema: Schema }>;
  body: Schema | null;
  /** Content type the body takes (JSON, or the backup's). */
  bodyType: string;
}

const doc = JSON.parse(readFileSync(join(packageRoot(), 'api', 'openapi.json'), 'utf8')) as {
  paths: Record<
    string,
    Record<string, { parameters?: Operation['params']; requestBody?: { content: Record<string, { schema?: Schema }> } }>
  >;
  components: { schemas: Record<string, Schema> };
};

/** Streams are left out: they answer by never ending. */
const STREAMING = new Set(['/v1/monitor']);

export const OPERATIONS: readonly Operation[] = Object.entries(doc.paths).flatMap(([path, ops]) =>
  STREAMING.has(path)
    ? []
    : Object.entries(ops).map(([method, op]): Operation => {
        const content = op.requestBody?.content ?? {};
        const [bodyType, media] = Object.entries(content)[0] ?? ['application/json', undefined];
        return {
          method: method.toUpperCase(),
          path,
          params: op.parameters ?? [],
          body: media?.schema ?? (op.requestBody ? {} : null),
          bodyType,
        };
      }),
);

function resolve(s: Schema): Schema {
  const ref = s.$ref;
  if (typeof ref !== 'string') return s;
  const name = ref.replace('#/components/schemas/', '');
  const target = doc.components.schemas[name];
  if (target === undefined) throw new Error(`api/openapi.json: no schema ${name}`);
  return resolve(target);
}

// ------------------------------------------------------------ values

/** Names, addresses and CIDRs that exist in the fuzzed store, so writes reach deep. */
export const KNOWN = { vip: 'web', vip6: 'web6', backend: '198.18.1.1', policy: 'p' };

const plausibleString = fc.oneof(
  fc.constantFrom(
    KNOWN.vip,
    KNOWN.vip6,
    KNOWN.policy,
    'new-name',
    '198.18.0.10',
    '198.18.1.1',
    '2001:db8::10',
    '198.18.0.0/24',
    '2001:db8::/64',
    '0.0.0.0',
    '255.255.255.255',
    '::',
    '::ffff:1.2.3.4',
    '010.0.0.1',
    '10.1',
    'fe80::1%eth0',
    'tcp',
    'udp',
    'active',
    'draining',
    'disabled',
    'http',
    'tcp',
    'none',
    '/healthz',
    '',
    ' ',
    '..',
    '%00',
    'a'.repeat(64),
    'a'.repeat(65),
  ),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
);

const boundaryNumber = fc.oneof(
  fc.constantFrom(
    -1,
    0,
    1,
    2,
    7,
    250,
    251,
    252,
    1000,
    65535,
    65536,
    65537,
    131071,
    2 ** 31,
    2 ** 32,
    2 ** 53,
    -(2 ** 53),
    1.5,
    -0.0,
    1e308,
    1e-308,
  ),
  fc.integer(),
  fc.double({ noNaN: true }),
);

/** A value for `schema`: usually of the right shape, sometimes not (weight `wrong`). */
function valueFor(schema: Schema, depth: number): fc.Arbitrary<unknown> {
  const s = resolve(schema);
  const wrong = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(null, '', [], {}, 'x'.repeat(10_000)));
  if (depth > 4) return wrong;
  const variants = [s.anyOf, s.oneOf, s.allOf].find(Array.isArray) as Schema[] | undefined;
  let right: fc.Arbitrary<unknown>;
  if (variants !== undefined && variants.length > 0) right = fc.oneof(...variants.map((v) => valueFor(v, depth + 1)));
  else if (Array.isArray(s.enum)) right = fc.oneof(fc.constantFrom(...(s.enum as unknown[])), plausibleString);
  else {
    const type = Array.isArray(s.type) ? (s.type as string[])[0] : s.type;
    switch (type) {
      case 'object':
        right = objectFor(s, depth);
        break;
      case 'array':
        right = fc.array(valueFor((s.items as Schema | undefined) ?? {}, depth + 1), { maxLength: 4 });
        break;
      case 'integer':
      case 'number':
        right = boundaryNumber;
        break;
      case 'boolean':
        right = fc.boolean();
        break;
      case 'string':
        right = plausibleString;
        break;
      case 'null':
        right = fc.constant(null);
        break;
      default:
        right = fc.jsonValue({ maxDepth: 2 });
    }
  }
  return fc.oneof({ weight: 6, arbitrary: right }, { weight: 1, arbitrary: wrong });
}

/** An object with some of its properties (the required ones most often), and now and then one it does not know. */
function objectFor(s: Schema, depth: number): fc.Arbitrary<unknown> {
  const props = (s.properties ?? {}) as Record<string, Schema>;
  const required = new Set((s.required ?? []) as string[]);
  const entries = Object.entries(props).map(([k, v]) =>
    fc
      .tuple(fc.constant(k), valueFor(v, depth + 1), fc.integer({ min: 0, max: 9 }))
      .map(([key, value, roll]) => ((required.has(key) ? roll < 9 : roll < 5) ? ([key, value] as const) : null)),
  );
  return fc
    .tuple(
      fc.tuple(...entries),
      fc.option(fc.tuple(fc.constantFrom('extra', '__proto__', 'constructor'), fc.jsonValue({ maxDepth: 1 })), { freq: 8 }),
    )
    .map(([pairs, extra]) => {
      const o: Record<string, unknown> = {};
      for (const p of pairs) if (p !== null) o[p[0]] = p[1];
      if (extra) Object.defineProperty(o, extra[0], { value: extra[1], enumerable: true, configurable: true, writable: true });
      return o;
    });
}

function paramValue(p: Operation['params'][number]): fc.Arbitrary<string> {
  if (p.in === 'path' && p.name === 'name') return fc.oneof(fc.constantFrom(KNOWN.vip, KNOWN.vip6, KNOWN.policy, 'nope'), plausibleString);
  if (p.in === 'path' && p.name === 'address')
    return fc.oneof(fc.constantFrom(KNOWN.backend, '198.18.1.2', '2001:db8:1::1'), plausibleString);
  if (p.in === 'header') return fc.oneof(fc.constantFrom('*', '"1"', 'W/"x"', '"', ''), plausibleString);
  return fc.oneof(
    valueFor(p.schema ?? {}, 3).map((v) => (typeof v === 'string' ? v : JSON.stringify(v))),
    plausibleString,
  );
}

// ----------------------------------------------------------- requests

export interface FuzzRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
}

const enc = (v: string) => encodeURIComponent(v);

const schemaRequest: fc.Arbitrary<FuzzRequest> = fc.constantFrom(...OPERATIONS).chain((op) =>
  fc
    .record({
      params: fc.tuple(...op.params.map((p) => fc.tuple(fc.constant(p), paramValue(p), fc.boolean()))),
      body: op.body === null ? fc.constant(undefined) : valueFor(op.body, 0),
      rawPath: fc.boolean(),
    })
    .map(({ params, body, rawPath }): FuzzRequest => {
      let url = op.path;
      const query: string[] = [];
      const headers: Record<string, string> = {};
      for (const [p, v, include] of params) {
        if (p.in === 'path') url = url.replace(`{${p.name}}`, rawPath ? v.replace(/[/?#\s]/g, '_') || '_' : enc(v));
        else if (p.in === 'query' && include) query.push(`${enc(p.name)}=${enc(v)}`);
        else if (p.in === 'header' && include) headers[p.name] = v.replace(/[^\x20-\x7e]/g, '');
      }
      if (query.length > 0) url += `?${query.join('&')}`;
      if (body === undefined) return { method: op.method, url, headers };
      if (op.bodyType !== 'application/json') {
        return { method: op.method, url, headers: { ...headers, 'content-type': op.bodyType }, payload: Buffer.from(JSON.stringify(body)) };
      }
      return { method: op.method, url, headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify(body) };
    }),
);

const writePaths = OPERATIONS.filter((o) => o.body !== null);

/** Bodies no schema describes: broken and odd encodings, deep and huge documents. */
const oddRequest: fc.Arbitrary<FuzzRequest> = fc
  .record({
    op: fc.constantFrom(...writePaths),
    kind: fc.constantFrom(
      'bad-utf8',
      'bom',
      'text',
      'utf16',
      'gzip',
      'deep-array',
      'deep-object',
      'huge',
      'truncated',
      'duplicate-keys',
      'big-numbers',
      'empty',
      'nul',
    ),
  })
  .map(({ op, kind }): FuzzRequest => {
    const url = op.path.replace('{name}', KNOWN.vip).replace('{address}', KNOWN.backend);
    const json = { 'content-type': 'application/json' };
    const vip = JSON.stringify({ name: 'odd', address: '198.18.9.9', port: 80, protocol: 'tcp' });
    switch (kind) {
      case 'bad-utf8':
        return {
          method: op.method,
          url,
          headers: json,
          payload: Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]),
        };
      case 'bom':
        return { method: op.method, url, headers: json, payload: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(vip)]) };
      case 'text':
        return { method: op.method, url, headers: { 'content-type': 'text/plain' }, payload: vip };
      case 'utf16':
        return {
          method: op.method,
          url,
          headers: { 'content-type': 'application/json; charset=utf-16' },
          payload: Buffer.from(vip, 'utf16le'),
        };
      case 'gzip':
        return { method: op.method, url, headers: { ...json, 'content-encoding': 'gzip' }, payload: vip };
      case 'deep-array':
        return { method: op.method, url, headers: json, payload: '['.repeat(100_000) + ']'.repeat(100_000) };
      case 'deep-object':
        return { method: op.method, url, headers: json, payload: '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000) };
      case 'huge':
        return { method: op.method, url, headers: json, payload: `{"name":"${'x'.repeat(40 << 20)}"}` };
      case 'truncated':
        return { method: op.method, url, headers: json, payload: vip.slice(0, 17) };
      case 'duplicate-keys':
        return {
          method: op.method,
          url,
          headers: json,
          payload: '{"name":"a","name":"web","address":"198.18.0.1","address":"::","port":80,"protocol":"tcp"}',
        };
      case 'big-numbers':
        return {
          method: op.method,
          url,
          headers: json,
          payload: '{"name":"big","address":"198.18.0.1","port":1e400,"protocol":"tcp","weight":-0}',
        };
      case 'empty':
        return { method: op.method, url, headers: json, payload: '' };
      default:
        return {
          method: op.method,
          url,
          headers: json,
          payload: '{"name":"a\\u0000b","address":"198.18.0.1\\u0000","port":80,"protocol":"tcp"}',
        };
    }
  });

const randomJson: fc.Arbitrary<FuzzRequest> = fc
  .record({ op: fc.constantFrom(...writePaths), body: fc.jsonValue({ maxDepth: 4 }) })
  .map(({ op, body }) => ({
    method: op.method,
    url: op.path.replace('{name}', KNOWN.vip).replace('{address}', KNOWN.backend),
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify(body) ?? 'null',
  }));

export const fuzzRequest: fc.Arbitrary<FuzzRequest> = fc.oneof(
  { weight: 16, arbitrary: schemaRequest },
  { weight: 3, arbitrary: randomJson },
  { weight: 1, arbitrary: oddRequest },
);

// ------------------------------------------------------------- checking

export interface ApiTally {
  requests: number;
  byStatus: Record<string, number>;
}

/** sha256 of the database and its WAL: what "changed nothing" means at the byte level. */
export function dbDigest(dbPath: string): string {
  const h = createHash('sha256');
  for (const f of [dbPath, `${dbPath}-wal`]) if (existsSync(f)) h.update(readFileSync(f));
  return h.digest('hex');
}

/**
 * Sends one request and checks the invariants; returns its status. With
 * dbPath null (requests in flight together) a refusal's bytes are not
 * compared: another request may have changed them meanwhile.
 */
export async function checkRequest(app: FastifyInstance, dbPath: string | null, r: FuzzRequest): Promise<number> {
  const before = dbPath === null ? null : dbDigest(dbPath);
  const res = await app.inject({
    method: r.method as 'GET',
    url: r.url,
    headers: r.headers,
    ...(r.payload === undefined ? {} : { payload: r.payload }),
  });
  const what = `${r.method} ${r.url.slice(0, 200)} ${JSON.stringify(r.headers)} ${String(r.payload ?? '').slice(0, 300)}`;
  assert.ok(res.statusCode < 500, `${what}: answered ${res.statusCode}: ${res.body.slice(0, 500)}`);
  if (res.statusCode >= 400) {
    assert.match(String(res.headers['content-type'] ?? ''), /^application\/problem\+json/, `${what}: a problem body`);
    const body = JSON.parse(res.body) as { status?: number; title?: string };
    assert.equal(body.status, res.statusCode, `${what}: the problem's status`);
    assert.equal(typeof body.title, 'string', `${what}: the problem's title`);
    if (dbPath !== null) assert.equal(dbDigest(dbPath), before, `${what}: refused (${res.statusCode}) yet the database changed`);
  }
  return res.statusCode;
}

/** Runs `runs` generated requests from `seed` against the app; returns the tally. */
export async function fuzzApi(app: FastifyInstance, dbPath: string, o: { seed: number; runs: number }): Promise<ApiTally> {
  const tally: ApiTally = { requests: 0, byStatus: {} };
  await fc.assert(
    fc.asyncProperty(fuzzRequest, async (r) => {
      const status = await checkRequest(app, dbPath, r);
      tally.requests++;
      tally.byStatus[status] = (tally.byStatus[status] ?? 0) + 1;
    }),
    { seed: o.seed, numRuns: o.runs, endOnFailure: true },
  );
  return tally;
}

/** The resources KNOWN names, so generated writes reach past "not found". */
export async function seedApi(api: Api): Promise<void> {
  const ok = (r: { statusCode: number; body: string }) => assert.ok(r.statusCode < 300, r.body);
  const json = { 'content-type': 'application/json' };
  ok(
    await api.app.inject({
      method: 'POST',
      url: '/v1/policies',
      headers: json,
      payload: JSON.stringify({ name: KNOWN.policy, deny: ['192.0.2.0/24'] }),
    }),
  );
  ok(
    await api.app.inject({
      method: 'POST',
      url: '/v1/vips',
      headers: json,
      payload: JSON.stringify({ name: KNOWN.vip, address: '198.18.0.10', port: 80, protocol: 'tcp', policies: [KNOWN.policy] }),
    }),
  );
  ok(
    await api.app.inject({
      method: 'POST',
      url: `/v1/vips/${KNOWN.vip}/backends`,
      headers: json,
      payload: JSON.stringify({ address: KNOWN.backend }),
    }),
  );
  ok(
    await api.app.inject({
      method: 'POST',
      url: '/v1/vips',
      headers: json,
      payload: JSON.stringify({ name: KNOWN.vip6, address: '2001:db8::10', port: 443, protocol: 'tcp' }),
    }),
  );
}
