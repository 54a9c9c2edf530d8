/** The Maglev pool's worker thread: fills the jobs of each batch it is sent, with the caller (pool.ts). */
import { parentPort } from 'node:worker_threads';
import { BY_WORKER, fromWire, workOn, type WireBatch } from './pool.js';

parentPort?.on('message', (batch: WireBatch) => workOn(fromWire(batch), BY_WORKER));
