/**
 * WAL checkpoints off the write path. SQLite copies the write-ahead log
 * back into the database file (a checkpoint) on the committing thread once
 * the log passes 1000 pages: every few hundred API writes one of them, and
 * every few transactions of a Kubernetes burst, waited for that copy and
 * its fsync. Here a worker thread with its own connection checkpoints after
 * each commit instead (PASSIVE: it never blocks a writer or a reader, and a
 * commit never waits for it); commits stay durable on their own (the log
 * is synced at each one), so a checkpoint lost to a crash costs nothing.
 *
 * The writer's own automatic checkpoint stays as the safety net, at a
 * higher mark, should the worker fall behind. A checkpoint that fails (a
 * full disk) is told once, and again when they succeed; the next commit
 * tries again. A worker that cannot run at all (its connection does not
 * open) is told once and not started again: the writer checkpoints itself.
 */
import { Worker } from 'node:worker_threads';

/** The committing connection checkpoints itself only past this many log pages (40 MiB of 4 KiB pages). */
export const FALLBACK_AUTOCHECKPOINT_PAGES = 10_000;

/** What the worker is given: the database file. */
export interface CheckpointWorkerData {
  path: string;
}

/** A change in how checkpoints go: failing (ok false, why) or succeeding again. */
export interface CheckpointNotice {
  ok: boolean;
  message: string;
}

export class Checkpointer {
  private worker: Worker | undefined;
  /** Stopped or closed: nothing more is told. */
  private stopped = false;

  /** @param path the database file (not ':memory:') */
  constructor(path: string, onNotice: (n: CheckpointNotice) => void = () => {}) {
    const data: CheckpointWorkerData = { path };
    const w = new Worker(new URL('./checkpoint-worker.js', import.meta.url), { workerData: data });
    w.unref();
    w.on('message', (n: CheckpointNotice) => {
      if (!this.stopped) onNotice(n);
    });
    w.on('error', (err) => {
      if (this.stopped) return;
      this.stopped = true;
      onNotice({ ok: false, message: `store: the checkpoint thread stopped (the writer checkpoints itself from now on): ${err.message}` });
      this.worker = undefined;
    });
    w.on('exit', () => {
      if (this.worker === w) this.worker = undefined;
    });
    this.worker = w;
  }

  /** After a commit: the worker checkpoints what is committed (commits while it works make one more, not many). */
  committed(): void {
    this.worker?.postMessage('checkpoint');
  }

  /** Stops the worker; its connection closes with it. */
  close(): void {
    this.stopped = true;
    this.worker?.postMessage('close');
    this.worker = undefined;
  }
}
