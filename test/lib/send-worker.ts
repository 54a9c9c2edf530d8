/**
 * A worker thread that pushes one frame through an XDP program with
 * BPF_PROG_TEST_RUN, over and over, for a while, and reports where each run
 * sent it: the outer IPv4 destination of XDP_TX, or "others" for any other
 * verdict. For races between the datapath and a writer (test/root/datapath/datapath.test.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadNative } from '../../src/datapath/native.js';

const { progFd, frame, ms } = workerData as { progFd: number; frame: Uint8Array; ms: number };
const XDP_TX = 3;
const nat = loadNative();
const data = Buffer.from(frame);
const dsts: Record<string, number> = {};
let sent = 0;
let others = 0;
const end = performance.now() + ms;
while (performance.now() < end) {
  for (let i = 0; i < 100; i++) {
    const r = nat.progTestRun(progFd, { data, dataOutSize: data.length + 64 });
    sent++;
    if (r.retval !== XDP_TX) {
      others++;
      continue;
    }
    const dst = [...r.data.subarray(30, 34)].join('.'); // Ethernet 14 + outer IPv4 daddr at 16
    dsts[dst] = (dsts[dst] ?? 0) + 1;
  }
}
parentPort!.postMessage({ sent, dsts, others });
