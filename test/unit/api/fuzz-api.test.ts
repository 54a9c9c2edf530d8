/**
 * The REST API under fuzzed requests generated from api/openapi.json
 * (test/lib/api-fuzz.ts, a fixed seed), and under concurrent conflicting
 * writes: never a 5xx, every refusal a problem+json, and a refused request
 * leaves the database byte for byte as it was. `npm run soak` runs more.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planState } from '../../../src/reconcile/plan.js';
import { KNOWN, OPERATIONS, checkRequest, fuzzApi, seedApi, type FuzzRequest } from '../../lib/api-fuzz.js';
import { makeApi, type Api } from '../../lib/api-fixture.js';

/** Requests in CI; FERRY_FUZZ_API_RUNS raises it locally. */
const RUNS = Math.max(3000, Number(process.env.FERRY_FUZZ_API_RUNS ?? 0));

describe('api fuzzing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-fuzz-api-'));
  const dbPath = join(dir, 'ferry.db');
  let api: Api;
  before(async () => {
    api = await makeApi({ dbPath });
    await seedApi(api);
  });
  after(async () => {
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('covers every operation of api/openapi.json but the stream', () => {
    assert.ok(OPERATIONS.length >= 25, `${OPERATIONS.length} operations`);
    assert.ok(OPERATIONS.some((o) => o.method === 'POST' && o.path === '/v1/restore'));
  });

  it(`answers ${RUNS} generated requests without a 5xx, refusals changing nothing`, async () => {
    const t = await fuzzApi(api.app, dbPath, { seed: 0x5eed_a1, runs: RUNS });
    console.log(`# api fuzzing: ${JSON.stringify(t)}`);
    assert.equal(t.requests, RUNS);
    // The generator must reach acceptance and each kind of refusal, or the invariants went unexercised.
    for (const s of ['200', '201', '400', '404', '409', '422']) assert.ok((t.byStatus[s] ?? 0) > 0, `no ${s}: ${JSON.stringify(t.byStatus)}`);
  });

  it('concurrent conflicting writes: no 5xx, and the datapath ends with the committed state', async () => {
    const json = { 'content-type': 'application/json' };
    const reqs: FuzzRequest[] = [];
    for (let i = 0; i < 60; i++) {
      const addr = `198.18.5.${i % 6}`;
      reqs.push({ method: 'PUT', url: `/v1/vips/${KNOWN.vip}/backends/${addr}`, headers: json, payload: JSON.stringify({ address: addr, weight: 1 + (i % 5) }) });
      reqs.push({ method: 'DELETE', url: `/v1/vips/${KNOWN.vip}/backends/${addr}`, headers: {} });
      reqs.push({ method: 'POST', url: '/v1/vips', headers: json, payload: JSON.stringify({ name: `race${i % 4}`, address: `198.18.6.${i % 4}`, port: 80, protocol: 'udp' }) });
      reqs.push({ method: 'DELETE', url: `/v1/vips/race${(i + 1) % 4}`, headers: {} });
      reqs.push({ method: 'PUT', url: `/v1/vips/${KNOWN.vip6}`, headers: { ...json, 'if-match': '"1"' }, payload: JSON.stringify({ name: KNOWN.vip6, address: '2001:db8::10', port: 443 + (i % 3), protocol: 'tcp' }) });
    }
    const statuses = await Promise.all(reqs.map((r) => checkRequest(api.app, null, r).catch((e: unknown) => e)));
    for (const s of statuses) assert.equal(typeof s, 'number', String(s));
    assert.ok(statuses.some((s) => s === 404 || s === 409 || s === 412), 'the writes conflicted');
    const committed = api.store.read((tx) => tx.state());
    assert.equal(api.controller.appliedRevision, committed.revision);
    assert.deepEqual(api.applier.last, planState(committed), 'the last applied state is the committed one');
  });
});
