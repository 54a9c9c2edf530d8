/**
 * Versioned schema migrations. The schema version lives in SQLite's
 * PRAGMA user_version; every pending migration runs at open, all of them in
 * one transaction (a failing one leaves the database exactly as it was). A
 * database newer than this code is refused: running old code on it could
 * silently drop what the newer schema means.
 *
 * Append migrations; never edit one that has shipped.
 */
import { randomInt } from 'node:crypto';
import type Database from 'better-sqlite3';

export interface Migration {
  /** The user_version after this migration: 1, 2, 3, ... in order. */
  version: number;
  description: string;
  up(db: Database.Database): void;
}

/** The database was written by a newer Ferry. */
export class SchemaTooNewError extends Error {
  constructor(
    readonly file: string,
    readonly found: number,
    readonly known: number,
  ) {
    super(
      `store ${file}: database schema version ${found} is newer than this Ferry supports (version ${known}); ` +
        'upgrade Ferry or restore a backup made by this version',
    );
    this.name = 'SchemaTooNewError';
  }
}

/** Version 1: the whole initial schema. */
const V1_SCHEMA = `
-- One row: the global revision and the Maglev hash seed (random at creation, never changed,
-- so tables stay identical across restarts and restores; a fleet member takes the fleet's).
CREATE TABLE meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL CHECK (revision >= 0),
  hash_seed INTEGER NOT NULL CHECK (hash_seed BETWEEN 0 AND 4294967295),
  created_at TEXT NOT NULL
) STRICT;

CREATE TABLE policies (
  name TEXT PRIMARY KEY,
  allow TEXT NOT NULL,              -- JSON array of canonical CIDRs
  deny TEXT NOT NULL,
  owner TEXT,                       -- NULL: the API
  created_revision INTEGER NOT NULL,
  updated_revision INTEGER NOT NULL
) STRICT;

-- Datapath id bookkeeping: every id ever handed out (ids are allocated lowest first, so these
-- are 0..N-1). in_use is kept by triggers: 1 while a VIP (backend or tombstone) holds the id.
CREATE TABLE vip_ids (
  dp_id INTEGER PRIMARY KEY CHECK (dp_id >= 0),
  in_use INTEGER NOT NULL CHECK (in_use IN (0, 1))
) STRICT;
CREATE INDEX vip_ids_free ON vip_ids (dp_id) WHERE in_use = 0;

-- gen: the last generation given to the id; a reallocation takes gen + 1 so conntrack entries of
-- the previous holder never hit the new one.
CREATE TABLE backend_ids (
  dp_id INTEGER PRIMARY KEY CHECK (dp_id >= 0),
  gen INTEGER NOT NULL CHECK (gen BETWEEN 0 AND 4294967295),
  in_use INTEGER NOT NULL CHECK (in_use IN (0, 1))
) STRICT;
CREATE INDEX backend_ids_free ON backend_ids (dp_id) WHERE in_use = 0;

CREATE TABLE vips (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  address TEXT NOT NULL,            -- canonical text form
  family INTEGER NOT NULL CHECK (family IN (4, 6)),
  port INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
  protocol TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
  encap TEXT NOT NULL CHECK (encap IN ('ipip')),
  allow TEXT NOT NULL,              -- JSON array of canonical CIDRs
  deny TEXT NOT NULL,
  rl_new_flows_per_sec INTEGER,     -- both NULL: no rate limit
  rl_burst INTEGER,
  maglev_m INTEGER,                 -- NULL: chosen from the backend count
  source_affinity INTEGER NOT NULL CHECK (source_affinity IN (0, 1)),
  owner TEXT,
  created_revision INTEGER NOT NULL,
  updated_revision INTEGER NOT NULL,
  dp_id INTEGER NOT NULL UNIQUE REFERENCES vip_ids (dp_id),
  CHECK ((rl_new_flows_per_sec IS NULL) = (rl_burst IS NULL))
) STRICT;
-- Not UNIQUE: an apply may swap two VIPs' endpoints, which passes through a transient duplicate;
-- the store checks uniqueness of the final state itself.
CREATE INDEX vips_endpoint ON vips (address, protocol, port);

-- Policy references, in the VIP's order; a referenced policy cannot be deleted (NO ACTION).
CREATE TABLE vip_policies (
  vip_id INTEGER NOT NULL REFERENCES vips (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  policy TEXT NOT NULL REFERENCES policies (name),
  PRIMARY KEY (vip_id, position),
  UNIQUE (vip_id, policy)
) STRICT;
CREATE INDEX vip_policies_policy ON vip_policies (policy);

CREATE TABLE backends (
  id INTEGER PRIMARY KEY,
  vip_id INTEGER NOT NULL REFERENCES vips (id) ON DELETE CASCADE,
  address TEXT NOT NULL,            -- canonical text form
  sort_key BLOB NOT NULL,           -- family byte + 16 address bytes: numeric order for listing
  weight INTEGER NOT NULL CHECK (weight BETWEEN 0 AND 65535),
  state TEXT NOT NULL CHECK (state IN ('active', 'draining', 'disabled')),
  owner TEXT,
  created_revision INTEGER NOT NULL,
  updated_revision INTEGER NOT NULL,
  dp_id INTEGER NOT NULL UNIQUE REFERENCES backend_ids (dp_id),
  dp_gen INTEGER NOT NULL,
  UNIQUE (vip_id, address)
) STRICT;
CREATE UNIQUE INDEX backends_order ON backends (vip_id, sort_key);

-- Deleted backends whose flows still drain; their ids are not reusable until removed.
-- Deleting the VIP ends its flows anyway, so its tombstones go with it.
CREATE TABLE tombstones (
  dp_id INTEGER PRIMARY KEY REFERENCES backend_ids (dp_id),
  dp_gen INTEGER NOT NULL,
  vip_dp_id INTEGER NOT NULL REFERENCES vips (dp_id) ON DELETE CASCADE,
  address TEXT NOT NULL,
  expires_at INTEGER NOT NULL       -- ms since the epoch
) STRICT;
CREATE INDEX tombstones_vip ON tombstones (vip_dp_id, address);
CREATE INDEX tombstones_expiry ON tombstones (expires_at);

-- One row per revision.
CREATE TABLE audit (
  revision INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  before TEXT,                      -- JSON
  after TEXT
) STRICT;

-- id bookkeeping by triggers, so every path (including FK cascades) keeps it exact.
CREATE TRIGGER vips_take_id AFTER INSERT ON vips BEGIN
  UPDATE vip_ids SET in_use = 1 WHERE dp_id = NEW.dp_id;
END;
CREATE TRIGGER vips_free_id AFTER DELETE ON vips BEGIN
  UPDATE vip_ids SET in_use = 0 WHERE dp_id = OLD.dp_id;
END;
CREATE TRIGGER backends_take_id AFTER INSERT ON backends BEGIN
  UPDATE backend_ids SET in_use = 1 WHERE dp_id = NEW.dp_id;
END;
CREATE TRIGGER backends_free_id AFTER DELETE ON backends BEGIN
  UPDATE backend_ids SET in_use = 0 WHERE dp_id = OLD.dp_id
    AND NOT EXISTS (SELECT 1 FROM tombstones WHERE dp_id = OLD.dp_id);
END;
CREATE TRIGGER tombstones_take_id AFTER INSERT ON tombstones BEGIN
  UPDATE backend_ids SET in_use = 1 WHERE dp_id = NEW.dp_id;
END;
CREATE TRIGGER tombstones_free_id AFTER DELETE ON tombstones BEGIN
  UPDATE backend_ids SET in_use = 0 WHERE dp_id = OLD.dp_id
    AND NOT EXISTS (SELECT 1 FROM backends WHERE dp_id = OLD.dp_id);
END;
`;

/**
 * Version 2: health checks. Their configuration is desired state (JSON in
 * normal form, NULL = none configured) and goes with its VIP or backend.
 * Health itself is runtime state rebuilt by checking; only its transitions
 * are kept, as events, outside the revision history (a backend going down
 * changes no desired state) and trimmed to a bounded number.
 */
const V2_HEALTH = `
ALTER TABLE vips ADD COLUMN health_check TEXT;
ALTER TABLE backends ADD COLUMN health_check TEXT;

CREATE TABLE health_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,  -- monotonic even after trimming: the listing cursor
  time TEXT NOT NULL,
  vip TEXT NOT NULL,                     -- names, not ids: events outlive the VIP or backend
  backend TEXT NOT NULL,
  from_status TEXT NOT NULL CHECK (from_status IN ('up', 'down', 'unknown', 'unchecked')),
  to_status TEXT NOT NULL CHECK (to_status IN ('up', 'down', 'unknown', 'unchecked')),
  reason TEXT
) STRICT;
CREATE INDEX health_events_vip ON health_events (vip, id);
`;

/**
 * Version 3: indexes for the owner-scoped reads. Every replaceState lists
 * its owner's VIPs and policies (`owner IS ? ORDER BY name`); without
 * these that is a scan of the whole table, so a Kubernetes burst of N
 * Services (one replaceState each) cost O(N²). With (owner, name) the read
 * is a range of the index already in name order.
 */
const V3_OWNER_INDEXES = `
CREATE INDEX vips_owner ON vips (owner, name);
CREATE INDEX policies_owner ON policies (owner, name);
`;

/**
 * Version 4: port translation. A backend may listen on a port of its own
 * (0: the VIP's) and run on a host other than itself ("local", or its
 * host's address): that host translates (bpf/node.bpf.c).
 */
const V4_BACKEND_PATH = `
ALTER TABLE backends ADD COLUMN port INTEGER NOT NULL DEFAULT 0 CHECK (port BETWEEN 0 AND 65535);
ALTER TABLE backends ADD COLUMN host TEXT;
`;

/**
 * Version 5: source NAT. A VIP forwards by direct return (dsr, encapsulated)
 * or by source NAT (snat). A draining backend keeps its port and host (its
 * flows still go the way they went).
 */
const V5_VIP_FORWARDING = `
ALTER TABLE vips ADD COLUMN forwarding TEXT NOT NULL DEFAULT 'dsr' CHECK (forwarding IN ('dsr', 'snat'));
ALTER TABLE tombstones ADD COLUMN port INTEGER NOT NULL DEFAULT 0 CHECK (port BETWEEN 0 AND 65535);
ALTER TABLE tombstones ADD COLUMN host TEXT;
`;

/**
 * Version 6: the fleet mirror's mark. The API's resources mirror an etcd
 * prefix; this row says which prefix of which cluster at which revision,
 * committed with the rows it describes, so a restart watches on from there.
 */
const V6_FLEET_MARK = `
CREATE TABLE fleet_mark (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  prefix TEXT NOT NULL,
  cluster TEXT NOT NULL,
  revision INTEGER NOT NULL CHECK (revision >= 0)
) STRICT;
`;

/**
 * Version 7: an id is marked in use where the store allocates it, in the
 * statement that allocates it, no longer by a trigger on every inserted
 * VIP and backend row. The triggers ran once per row and doubled the cost
 * of inserting backends (a Kubernetes burst inserts 100,000 in seconds).
 * Freeing stays with the delete triggers: a deleted VIP's backends go by
 * cascade, which no statement of the store sees.
 */
const V7_IDS_TAKEN_BY_ALLOCATION = `
DROP TRIGGER vips_take_id;
DROP TRIGGER backends_take_id;
`;

/**
 * Version 8: backends keep one unique index of their addresses. UNIQUE
 * (vip_id, address) said what `backends_order` (vip_id, sort_key) already
 * says, as a sort key is the canonical address's family and bytes; its
 * upkeep was a tenth of inserting a backend and an eighth of the table's
 * pages. A constraint is part of the table, so the table is rebuilt: the
 * old one renamed aside, the new one created, the rows copied with their
 * ids, the old one dropped (with foreign keys on, that drop deletes its
 * rows without firing triggers, and nothing references backends). The
 * triggers and the index that name the table are dropped first and made
 * again after, as they were.
 */
const V8_BACKENDS_ONE_ADDRESS_INDEX = `
DROP TRIGGER backends_free_id;
DROP TRIGGER tombstones_free_id;
DROP INDEX backends_order;
ALTER TABLE backends RENAME TO backends_v7;
CREATE TABLE backends (
  id INTEGER PRIMARY KEY,
  vip_id INTEGER NOT NULL REFERENCES vips (id) ON DELETE CASCADE,
  address TEXT NOT NULL,            -- canonical text form
  sort_key BLOB NOT NULL,           -- family byte + 16 address bytes: numeric order, and with vip_id the unique key
  weight INTEGER NOT NULL CHECK (weight BETWEEN 0 AND 65535),
  state TEXT NOT NULL CHECK (state IN ('active', 'draining', 'disabled')),
  owner TEXT,
  created_revision INTEGER NOT NULL,
  updated_revision INTEGER NOT NULL,
  dp_id INTEGER NOT NULL UNIQUE REFERENCES backend_ids (dp_id),
  dp_gen INTEGER NOT NULL,
  health_check TEXT,
  port INTEGER NOT NULL DEFAULT 0 CHECK (port BETWEEN 0 AND 65535),
  host TEXT
) STRICT;
INSERT INTO backends (id, vip_id, address, sort_key, weight, state, owner, created_revision, updated_revision,
                      dp_id, dp_gen, health_check, port, host)
  SELECT id, vip_id, address, sort_key, weight, state, owner, created_revision, updated_revision,
         dp_id, dp_gen, health_check, port, host FROM backends_v7;
DROP TABLE backends_v7;
CREATE UNIQUE INDEX backends_order ON backends (vip_id, sort_key);
CREATE TRIGGER backends_free_id AFTER DELETE ON backends BEGIN
  UPDATE backend_ids SET in_use = 0 WHERE dp_id = OLD.dp_id
    AND NOT EXISTS (SELECT 1 FROM tombstones WHERE dp_id = OLD.dp_id);
END;
CREATE TRIGGER tombstones_free_id AFTER DELETE ON tombstones BEGIN
  UPDATE backend_ids SET in_use = 0 WHERE dp_id = OLD.dp_id
    AND NOT EXISTS (SELECT 1 FROM backends WHERE dp_id = OLD.dp_id);
END;
`;

/** A migration that is one SQL script. */
function script(version: number, description: string, sql: string): Migration {
  return { version, description, up: (db) => db.exec(sql) };
}

export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    description: 'initial schema',
    up(db: Database.Database): void {
      db.exec(V1_SCHEMA);
      db.prepare('INSERT INTO meta (id, revision, hash_seed, created_at) VALUES (1, 0, ?, ?)').run(
        randomInt(0, 2 ** 32),
        new Date().toISOString(),
      );
    },
  },
  script(2, 'health check configuration and health events', V2_HEALTH),
  script(3, 'indexes on the owner of VIPs and policies', V3_OWNER_INDEXES),
  script(4, 'backend port and host (port translation)', V4_BACKEND_PATH),
  script(5, 'VIP forwarding (source NAT); port and host of draining backends', V5_VIP_FORWARDING),
  script(6, "the fleet mirror's mark (etcd prefix, cluster, revision)", V6_FLEET_MARK),
  script(7, 'datapath ids marked in use by their allocation, not by insert triggers', V7_IDS_TAKEN_BY_ALLOCATION),
  script(8, 'backends keep one unique index of their addresses', V8_BACKENDS_ONE_ADDRESS_INDEX),
]);

/** The schema version this code writes. */
export function latestVersion(migrations: readonly Migration[] = MIGRATIONS): number {
  return migrations.reduce((v, m) => Math.max(v, m.version), 0);
}

export function schemaVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/** Version 0 must mean "new": never build Ferry's schema into someone else's database. */
function assertEmpty(db: Database.Database, file: string): void {
  const objects = db.prepare<[], number>("SELECT COUNT(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'").pluck().get() ?? 0;
  if (objects > 0) {
    throw new Error(`store ${file}: not a Ferry database (schema version 0 but it already holds ${objects} tables or indexes)`);
  }
}

/**
 * Brings the database to the latest version; returns the versions applied.
 * `file` only names the database in errors. `migrations` is a parameter so
 * tests can build older databases.
 */
export function migrate(db: Database.Database, file: string, migrations: readonly Migration[] = MIGRATIONS): number[] {
  const known = latestVersion(migrations);
  const run = db.transaction((): number[] => {
    // Read inside the transaction: two processes opening at once must not both migrate.
    const found = schemaVersion(db);
    if (found > known) throw new SchemaTooNewError(file, found, known);
    if (found === 0) assertEmpty(db, file);
    const pending = migrations.filter((m) => m.version > found).sort((a, b) => a.version - b.version);
    for (const m of pending) {
      m.up(db);
      // user_version is part of the database header, so it commits or rolls back with the rest.
      db.pragma(`user_version = ${m.version}`);
    }
    return pending.map((m) => m.version);
  });
  return run.immediate();
}
