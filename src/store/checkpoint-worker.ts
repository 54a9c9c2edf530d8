/** The store's checkpoint thread (checkpoint.ts): one PASSIVE checkpoint per burst of commit notices. */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';
import type { CheckpointNotice, CheckpointWorkerData } from './checkpoint.js';

const port = parentPort!;
const { path } = workerData as CheckpointWorkerData;
/** Closed after a failure: SQLite keeps a connection whose checkpoint hit an I/O error failing; the next try opens anew. */
let db: Database.Database | null = new Database(path, { fileMustExist: true });
let closing = false;
let scheduled = false;
/** In a streak of failed checkpoints (a full disk): only its first failure and its end are told. */
let failing = false;

const tell = (n: CheckpointNotice): void => port.postMessage(n);

port.on('message', (m: 'checkpoint' | 'close') => {
  if (m === 'close') {
    closing = true;
    db?.close();
    port.close();
    return;
  }
  // Notices that arrive while a checkpoint runs are all read before this runs: one more checkpoint covers them.
  if (scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    if (closing) return;
    try {
      db ??= new Database(path, { fileMustExist: true });
      db.pragma('wal_checkpoint(PASSIVE)');
      if (failing) tell({ ok: true, message: 'store: background checkpoints succeed again' });
      failing = false;
    } catch (err) {
      if (!failing)
        tell({ ok: false, message: `store: background checkpoint failed: ${err instanceof Error ? err.message : String(err)}` });
      failing = true;
      db?.close();
      db = null;
    }
  });
});
