/** The store's checkpoint thread (checkpoint.ts): one PASSIVE checkpoint per burst of commit notices. */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';
import type { CheckpointWorkerData } from './checkpoint.js';

const port = parentPort!;
const { path } = workerData as CheckpointWorkerData;
const db = new Database(path, { fileMustExist: true });
let scheduled = false;

port.on('message', (m: 'checkpoint' | 'close') => {
  if (m === 'close') {
    db.close();
    port.close();
    return;
  }
  // Notices that arrive while a checkpoint runs are all read before this runs: one more checkpoint covers them.
  if (scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    if (!db.open) return;
    try {
      db.pragma('wal_checkpoint(PASSIVE)');
    } catch (err) {
      port.postMessage(err instanceof Error ? err.message : String(err));
    }
  });
});
