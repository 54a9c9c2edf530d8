/**
 * The store (src/store) and semantic validation (src/model/validate.ts):
 * every StoreTx/Store method, every validation message, revision and audit
 * rules, pagination, ownership, datapath id allocation with tombstones,
 * apply diffs, backup, migrations, and durability under kill -9.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { CapacityError, ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../../src/model/errors.js';
import type { BackendSpec, DesiredState, PolicySpec, VipSpec } from '../../../src/model/types.js';
import { backendAddressErrors, validateDesiredState, vipAddressErrors } from '../../../src/model/validate.js';
import { parseIp, type Ip } from '../../../src/net/addr.js';
import { MIGRATIONS, SchemaTooNewError, latestVersion, migrate, type Migration } from '../../../src/store/migrations.js';
import { ChangeLog, type LogEntry } from '../../../src/store/changelog.js';
import { openStore, type StoreOptions } from '../../../src/store/store.js';
import { Tx } from '../../../src/store/tx.js';
import { mulberry32 } from '../../lib/rng.js';
import type { Store, StoreSnapshot, StoreTx } from '../../../src/store/types.js';

// ------------------------------------------------------------------ helpers

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ferry-store-'));
  dirs.push(d);
  return d;
}

/** A fake clock so tombstone expiry is deterministic. */
function clock(start = 1_700_000_000_000): { now: () => number; advance(ms: number): void; value(): number } {
  let t = start;
  return {
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
    value: () => t,
  };
}

function mem(opts: Partial<StoreOptions> = {}): Store {
  return openStore(':memory:', { maxVips: 64, maxBackends: 256, ...opts });
}

function vip(name: string, over: Partial<VipSpec> = {}): VipSpec {
  return { name, address: '198.18.0.1', port: 80, protocol: 'tcp', ...over };
}

/**
 * Version 8 undone: the backends table rebuilt as version 7 had it, with
 * its index and the triggers naming it, each from a version-7 database's
 * own text (so the schema compares equal, word for word).
 */
function undoV8(): string {
  const v7 = new Database(':memory:');
  migrate(
    v7,
    ':memory:',
    MIGRATIONS.filter((m) => m.version <= 7),
  );
  const sql = (name: string): string => v7.prepare<[string], string>('SELECT sql FROM sqlite_schema WHERE name = ?').pluck().get(name)!;
  const cols =
    'id, vip_id, address, sort_key, weight, state, owner, created_revision, updated_revision, dp_id, dp_gen, health_check, port, host';
  const script = [
    'DROP TRIGGER backends_free_id',
    'DROP TRIGGER tombstones_free_id',
    'DROP INDEX backends_order',
    'ALTER TABLE backends RENAME TO backends_v8',
    sql('backends'),
    `INSERT INTO backends (${cols}) SELECT ${cols} FROM backends_v8`,
    'DROP TABLE backends_v8',
    sql('backends_order'),
    sql('backends_free_id'),
    sql('tombstones_free_id'),
  ];
  v7.close();
  return `${script.join(';\n')};`;
}

/** What each migration added, undone: a database as an older version left it. */
const UNDO: Record<number, string> = {
  8: undoV8(),
  7: [
    'CREATE TRIGGER vips_take_id AFTER INSERT ON vips BEGIN\n  UPDATE vip_ids SET in_use = 1 WHERE dp_id = NEW.dp_id;\nEND;',
    'CREATE TRIGGER backends_take_id AFTER INSERT ON backends BEGIN\n  UPDATE backend_ids SET in_use = 1 WHERE dp_id = NEW.dp_id;\nEND;',
  ].join('\n'),
  6: 'DROP TABLE fleet_mark',
  5: 'ALTER TABLE vips DROP COLUMN forwarding; ALTER TABLE tombstones DROP COLUMN port; ALTER TABLE tombstones DROP COLUMN host',
  4: 'ALTER TABLE backends DROP COLUMN port; ALTER TABLE backends DROP COLUMN host',
  3: 'DROP INDEX vips_owner; DROP INDEX policies_owner',
};

function schemaOf(d: Database.Database): string[] {
  return d
    .prepare<[], string>("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name != 'sqlite_sequence' ORDER BY name")
    .pluck()
    .all();
}

/** Takes a database back to `version` and checks it is exactly what that version built. */
function downgrade(db: Database.Database, version: number): void {
  for (let v = latestVersion(); v > version; v--) db.exec(UNDO[v]!);
  db.pragma(`user_version = ${version}`);
  const older = new Database(':memory:');
  migrate(
    older,
    ':memory:',
    MIGRATIONS.filter((m) => m.version <= version),
  );
  assert.deepEqual(schemaOf(db), schemaOf(older), `the database is exactly what version ${version} built`);
  older.close();
}

/**
 * A store file written with `state`, taken back to `version` and opened
 * again (so migrated up): the store, and its snapshot before.
 */
function upgradedFrom(version: number, state: DesiredState): { store: Store; before: StoreSnapshot } {
  const path = join(tmpDir(), `v${version}.db`);
  const opts = { maxVips: 64, maxBackends: 256, now: () => 1_700_000_000_000 };
  const first = openStore(path, opts);
  w(first, (tx) => tx.replaceState(state, 0));
  const before = r(first, (tx) => tx.snapshot());
  first.close();
  const db = new Database(path);
  downgrade(db, version);
  db.close();
  return { store: openStore(path, opts), before };
}

/** Runs one change. */
function w<T>(store: Store, fn: (tx: StoreTx) => T): T {
  return store.write('test', 'test', fn).result;
}

function r<T>(store: Store, fn: (tx: StoreTx) => T): T {
  return store.read(fn);
}

/** Deliberately ill-typed input (the store must not trust its callers' types). */
function bad<T>(v: unknown): T {
  return v as T;
}

/** Asserts a ValidationError with an error on `field` whose reason contains `phrase`. */
function throwsField(fn: () => unknown, field: string, phrase: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ValidationError, `expected ValidationError, got ${String(err)}`);
    assert.equal(err.status, 422);
    const e = err.errors.find((x) => x.field === field);
    assert.ok(e !== undefined, `no error on ${field}: ${JSON.stringify(err.errors)}`);
    assert.ok(e.reason.includes(phrase), `reason for ${field} ${JSON.stringify(e.reason)} lacks ${JSON.stringify(phrase)}`);
    return true;
  });
}

function throwsKind(fn: () => unknown, kind: new (...a: never[]) => Error, phrase: string, status?: number): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof kind, `expected ${kind.name}, got ${String(err)}`);
    assert.ok(err.message.includes(phrase), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(phrase)}`);
    if (status !== undefined) assert.equal((err as unknown as { status: number }).status, status);
    return true;
  });
}

// ------------------------------------------------------------- open/migrate

describe('open and migrations', () => {
  it('creates a WAL database at the latest schema version with a hash seed', () => {
    const path = join(tmpDir(), 'ferry.db');
    const store = openStore(path, { maxVips: 8, maxBackends: 8 });
    const snap = r(store, (tx) => tx.snapshot());
    assert.equal(snap.revision, 0);
    assert.ok(Number.isInteger(snap.hash_seed) && snap.hash_seed >= 0 && snap.hash_seed < 2 ** 32);
    store.close();
    const db = new Database(path, { readonly: true });
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('user_version', { simple: true }), latestVersion());
    db.close();
  });

  it('reopens idempotently: same revision, seed and data, no migration re-run', () => {
    const path = join(tmpDir(), 'ferry.db');
    let store = openStore(path, { maxVips: 8, maxBackends: 8 });
    w(store, (tx) => tx.createVip(vip('web')));
    const before = r(store, (tx) => tx.snapshot());
    store.close();
    store = openStore(path, { maxVips: 8, maxBackends: 8 });
    assert.deepEqual(
      r(store, (tx) => tx.snapshot()),
      before,
    );
    store.close();
  });

  it('refuses a database newer than the code, naming both versions and the file', () => {
    const path = join(tmpDir(), 'future.db');
    openStore(path, { maxVips: 8, maxBackends: 8 }).close();
    const db = new Database(path);
    db.pragma('user_version = 99');
    db.close();
    assert.throws(
      () => openStore(path, { maxVips: 8, maxBackends: 8 }),
      (err: unknown) => {
        assert.ok(err instanceof SchemaTooNewError);
        assert.match(err.message, /version 99/);
        assert.match(err.message, new RegExp(`version ${latestVersion()}\\b`));
        assert.ok(err.message.includes(path));
        return true;
      },
    );
  });

  it('applies only pending migrations, in one transaction', () => {
    const path = join(tmpDir(), 'v1.db');
    // Build a v1 database, then migrate it with a (test-only) v2.
    const db = new Database(path);
    // Only the shipped v1: the test's own v2 and v3 stand in for later versions.
    const v1 = MIGRATIONS.filter((m) => m.version === 1);
    assert.deepEqual(migrate(db, path, v1), [1]);
    const v2: Migration = {
      version: 2,
      description: 'test column',
      up: (d) => {
        d.exec('ALTER TABLE vips ADD COLUMN note TEXT');
      },
    };
    assert.deepEqual(migrate(db, path, [...v1, v2]), [2]);
    assert.equal(db.pragma('user_version', { simple: true }), 2);
    assert.deepEqual(migrate(db, path, [...v1, v2]), []);
    // A failing migration leaves the version and schema as they were.
    const v3: Migration = {
      version: 3,
      description: 'fails',
      up: (d) => {
        d.exec('CREATE TABLE t3 (x)');
        throw new Error('boom');
      },
    };
    assert.throws(() => migrate(db, path, [...v1, v2, v3]), /boom/);
    assert.equal(db.pragma('user_version', { simple: true }), 2);
    const t3 = db.prepare<[], number>("SELECT COUNT(*) FROM sqlite_schema WHERE name = 't3'").pluck().get();
    assert.equal(t3, 0);
    db.close();
  });

  it('upgrades a version 2 database holding rows to version 3: owner indexes added, rows and revision kept', () => {
    const path = join(tmpDir(), 'v2.db');
    const opts = { maxVips: 64, maxBackends: 256, now: () => 1_700_000_000_000 };
    // Rows written by the store, in a database whose schema is then exactly what version 2 built.
    let store = openStore(path, opts);
    w(store, (tx) => {
      tx.replaceState(
        { vips: [{ ...vip('api'), backends: [{ address: '10.0.0.1' }] }], policies: [{ name: 'p', deny: ['192.0.2.0/24'] }] },
        0,
      );
      tx.replaceState(
        {
          vips: [{ ...vip('k8s', { port: 81, policies: ['kr'] }), backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2' }] }],
          policies: [{ name: 'kr', allow: ['10.0.0.0/8'] }],
        },
        0,
        'kubernetes:ns/k8s',
      );
    });
    w(store, (tx) => tx.deleteBackend('k8s', '10.1.0.2', 30, 'kubernetes:ns/k8s'));
    const before = r(store, (tx) => tx.snapshot());
    const audit = store.audit();
    store.close();
    let db = new Database(path);
    downgrade(db, 2);
    // Version-2 code refuses it once upgraded; before, it is its own version.
    assert.deepEqual(
      migrate(
        db,
        path,
        MIGRATIONS.filter((m) => m.version <= 2),
      ),
      [],
    );
    db.close();

    store = openStore(path, opts);
    assert.deepEqual(
      r(store, (tx) => tx.snapshot()),
      before,
    );
    assert.deepEqual(store.audit(), audit);
    assert.deepEqual(
      r(store, (tx) => tx.exportState('kubernetes:ns/k8s').vips.map((v) => v.name)),
      ['k8s'],
    );
    assert.deepEqual(
      r(store, (tx) => tx.exportState().policies?.map((p) => p.name)),
      ['p'],
    );
    // Writes go on from the same revision, owner-scoped as before.
    assert.equal(store.write('k', 'sync', (tx) => tx.replaceState({ vips: [] }, 0, 'kubernetes:ns/k8s')).revision, 3);
    assert.deepEqual(
      r(store, (tx) => tx.listVips().items.map((v) => v.name)),
      ['api'],
    );
    store.close();

    db = new Database(path);
    assert.equal(db.pragma('user_version', { simple: true }), latestVersion());
    const plan = (sql: string): string =>
      db
        .prepare<[null], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
        .all(null)
        .map((row) => row.detail)
        .join('; ');
    assert.match(plan('SELECT * FROM vips WHERE owner IS ? ORDER BY name'), /USING INDEX vips_owner \(owner=\?\)/);
    assert.doesNotMatch(plan('SELECT * FROM vips WHERE owner IS ? ORDER BY name'), /TEMP B-TREE/);
    assert.match(plan('SELECT * FROM policies WHERE owner IS ? ORDER BY name'), /USING INDEX policies_owner \(owner=\?\)/);
    assert.throws(
      () =>
        migrate(
          db,
          path,
          MIGRATIONS.filter((m) => m.version <= 2),
        ),
      (err: unknown) => {
        assert.ok(err instanceof SchemaTooNewError);
        assert.deepEqual([err.found, err.known], [latestVersion(), 2]);
        return true;
      },
    );
    assert.equal(db.pragma('user_version', { simple: true }), latestVersion());
    db.close();
  });

  it('upgrades a version 3 database to version 4: backends keep their rows and get port 0, no host', () => {
    const { store, before } = upgradedFrom(3, { vips: [{ ...vip('api'), backends: [{ address: '10.0.0.1', weight: 7 }] }] });
    assert.deepEqual(
      r(store, (tx) => tx.snapshot()),
      before,
      'records unchanged: no port, no host',
    );
    const b = w(store, (tx) => tx.createBackend('api', { address: '10.0.0.2', port: 8080, host: 'local' }));
    assert.deepEqual([b.port, b.host], [8080, 'local']);
    store.close();
  });

  it('upgrades a version 4 database to version 5: VIPs keep their rows and forward by direct return', () => {
    const { store, before } = upgradedFrom(4, {
      vips: [{ ...vip('api'), backends: [{ address: '10.0.0.1', port: 8080, host: 'local' }] }],
    });
    assert.deepEqual(
      r(store, (tx) => tx.snapshot()),
      before,
      'records unchanged: no forwarding (dsr)',
    );
    const v = w(store, (tx) => tx.createVip({ ...vip('nat'), address: '198.51.100.9', forwarding: 'snat' }));
    assert.equal(v.forwarding, 'snat');
    const b = w(store, (tx) => tx.createBackend('nat', { address: '10.0.0.2', port: 8080 }));
    assert.deepEqual([b.port, b.host], [8080, undefined], 'source NAT translates the port here: no host needed');
    store.close();
  });

  it('upgrades a version 6 database to version 7: ids in use stay exact without the insert triggers', () => {
    const c = clock();
    const { store, before } = upgradedFrom(6, {
      vips: [
        { ...vip('a', { port: 1 }), backends: [{ address: '10.0.0.1' }, { address: '10.0.0.2' }] },
        { ...vip('b', { port: 2 }), backends: [{ address: '10.0.1.1' }] },
      ],
    });
    assert.deepEqual(
      r(store, (tx) => tx.snapshot()),
      before,
    );
    const path = join(dirs.at(-1)!, 'v6.db');
    const raw = new Database(path, { readonly: true });
    const triggers = raw.prepare<[], string>("SELECT name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name").pluck().all();
    assert.deepEqual(triggers, ['backends_free_id', 'tombstones_free_id', 'tombstones_take_id', 'vips_free_id']);
    /** Every id marked in use is held by a row (a VIP; a backend or a tombstone), and every held id is marked. */
    const exact = (what: string): void => {
      const col = (sql: string): number[] => raw.prepare<[], number>(sql).pluck().all();
      assert.deepEqual(
        col('SELECT dp_id FROM vip_ids WHERE in_use = 1 ORDER BY dp_id'),
        col('SELECT dp_id FROM vips ORDER BY dp_id'),
        `${what}: VIP ids`,
      );
      assert.deepEqual(
        col('SELECT dp_id FROM backend_ids WHERE in_use = 1 ORDER BY dp_id'),
        col('SELECT dp_id FROM backends UNION SELECT dp_id FROM tombstones ORDER BY dp_id'),
        `${what}: backend ids`,
      );
    };
    exact('upgraded');
    w(store, (tx) => tx.deleteBackend('a', '10.0.0.1', 30));
    exact('a backend draining');
    w(store, (tx) => tx.deleteBackend('a', '10.0.0.2', 0));
    exact('a backend gone at once');
    w(store, (tx) => tx.createBackend('b', { address: '10.0.1.2' }));
    exact('a free id reused');
    w(store, (tx) => tx.createBackend('a', { address: '10.0.0.1' }));
    exact('a tombstone revived');
    w(store, (tx) => tx.deleteVip('b'));
    exact('a VIP deleted with its backends (cascade)');
    w(store, (tx) =>
      tx.replaceState({ vips: [{ ...vip('c', { port: 3 }), backends: [{ address: '10.0.2.1' }, { address: '10.0.2.2' }] }] }, 0),
    );
    exact('a whole state replaced');
    w(store, (tx) => tx.deleteBackend('c', '10.0.2.1', 30));
    store.write('t', 'expire', (tx) => tx.expireTombstones(c.value() + 31_000));
    exact('a tombstone expired');
    // A write that fails rolls its allocations back with it.
    assert.throws(() =>
      store.write('t', 'fails', (tx) => {
        tx.createBackend('c', { address: '10.0.2.9' });
        tx.createVip(vip('d', { port: 4 }));
        throw new Error('boom');
      }),
    );
    exact('a failed write');
    raw.close();
    store.close();
  });

  it('upgrades a version 7 database to version 8: backends keep their rows and ids, one unique index of addresses', () => {
    const { store, before } = upgradedFrom(7, {
      vips: [
        { ...vip('a', { port: 1 }), backends: [{ address: '10.0.0.2', weight: 3 }, { address: '10.0.0.10' }, { address: '10.0.0.1' }] },
        { ...vip('b', { port: 2, address: '2001:db8::b' }), backends: [{ address: '2001:db8::1', port: 8080, host: 'local' }] },
      ],
    });
    assert.deepEqual(
      r(store, (tx) => tx.snapshot()),
      before,
      'rows, ids, generations and order unchanged',
    );
    const raw = new Database(join(dirs.at(-1)!, 'v7.db'), { readonly: true });
    const indexes = raw
      .prepare<[], string>("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'backends' ORDER BY name")
      .pluck()
      .all();
    assert.deepEqual(indexes, ['backends_order', 'sqlite_autoindex_backends_1'], 'backends_order and dp_id UNIQUE only');
    const plan = raw
      .prepare<[null], { detail: string }>('EXPLAIN QUERY PLAN SELECT id FROM backends WHERE vip_id = 1 AND sort_key = ?')
      .all(null)
      .map((x) => x.detail)
      .join('; ');
    assert.match(plan, /USING (COVERING )?INDEX backends_order \(vip_id=\? AND sort_key=\?\)/);
    // Found by address (through the sort key), changed, refused twice, deleted: the id goes back.
    assert.equal(
      r(store, (tx) => tx.getBackend('a', '10.0.0.10').weight),
      100,
    );
    assert.equal(w(store, (tx) => tx.putBackend('a', { address: '10.0.0.10', weight: 9 })).created, false);
    assert.equal(
      r(store, (tx) => tx.getBackend('b', '2001:DB8::1').port),
      8080,
    );
    throwsKind(() => w(store, (tx) => tx.createBackend('a', { address: '10.0.0.1' })), ConflictError, 'already exists', 409);
    w(store, (tx) => tx.deleteBackend('a', '10.0.0.1', 0));
    const inUse = raw.prepare<[], number>('SELECT COUNT(*) FROM backend_ids WHERE in_use = 1').pluck().get();
    assert.equal(inUse, 3, 'the deleted backend freed its id (the delete trigger was made again)');
    assert.deepEqual(
      r(store, (tx) => tx.listBackends('a').items.map((b) => [b.address, b.weight])),
      [
        ['10.0.0.2', 3],
        ['10.0.0.10', 9],
      ],
      'numeric order',
    );
    raw.close();
    store.close();
  });

  it('refuses a foreign SQLite database and a file that is not a database', () => {
    const dir = tmpDir();
    const foreign = join(dir, 'foreign.db');
    const db = new Database(foreign);
    db.exec('CREATE TABLE users (id INTEGER)');
    db.close();
    throwsKind(() => openStore(foreign, { maxVips: 8, maxBackends: 8 }), Error, 'not a Ferry database');
    const junk = join(dir, 'junk.db');
    writeFileSync(junk, 'this is not sqlite at all, not even close'.repeat(100));
    throwsKind(() => openStore(junk, { maxVips: 8, maxBackends: 8 }), Error, junk);
  });

  it('rejects nonsensical capacities', () => {
    assert.throws(() => openStore(':memory:', { maxVips: 0, maxBackends: 8 }), /maxVips/);
    assert.throws(() => openStore(':memory:', { maxVips: 8, maxBackends: 1.5 }), /maxBackends/);
  });
});

// ---------------------------------------------------------------------- VIPs

describe('VIPs', () => {
  it('creates with defaults filled and canonical addresses, and gets by name', () => {
    const store = mem();
    const rec = w(store, (tx) => tx.createVip(vip('v6', { address: '2001:0DB8:0:0::0:1', allow: ['2001:DB8::/32', '2001:db8:1::5'] })));
    assert.deepEqual(rec, {
      name: 'v6',
      address: '2001:db8::1',
      port: 80,
      protocol: 'tcp',
      encap: 'ipip',
      allow: ['2001:db8::/32', '2001:db8:1::5/128'],
      deny: [],
      policies: [],
      rate_limit: null,
      maglev_m: null,
      source_affinity: false,
      backend_count: 0,
      owner: null,
      created_revision: 1,
      updated_revision: 1,
    });
    assert.deepEqual(
      r(store, (tx) => tx.getVip('v6')),
      rec,
    );
    throwsKind(() => r(store, (tx) => tx.getVip('nope')), NotFoundError, 'vip "nope" not found', 404);
  });

  it('stores every field', () => {
    const store = mem();
    w(store, (tx) => tx.createPolicy({ name: 'corp', allow: ['10.0.0.0/8'] }));
    const spec: VipSpec = {
      name: 'full',
      address: '198.18.1.1',
      port: 0,
      protocol: 'udp',
      encap: 'ipip',
      allow: ['192.0.2.0/24'],
      deny: ['192.0.2.128/25'],
      policies: ['corp'],
      rate_limit: { new_flows_per_sec: 1000, burst: 50 },
      maglev_m: 65537,
      source_affinity: true,
    };
    const rec = w(store, (tx) => tx.createVip(spec));
    const { backend_count: _c, owner: _o, created_revision: _cr, updated_revision: _ur, ...rest } = rec;
    assert.deepEqual(rest, spec);
  });

  it('refuses a duplicate name and a taken endpoint, naming the other VIP', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('web')));
    throwsKind(() => w(store, (tx) => tx.createVip(vip('web', { port: 443 }))), ConflictError, 'vip "web" already exists', 409);
    throwsKind(() => w(store, (tx) => tx.createVip(vip('web2'))), ConflictError, 'already used by vip "web"');
    w(store, (tx) => tx.createVip(vip('other', { port: 443 })));
    throwsKind(() => w(store, (tx) => tx.putVip(vip('other'))), ConflictError, 'already used by vip "web"');
  });

  it('lets an all-port VIP, other ports and the other protocol share an address', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('all', { port: 0 }));
      tx.createVip(vip('http', { port: 80 }));
      tx.createVip(vip('dns', { port: 80, protocol: 'udp' }));
    });
    throwsKind(() => w(store, (tx) => tx.createVip(vip('all2', { port: 0 }))), ConflictError, 'all ports/tcp is already used by vip "all"');
    assert.equal(
      r(store, (tx) => tx.listVips().items.length),
      3,
    );
  });

  it('PUT creates, updates, and is a no-op for identical content (any spelling)', () => {
    const store = mem();
    const a = store.write('t', 'put', (tx) => tx.putVip(vip('web', { address: '2001:db8::1' })));
    assert.equal(a.result.created, true);
    assert.equal(a.revision, 1);
    const same = store.write('t', 'put', (tx) => tx.putVip(vip('web', { address: '2001:DB8:0::1', encap: 'ipip', allow: [] })));
    assert.equal(same.result.created, false);
    assert.equal(same.revision, 1);
    assert.deepEqual(same.result.record, a.result.record);
    const upd = store.write('t', 'put', (tx) => tx.putVip(vip('web', { address: '2001:db8::1', port: 443 })));
    assert.equal(upd.revision, 2);
    assert.equal(upd.result.record.port, 443);
    assert.equal(upd.result.record.created_revision, 1);
    assert.equal(upd.result.record.updated_revision, 2);
  });

  it('deletes a VIP with its backends', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createBackend('web', { address: '10.0.0.1' });
    });
    const gone = w(store, (tx) => tx.deleteVip('web'));
    assert.equal(gone.backend_count, 1);
    const snap = r(store, (tx) => tx.snapshot());
    assert.deepEqual([snap.vips.length, snap.backends.length], [0, 0]);
    throwsKind(() => w(store, (tx) => tx.deleteVip('web')), NotFoundError, 'not found');
  });

  it('replaces policy references on update, keeping their order', () => {
    const store = mem();
    w(store, (tx) => {
      for (const n of ['a', 'b', 'c']) tx.createPolicy({ name: n, deny: ['192.0.2.0/24'] });
      tx.createVip(vip('web', { policies: ['b', 'a'] }));
    });
    assert.deepEqual(
      r(store, (tx) => tx.getVip('web').policies),
      ['b', 'a'],
    );
    w(store, (tx) => tx.putVip(vip('web', { policies: ['c', 'b'] })));
    assert.deepEqual(
      r(store, (tx) => tx.getVip('web').policies),
      ['c', 'b'],
    );
    w(store, (tx) => tx.deletePolicy('a'));
  });
});

// ---------------------------------------------------------------- validation

describe('validation', () => {
  const vipCases: Array<[string, Partial<VipSpec>, string, string]> = [
    ['uppercase name', { name: 'Web' }, '/name', 'must match'],
    ['empty name', { name: '' }, '/name', 'must match'],
    ['long name', { name: 'a'.repeat(64) }, '/name', 'at most 63 characters'],
    ['garbage address', { address: 'nope' }, '/address', 'not an IP address'],
    ['octal-looking IPv4', { address: '010.0.0.1' }, '/address', 'four decimal octets'],
    ['short IPv4', { address: '10.1' }, '/address', 'four decimal octets'],
    ['non-string address', { address: bad<string>(5) }, '/address', 'must be a string'],
    ['IPv4 unspecified', { address: '0.0.0.0' }, '/address', 'unspecified and cannot be a VIP'],
    ['IPv6 unspecified', { address: '::' }, '/address', 'unspecified'],
    ['IPv4 loopback', { address: '127.0.0.1' }, '/address', 'loopback'],
    ['IPv6 loopback', { address: '::1' }, '/address', 'loopback'],
    ['IPv4 multicast', { address: '224.0.0.1' }, '/address', 'multicast'],
    ['IPv6 multicast', { address: 'ff02::1' }, '/address', 'multicast'],
    ['broadcast', { address: '255.255.255.255' }, '/address', 'broadcast'],
    ['IPv4 link-local', { address: '169.254.1.1' }, '/address', 'link-local'],
    ['IPv6 link-local', { address: 'fe80::1' }, '/address', 'link-local'],
    ['IPv4-mapped', { address: '::ffff:198.18.0.1' }, '/address', 'write it as 198.18.0.1'],
    ['zone index', { address: '2001:db8::1%eth0' }, '/address', 'zone index'],
    ['negative port', { port: -1 }, '/port', 'integer 0..65535'],
    ['port too big', { port: 65536 }, '/port', 'integer 0..65535'],
    ['fractional port', { port: 1.5 }, '/port', 'integer 0..65535'],
    ['protocol', { protocol: bad<'tcp'>('sctp') }, '/protocol', '"tcp" or "udp"'],
    ['encap', { encap: bad<'ipip'>('gre') }, '/encap', '"ipip"'],
    ['host bits', { allow: ['10.0.0.1/8'] }, '/allow/0', 'host bits set; did you mean 10.0.0.0/8?'],
    ['v6 host bits', { address: '2001:db8::1', deny: ['2001:db8::1/32'] }, '/deny/0', 'did you mean 2001:db8::/32?'],
    ['prefix too long', { allow: ['10.0.0.0/33'] }, '/allow/0', 'prefix length must be 0..32'],
    ['prefix with leading zero', { deny: ['10.0.0.0/08'] }, '/deny/0', 'not a CIDR'],
    ['garbage CIDR', { allow: ['192.0.2.0/24', 'banana'] }, '/allow/1', 'not a CIDR'],
    ['non-array allow', { allow: bad<string[]>('10.0.0.0/8') }, '/allow', 'must be an array'],
    ['family mismatch', { allow: ['2001:db8::/32'] }, '/allow/0', 'family mismatch'],
    ['v4 CIDR on a v6 VIP', { address: '2001:db8::1', deny: ['10.0.0.0/8'] }, '/deny/0', 'is IPv4 but the VIP address is IPv6'],
    ['duplicate CIDR', { allow: ['10.0.0.0/8', '10.0.0.0/8'] }, '/allow/1', 'duplicate of /allow/0'],
    ['duplicate CIDR, other spelling', { deny: ['10.0.0.1', '10.0.0.1/32'] }, '/deny/1', 'duplicate of /deny/0'],
    ['allowed and denied', { allow: ['10.0.0.0/8'], deny: ['192.0.2.0/24', '10.0.0.0/8'] }, '/deny/1', 'also in /allow/0'],
    ['missing policy', { policies: ['ghost'] }, '/policies/0', 'policy "ghost" does not exist'],
    ['rate 0', { rate_limit: { new_flows_per_sec: 0, burst: 1 } }, '/rate_limit/new_flows_per_sec', 'integer 1..10000000'],
    ['rate too high', { rate_limit: { new_flows_per_sec: 10_000_001, burst: 1 } }, '/rate_limit/new_flows_per_sec', '1..10000000'],
    ['burst 0', { rate_limit: { new_flows_per_sec: 10, burst: 0 } }, '/rate_limit/burst', 'integer 1..1000000'],
    ['burst too high', { rate_limit: { new_flows_per_sec: 10, burst: 1_000_001 } }, '/rate_limit/burst', '1..1000000'],
    ['rate limit not an object', { rate_limit: bad<null>(5) }, '/rate_limit', 'must be an object'],
    ['maglev m', { maglev_m: 1000 }, '/maglev_m', 'must be one of 251, 509'],
    ['source affinity', { source_affinity: bad<boolean>('yes') }, '/source_affinity', 'boolean'],
  ];
  for (const [title, over, field, phrase] of vipCases) {
    it(`VIP: ${title} → ${field}`, () => {
      const store = mem();
      throwsField(() => w(store, (tx) => tx.createVip(vip('web', over))), field, phrase);
      throwsField(() => w(store, (tx) => tx.putVip(vip('web', over))), field, phrase);
      assert.equal(store.revision(), 0);
    });
  }

  it('VIP: reports every problem at once', () => {
    const store = mem();
    assert.throws(
      () => w(store, (tx) => tx.createVip({ name: 'X', address: '::1', port: -1, protocol: bad<'tcp'>('x') })),
      (err: unknown) => {
        assert.ok(err instanceof ValidationError);
        assert.deepEqual(
          err.errors.map((e) => e.field),
          ['/name', '/address', '/port', '/protocol'],
        );
        return true;
      },
    );
  });

  it('VIP: accepts the unicast ranges operators use', () => {
    const store = mem();
    const addrs = ['10.0.0.1', '192.168.1.1', '100.64.0.1', '198.18.0.1', '203.0.113.9', '2001:db8::1', 'fd00::1', '2a00:1450::1'];
    w(store, (tx) => addrs.forEach((a, i) => tx.createVip(vip(`v${i}`, { address: a }))));
    assert.equal(store.revision(), 1);
  });

  const backendCases: Array<[string, BackendSpec, string, string]> = [
    ['loopback', { address: '127.0.0.1' }, '/address', 'loopback and cannot be a backend'],
    ['unspecified', { address: '0.0.0.0' }, '/address', 'unspecified'],
    ['v6 unspecified', { address: '::' }, '/address', 'unspecified'],
    ['multicast', { address: '239.1.1.1' }, '/address', 'multicast'],
    ['broadcast', { address: '255.255.255.255' }, '/address', 'broadcast'],
    ['link-local', { address: 'fe80::2' }, '/address', 'link-local'],
    ['garbage', { address: 'backend-1' }, '/address', 'not an IP address'],
    ['negative weight', { address: '10.0.0.1', weight: -1 }, '/weight', 'integer 0..65535'],
    ['weight too big', { address: '10.0.0.1', weight: 65536 }, '/weight', 'integer 0..65535'],
    ['fractional weight', { address: '10.0.0.1', weight: 0.5 }, '/weight', 'integer 0..65535'],
    ['state', { address: '10.0.0.1', state: bad<'active'>('up') }, '/state', 'active, draining, disabled'],
  ];
  for (const [title, spec, field, phrase] of backendCases) {
    it(`backend: ${title} → ${field}`, () => {
      const store = mem();
      w(store, (tx) => tx.createVip(vip('web')));
      throwsField(() => w(store, (tx) => tx.createBackend('web', spec)), field, phrase);
      throwsField(() => w(store, (tx) => tx.putBackend('web', spec)), field, phrase);
    });
  }

  const policyCases: Array<[string, PolicySpec, string, string]> = [
    ['name', { name: 'Bad Name' }, '/name', 'must match'],
    ['host bits', { name: 'p', allow: ['192.0.2.1/24'] }, '/allow/0', 'did you mean 192.0.2.0/24?'],
    ['duplicate', { name: 'p', deny: ['2001:db8::/32', '2001:DB8::/32'] }, '/deny/1', 'duplicate of /deny/0'],
    ['both', { name: 'p', allow: ['10.0.0.0/8'], deny: ['10.0.0.0/8'] }, '/deny/0', 'both allowed and denied'],
    ['garbage', { name: 'p', allow: [bad<string>(7)] }, '/allow/0', 'must be a string'],
  ];
  for (const [title, spec, field, phrase] of policyCases) {
    it(`policy: ${title} → ${field}`, () => {
      const store = mem();
      throwsField(() => w(store, (tx) => tx.createPolicy(spec)), field, phrase);
      throwsField(() => w(store, (tx) => tx.putPolicy(spec)), field, phrase);
    });
  }

  it('policy: may mix families', () => {
    const store = mem();
    const p = w(store, (tx) => tx.createPolicy({ name: 'mixed', allow: ['10.0.0.0/8', '2001:db8::/32'] }));
    assert.deepEqual(p.allow, ['10.0.0.0/8', '2001:db8::/32']);
  });

  const stateCases: Array<[string, DesiredState, string, string]> = [
    ['vips not an array', bad<DesiredState>({ vips: {} }), '/vips', 'must be an array'],
    ['vip not an object', bad<DesiredState>({ vips: [5] }), '/vips/0', 'must be an object'],
    ['nested field', { vips: [vip('a', { port: 70000 })] }, '/vips/0/port', 'integer 0..65535'],
    ['duplicate VIP name', { vips: [vip('a'), vip('a', { port: 81 })] }, '/vips/1/name', 'duplicate VIP name "a" (also /vips/0)'],
    [
      'duplicate endpoint',
      { vips: [vip('a', { address: '2001:db8::1' }), vip('b', { address: '2001:DB8:0::1' })] },
      '/vips/1/address',
      'same address, port and protocol (2001:db8::1 80/tcp) as /vips/0 ("a")',
    ],
    [
      'duplicate backend',
      { vips: [{ ...vip('a'), backends: [{ address: '10.0.0.1' }, { address: '10.0.0.1', weight: 5 }] }] },
      '/vips/0/backends/1/address',
      'duplicate backend 10.0.0.1 (also /vips/0/backends/0)',
    ],
    [
      'duplicate backend, other spelling',
      { vips: [{ ...vip('a'), backends: [{ address: '2001:db8::a' }, { address: '2001:DB8:0::A' }] }] },
      '/vips/0/backends/1/address',
      'duplicate backend 2001:db8::a',
    ],
    [
      'backend weight',
      { vips: [{ ...vip('a'), backends: [{ address: '10.0.0.1' }, { address: '10.0.0.2', weight: 70000 }] }] },
      '/vips/0/backends/1/weight',
      '0..65535',
    ],
    ['backends not an array', { vips: [{ ...vip('a'), backends: bad<BackendSpec[]>('x') }] }, '/vips/0/backends', 'must be an array'],
    ['duplicate policy', { vips: [], policies: [{ name: 'p' }, { name: 'p' }] }, '/policies/1/name', 'duplicate policy name "p"'],
    ['policy CIDR', { vips: [], policies: [{ name: 'p', allow: ['10.0.0.1/8'] }] }, '/policies/0/allow/0', 'did you mean 10.0.0.0/8?'],
    ['missing policy', { vips: [vip('a', { policies: ['p'] })] }, '/vips/0/policies/0', 'policy "p" does not exist'],
  ];
  for (const [title, state, field, phrase] of stateCases) {
    it(`apply: ${title} → ${field}`, () => {
      const store = mem();
      throwsField(() => w(store, (tx) => tx.replaceState(state, 0)), field, phrase);
    });
  }

  it('apply: a VIP may reference a policy of the same file', () => {
    assert.deepEqual(validateDesiredState({ vips: [vip('a', { policies: ['p'] })], policies: [{ name: 'p' }] }), []);
  });

  it('drain seconds must be a non-negative number', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createBackend('web', { address: '10.0.0.1' });
    });
    throwsField(() => w(store, (tx) => tx.deleteBackend('web', '10.0.0.1', -1)), '/drain_seconds', '>= 0');
    throwsField(() => w(store, (tx) => tx.replaceState({ vips: [] }, Number.NaN)), '/drain_seconds', '>= 0');
  });
});

// ------------------------------------------------------------------ backends

describe('backends', () => {
  it('creates with defaults, finds by any spelling, refuses duplicates', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('web')));
    const b = w(store, (tx) => tx.createBackend('web', { address: '2001:DB8::0:10' }));
    assert.deepEqual(b, {
      vip: 'web',
      address: '2001:db8::10',
      weight: 100,
      state: 'active',
      owner: null,
      created_revision: 2,
      updated_revision: 2,
    });
    assert.deepEqual(
      r(store, (tx) => tx.getBackend('web', '2001:db8:0:0:0:0:0:10')),
      b,
    );
    throwsKind(
      () => w(store, (tx) => tx.createBackend('web', { address: '2001:db8::10', weight: 1 })),
      ConflictError,
      'backend 2001:db8::10 already exists in vip "web"',
      409,
    );
    throwsKind(() => r(store, (tx) => tx.getBackend('web', '10.9.9.9')), NotFoundError, 'backend 10.9.9.9 not found in vip "web"');
    throwsKind(() => r(store, (tx) => tx.getBackend('web', 'garbage')), NotFoundError, 'not found');
    throwsKind(() => w(store, (tx) => tx.createBackend('nope', { address: '10.0.0.1' })), NotFoundError, 'vip "nope" not found');
    assert.equal(
      r(store, (tx) => tx.getVip('web').backend_count),
      1,
    );
  });

  it('port and host: stored only when set, a PUT of the same is a no-op, bad combinations named', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('web')));
    w(store, (tx) => tx.createVip(vip('all', { address: '198.18.0.20', port: 0 })));
    const local = w(store, (tx) => tx.createBackend('web', { address: '10.244.1.5', port: 8080, host: 'local' }));
    assert.deepEqual(local, {
      vip: 'web',
      address: '10.244.1.5',
      weight: 100,
      state: 'active',
      port: 8080,
      host: 'local',
      owner: null,
      created_revision: 3,
      updated_revision: 3,
    });
    const via = w(store, (tx) => tx.createBackend('web', { address: '10.244.2.5', port: 8080, host: '192.0.2.2' }));
    assert.equal(via.host, '192.0.2.2');
    // The VIP's port written out is no port of its own; a host alone is allowed.
    const same = w(store, (tx) => tx.createBackend('web', { address: '10.244.3.5', port: 0, host: null }));
    assert.deepEqual([same.port, same.host], [undefined, undefined]);
    const rev = store.revision();
    const again = store.write('t', 'put', (tx) => tx.putBackend('web', { address: '10.244.1.5', port: 8080, host: 'local' }));
    assert.deepEqual([again.result.created, again.revision], [false, rev]);
    const moved = store.write('t', 'put', (tx) => tx.putBackend('web', { address: '10.244.1.5', port: 9090, host: 'local' }));
    assert.equal(moved.result.record.port, 9090);
    const plain = store.write('t', 'put', (tx) => tx.putBackend('web', { address: '10.244.1.5' }));
    assert.deepEqual([plain.result.record.port, plain.result.record.host], [undefined, undefined]);
    const snap = r(store, (tx) => tx.snapshot());
    assert.deepEqual(
      snap.backends.filter((b) => b.host !== undefined).map((b) => [b.address, b.port, b.host]),
      [['10.244.2.5', 8080, '192.0.2.2']],
    );

    throwsField(
      () => w(store, (tx) => tx.createBackend('web', { address: '10.0.0.9', port: 8080 })),
      '/port',
      "translated on the backend's host",
    );
    throwsField(
      () => w(store, (tx) => tx.createBackend('all', { address: '10.0.0.9', port: 8080, host: 'local' })),
      '/port',
      "keeps the client's port",
    );
    throwsField(() => w(store, (tx) => tx.createBackend('web', { address: '10.0.0.9', port: 70000, host: 'local' })), '/port', '0..65535');
    throwsField(() => w(store, (tx) => tx.createBackend('web', { address: '10.0.0.9', host: '2001:db8::1' })), '/host', 'family');
    throwsField(
      () => w(store, (tx) => tx.createBackend('web', { address: '10.0.0.9', host: 'elsewhere' })),
      '/host',
      '"local" or an address',
    );
    assert.equal(store.revision(), plain.revision, 'refused writes change nothing');
  });

  it('PUT creates, updates and is a no-op when identical', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('web')));
    const a = store.write('t', 'put', (tx) => tx.putBackend('web', { address: '10.0.0.1', weight: 5 }));
    assert.deepEqual([a.result.created, a.revision], [true, 2]);
    const b = store.write('t', 'put', (tx) => tx.putBackend('web', { address: '10.0.0.1', weight: 5, state: 'active' }));
    assert.deepEqual([b.result.created, b.revision], [false, 2]);
    const c = store.write('t', 'put', (tx) => tx.putBackend('web', { address: '10.0.0.1', weight: 0, state: 'draining' }));
    assert.deepEqual([c.result.created, c.revision, c.result.record.weight, c.result.record.state], [false, 3, 0, 'draining']);
    assert.equal(c.result.record.updated_revision, 3);
    assert.deepEqual(
      r(store, (tx) => tx.getBackend('web', '10.0.0.1')),
      c.result.record,
    );
    // A PUT without weight/state means the defaults.
    const d = store.write('t', 'put', (tx) => tx.putBackend('web', { address: '10.0.0.1' }));
    assert.deepEqual([d.result.record.weight, d.result.record.state], [100, 'active']);
  });

  it('deletes, and a deleted backend is gone', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createBackend('web', { address: '10.0.0.1' });
    });
    const gone = w(store, (tx) => tx.deleteBackend('web', '10.0.0.1', 0));
    assert.equal(gone.address, '10.0.0.1');
    throwsKind(() => w(store, (tx) => tx.deleteBackend('web', '10.0.0.1', 0)), NotFoundError, 'not found');
  });

  it('lists in numeric address order, IPv4 first', () => {
    const store = mem();
    const addrs = ['10.0.0.10', '10.0.0.9', '2001:db8::2', '10.0.0.100', '9.0.0.1', '2001:db8::10'];
    w(store, (tx) => {
      tx.createVip(vip('web'));
      for (const a of addrs) tx.createBackend('web', { address: a });
    });
    assert.deepEqual(
      r(store, (tx) => tx.listBackends('web').items.map((b) => b.address)),
      ['9.0.0.1', '10.0.0.9', '10.0.0.10', '10.0.0.100', '2001:db8::2', '2001:db8::10'],
    );
  });
});

// ------------------------------------------------------------------ policies

describe('policies', () => {
  it('CRUD, PUT no-op, and a referenced policy cannot be deleted', () => {
    const store = mem();
    const p = w(store, (tx) => tx.createPolicy({ name: 'corp', allow: ['10.0.0.0/8'] }));
    assert.deepEqual(p, { name: 'corp', allow: ['10.0.0.0/8'], deny: [], owner: null, created_revision: 1, updated_revision: 1 });
    throwsKind(() => w(store, (tx) => tx.createPolicy({ name: 'corp' })), ConflictError, 'policy "corp" already exists');
    assert.equal(store.write('t', 'put', (tx) => tx.putPolicy({ name: 'corp', allow: ['10.0.0.0/8'], deny: [] })).revision, 1);
    const upd = store.write('t', 'put', (tx) => tx.putPolicy({ name: 'corp', deny: ['10.1.0.0/16'] }));
    assert.deepEqual([upd.revision, upd.result.created, upd.result.record.deny], [2, false, ['10.1.0.0/16']]);
    assert.equal(store.write('t', 'put', (tx) => tx.putPolicy({ name: 'new' })).result.created, true);
    w(store, (tx) => {
      tx.createVip(vip('web', { policies: ['corp'] }));
      tx.createVip(vip('api', { port: 443, policies: ['corp'] }));
    });
    throwsKind(() => w(store, (tx) => tx.deletePolicy('corp')), ConflictError, 'referenced by vip "api", "web"', 409);
    w(store, (tx) => {
      tx.putVip(vip('web'));
      tx.deleteVip('api');
    });
    assert.equal(w(store, (tx) => tx.deletePolicy('corp')).name, 'corp');
    throwsKind(() => r(store, (tx) => tx.getPolicy('corp')), NotFoundError, 'policy "corp" not found');
    assert.deepEqual(
      r(store, (tx) => tx.listPolicies().items.map((x) => x.name)),
      ['new'],
    );
  });
});

// ------------------------------------------------------- revisions and audit

describe('revisions, transactions and audit', () => {
  it('bumps the revision once per changing write, with one audit row', () => {
    const c = clock();
    const store = mem({ now: c.now });
    const res = store.write('alice', 'create-vip', (tx) => {
      assert.equal(tx.revision, 1);
      tx.createVip(vip('a'));
      tx.createVip(vip('b', { port: 81 }));
      return 'done';
    });
    assert.deepEqual(res, { result: 'done', revision: 1 });
    assert.equal(store.revision(), 1);
    const audit = store.audit();
    assert.equal(audit.length, 1);
    const row = audit[0];
    assert.ok(row !== undefined);
    assert.deepEqual([row.revision, row.actor, row.action, row.time], [1, 'alice', 'create-vip', new Date(c.value()).toISOString()]);
    // Both created: nothing before, both after.
    assert.deepEqual(row.before, {});
    assert.deepEqual(Object.keys(row.after as object), ['vip/a', 'vip/b']);
    assert.equal((row.after as Record<string, { name: string }>)['vip/b']?.name, 'b');
  });

  it('records single-resource before/after as the resource JSON', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('a')));
    w(store, (tx) => tx.putVip(vip('a', { port: 8080 })));
    w(store, (tx) => tx.deleteVip('a'));
    const [create, update, del] = store.audit();
    assert.equal(create?.before, null);
    assert.equal((create?.after as { port: number }).port, 80);
    assert.equal((update?.before as { port: number }).port, 80);
    assert.equal((update?.after as { port: number }).port, 8080);
    assert.equal((del?.before as { name: string }).name, 'a');
    assert.equal(del?.after, null);
  });

  it('a write that changes nothing keeps the revision, writes no audit row, skips afterWrite', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('a')));
    let called = false;
    const res = store.write(
      't',
      'noop',
      (tx) => tx.putVip(vip('a')),
      () => {
        called = true;
      },
    );
    assert.equal(res.revision, 1);
    assert.equal(called, false);
    assert.equal(store.audit().length, 1);
    assert.equal(store.write('t', 'read-only', (tx) => tx.listVips().items.length).revision, 1);
  });

  it('afterWrite sees the bumped revision; if it throws everything rolls back', () => {
    const store = mem();
    let seen = -1;
    store.write(
      't',
      'a',
      (tx) => tx.createVip(vip('a')),
      (tx) => {
        seen = tx.snapshot().revision;
      },
    );
    assert.equal(seen, 1);
    assert.throws(
      () =>
        store.write(
          't',
          'b',
          (tx) => tx.createVip(vip('b', { port: 81 })),
          () => {
            throw new Error('datapath says no');
          },
        ),
      /datapath says no/,
    );
    assert.equal(store.revision(), 1);
    assert.deepEqual(
      r(store, (tx) => tx.listVips().items.map((v) => v.name)),
      ['a'],
    );
    assert.equal(store.audit().length, 1);
    // afterWrite may read, not write.
    assert.throws(
      () =>
        store.write(
          't',
          'c',
          (tx) => tx.createVip(vip('c', { port: 82 })),
          (tx) => {
            tx.deleteVip('a');
          },
        ),
      /afterWrite cannot change/,
    );
    assert.equal(store.revision(), 1);
  });

  it('fn throwing rolls back; a caught failure inside fn leaves none of its partial writes', () => {
    const store = mem({ maxBackends: 2 });
    assert.throws(
      () =>
        w(store, (tx) => {
          tx.createVip(vip('a'));
          throw new Error('abort');
        }),
      /abort/,
    );
    assert.equal(store.revision(), 0);
    const res = store.write('t', 'partial', (tx) => {
      tx.createVip(vip('a'));
      // The apply creates a VIP and runs out of backend ids on the third backend.
      const desired: DesiredState = {
        vips: [
          vip('a'),
          { ...vip('b', { port: 81 }), backends: [{ address: '10.0.0.1' }, { address: '10.0.0.2' }, { address: '10.0.0.3' }] },
        ],
      };
      assert.throws(() => tx.replaceState(desired, 0), CapacityError);
      return tx.snapshot();
    });
    assert.deepEqual(
      res.result.vips.map((v) => v.name),
      ['a'],
    );
    assert.deepEqual(res.result.backends, []);
    assert.deepEqual(Object.keys(store.audit()[0]?.after as object), [
      'name',
      'address',
      'port',
      'protocol',
      'encap',
      'allow',
      'deny',
      'policies',
      'rate_limit',
      'maglev_m',
      'source_affinity',
      'backend_count',
      'owner',
      'created_revision',
      'updated_revision',
    ]);
  });

  it('read transactions see the committed revision and cannot write; a leaked tx is dead', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('a')));
    let leaked: StoreTx | undefined;
    r(store, (tx) => {
      assert.equal(tx.revision, 1);
      assert.throws(() => tx.createVip(vip('b', { port: 81 })), /read-only/);
      leaked = tx;
    });
    assert.throws(() => leaked?.listVips(), /already ended/);
  });

  it('audit: latest entries by default, following entries with sinceRevision, limits checked', () => {
    const store = mem();
    for (let i = 0; i < 5; i++) w(store, (tx) => tx.createVip(vip(`v${i}`, { port: 100 + i })));
    assert.deepEqual(
      store.audit({ limit: 2 }).map((a) => a.revision),
      [4, 5],
    );
    assert.deepEqual(
      store.audit({ sinceRevision: 1, limit: 2 }).map((a) => a.revision),
      [2, 3],
    );
    assert.deepEqual(store.audit({ sinceRevision: 5 }), []);
    throwsField(() => store.audit({ limit: 0 }), '/limit', '1..1000');
    throwsField(() => store.audit({ limit: 1001 }), '/limit', '1..1000');
    throwsField(() => store.audit({ sinceRevision: -1 }), '/since_revision', '>= 0');
  });

  it('a closed store refuses use', () => {
    const store = mem();
    store.close();
    store.close();
    assert.throws(() => store.read((tx) => tx.listVips()), /closed/);
  });
});

// ---------------------------------------------------------------- savepoints

describe('savepoints', () => {
  /** The change log of a write transaction (the audit row and the next snapshot come from it). */
  function log(tx: StoreTx): Array<[string, LogEntry]> {
    assert.ok(tx instanceof Tx);
    return structuredClone(tx.changes.list());
  }

  it('ChangeLog: rollbackTo restores keys, order and values as of the mark; release keeps; marks end innermost first', () => {
    const c = new ChangeLog();
    c.record('vip/a', null, 'a1');
    c.record('vip/b', 'b0', 'b1');
    const atOuter = structuredClone(c.list());
    const outer = c.savepoint();
    c.record('vip/a', 'ignored: a keeps its first before', 'a2');
    c.record('vip/c', null, 'c1');
    const atInner = structuredClone(c.list());
    const inner = c.savepoint();
    c.record('vip/c', 'ignored', 'c2');
    c.record('vip/d', null, 'd1');
    c.record('vip/b', 'ignored', null);
    c.record('vip/d', 'ignored', 'd2');
    assert.equal(c.depth, 2);
    assert.throws(() => c.rollbackTo(outer), /savepoint 1 is not the innermost open one \(2 open\)/);
    c.rollbackTo(inner);
    assert.deepEqual(c.list(), atInner);
    assert.deepEqual([...c.keys()], ['vip/a', 'vip/b', 'vip/c']);
    // A released inner savepoint keeps its records ... until the enclosing one rolls back.
    const inner2 = c.savepoint();
    c.record('vip/e', null, 'e1');
    c.record('vip/a', 'ignored', 'a3');
    c.release(inner2);
    assert.deepEqual(c.list(), [
      ['vip/a', { before: null, after: 'a3' }],
      ['vip/b', { before: 'b0', after: 'b1' }],
      ['vip/c', { before: null, after: 'c1' }],
      ['vip/e', { before: null, after: 'e1' }],
    ]);
    c.rollbackTo(outer);
    assert.deepEqual(c.list(), atOuter);
    assert.equal(c.depth, 0);
    assert.throws(() => c.release(outer), /not the innermost open one \(0 open\)/);
    // Released savepoints keep everything; with none open, nothing is journaled.
    const m = c.savepoint();
    c.record('vip/f', null, 'f1');
    c.release(m);
    assert.deepEqual([...c.keys()], ['vip/a', 'vip/b', 'vip/f']);
    c.record('vip/g', 'g0', null);
    const before = { 'vip/b': 'b0', 'vip/g': 'g0' };
    const after = { 'vip/a': 'a1', 'vip/b': 'b1', 'vip/f': 'f1' };
    // The text JSON.stringify gives for the objects, keys in first-recorded order; a created resource is only
    // after, a deleted one only before.
    assert.deepEqual(c.auditJson(), { before: JSON.stringify(before), after: JSON.stringify(after) });
    const one = new ChangeLog();
    one.record('vip/x', null, { name: 'x' });
    assert.deepEqual(one.auditJson(), { before: null, after: '{"name":"x"}' });
    assert.deepEqual(new ChangeLog().auditJson(), { before: '{}', after: '{}' });
  });

  it('nested savepoints in a write: an inner rollback undoes rows and log back to its start, the outer one keeps going', () => {
    const store = mem();
    w(store, (tx) => tx.createVip(vip('base', { port: 1 })));
    const res = store.write('t', 'nested', (tx) => {
      tx.createVip(vip('a', { port: 10 }));
      const atOuter = log(tx);
      const kept = tx.savepoint((sp) => {
        sp.putVip(vip('a', { port: 11 }));
        sp.createBackend('a', { address: '10.0.0.1' });
        const atInner = log(tx);
        assert.throws(
          () =>
            sp.savepoint((inner) => {
              inner.createVip(vip('b', { port: 20 }));
              inner.putBackend('a', { address: '10.0.0.1', weight: 5 });
              inner.deleteVip('base');
              throw new Error('inner fails');
            }),
          /inner fails/,
        );
        assert.deepEqual(log(tx), atInner);
        assert.deepEqual(
          sp.listVips().items.map((v) => [v.name, v.port]),
          [
            ['a', 11],
            ['base', 1],
          ],
        );
        assert.equal(sp.getBackend('a', '10.0.0.1').weight, 100);
        // A failing mutating call is itself a savepoint nested in this one.
        assert.throws(() => sp.createVip(vip('a')), ConflictError);
        assert.deepEqual(log(tx), atInner);
        return 'kept';
      });
      assert.equal(kept, 'kept');
      assert.deepEqual(
        log(tx).map(([k]) => k),
        ['vip/a', 'backend/a/10.0.0.1'],
      );
      // The released savepoint's changes are kept, but an enclosing rollback takes them back too.
      assert.throws(
        () =>
          tx.savepoint((sp) => {
            sp.savepoint((inner) => inner.createVip(vip('c', { port: 30 })));
            sp.deleteBackend('a', '10.0.0.1', 0);
            assert.deepEqual(
              log(tx).map(([k]) => k),
              ['vip/a', 'backend/a/10.0.0.1', 'vip/c'],
            );
            throw new Error('outer fails');
          }),
        /outer fails/,
      );
      assert.deepEqual(
        log(tx).map(([k]) => k),
        ['vip/a', 'backend/a/10.0.0.1'],
      );
      assert.notDeepEqual(log(tx), atOuter);
      return tx.snapshot();
    });
    assert.equal(res.revision, 2);
    assert.deepEqual(
      res.result.vips.map((v) => [v.name, v.port]),
      [
        ['a', 11],
        ['base', 1],
      ],
    );
    assert.deepEqual(
      res.result.backends.map((b) => [b.vip, b.address, b.weight]),
      [['a', '10.0.0.1', 100]],
    );
    // The audit row is the log as kept: one create of a (port 11) and its backend, nothing of b, c or base.
    const audit = store.audit()[1];
    assert.deepEqual(Object.keys(audit?.after as object), ['vip/a', 'backend/a/10.0.0.1']);
    assert.deepEqual(audit?.before, {});
    assert.equal((audit?.after as Record<string, { port: number }>)['vip/a']?.port, 11);
    // The committed state is what the transaction's last snapshot saw.
    const committed = r(store, (tx) => tx.snapshot());
    assert.deepEqual([committed.vips, committed.backends], [res.result.vips, res.result.backends]);
  });

  it('a rollback to a savepoint leaves the log exactly as it was there, also for keys touched before it', () => {
    const store = mem();
    w(store, (tx) => tx.replaceState({ vips: [{ ...vip('web'), backends: [{ address: '10.0.0.1' }] }] }, 0));
    store.write('t', 'x', (tx) => {
      tx.putBackend('web', { address: '10.0.0.1', weight: 7 });
      const at = log(tx);
      assert.throws(
        () =>
          tx.savepoint((sp) => {
            sp.putBackend('web', { address: '10.0.0.1', weight: 9 });
            sp.deleteBackend('web', '10.0.0.1', 30);
            throw new Error('no');
          }),
        /no/,
      );
      assert.deepEqual(log(tx), at);
      assert.equal((log(tx)[0]?.[1].after as { weight: number }).weight, 7);
    });
    assert.equal(
      r(store, (tx) => tx.getBackend('web', '10.0.0.1').weight),
      7,
    );
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [],
    );
    assert.equal((store.audit()[1]?.after as { weight: number }).weight, 7);
  });

  it('one savepoint per Service: a Service that fails keeps the earlier ones and does not stop the later ones', () => {
    const store = mem({ maxBackends: 8 });
    w(store, (tx) => tx.createVip(vip('api-owned', { address: '198.18.0.4' })));
    const svc = (i: number, backends: number): DesiredState => ({
      vips: [
        {
          ...vip(`svc${i}`, { address: `198.18.0.${i}` }),
          backends: Array.from({ length: backends }, (_, j) => ({ address: `10.0.${i}.${j + 1}` })),
        },
      ],
      policies: [{ name: `svc${i}-ranges`, allow: ['10.0.0.0/8'] }],
    });
    const outcomes = store.write('kubernetes', 'k8s.sync', (tx) => {
      const out: string[] = [];
      const specs: Array<[number, number]> = [
        [1, 2],
        [2, 2],
        [3, 2],
        [4, 1],
        [5, 3],
        [6, 2],
      ];
      for (const [i, n] of specs) {
        const keysBefore = log(tx).map(([k]) => k);
        try {
          tx.replaceState(svc(i, n), 30, `kubernetes:default/svc${i}`);
          out.push(`svc${i} ok`);
        } catch (err) {
          assert.deepEqual(
            log(tx).map(([k]) => k),
            keysBefore,
          );
          out.push(`svc${i} ${(err as Error).constructor.name}`);
        }
      }
      return out;
    }).result;
    // svc4's address is the API's VIP's; svc5 needs 3 of the 2 ids left; svc6 fits again.
    assert.deepEqual(outcomes, ['svc1 ok', 'svc2 ok', 'svc3 ok', 'svc4 ConflictError', 'svc5 CapacityError', 'svc6 ok']);
    const snap = r(store, (tx) => tx.snapshot());
    assert.deepEqual(
      snap.vips.map((v) => v.name),
      ['api-owned', 'svc1', 'svc2', 'svc3', 'svc6'],
    );
    assert.deepEqual(
      snap.policies.map((p) => p.name),
      ['svc1-ranges', 'svc2-ranges', 'svc3-ranges', 'svc6-ranges'],
    );
    assert.equal(snap.backends.length, 8);
    assert.deepEqual(
      snap.backends.map((b) => b.dp_id).sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7],
    );
    const audit = store.audit()[1];
    assert.deepEqual(
      Object.keys(audit?.after as object).filter((k) => k.startsWith('vip/')),
      ['vip/svc1', 'vip/svc2', 'vip/svc3', 'vip/svc6'],
    );
    assert.equal(Object.keys(audit?.after as object).length, 4 + 4 + 8);
  });

  it('thousands of savepoints in one transaction, the last rolled back', () => {
    const store = mem({ maxVips: 4096, maxBackends: 4096 });
    const n = 3000;
    store.write('t', 'many', (tx) => {
      for (let i = 0; i < n; i++) tx.replaceState({ vips: [vip(`v${i}`, { port: i + 1 })] }, 0, `kubernetes:ns/v${i}`);
      assert.throws(
        () =>
          tx.savepoint((sp) => {
            for (let i = 0; i < n; i++) sp.replaceState({ vips: [] }, 0, `kubernetes:ns/v${i}`);
            assert.equal(sp.listVips().items.length, 0);
            throw new Error('undo all');
          }),
        /undo all/,
      );
    });
    const audit = store.audit()[0];
    assert.equal(Object.keys(audit?.after as object).length, n);
    assert.equal(
      r(store, (tx) => tx.snapshot().vips.length),
      n,
    );
  });

  it('a read transaction has no savepoints', () => {
    const store = mem();
    assert.throws(() => r(store, (tx) => tx.savepoint(() => 1)), /write in a read-only transaction/);
  });
});

// ---------------------------------------------------------------- pagination

describe('pagination', () => {
  it('pages VIPs by name with an opaque cursor', () => {
    const store = mem();
    w(store, (tx) => {
      for (let i = 0; i < 25; i++) tx.createVip(vip(`v${String(i).padStart(2, '0')}`, { port: 1000 + i }));
    });
    const names: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = r(store, (tx) => tx.listVips({ limit: 10, cursor }));
      names.push(...page.items.map((v) => v.name));
      cursor = page.next;
      pages++;
      assert.ok(cursor === null || /^[A-Za-z0-9_-]+$/.test(cursor));
    } while (cursor !== null);
    assert.equal(pages, 3);
    assert.equal(names.length, 25);
    assert.deepEqual(names, [...names].sort());
    assert.equal(r(store, (tx) => tx.listVips()).items.length, 25);
    assert.equal(r(store, (tx) => tx.listVips({ limit: 25 })).next, null);
  });

  it('pages backends by address and policies by name', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('web'));
      for (let i = 1; i <= 12; i++) tx.createBackend('web', { address: `10.0.0.${i}` });
      for (let i = 0; i < 3; i++) tx.createPolicy({ name: `p${i}` });
    });
    const first = r(store, (tx) => tx.listBackends('web', { limit: 5 }));
    assert.deepEqual(
      first.items.map((b) => b.address),
      ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5'],
    );
    const second = r(store, (tx) => tx.listBackends('web', { limit: 5, cursor: first.next }));
    assert.equal(second.items[0]?.address, '10.0.0.6');
    const p1 = r(store, (tx) => tx.listPolicies({ limit: 2 }));
    assert.deepEqual(
      p1.items.map((p) => p.name),
      ['p0', 'p1'],
    );
    assert.deepEqual(
      r(store, (tx) => tx.listPolicies({ limit: 2, cursor: p1.next })).items.map((p) => p.name),
      ['p2'],
    );
  });

  it('rejects bad cursors and limits', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('a'));
      tx.createVip(vip('b', { port: 81 }));
      tx.createPolicy({ name: 'p' });
      tx.createPolicy({ name: 'q' });
    });
    const vipCursor = r(store, (tx) => tx.listVips({ limit: 1 })).next;
    assert.ok(vipCursor !== null);
    throwsField(() => r(store, (tx) => tx.listVips({ cursor: 'not a cursor!' })), '/cursor', 'not a cursor');
    throwsField(
      () => r(store, (tx) => tx.listVips({ cursor: Buffer.from('{"nope":1}').toString('base64url') })),
      '/cursor',
      'not a cursor',
    );
    throwsField(() => r(store, (tx) => tx.listVips({ cursor: 'AAAA' })), '/cursor', 'not a cursor');
    throwsField(() => r(store, (tx) => tx.listPolicies({ cursor: vipCursor })), '/cursor', 'not a cursor');
    throwsField(() => r(store, (tx) => tx.listBackends('a', { cursor: vipCursor })), '/cursor', 'not a cursor');
    const forged = Buffer.from(JSON.stringify({ k: 'backend', a: 'zzz' })).toString('base64url');
    throwsField(() => r(store, (tx) => tx.listBackends('a', { cursor: forged })), '/cursor', 'not a cursor');
    throwsField(() => r(store, (tx) => tx.listVips({ limit: 0 })), '/limit', '1..1000');
    throwsField(() => r(store, (tx) => tx.listVips({ limit: 1001 })), '/limit', '1..1000');
    throwsField(() => r(store, (tx) => tx.listPolicies({ limit: 2.5 })), '/limit', '1..1000');
  });
});

// -------------------------------------------------------------------- owners

describe('owners', () => {
  const K8S = 'kubernetes:default/web';

  it('a record of another owner is read-only to everyone else', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('web'), K8S);
      tx.createBackend('web', { address: '10.0.0.1' }, K8S);
      tx.createPolicy({ name: 'kp' }, K8S);
      tx.createVip(vip('api', { port: 443 }));
    });
    assert.equal(
      r(store, (tx) => tx.getVip('web').owner),
      K8S,
    );
    assert.equal(
      r(store, (tx) => tx.getBackend('web', '10.0.0.1').owner),
      K8S,
    );
    const msg = `vip "web" is owned by ${K8S}; change it in Kubernetes`;
    throwsKind(() => w(store, (tx) => tx.putVip(vip('web', { port: 8080 }))), ForbiddenError, msg, 403);
    throwsKind(() => w(store, (tx) => tx.deleteVip('web')), ForbiddenError, msg);
    throwsKind(() => w(store, (tx) => tx.createBackend('web', { address: '10.0.0.2' })), ForbiddenError, msg);
    throwsKind(() => w(store, (tx) => tx.putBackend('web', { address: '10.0.0.1', weight: 1 })), ForbiddenError, msg);
    throwsKind(() => w(store, (tx) => tx.deleteBackend('web', '10.0.0.1', 0)), ForbiddenError, msg);
    throwsKind(() => w(store, (tx) => tx.putPolicy({ name: 'kp', allow: ['10.0.0.0/8'] })), ForbiddenError, 'policy "kp" is owned by');
    throwsKind(() => w(store, (tx) => tx.deletePolicy('kp')), ForbiddenError, 'policy "kp" is owned by');
    throwsKind(
      () => w(store, (tx) => tx.putVip(vip('api', { port: 443 }), K8S)),
      ForbiddenError,
      'vip "api" is owned by the API; change it through the API',
    );
    // The owner itself may change its records; an identical PUT is still a no-op.
    assert.equal(store.write('k', 'put', (tx) => tx.putVip(vip('web'), K8S)).revision, 1);
    assert.equal(store.write('k', 'put', (tx) => tx.putBackend('web', { address: '10.0.0.1', weight: 7 }, K8S)).revision, 2);
  });

  it('replaceState and exportState are scoped to one owner', () => {
    const store = mem();
    w(store, (tx) => {
      tx.createPolicy({ name: 'shared', deny: ['192.0.2.0/24'] });
      tx.createVip({ ...vip('api', { port: 443 }) });
      tx.createBackend('api', { address: '10.0.0.1' });
    });
    const desired: DesiredState = {
      vips: [{ ...vip('web', { policies: ['shared', 'kp'] }), backends: [{ address: '10.1.0.1' }] }],
      policies: [{ name: 'kp', allow: ['10.0.0.0/8'] }],
    };
    const changes = w(store, (tx) => tx.replaceState(desired, 0, K8S));
    assert.equal(changes.length, 3);
    // The API's resources were not touched, and each owner sees only its own.
    assert.deepEqual(
      r(store, (tx) => tx.exportState().vips.map((v) => v.name)),
      ['api'],
    );
    assert.deepEqual(
      r(store, (tx) => tx.exportState(K8S).vips.map((v) => v.name)),
      ['web'],
    );
    assert.deepEqual(
      r(store, (tx) => tx.exportState(K8S).policies?.map((p) => p.name)),
      ['kp'],
    );
    // An API apply of nothing removes only the API's resources ... but "shared" is referenced by K8S's VIP.
    throwsKind(
      () => w(store, (tx) => tx.replaceState({ vips: [] }, 0)),
      ConflictError,
      'policy "shared" cannot be deleted: vip "web" of another owner references it',
    );
    assert.deepEqual(
      w(store, (tx) => tx.replaceState({ vips: [], policies: [{ name: 'shared', deny: ['192.0.2.0/24'] }] }, 0)),
      [
        { op: 'delete', kind: 'vip', name: 'api' },
        { op: 'delete', kind: 'backend', name: 'api/10.0.0.1' },
      ],
    );
    assert.deepEqual(
      r(store, (tx) => tx.listVips().items.map((v) => v.name)),
      ['web'],
    );
  });

  it("replaceState refuses to take over another owner's resources", () => {
    const store = mem();
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createPolicy({ name: 'p' });
    });
    assert.throws(
      () =>
        w(store, (tx) =>
          tx.replaceState(
            {
              vips: [vip('web', { port: 81 }), vip('clash')],
              policies: [{ name: 'p' }],
            },
            0,
            K8S,
          ),
        ),
      (err: unknown) => {
        assert.ok(err instanceof ConflictError);
        assert.match(err.message, /policy "p" exists and is owned by the API/);
        assert.match(err.message, /vip "web" exists and is owned by the API/);
        assert.match(err.message, /vip "clash": 198\.18\.0\.1 port 80\/tcp is already used by vip "web" \(owned by the API\)/);
        return true;
      },
    );
    assert.equal(store.revision(), 1);
  });
});

// ------------------------------------------------------- ids and tombstones

describe('datapath ids and tombstones', () => {
  function ids(store: Store): Array<[string, number, number]> {
    return r(store, (tx) => tx.snapshot().backends.map((b): [string, number, number] => [b.address, b.dp_id, b.dp_gen]));
  }

  it('allocates the lowest free VIP id', () => {
    const store = mem();
    w(store, (tx) => ['a', 'b', 'c'].forEach((n, i) => tx.createVip(vip(n, { port: i + 1 }))));
    w(store, (tx) => tx.deleteVip('b'));
    w(store, (tx) => tx.createVip(vip('d', { port: 9 })));
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().vips.map((v) => [v.name, v.dp_id])),
      [
        ['a', 0],
        ['c', 2],
        ['d', 1],
      ],
    );
    // Updating a VIP keeps its id.
    w(store, (tx) => tx.putVip(vip('d', { port: 10, address: '2001:db8::d' })));
    assert.equal(
      r(store, (tx) => tx.snapshot().vips.find((v) => v.name === 'd')?.dp_id),
      1,
    );
  });

  it('a VIP id freed within a write serves that write once the fresh ones run out', () => {
    const store = mem({ maxVips: 2 });
    w(store, (tx) => {
      tx.createVip(vip('a', { port: 1 })); // no free id: fresh ones from here on
      tx.createVip(vip('b', { port: 2 }));
      tx.deleteVip('a'); // id 0 free again
      tx.createVip(vip('c', { port: 3 })); // no fresh id left: the free one is found
    });
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().vips.map((v) => [v.name, v.dp_id])),
      [
        ['b', 1],
        ['c', 0],
      ],
    );
  });

  it('a draining backend keeps its port and host, so its flows still go the way they went', () => {
    const store = mem({});
    w(store, (tx) => {
      tx.createVip(vip('np'));
      tx.createBackend('np', { address: '10.244.0.5', port: 8080, host: 'local' });
    });
    w(store, (tx) => tx.deleteBackend('np', '10.244.0.5', 30));
    const t = r(store, (tx) => tx.snapshot().tombstones);
    assert.deepEqual(
      t.map((x) => [x.address, x.port, x.host]),
      [['10.244.0.5', 8080, 'local']],
    );
  });

  it("keeps a deleted backend's id until its tombstone expires, then reuses it with gen + 1", () => {
    const c = clock();
    const store = mem({ maxBackends: 2, now: c.now });
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createBackend('web', { address: '10.0.0.1' });
      tx.createBackend('web', { address: '10.0.0.2' });
    });
    assert.deepEqual(ids(store), [
      ['10.0.0.1', 0, 1],
      ['10.0.0.2', 1, 1],
    ]);
    w(store, (tx) => tx.deleteBackend('web', '10.0.0.1', 30));
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [{ dp_id: 0, dp_gen: 1, vip_dp_id: 0, address: '10.0.0.1', expires_at: c.value() + 30_000, port: 0, host: null }],
    );
    throwsKind(
      () => w(store, (tx) => tx.createBackend('web', { address: '10.0.0.3' })),
      CapacityError,
      'all 2 datapath backend slots are in use, including draining tombstones (capacity max_backends = 2)',
      507,
    );
    // Not yet expired: nothing to do, no revision.
    const rev = store.revision();
    assert.equal(store.write('t', 'expire', (tx) => tx.expireTombstones(c.value() + 29_999)).result, 0);
    assert.equal(store.revision(), rev);
    // Expired: a change (the datapath must free the id).
    const expired = store.write('t', 'expire', (tx) => tx.expireTombstones(c.value() + 30_000));
    assert.deepEqual([expired.result, expired.revision], [1, rev + 1]);
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [],
    );
    w(store, (tx) => tx.createBackend('web', { address: '10.0.0.3' }));
    assert.deepEqual(ids(store), [
      ['10.0.0.2', 1, 1],
      ['10.0.0.3', 0, 2],
    ]);
    // Drain 0: no tombstone, the id is free at once and the next holder gets gen + 1.
    w(store, (tx) => tx.deleteBackend('web', '10.0.0.3', 0));
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [],
    );
    w(store, (tx) => tx.createBackend('web', { address: '10.0.0.4' }));
    assert.deepEqual(ids(store), [
      ['10.0.0.2', 1, 1],
      ['10.0.0.4', 0, 3],
    ]);
  });

  it('re-adding a draining backend revives its id and generation', () => {
    const c = clock();
    const store = mem({ maxBackends: 2, now: c.now });
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createBackend('web', { address: '10.0.0.1' });
      tx.createBackend('web', { address: '10.0.0.2' });
    });
    w(store, (tx) => tx.deleteBackend('web', '10.0.0.2', 60));
    w(store, (tx) => tx.createBackend('web', { address: '10.0.0.2', weight: 3 }));
    assert.deepEqual(ids(store), [
      ['10.0.0.1', 0, 1],
      ['10.0.0.2', 1, 1],
    ]);
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [],
    );
    assert.equal(
      r(store, (tx) => tx.getBackend('web', '10.0.0.2').weight),
      3,
    );
  });

  it('one replaceState revives a tombstone, reuses a free id (gen + 1) and takes fresh ids, lowest first', () => {
    const c = clock();
    const store = mem({ maxBackends: 5, now: c.now });
    const state = (addrs: string[]) => ({ vips: [{ ...vip('web'), backends: addrs.map((address) => ({ address })) }] });
    w(store, (tx) => tx.replaceState(state(['10.0.0.1', '10.0.0.2', '10.0.0.3']), 0));
    assert.deepEqual(ids(store), [
      ['10.0.0.1', 0, 1],
      ['10.0.0.2', 1, 1],
      ['10.0.0.3', 2, 1],
    ]);
    w(store, (tx) => tx.deleteBackend('web', '10.0.0.1', 0)); // id 0 free at once
    w(store, (tx) => tx.deleteBackend('web', '10.0.0.2', 60)); // id 1 held by a tombstone
    w(store, (tx) => tx.replaceState(state(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']), 0));
    assert.deepEqual(ids(store), [
      ['10.0.0.2', 1, 1],
      ['10.0.0.3', 2, 1],
      ['10.0.0.4', 0, 2],
      ['10.0.0.5', 3, 1],
      ['10.0.0.6', 4, 1],
    ]);
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [],
    );
    // One more than the slots left: refused whole, nothing written.
    const rev = store.revision();
    throwsKind(
      () => w(store, (tx) => tx.replaceState(state(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6', '10.0.0.7']), 0)),
      CapacityError,
      'all 5 datapath backend slots are in use, including draining tombstones (capacity max_backends = 5)',
      507,
    );
    assert.equal(store.revision(), rev);
    assert.equal(ids(store).length, 5);
  });

  it('within one write: a new VIP revives its own tombstone, and ids freed after fresh ones were taken still serve', () => {
    const c = clock();
    const store = mem({ maxBackends: 3, now: c.now });
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createBackend('web', { address: '10.0.0.1' }); // no free id: fresh ones from here on
      tx.deleteBackend('web', '10.0.0.1', 60); // the new VIP's first tombstone
      tx.createBackend('web', { address: '10.0.0.1', weight: 2 }); // revives it: same id and generation
      tx.createBackend('web', { address: '10.0.0.2' });
      tx.createBackend('web', { address: '10.0.0.3' });
      tx.deleteBackend('web', '10.0.0.3', 0); // id 2 free again, within the same write
      tx.createBackend('web', { address: '10.0.0.4' }); // no fresh id left: the free one is found
    });
    assert.deepEqual(ids(store), [
      ['10.0.0.1', 0, 1],
      ['10.0.0.2', 1, 1],
      ['10.0.0.4', 2, 2],
    ]);
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [],
    );
  });

  it("deleting a VIP frees its backends' ids and tombstones at once", () => {
    const c = clock();
    const store = mem({ maxBackends: 2, now: c.now });
    w(store, (tx) => {
      tx.createVip(vip('web'));
      tx.createBackend('web', { address: '10.0.0.1' });
      tx.createBackend('web', { address: '10.0.0.2' });
    });
    w(store, (tx) => tx.deleteBackend('web', '10.0.0.1', 600));
    w(store, (tx) => tx.deleteVip('web'));
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones),
      [],
    );
    w(store, (tx) => {
      tx.createVip(vip('new'));
      tx.createBackend('new', { address: '10.0.0.7' });
      tx.createBackend('new', { address: '10.0.0.8' });
    });
    assert.deepEqual(ids(store), [
      ['10.0.0.7', 0, 2],
      ['10.0.0.8', 1, 2],
    ]);
  });

  it('refuses a VIP beyond capacity with status 507 naming it', () => {
    const store = mem({ maxVips: 2 });
    w(store, (tx) => {
      tx.createVip(vip('a', { port: 1 }));
      tx.createVip(vip('b', { port: 2 }));
    });
    throwsKind(() => w(store, (tx) => tx.createVip(vip('c', { port: 3 }))), CapacityError, 'capacity max_vips = 2', 507);
    w(store, (tx) => tx.deleteVip('a'));
    w(store, (tx) => tx.createVip(vip('c', { port: 3 })));
  });

  it('replaceState removes backends with a drain, like deleteBackend', () => {
    const c = clock();
    const store = mem({ now: c.now });
    w(store, (tx) => tx.replaceState({ vips: [{ ...vip('web'), backends: [{ address: '10.0.0.1' }, { address: '10.0.0.2' }] }] }, 0));
    w(store, (tx) => tx.replaceState({ vips: [{ ...vip('web'), backends: [{ address: '10.0.0.2' }] }] }, 45));
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones.map((t) => [t.address, t.dp_id, t.expires_at - c.value()])),
      [['10.0.0.1', 0, 45_000]],
    );
  });
});

// ------------------------------------------------------- replaceState/export

describe('replaceState and exportState', () => {
  const rich: DesiredState = {
    policies: [
      { name: 'corp', allow: ['10.0.0.0/8', '2001:db8::/32'] },
      { name: 'bad', deny: ['192.0.2.0/24'] },
    ],
    vips: [
      {
        name: 'web',
        address: '198.18.0.10',
        port: 443,
        protocol: 'tcp',
        allow: ['203.0.113.0/24'],
        deny: ['203.0.113.7/32'],
        policies: ['corp', 'bad'],
        rate_limit: { new_flows_per_sec: 5000, burst: 100 },
        maglev_m: 4093,
        source_affinity: true,
        backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2', weight: 50 }, { address: '2001:db8:1::1', state: 'draining' }],
      },
      {
        name: 'dns',
        address: '2001:db8::53',
        port: 53,
        protocol: 'udp',
        backends: [{ address: '10.2.0.1', weight: 0, state: 'disabled' }],
      },
      { name: 'all', address: '198.18.0.10', port: 0, protocol: 'tcp' },
    ],
  };

  it('with a scope changes only the named resources and checks them against the rest', () => {
    const store = mem();
    store.write('t', 'apply', (tx) => tx.replaceState(rich, 0));
    const scope = (vips: string[], policies: string[] = []) => ({ vips: new Set(vips), policies: new Set(policies) });
    // 'dns' named and absent: deleted; 'web' and 'all' unnamed: kept.
    const { result } = store.write('t', 'scoped', (tx) => tx.replaceState({ vips: [] }, 0, null, scope(['dns'])));
    assert.deepEqual(result, [
      { op: 'delete', kind: 'vip', name: 'dns' },
      { op: 'delete', kind: 'backend', name: 'dns/10.2.0.1' },
    ]);
    assert.deepEqual(
      store.read((tx) => tx.listVips().items.map((v) => v.name)),
      ['all', 'web'],
    );
    // A named VIP on the endpoint of an unnamed one of the same owner: refused, nothing changed.
    const before = store.revision();
    assert.throws(
      () =>
        store.write('t', 'scoped', (tx) =>
          tx.replaceState({ vips: [{ name: 'clash', address: '198.18.0.10', port: 443, protocol: 'tcp' }] }, 0, null, scope([])),
        ),
      /already used by vip "web"/,
    );
    // A policy an unnamed VIP references cannot go; one of the file's own VIPs may reference an unnamed policy.
    assert.throws(
      () => store.write('t', 'scoped', (tx) => tx.replaceState({ vips: [] }, 0, null, scope([], ['corp']))),
      /policy "corp" cannot be deleted: vip "web" references it/,
    );
    store.write('t', 'scoped', (tx) =>
      tx.replaceState(
        { vips: [{ name: 'api', address: '198.18.0.11', port: 80, protocol: 'tcp', policies: ['corp'] }] },
        0,
        null,
        scope([]),
      ),
    );
    assert.equal(store.revision(), before + 1);
    assert.deepEqual(
      store.read((tx) => tx.getVip('api').policies),
      ['corp'],
    );
    // What a transaction touched, exported by name (null: no such resource of this owner).
    const named = store.read((tx) => tx.exportNamed(scope(['api', 'nope'], ['bad'])));
    assert.equal(named.vips.get('api')?.address, '198.18.0.11');
    assert.equal(named.vips.get('nope'), null);
    assert.deepEqual(named.policies.get('bad'), { name: 'bad', allow: [], deny: ['192.0.2.0/24'] });
  });

  it('applies a whole state and answers with the diff in a stable order', () => {
    const store = mem();
    const { result, revision } = store.write('t', 'apply', (tx) => tx.replaceState(rich, 0));
    assert.equal(revision, 1);
    assert.deepEqual(result, [
      { op: 'create', kind: 'policy', name: 'bad' },
      { op: 'create', kind: 'policy', name: 'corp' },
      { op: 'create', kind: 'vip', name: 'all' },
      { op: 'create', kind: 'vip', name: 'dns' },
      { op: 'create', kind: 'vip', name: 'web' },
      { op: 'create', kind: 'backend', name: 'dns/10.2.0.1' },
      { op: 'create', kind: 'backend', name: 'web/10.1.0.1' },
      { op: 'create', kind: 'backend', name: 'web/10.1.0.2' },
      { op: 'create', kind: 'backend', name: 'web/2001:db8:1::1' },
    ]);
    assert.equal(store.audit().length, 1);
  });

  it('exportState fills defaults and round-trips with zero changes', () => {
    const store = mem();
    w(store, (tx) => tx.replaceState(rich, 0));
    const exported = r(store, (tx) => tx.exportState());
    const dns = exported.vips.find((v) => v.name === 'dns');
    assert.deepEqual(dns, {
      name: 'dns',
      address: '2001:db8::53',
      port: 53,
      protocol: 'udp',
      encap: 'ipip',
      allow: [],
      deny: [],
      policies: [],
      rate_limit: null,
      maglev_m: null,
      source_affinity: false,
      backends: [{ address: '10.2.0.1', weight: 0, state: 'disabled' }],
    });
    assert.deepEqual(exported.vips.find((v) => v.name === 'web')?.backends?.[0], { address: '10.1.0.1', weight: 100, state: 'active' });
    const copy = JSON.parse(JSON.stringify(exported)) as DesiredState;
    const again = store.write('t', 'apply', (tx) => tx.replaceState(copy, 0));
    assert.deepEqual(again, { result: [], revision: 1 });
    // The original file (other spellings, defaults left out) is also a no-op.
    assert.deepEqual(
      w(store, (tx) => tx.replaceState(rich, 0)),
      [],
    );
    assert.equal(store.audit().length, 1);
    assert.deepEqual(
      r(store, (tx) => tx.exportState()),
      exported,
    );
  });

  it('diffs creates, updates and deletes of every kind', () => {
    const store = mem();
    w(store, (tx) => tx.replaceState(rich, 30));
    const next: DesiredState = {
      policies: [
        { name: 'corp', allow: ['10.0.0.0/8'] },
        { name: 'new', deny: ['198.51.100.0/24'] },
      ],
      vips: [
        {
          name: 'web',
          address: '198.18.0.10',
          port: 443,
          protocol: 'tcp',
          policies: ['corp', 'new'],
          backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2', weight: 60 }, { address: '10.1.0.3' }],
        },
        { name: 'all', address: '198.18.0.10', port: 0, protocol: 'tcp' },
        { name: 'ssh', address: '198.18.0.22', port: 22, protocol: 'tcp', backends: [{ address: '10.3.0.1' }] },
      ],
    };
    const { result, revision } = store.write('t', 'apply', (tx) => tx.replaceState(next, 30));
    assert.equal(revision, 2);
    assert.deepEqual(result, [
      { op: 'create', kind: 'policy', name: 'new' },
      { op: 'update', kind: 'policy', name: 'corp' },
      { op: 'delete', kind: 'policy', name: 'bad' },
      { op: 'create', kind: 'vip', name: 'ssh' },
      { op: 'update', kind: 'vip', name: 'web' },
      { op: 'delete', kind: 'vip', name: 'dns' },
      { op: 'create', kind: 'backend', name: 'ssh/10.3.0.1' },
      { op: 'create', kind: 'backend', name: 'web/10.1.0.3' },
      { op: 'update', kind: 'backend', name: 'web/10.1.0.2' },
      { op: 'delete', kind: 'backend', name: 'dns/10.2.0.1' },
      { op: 'delete', kind: 'backend', name: 'web/2001:db8:1::1' },
    ]);
    const exported = r(store, (tx) => tx.exportState());
    assert.deepEqual(
      exported.policies?.map((p) => p.name),
      ['corp', 'new'],
    );
    assert.deepEqual(
      exported.vips.map((v) => v.name),
      ['all', 'ssh', 'web'],
    );
    // Only the removed backend of a kept VIP drains; the deleted VIP's backend is freed at once.
    assert.deepEqual(
      r(store, (tx) => tx.snapshot().tombstones.map((t) => t.address)),
      ['2001:db8:1::1'],
    );
    // The audit row of an apply holds the diff, keyed by resource: each changed one as it was and as it is.
    const audit = store.audit({ sinceRevision: 1 })[0];
    const keys = (o: unknown): string[] => Object.keys(o as object);
    assert.deepEqual(
      keys(audit?.before)
        .filter((k) => !keys(audit?.after).includes(k))
        .sort(),
      ['backend/dns/10.2.0.1', 'backend/web/2001:db8:1::1', 'policy/bad', 'vip/dns'],
    );
    assert.deepEqual([...new Set([...keys(audit?.before), ...keys(audit?.after)])].sort(), [
      'backend/dns/10.2.0.1',
      'backend/ssh/10.3.0.1',
      'backend/web/10.1.0.2',
      'backend/web/10.1.0.3',
      'backend/web/2001:db8:1::1',
      'policy/bad',
      'policy/corp',
      'policy/new',
      'vip/dns',
      'vip/ssh',
      'vip/web',
    ]);
  });

  it("lets an apply swap two VIPs' endpoints", () => {
    const store = mem();
    w(store, (tx) => tx.replaceState({ vips: [vip('a', { port: 1 }), vip('b', { port: 2 })] }, 0));
    const changes = w(store, (tx) => tx.replaceState({ vips: [vip('a', { port: 2 }), vip('b', { port: 1 })] }, 0));
    assert.deepEqual(
      changes.map((c) => `${c.op} ${c.name}`),
      ['update a', 'update b'],
    );
  });

  it('an invalid or conflicting apply changes nothing', () => {
    const store = mem();
    w(store, (tx) => tx.replaceState(rich, 0));
    const before = r(store, (tx) => tx.snapshot());
    throwsField(() => w(store, (tx) => tx.replaceState({ vips: [vip('x', { address: '127.0.0.1' })] }, 0)), '/vips/0/address', 'loopback');
    // A VIP may not reference a policy the same apply deletes.
    throwsField(
      () => w(store, (tx) => tx.replaceState({ vips: [vip('x', { policies: ['corp'] })] }, 0)),
      '/vips/0/policies/0',
      'policy "corp" does not exist',
    );
    assert.deepEqual(
      r(store, (tx) => tx.snapshot()),
      before,
    );
  });

  it('snapshot holds everything the planner needs', () => {
    const store = mem();
    w(store, (tx) => tx.replaceState(rich, 0));
    const snap = r(store, (tx) => tx.snapshot());
    assert.equal(snap.revision, 1);
    // Ids are allocated in the file's order.
    assert.deepEqual(
      snap.vips.map((v) => [v.name, v.dp_id, v.backend_count]),
      [
        ['all', 2, 0],
        ['dns', 1, 1],
        ['web', 0, 3],
      ],
    );
    assert.deepEqual(snap.vips.find((v) => v.name === 'web')?.policies, ['corp', 'bad']);
    assert.deepEqual(
      snap.backends.map((b) => [b.vip, b.address, b.dp_id, b.dp_gen]),
      [
        ['dns', '10.2.0.1', 3, 1],
        ['web', '10.1.0.1', 0, 1],
        ['web', '10.1.0.2', 1, 1],
        ['web', '2001:db8:1::1', 2, 1],
      ],
    );
    assert.deepEqual(
      snap.policies.map((p) => p.name),
      ['bad', 'corp'],
    );
    assert.deepEqual(snap.tombstones, []);
  });
});

// ------------------------------------------------------------ snapshot cache

describe('incremental snapshots', () => {
  /** One random change (or a refused one): every kind of write the store has. */
  function randomChange(tx: StoreTx, rnd: (n: number) => number, now: number): void {
    const v = `v${rnd(6)}`;
    const addr = `10.0.${rnd(2)}.${rnd(8) + 1}`;
    const policies = rnd(3) === 0 ? [`p${rnd(3)}`] : [];
    switch (rnd(11)) {
      case 0:
        tx.putVip(vip(v, { port: rnd(4), policies }));
        break;
      case 1:
        tx.deleteVip(v);
        break;
      case 2:
        tx.putBackend(v, { address: addr, weight: rnd(3) });
        break;
      case 3:
        tx.createBackend(v, { address: addr, state: rnd(2) === 0 ? 'draining' : 'active' });
        break;
      case 4:
        tx.deleteBackend(v, addr, rnd(2) * 10);
        break;
      case 5:
        tx.putPolicy({ name: `p${rnd(3)}`, deny: [`192.0.2.${rnd(4) * 64}/26`] });
        break;
      case 6:
        tx.deletePolicy(`p${rnd(3)}`);
        break;
      case 7:
        tx.expireTombstones(now);
        break;
      case 8:
        tx.replaceState(
          {
            vips: [{ ...vip(v, { port: rnd(4) }), backends: [{ address: addr }, { address: `10.0.9.${rnd(4) + 1}` }] }],
            policies: [{ name: 'p0' }],
          },
          rnd(2) * 5,
        );
        break;
      case 9:
        tx.putBackend(v, { address: `2001:db8::${rnd(4) + 1}` });
        break;
      default:
        tx.listVips();
        break;
    }
  }

  it('match a snapshot built from scratch after every kind of change, mid-write snapshot, savepoint, rollback and refusal', () => {
    const path = join(tmpDir(), 'cache.db');
    const c = clock();
    const a = openStore(path, { maxVips: 8, maxBackends: 24, now: c.now });
    const b = openStore(path, { maxVips: 8, maxBackends: 24, now: c.now });
    const rnd = mulberry32(42);
    let changed = 0;
    for (let i = 0; i < 600; i++) {
      c.advance(1000);
      let planned: StoreSnapshot | null = null;
      const failAfter = rnd(10) === 0;
      try {
        store(
          a,
          rnd,
          c.value(),
          failAfter,
          (snap) => {
            planned = snap;
          },
          () => r(b, (tx) => tx.snapshot()),
        );
      } catch (err) {
        // Refused changes (not found, conflict, capacity, a failing afterWrite) must leave the cache valid.
        if (err instanceof assert.AssertionError) throw err;
      }
      const fresh = r(b, (tx) => tx.snapshot());
      const cached = r(a, (tx) => tx.snapshot());
      assert.deepEqual(cached, fresh, `step ${i}`);
      if (planned !== null && !failAfter) {
        assert.deepEqual(planned, fresh, `afterWrite snapshot, step ${i}`);
        changed++;
      }
    }
    assert.ok(changed > 100, `only ${changed} changes`);
    a.close();
    b.close();
  });

  function store(
    s: Store,
    rnd: (n: number) => number,
    now: number,
    failAfter: boolean,
    plan: (snap: StoreSnapshot) => void,
    committed?: () => StoreSnapshot,
  ): void {
    s.write(
      't',
      'random',
      (tx) => {
        // A snapshot in the middle of a write updates the cached state in place; the rest of the write, a
        // savepoint that undoes its rows, or a rollback must still leave the cache that of the committed revision.
        if (rnd(3) === 0) tx.snapshot();
        if (rnd(4) === 0) {
          try {
            tx.savepoint((sp) => {
              randomChange(sp, rnd, now);
              sp.snapshot();
              throw new Error('undone');
            });
          } catch {
            // undone, or refused
          }
          if (rnd(2) === 0) return; // nothing changed: no revision
          if (committed !== undefined) assert.deepEqual(tx.snapshot(), committed(), 'after an undone savepoint');
        }
        randomChange(tx, rnd, now);
        if (rnd(10) === 0) {
          tx.snapshot();
          throw new Error('the write fails');
        }
      },
      (tx) => {
        plan(tx.snapshot());
        if (failAfter) throw new Error('datapath refused');
      },
    );
  }

  it('a read nested in a write sees its changes and never caches them; nested writes are refused', () => {
    const s = mem();
    w(s, (tx) => tx.createVip(vip('a')));
    r(s, (tx) => tx.snapshot());
    assert.throws(
      () =>
        s.write('t', 'x', (tx) => {
          tx.createVip(vip('b', { port: 81 }));
          assert.deepEqual(
            s.read((inner) => inner.snapshot().vips.map((v) => v.name)),
            ['a', 'b'],
          );
          assert.throws(() => s.write('t', 'nested', () => undefined), /inside another store transaction/);
          throw new Error('roll back');
        }),
      /roll back/,
    );
    assert.deepEqual(
      r(s, (tx) => tx.snapshot().vips.map((v) => v.name)),
      ['a'],
    );
    assert.throws(
      () =>
        s.write(
          't',
          'y',
          (tx) => tx.createVip(vip('c', { port: 82 })),
          () => {
            assert.deepEqual(
              s.read((inner) => inner.snapshot().vips.map((v) => v.name)),
              ['a', 'c'],
            );
            throw new Error('datapath refused');
          },
        ),
      /datapath refused/,
    );
    assert.deepEqual(
      r(s, (tx) => tx.snapshot().vips.map((v) => v.name)),
      ['a'],
    );
    w(s, (tx) => tx.createVip(vip('d', { port: 83 })));
    assert.deepEqual(
      r(s, (tx) => tx.snapshot().vips.map((v) => v.name)),
      ['a', 'd'],
    );
  });

  it('hands out frozen records in fresh arrays', () => {
    const s = mem();
    w(s, (tx) => {
      tx.createVip(vip('web', { allow: ['10.0.0.0/8'] }));
      tx.createBackend('web', { address: '10.0.0.1' });
    });
    const one = r(s, (tx) => tx.snapshot());
    const two = r(s, (tx) => tx.snapshot());
    assert.notEqual(one.vips, two.vips);
    assert.ok(Object.isFrozen(one.vips[0]) && Object.isFrozen(one.vips[0]?.allow) && Object.isFrozen(one.backends[0]));
    assert.throws(() => {
      (one.backends[0] as { weight: number }).weight = 1;
    }, TypeError);
  });
});

// -------------------------------------------------------------------- backup

describe('backup', () => {
  it('writes an online copy that opens as a store with the same state', async () => {
    const dir = tmpDir();
    const store = openStore(join(dir, 'live.db'), { maxVips: 64, maxBackends: 256 });
    w(store, (tx) => {
      tx.createPolicy({ name: 'p', allow: ['10.0.0.0/8'] });
      for (let i = 0; i < 50; i++) {
        tx.createVip(vip(`v${i}`, { port: 1000 + i, policies: ['p'] }));
        tx.createBackend(`v${i}`, { address: `10.0.${i}.1` });
      }
    });
    w(store, (tx) => tx.deleteBackend('v0', '10.0.0.1', 300));
    const progress: Array<[number, number]> = [];
    const target = join(dir, 'backup.db');
    await store.backup(target, (done, total) => progress.push([done, total]));
    assert.ok(progress.length > 0);
    const last = progress[progress.length - 1];
    assert.ok(last !== undefined && last[0] === last[1] && last[1] > 0);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('partial')),
      [],
    );
    // The live store keeps working; the copy holds the state at backup time.
    w(store, (tx) => tx.createVip(vip('later', { port: 9 })));
    const copy = openStore(target, { maxVips: 64, maxBackends: 256 });
    const live = r(store, (tx) => tx.snapshot());
    const restored = r(copy, (tx) => tx.snapshot());
    assert.equal(restored.revision, live.revision - 1);
    assert.equal(restored.hash_seed, live.hash_seed);
    assert.deepEqual(
      restored.vips,
      live.vips.filter((v) => v.name !== 'later'),
    );
    assert.deepEqual(restored.backends, live.backends);
    assert.deepEqual(restored.tombstones, live.tombstones);
    assert.deepEqual(copy.audit(), store.audit().slice(0, -1));
    const db = new Database(target, { readonly: true });
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    db.close();
    copy.close();
    store.close();
  });

  it('leaves nothing behind when the target cannot be written', async () => {
    const store = mem();
    await assert.rejects(store.backup(join(tmpDir(), 'no', 'such', 'dir', 'b.db')));
    store.close();
  });
});

// ------------------------------------------------------------------- kill -9

describe('durability', () => {
  const writer = fileURLToPath(new URL('../../lib/store-writer.js', import.meta.url));

  interface Burst {
    acks: Array<[number, string]>;
    signal: NodeJS.Signals | null;
  }

  /** Runs the writer, SIGKILLs it after `killAfter` acknowledgements, returns every acknowledgement read. */
  function burst(path: string, killAfter: number): Promise<Burst> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [writer, path, '1000000'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const acks: Array<[number, string]> = [];
      let buf = '';
      let stderr = '';
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (d: string) => {
        stderr += d;
      });
      child.stdout.on('data', (d: string) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const [rev, name] = buf.slice(0, nl).split(' ');
          buf = buf.slice(nl + 1);
          acks.push([Number(rev), String(name)]);
          if (acks.length === killAfter) child.kill('SIGKILL');
        }
      });
      child.on('error', reject);
      child.on('close', (code, signal) => {
        if (signal !== 'SIGKILL') reject(new Error(`writer exited with ${code}: ${stderr}`));
        else resolve({ acks, signal });
      });
    });
  }

  function verify(path: string, acks: Array<[number, string]>): void {
    const db = new Database(path);
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(db.pragma('foreign_key_check'), []);
    db.close();
    const store = openStore(path, { maxVips: 1 << 17, maxBackends: 1 << 17 });
    try {
      const maxAck = Math.max(...acks.map(([rev]) => rev));
      assert.ok(store.revision() >= maxAck, `revision ${store.revision()} < acknowledged ${maxAck}`);
      assert.ok(acks.length < 1000);
      const audited = new Set(store.audit({ sinceRevision: 0, limit: 1000 }).map((a) => a.revision));
      r(store, (tx) => {
        for (const [rev, name] of acks) {
          const v = tx.getVip(name);
          assert.equal(v.created_revision, rev);
          assert.equal(v.backend_count, 1);
          assert.ok(audited.has(rev), `no audit row for revision ${rev}`);
        }
      });
    } finally {
      store.close();
    }
  }

  it('loses no acknowledged write when the writer is killed with SIGKILL mid-burst', { timeout: 120_000 }, async () => {
    const path = join(tmpDir(), 'kill.db');
    const first = await burst(path, 150);
    assert.equal(first.signal, 'SIGKILL');
    assert.ok(first.acks.length >= 150);
    verify(path, first.acks);
    // Again on the recovered file: the store reopens after a crash and keeps going.
    const second = await burst(path, 100);
    assert.ok(second.acks.length >= 100);
    // Each burst acknowledges consecutive revisions (one per write); a write committed but not yet
    // acknowledged when the first writer died may sit between the two bursts.
    for (const { acks } of [first, second]) {
      const start = acks[0]?.[0] ?? 0;
      assert.deepEqual(
        acks.map(([rev]) => rev),
        acks.map((_, i) => start + i),
      );
    }
    assert.equal(first.acks[0]?.[0], 1);
    assert.ok((second.acks[0]?.[0] ?? 0) > (first.acks[first.acks.length - 1]?.[0] ?? 0));
    const all = [...first.acks, ...second.acks];
    verify(path, all);
    assert.ok(existsSync(path));
  });
});

it('IPv4 addresses read from their octets are refused exactly as the parsed ones are', () => {
  const unusable: Record<string, string> = {
    unspecified: 'unspecified',
    loopback: 'loopback',
    multicast: 'multicast',
    broadcast: 'the broadcast address',
    linkLocal: 'link-local',
  };
  const rnd = mulberry32(20261207);
  const edges = [0, 1, 9, 10, 100, 126, 127, 128, 168, 169, 170, 223, 224, 239, 240, 254, 255];
  const octet = (): number => (rnd(2) === 0 ? edges[rnd(edges.length)]! : rnd(256));
  const fixed = ['255.255.255.255', '255.255.255.254', '0.0.0.0', '169.254.0.1', '169.253.255.255', '239.255.255.255', '240.0.0.1'];
  for (let k = 0; k < 50_000 + fixed.length; k++) {
    const text = fixed[k] ?? [octet(), rnd(3) === 0 ? 254 : octet(), octet(), octet()].join('.');
    const ip = parseIp(text);
    assert.equal(typeof ip, 'object', text);
    const what = unusable[(ip as Ip).range];
    const want = what === undefined ? [] : [{ field: '/address', reason: `${text} is ${what} and cannot be a backend address` }];
    assert.deepEqual(backendAddressErrors(text), want, text);
    assert.equal(vipAddressErrors(text).length, want.length, text);
  }
});
