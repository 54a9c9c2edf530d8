/**
 * A Maglev pool worker that fails the way a hung one would: of a batch of
 * 32 jobs or more it takes one and never finishes it; smaller batches it
 * serves as the real worker does (maglev-pool.test.ts).
 */
import { parentPort } from 'node:worker_threads';
import { BY_WORKER, fromWire, workOn, type WireBatch } from '../../src/maglev/pool.js';

parentPort?.on('message', (batch: WireBatch) => {
  if (batch.count >= 32) Atomics.add(batch.ctrl, 0, 1);
  else workOn(fromWire(batch), BY_WORKER);
});
