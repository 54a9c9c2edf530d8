/**
 * Every SQL statement the store runs, prepared once at open. Parameters are
 * positional and typed; results are the row types of rows.ts.
 */
import type Database from 'better-sqlite3';
import type { Tombstone } from './types.js';
import type { AuditRow, BackendRow, HealthEventRow, MetaRow, PolicyRow, VipRow } from './rows.js';

type Db = Database.Database;
type Stmt<P extends unknown[], R = unknown> = Database.Statement<P, R>;

const VIP_SELECT = `
  SELECT v.*, (SELECT COUNT(*) FROM backends b WHERE b.vip_id = v.id) AS backend_count
  FROM vips v`;

const BACKEND_SELECT = `
  SELECT b.id, b.vip_id, v.name AS vip, b.address, b.weight, b.state, b.owner,
         b.created_revision, b.updated_revision, b.dp_id, b.dp_gen, b.health_check, b.port, b.host
  FROM backends b JOIN vips v ON v.id = b.vip_id`;

/** Columns written for a VIP, in this order, by insert and update. */
export type VipValues = [
  name: string,
  address: string,
  family: number,
  port: number,
  protocol: string,
  encap: string,
  allow: string,
  deny: string,
  rl_new_flows_per_sec: number | null,
  rl_burst: number | null,
  maglev_m: number | null,
  source_affinity: number,
  owner: string | null,
  health_check: string | null,
  forwarding: string,
];

/** Columns written for a backend's changeable fields, in this order, by insert and update. */
export type BackendValues = [weight: number, state: string, health_check: string | null, port: number, host: string | null];

/** The columns of one inserted backend, in BACKEND_INSERT's order. */
export type BackendInsertRow = [
  vip_id: number,
  address: string,
  sort_key: Buffer,
  ...BackendValues,
  owner: string | null,
  created_revision: number,
  updated_revision: number,
  dp_id: number,
  dp_gen: number,
];

const BACKEND_INSERT = `
  INSERT INTO backends (vip_id, address, sort_key, weight, state, health_check, port, host, owner,
                        created_revision, updated_revision, dp_id, dp_gen)
  VALUES `;
const BACKEND_ROW = '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';

/**
 * Rows per multi-row INSERT. One statement per row made better-sqlite3's
 * per-call overhead the larger part of a Kubernetes burst's 100,000 backend
 * inserts; 32 rows × 13 parameters stays far below SQLite's variable limit.
 */
export const MAX_ROWS_PER_INSERT = 32;

/**
 * The INSERT of `count` rows (1..max) at once, prepared on first use and
 * kept: a VIP's backends are usually written in one statement. It takes
 * the rows' values as one flat array (better-sqlite3 binds an array's
 * elements in order), not spread into arguments.
 */
function rowInserter<P extends unknown[]>(db: Db, head: string, row: string, max: number): (count: number) => Stmt<[P[number][]]> {
  const prepared = new Map<number, Stmt<[P[number][]]>>();
  return (count) => {
    if (!Number.isInteger(count) || count < 1 || count > max) throw new RangeError(`store: cannot insert ${count} rows at once`);
    let stmt = prepared.get(count);
    if (stmt === undefined) {
      stmt = db.prepare<[P[number][]]>(head + Array.from({ length: count }, () => row).join(', '));
      prepared.set(count, stmt);
    }
    return stmt;
  };
}

export function prepareStatements(db: Db) {
  const p = <P extends unknown[], R = unknown>(sql: string): Stmt<P, R> => db.prepare<P, R>(sql);
  return {
    // meta
    meta: p<[], MetaRow>('SELECT revision, hash_seed FROM meta WHERE id = 1'),
    setRevision: p<[number]>('UPDATE meta SET revision = ? WHERE id = 1'),
    setHashSeed: p<[number]>('UPDATE meta SET hash_seed = ? WHERE id = 1'),
    fleetMark: p<[], { prefix: string; cluster: string; revision: number }>(
      'SELECT prefix, cluster, revision FROM fleet_mark WHERE id = 1',
    ),
    setFleetMark: p<[string, string, number]>(
      'INSERT INTO fleet_mark (id, prefix, cluster, revision) VALUES (1, ?, ?, ?) ' +
        'ON CONFLICT (id) DO UPDATE SET prefix = excluded.prefix, cluster = excluded.cluster, revision = excluded.revision',
    ),

    // vips
    vipByName: p<[string], VipRow>(`${VIP_SELECT} WHERE v.name = ?`),
    vipPage: p<[string, number], VipRow>(`${VIP_SELECT} WHERE v.name > ? ORDER BY v.name LIMIT ?`),
    vipAll: p<[], VipRow>(`${VIP_SELECT} ORDER BY v.name`),
    vipsByOwner: p<[string | null], VipRow>(`${VIP_SELECT} WHERE v.owner IS ? ORDER BY v.name`),
    vipsAtEndpoint: p<[string, number, string], VipRow>(
      `${VIP_SELECT} WHERE v.address = ? AND v.port = ? AND v.protocol = ? ORDER BY v.name`,
    ),
    // No RETURNING: the row is known (insertedVip, tx.ts); only its id comes back, as the last rowid.
    insertVip: p<[...VipValues, number, number, number]>(`
      INSERT INTO vips (name, address, family, port, protocol, encap, allow, deny, rl_new_flows_per_sec,
                        rl_burst, maglev_m, source_affinity, owner, health_check, forwarding, created_revision,
                        updated_revision, dp_id)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    updateVip: p<[...VipValues, number, number]>(`
      UPDATE vips SET name = ?, address = ?, family = ?, port = ?, protocol = ?, encap = ?, allow = ?,
                      deny = ?, rl_new_flows_per_sec = ?, rl_burst = ?, maglev_m = ?, source_affinity = ?,
                      owner = ?, health_check = ?, forwarding = ?, updated_revision = ?
      WHERE id = ?`),
    deleteVip: p<[number]>('DELETE FROM vips WHERE id = ?'),

    // vip -> policy references
    vipPolicies: p<[number], string>('SELECT policy FROM vip_policies WHERE vip_id = ? ORDER BY position').pluck(),
    allVipPolicies: p<[], { vip_id: number; policy: string }>('SELECT vip_id, policy FROM vip_policies ORDER BY vip_id, position'),
    clearVipPolicies: p<[number]>('DELETE FROM vip_policies WHERE vip_id = ?'),
    insertVipPolicy: p<[number, number, string]>('INSERT INTO vip_policies (vip_id, position, policy) VALUES (?, ?, ?)'),
    policyReferrers: p<[string], { name: string; owner: string | null }>(`
      SELECT v.name, v.owner FROM vip_policies r JOIN vips v ON v.id = r.vip_id
      WHERE r.policy = ? ORDER BY v.name`),

    // policies
    policyByName: p<[string], PolicyRow>('SELECT * FROM policies WHERE name = ?'),
    policyPage: p<[string, number], PolicyRow>('SELECT * FROM policies WHERE name > ? ORDER BY name LIMIT ?'),
    policyAll: p<[], PolicyRow>('SELECT * FROM policies ORDER BY name'),
    policiesByOwner: p<[string | null], PolicyRow>('SELECT * FROM policies WHERE owner IS ? ORDER BY name'),
    insertPolicy: p<[string, string, string, string | null, number, number]>(`
      INSERT INTO policies (name, allow, deny, owner, created_revision, updated_revision)
      VALUES (?, ?, ?, ?, ?, ?)`),
    updatePolicy: p<[string, string, number, string]>('UPDATE policies SET allow = ?, deny = ?, updated_revision = ? WHERE name = ?'),
    deletePolicy: p<[string]>('DELETE FROM policies WHERE name = ?'),

    // backends
    // By the sort key (addressSortKey of the canonical address): (vip_id, sort_key) is the unique index.
    backendByKey: p<[number, Buffer], BackendRow>(`${BACKEND_SELECT} WHERE b.vip_id = ? AND b.sort_key = ?`),
    backendPage: p<[number, Buffer, number], BackendRow>(
      `${BACKEND_SELECT} WHERE b.vip_id = ? AND b.sort_key > ? ORDER BY b.sort_key LIMIT ?`,
    ),
    backendsOfVip: p<[number], BackendRow>(`${BACKEND_SELECT} WHERE b.vip_id = ? ORDER BY b.sort_key`),
    backendAll: p<[], BackendRow>(`${BACKEND_SELECT} ORDER BY v.name, b.sort_key`),
    insertBackendRows: rowInserter<BackendInsertRow>(db, BACKEND_INSERT, BACKEND_ROW, MAX_ROWS_PER_INSERT),
    updateBackend: p<[...BackendValues, number, number]>(
      'UPDATE backends SET weight = ?, state = ?, health_check = ?, port = ?, host = ?, updated_revision = ? WHERE id = ?',
    ),
    deleteBackend: p<[number]>('DELETE FROM backends WHERE id = ?'),

    // datapath ids
    // An id is marked in use where it is allocated (schema version 7); the rows' delete triggers free it.
    takeFreeVipId: p<[number], number>(`
      UPDATE vip_ids SET in_use = 1
      WHERE dp_id = (SELECT dp_id FROM vip_ids WHERE in_use = 0 AND dp_id < ? ORDER BY dp_id LIMIT 1)
      RETURNING dp_id`).pluck(),
    nextVipId: p<[], number>('SELECT COALESCE(MAX(dp_id) + 1, 0) FROM vip_ids').pluck(),
    addVipId: p<[number]>('INSERT INTO vip_ids (dp_id, in_use) VALUES (?, 1)'),
    freeBackendIds: p<[number, number], number>(
      'SELECT dp_id FROM backend_ids WHERE in_use = 0 AND dp_id < ? ORDER BY dp_id LIMIT ?',
    ).pluck(),
    nextBackendId: p<[], number>('SELECT COALESCE(MAX(dp_id) + 1, 0) FROM backend_ids').pluck(),
    // New ids [first, end), each at generation 1 (0 is never used): one statement for a whole allocation.
    addBackendIds: p<[first: number, end: number]>(`
      WITH RECURSIVE ids (dp_id) AS (SELECT ? UNION ALL SELECT dp_id + 1 FROM ids WHERE dp_id + 1 < ?)
      INSERT INTO backend_ids (dp_id, gen, in_use) SELECT dp_id, 1, 1 FROM ids`),
    // u32 generations; 0 is never used so a zeroed map entry never matches.
    takeBackendId: p<[number], number>(`
      UPDATE backend_ids SET gen = CASE WHEN gen >= 4294967295 THEN 1 ELSE gen + 1 END, in_use = 1
      WHERE dp_id = ? RETURNING gen`).pluck(),
    backendIdsInUse: p<[], number>('SELECT COUNT(*) FROM backend_ids WHERE in_use = 1').pluck(),
    vipIdsInUse: p<[], number>('SELECT COUNT(*) FROM vip_ids WHERE in_use = 1').pluck(),

    // tombstones
    insertTombstone: p<[number, number, number, string, number, number, string | null]>(
      'INSERT INTO tombstones (dp_id, dp_gen, vip_dp_id, address, expires_at, port, host) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
    tombstonesOfVip: p<[number], Tombstone>(
      'SELECT dp_id, dp_gen, vip_dp_id, address, expires_at, port, host FROM tombstones WHERE vip_dp_id = ?',
    ),
    deleteTombstone: p<[number]>('DELETE FROM tombstones WHERE dp_id = ?'),
    expiredTombstones: p<[number], Tombstone>(
      'SELECT dp_id, dp_gen, vip_dp_id, address, expires_at, port, host FROM tombstones WHERE expires_at <= ? ORDER BY dp_id',
    ),
    deleteExpiredTombstones: p<[number]>('DELETE FROM tombstones WHERE expires_at <= ?'),
    nextTombstoneExpiry: p<[], number | null>('SELECT MIN(expires_at) FROM tombstones').pluck(),
    tombstoneAll: p<[], Tombstone>('SELECT dp_id, dp_gen, vip_dp_id, address, expires_at, port, host FROM tombstones ORDER BY dp_id'),

    // audit
    insertAudit: p<[number, string, string, string, string | null, string | null]>(
      'INSERT INTO audit (revision, time, actor, action, before, after) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    auditLatest: p<[number], AuditRow>('SELECT * FROM audit ORDER BY revision DESC LIMIT ?'),
    auditSince: p<[number, number], AuditRow>('SELECT * FROM audit WHERE revision > ? ORDER BY revision LIMIT ?'),

    // health events (newest first; a filter parameter of NULL matches everything)
    insertHealthEvent: p<[string, string, string, string, string, string | null]>(
      'INSERT INTO health_events (time, vip, backend, from_status, to_status, reason) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    trimHealthEvents: p<[number]>('DELETE FROM health_events WHERE id <= (SELECT MAX(id) FROM health_events) - ?'),
    healthEventPage: p<[string | null, string | null, string | null, string | null, number, number], HealthEventRow>(`
      SELECT * FROM health_events
      WHERE (? IS NULL OR vip = ?) AND (? IS NULL OR backend = ?) AND id < ?
      ORDER BY id DESC LIMIT ?`),
  };
}

export type Statements = ReturnType<typeof prepareStatements>;
