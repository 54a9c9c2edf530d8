/**
 * Datapath benchmark: nanoseconds per packet of xdp_lb under
 * BPF_PROG_TEST_RUN, next to a baseline program (parse Ethernet/IP/L4,
 * XDP_TX) measured in the same run on the same frame.
 *
 * One run per call, averaged over many calls: BPF_PROG_TEST_RUN's `repeat`
 * does not restore the packet between runs, so an encapsulating program
 * would only encapsulate on the first iteration.
 *
 *   npm run bench:datapath [-- --json] [-- --calls N]
 */
import { pathToFileURL } from 'node:url';
import { LbHarness, bpfUnavailable } from '../test/lib/harness.js';
import { frame, TCP_ACK, TCP_SYN } from '../test/lib/packet.js';
import { loadNative } from '../src/datapath/native.js';
import { bpfObjectPath } from '../src/paths.js';
import { measureMaglev } from './maglev.js';
import { argValue } from './args.js';

export interface DatapathCase {
  name: string;
  ns: number;
  baseline_ns: number;
  ratio: number;
}

/** Mean kernel-reported ns of `calls` single runs, after a warm-up. */
function timeProgram(run: (data: Buffer) => number, data: Buffer, calls: number): number {
  for (let i = 0; i < Math.min(1000, calls); i++) run(data);
  let total = 0;
  for (let i = 0; i < calls; i++) total += run(data);
  return total / calls;
}

export function benchDatapath(calls: number): DatapathCase[] {
  const nat = loadNative();
  const h = new LbHarness(`/sys/fs/bpf/ferry-bench-${process.pid}`, { ctSize: 65536 });
  const base = nat.openObject(bpfObjectPath('baseline'));
  try {
    base.load();
    const baseFd = base.programFd('xdp_baseline');
    const backends = Array.from({ length: 100 }, (_, i) => ({ id: i, addr: `198.18.${1 + (i >> 8)}.${i & 255}` }));
    h.vip({ id: 0, addr: '198.18.0.10', port: 80, proto: 'tcp', m: 65537, backends });
    const client = '198.18.100.1';
    const syn = frame({ src: client, dst: '198.18.0.10', proto: 'tcp', sport: 40000, dport: 80, tcpFlags: TCP_SYN });
    const ack = frame({ src: client, dst: '198.18.0.10', proto: 'tcp', sport: 40000, dport: 80, tcpFlags: TCP_ACK, payload: Buffer.alloc(64) });
    const other = frame({ src: client, dst: '198.18.0.99', proto: 'tcp', sport: 40000, dport: 80, tcpFlags: TCP_ACK, payload: Buffer.alloc(64) });
    const runOn = (fd: number) => (data: Buffer) =>
      nat.progTestRun(fd, { data, dataOutSize: data.length + 64 }).durationNs;
    h.run(syn); // the flow exists before the conntrack case
    const cases: Array<[string, Buffer]> = [
      ['tcp_syn_maglev', syn],
      ['established_ct_hit', ack],
      ['non_vip_pass', other],
    ];
    return cases.map(([name, data]) => {
      const baseline = timeProgram(runOn(baseFd), data, calls);
      const ns = timeProgram(runOn(h.dp.progFd), data, calls);
      return { name, ns: round(ns), baseline_ns: round(baseline), ratio: round(ns / baseline) };
    });
  } finally {
    base.close();
    h.close();
  }
}

const round = (x: number): number => Math.round(x * 100) / 100;

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const why = bpfUnavailable();
  if (why) {
    console.error(`bench:datapath: ${why}`);
    process.exit(2);
  }
  const calls = argValue('--calls', 20000);
  const cases = benchDatapath(calls);
  const maglev = measureMaglev();
  if (json) {
    console.log(JSON.stringify({ cases, maglev }));
    return;
  }
  console.log(`xdp_lb under BPF_PROG_TEST_RUN, ${calls} single runs per figure (mean ns per packet)`);
  console.log('case                  xdp_lb ns  baseline ns  ratio');
  for (const c of cases) {
    console.log(`${c.name.padEnd(20)} ${String(c.ns).padStart(10)} ${String(c.baseline_ns).padStart(12)} ${String(c.ratio).padStart(6)}`);
  }
  console.log('\nMaglev table build, M = 65537 (median ms)');
  for (const r of maglev) console.log(`${String(r.backends).padStart(5)} backends${r.weighted ? ', weights 1..4' : ''}: ${r.ms} ms`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
