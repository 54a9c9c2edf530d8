/**
 * The store on better-sqlite3: the one source of truth of the control plane.
 *
 * Durability: WAL with synchronous=FULL, so a transaction is on disk when
 * commit returns; a write is acknowledged only after that, and nothing
 * acknowledged is lost on kill -9 (or power loss). Every change is one
 * IMMEDIATE transaction (it takes the write lock up front, so two processes
 * never deadlock upgrading read locks) that bumps the global revision once
 * and writes one audit row.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { StorageError, ValidationError } from '../model/errors.js';
import type { NewHealthEvent } from '../model/health.js';
import { migrate } from './migrations.js';
import type { AuditRow } from './rows.js';
import { SnapshotCache } from './snapshot.js';
import { prepareStatements, type Statements } from './statements.js';
import { Tx, type StoreContext } from './tx.js';
import type { AuditEntry, Store, StoreTx } from './types.js';

export { SchemaTooNewError } from './migrations.js';

export interface StoreOptions {
  /** Datapath VIP ids are 0..maxVips-1 (the map size). */
  maxVips: number;
  /** Datapath backend ids are 0..maxBackends-1 (the map size). */
  maxBackends: number;
  /** Clock (ms since the epoch) for tombstones and audit times; tests pass their own. */
  now?: () => number;
  /** How long to wait for another process's write lock (default 5000 ms). */
  busyTimeoutMs?: number;
  /** Health events kept (the newest); default 10,000. */
  healthEventRetention?: number;
}

export const DEFAULT_AUDIT_LIMIT = 100;
export const MAX_AUDIT_LIMIT = 1000;
export const DEFAULT_HEALTH_EVENT_RETENTION = 10_000;
/** Pages copied per backup step: small steps keep the database writable during a backup. */
const BACKUP_PAGES_PER_STEP = 256;

/**
 * Opens (creating if needed) and migrates a store. `path` may be ':memory:'.
 * Throws SchemaTooNewError for a database written by a newer Ferry.
 */
export function openStore(path: string, opts: StoreOptions): Store {
  checkCapacity('maxVips', opts.maxVips);
  checkCapacity('maxBackends', opts.maxBackends);
  if (opts.healthEventRetention !== undefined) checkCapacity('healthEventRetention', opts.healthEventRetention);
  const db = openDatabase(path);
  try {
    configure(db, path, opts.busyTimeoutMs ?? 5000);
    migrate(db, path);
    return new SqliteStore(db, opts.healthEventRetention ?? DEFAULT_HEALTH_EVENT_RETENTION, {
      db,
      st: prepareStatements(db),
      maxVips: opts.maxVips,
      maxBackends: opts.maxBackends,
      now: opts.now ?? Date.now,
      cache: new SnapshotCache(),
    });
  } catch (err) {
    db.close();
    throw describeOpenError(err, path);
  }
}

function checkCapacity(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > 2 ** 32 - 1) throw new RangeError(`store: ${name} must be an integer 1..2^32-1, got ${v}`);
}

function openDatabase(path: string): Database.Database {
  try {
    return new Database(path);
  } catch (err) {
    const why = unwritableDir(dirname(path));
    throw new Error(`store ${path}: cannot open: ${err instanceof Error ? err.message : String(err)}${why ? ` (${why})` : ''}`);
  }
}

/** Why SQLite cannot write in `dir`, when the filesystem says so (its own message names no cause). */
function unwritableDir(dir: string): string | null {
  try {
    accessSync(dir, constants.W_OK);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EROFS') return `the state directory ${dir} is on a read-only filesystem`;
    if (code === 'EACCES' || code === 'EPERM') return `the state directory ${dir} is not writable by this user`;
    if (code === 'ENOENT') return `the state directory ${dir} does not exist`;
    return null;
  }
}

function configure(db: Database.Database, path: string, busyTimeoutMs: number): void {
  // Set first: switching to WAL needs a lock another process may hold briefly.
  db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
  const mode = db.pragma('journal_mode = WAL', { simple: true });
  if (mode !== 'wal' && !db.memory) throw new Error(`store ${path}: cannot enable WAL (journal_mode is ${String(mode)})`);
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  // Savepoints' undo data and sorts stay in memory: a read-only root filesystem (the DaemonSet's) has no
  // temporary directory SQLite could spill to, and every nested write would fail there.
  db.pragma('temp_store = MEMORY');
}

/** SQLite's "file is not a database" says nothing about which file; say it. */
function describeOpenError(err: unknown, path: string): unknown {
  if (err instanceof Database.SqliteError && err.code === 'SQLITE_NOTADB') {
    return new Error(`store ${path}: not a Ferry database (${err.message})`);
  }
  return err;
}

class SqliteStore implements Store {
  private readonly st: Statements;
  private closed = false;

  constructor(
    private readonly db: Database.Database,
    private readonly eventRetention: number,
    private readonly ctx: StoreContext,
  ) {
    this.st = ctx.st;
  }

  revision(): number {
    return this.currentRevision();
  }

  write<T>(actor: string, action: string, fn: (tx: StoreTx) => T, afterWrite?: (tx: StoreTx) => void): { result: T; revision: number } {
    this.assertOpen();
    // A write inside another transaction would bump and audit a revision that the outer one may roll back.
    if (this.db.inTransaction) throw new Error('store: write() called inside another store transaction');
    let tx: Tx | undefined;
    const run = this.db.transaction(() => {
      const current = this.currentRevision();
      tx = new Tx(this.ctx, current + 1, 'write');
      try {
        const result = fn(tx);
        // Nothing changed (e.g. a PUT of identical content): no revision, no audit, no datapath apply.
        if (tx.changes.size === 0) {
          tx.stateUndo.undo();
          return { result, revision: current };
        }
        tx.seal();
        this.st.setRevision.run(tx.revision);
        this.writeAudit(tx, actor, action);
        afterWrite?.(tx);
        return { result, revision: tx.revision };
      } finally {
        tx.close();
      }
    });
    let out: { result: T; revision: number };
    try {
      out = writing(() => run.immediate());
    } catch (err) {
      // Rolled back: the cached state is again that of the committed revision.
      tx?.stateUndo.undo();
      throw err;
    }
    // Committed: the snapshot afterWrite planned from is now the state of this revision.
    if (tx?.finalState !== null && tx?.finalState !== undefined) this.ctx.cache.put(tx.finalState);
    return out;
  }

  read<T>(fn: (tx: StoreTx) => T): T {
    this.assertOpen();
    // Nested in a write, a read sees uncommitted changes: its snapshot must not be cached.
    const committedView = !this.db.inTransaction;
    // A transaction gives fn one consistent view, even across other processes' commits.
    const run = this.db.transaction(() => {
      const tx = new Tx(this.ctx, this.currentRevision(), committedView ? 'read' : 'nested-read');
      try {
        return fn(tx);
      } finally {
        tx.close();
      }
    });
    return run.deferred();
  }

  /**
   * Audit rows in revision order: with sinceRevision, the first `limit`
   * after it (to follow the log); without, the latest `limit`.
   */
  audit(q: { limit?: number; sinceRevision?: number } = {}): AuditEntry[] {
    this.assertOpen();
    const limit = q.limit ?? DEFAULT_AUDIT_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_AUDIT_LIMIT) {
      throw new ValidationError([{ field: '/limit', reason: `must be an integer 1..${MAX_AUDIT_LIMIT}` }]);
    }
    const since = q.sinceRevision;
    if (since !== undefined && (!Number.isInteger(since) || since < 0)) {
      throw new ValidationError([{ field: '/since_revision', reason: 'must be an integer >= 0' }]);
    }
    const rows = since === undefined ? this.st.auditLatest.all(limit).reverse() : this.st.auditSince.all(since, limit);
    return rows.map(auditEntry);
  }

  appendHealthEvents(events: readonly NewHealthEvent[]): void {
    this.assertOpen();
    if (events.length === 0) return;
    // Its own short transaction: one fsync for a whole batch (a switch failing takes many backends at once).
    writing(() =>
      this.db
        .transaction(() => {
          for (const e of events) this.st.insertHealthEvent.run(e.time, e.vip, e.backend, e.from, e.to, e.reason);
          this.st.trimHealthEvents.run(this.eventRetention);
        })
        .immediate(),
    );
  }

  /**
   * Online backup (SQLite's backup API: writers continue meanwhile). It is
   * written next to `path` and renamed into place when complete, so `path`
   * never holds a partial copy.
   */
  async backup(path: string, onProgress?: (done: number, total: number) => void): Promise<void> {
    this.assertOpen();
    const partial = `${path}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      const meta = await this.db.backup(partial, {
        progress: ({ totalPages, remainingPages }) => {
          onProgress?.(totalPages - remainingPages, totalPages);
          return BACKUP_PAGES_PER_STEP;
        },
      });
      fsyncFile(partial);
      renameSync(partial, path);
      fsyncFile(dirname(path));
      onProgress?.(meta.totalPages - meta.remainingPages, meta.totalPages);
    } catch (err) {
      rmSync(partial, { force: true });
      throw err;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  private currentRevision(): number {
    const meta = this.st.meta.get();
    if (meta === undefined) throw new Error('store: meta row missing');
    return meta.revision;
  }

  private writeAudit(tx: Tx, actor: string, action: string): void {
    const { before, after } = tx.changes.auditJson();
    this.st.insertAudit.run(tx.revision, new Date(this.ctx.now()).toISOString(), actor, action, before, after);
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('store: closed');
  }
}

/** What a failing filesystem means for the operator, by SQLite's primary result code. */
const STORAGE_FAILURES: Readonly<Record<string, string>> = {
  SQLITE_FULL: 'the filesystem holding the state directory is full',
  SQLITE_READONLY: 'the state directory is read-only',
  SQLITE_IOERR: "the state directory's filesystem failed a read or write",
  SQLITE_CANTOPEN: 'a file in the state directory cannot be opened',
};

/**
 * Runs a write; a filesystem failure becomes a StorageError. SQLite has
 * rolled the transaction back by then, so nothing was changed, and the
 * connection stays usable: the next write succeeds once the disk does.
 */
function writing<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof Database.SqliteError)) throw err;
    const primary = /^SQLITE_[A-Z]+/.exec(err.code)?.[0] ?? '';
    const what = STORAGE_FAILURES[primary];
    if (what === undefined) throw err;
    throw new StorageError(
      `the change was not saved: ${what} (${err.code}: ${err.message}); nothing was changed, ` +
        'reads and the datapath keep working, and writes succeed again once the filesystem does',
    );
  }
}

function auditEntry(row: AuditRow): AuditEntry {
  return {
    revision: row.revision,
    time: row.time,
    actor: row.actor,
    action: row.action,
    before: row.before === null ? null : (JSON.parse(row.before) as unknown),
    after: row.after === null ? null : (JSON.parse(row.after) as unknown),
  };
}

/** Makes a file (or a directory entry) durable. */
function fsyncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
