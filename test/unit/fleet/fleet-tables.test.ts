/**
 * Comparing hosts' Maglev tables (GET /v1/maglev, ferryctl fleet status):
 * the checksum follows what a table is built from, never a host's ids, and
 * the comparison names every VIP that differs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compareTables } from '../../../src/cli/fleet.js';
import { buildMaglevTable, tableChecksum } from '../../../src/maglev/index.js';
import type { MaglevTablesView } from '../../../src/model/maglev.js';
import { call, makeApi } from '../../lib/api-fixture.js';

describe('fleet tables', () => {
  it('the checksum is equal exactly when the tables are', () => {
    const a = [
      { key: '10.0.0.1', weight: 1 },
      { key: '10.0.0.2', weight: 3 },
    ];
    const b = [
      { key: '10.0.0.2', weight: 3 },
      { key: '10.0.0.1', weight: 1 },
    ];
    assert.equal(tableChecksum(1021, 7, a), tableChecksum(1021, 7, b), 'order does not matter');
    // Two hosts give the same backends other ids: the tables (by address) are the same, and so are the checksums.
    const byAddress = (ids: number[]) => {
      const t = buildMaglevTable(
        a.map((x, i) => ({ ...x, id: ids[i]! })).sort((x, y) => x.id - y.id),
        1021,
        7,
      );
      const key = new Map(ids.map((id, i) => [id, a[i]!.key]));
      return Array.from(t, (id) => key.get(id)).join();
    };
    assert.equal(byAddress([0, 1]), byAddress([9, 4]));
    for (const [m, seed, list] of [
      [1031, 7, a],
      [1021, 8, a],
      [1021, 7, [a[0]!, { key: '10.0.0.2', weight: 2 }]],
      [1021, 7, [a[0]!]],
    ] as const) {
      assert.notEqual(tableChecksum(m, seed, list), tableChecksum(1021, 7, a), `${m} ${seed} ${JSON.stringify(list)}`);
    }
    assert.equal(tableChecksum(1021, 7, [...a, { key: '10.0.0.3', weight: 0 }]), tableChecksum(1021, 7, a), 'weight 0 has no slots');
  });

  it('compares hosts and names what differs', () => {
    const view = (seed: number, vips: Array<[string, string]>): MaglevTablesView => ({
      version: '1',
      revision: 3,
      applied_revision: 3,
      hash_seed: seed,
      vips: vips.map(([name, checksum]) => ({ name, address: '198.51.100.1', port: 80, protocol: 'tcp', m: 1021, backends: 2, checksum })),
    });
    const same = compareTables([
      {
        host: 'a',
        tables: view(1, [
          ['web', 'x'],
          ['dns', 'y'],
        ]),
        error: null,
      },
      {
        host: 'b',
        tables: view(1, [
          ['dns', 'y'],
          ['web', 'x'],
        ]),
        error: null,
      },
    ]);
    assert.equal(same.same, true);
    assert.deepEqual(same.differ, []);
    const r = compareTables([
      {
        host: 'a',
        tables: view(1, [
          ['web', 'x'],
          ['dns', 'y'],
        ]),
        error: null,
      },
      { host: 'b', tables: view(2, [['web', 'z']]), error: null },
      { host: 'c', tables: null, error: 'cannot reach ferryd' },
    ]);
    assert.equal(r.same, false);
    assert.equal(r.seeds_match, false);
    assert.deepEqual(r.differ, [
      { vip: 'dns', checksums: { a: 'y', b: null } },
      { vip: 'web', checksums: { a: 'x', b: 'z' } },
    ]);
  });

  it('GET /v1/maglev answers 404 from a daemon that does not report its tables', async () => {
    const api = await makeApi();
    try {
      const res = await call(api.app, { url: '/v1/maglev' });
      assert.equal(res.statusCode, 404);
    } finally {
      await api.close();
    }
  });
});
