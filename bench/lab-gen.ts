/**
 * The lab benchmark's traffic generator, run inside the generator
 * namespace (nsenter --net, pinned to one CPU by taskset):
 *
 *   node dist/bench/lab-gen.js PROG_PIN IFNAME
 *
 * It runs the pinned xdp_gen program with BPF_PROG_TEST_RUN in live-frames
 * mode as if frames had arrived on IFNAME; xdp_gen paces them, gives each
 * its own source and returns XDP_TX, which sends it out of IFNAME to its
 * veth peer (the load balancer). What and how much to send is in xdp_gen's
 * config map, written by the parent (bench/lab-bpf.ts armGen).
 *
 * One live-frames run costs ~25 ms of set-up and tear-down in the kernel, so
 * a window is one long run: for each line {"frame":"<hex>"} on stdin it runs
 * the program up to 2^31 times and stops early when SIGUSR2 arrives (the
 * kernel checks for signals between batches and returns EINTR). The parent
 * sends SIGUSR2 once xdp_gen has emitted what it was armed for. Answers
 * {"ms":ELAPSED} per line; prints "ready" once the program is found.
 *
 *   node dist/bench/lab-gen.js --packet IFNAME
 *
 * The same rig's generator where the kernel refuses live-frames runs: for
 * each line {"flood":{...}} (the addon's packetFlood options, its buffers as
 * hex) it sends the frames out of IFNAME through an AF_PACKET socket, paced,
 * with the flows numbered as xdp_gen numbers them, and answers
 * {"sent","refused","ms"}.
 */
import { createInterface } from 'node:readline';
import { BPF_F_TEST_XDP_LIVE_FRAMES, loadNative, type PacketFloodOptions } from '../src/datapath/native.js';

const MAX_RUNS = 2 ** 31 - 1;

/** packetFlood's options with its buffers as hex strings, as the parent writes them. */
type FloodRequest = Omit<PacketFloodOptions, 'dstMac' | 'srcMac' | 'dstIp' | 'srcNet' | 'ifname'> &
  Record<'dstMac' | 'srcMac' | 'dstIp' | 'srcNet', string>;

function packetMode(ifname: string): void {
  const nat = loadNative();
  nat.ifNameToIndex(ifname); // fails now, not at the first window, when it is missing
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const { flood } = JSON.parse(line) as { flood?: FloodRequest };
    if (!flood || typeof flood !== 'object') throw new Error(`bad command: ${line}`);
    const hex = (s: string): Buffer => Buffer.from(s, 'hex');
    const r = nat.packetFlood({
      ...flood,
      ifname,
      dstMac: hex(flood.dstMac),
      srcMac: hex(flood.srcMac),
      dstIp: hex(flood.dstIp),
      srcNet: hex(flood.srcNet),
    });
    process.stdout.write(`${JSON.stringify({ sent: r.sent, refused: r.refused, ms: r.ns / 1e6 })}\n`);
  });
  lines.on('close', () => process.exit(0));
  process.stdout.write('ready\n');
}

function main(): void {
  if (process.argv[2] === '--packet') {
    packetMode(process.argv[3] ?? 'eth0');
    return;
  }
  const [progPin, ifname] = process.argv.slice(2);
  if (!progPin || !ifname) throw new Error('usage: lab-gen.js PROG_PIN IFNAME');
  const nat = loadNative();
  const prog = nat.objGet(progPin);
  const ifindex = nat.ifNameToIndex(ifname);
  // The signal only has to interrupt the run; Node's default would end the process.
  process.on('SIGUSR2', () => undefined);

  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const { frame: hex } = JSON.parse(line) as { frame?: unknown };
    if (typeof hex !== 'string') throw new Error(`bad command: ${line}`);
    const frame = Buffer.from(hex, 'hex');
    // struct xdp_md: data_end = the frame's length, ingress_ifindex = the veth.
    const ctx = Buffer.alloc(24);
    ctx.writeUInt32LE(frame.length, 4);
    ctx.writeUInt32LE(ifindex, 12);
    const t0 = performance.now();
    try {
      nat.progTestRun(prog, { data: frame, ctxIn: ctx, flags: BPF_F_TEST_XDP_LIVE_FRAMES, repeat: MAX_RUNS, batchSize: 64 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINTR') throw err;
    }
    process.stdout.write(`${JSON.stringify({ ms: performance.now() - t0 })}\n`);
  });
  lines.on('close', () => {
    nat.closeFd(prog);
    process.exit(0);
  });
  process.stdout.write('ready\n');
}

try {
  main();
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
}
