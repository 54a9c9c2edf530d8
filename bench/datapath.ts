/**
 * Datapath benchmark: nanoseconds per packet of xdp_lb under
 * BPF_PROG_TEST_RUN, next to a baseline program (parse Ethernet/IP/L4,
 * XDP_TX) measured in the same run on the same frames.
 *
 * xdp_lb runs as in production: the next hop comes from the kernel's FIB
 * (through its per-backend cache), so the benchmark runs in a network
 * namespace of its own where the backends are on-link neighbours of the
 * ingress veth (the frames come in as if received there, and leave by it).
 *
 * One run per call, because BPF_PROG_TEST_RUN's `repeat` does not restore
 * the packet between runs (an encapsulating program would encapsulate only
 * once). The baseline and xdp_lb alternate call by call on the same frame,
 * so both see the same machine: the ratio is what the run reports.
 *
 *   npm run bench:datapath [-- --json] [-- --calls N]
 */
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { LbHarness, bpfUnavailable } from '../test/lib/harness.js';
import { frame, TCP_ACK, TCP_SYN } from '../test/lib/packet.js';
import { loadNative, type NativeAddon } from '../src/datapath/native.js';
import { bpfObjectPath } from '../src/paths.js';
import { measureMaglev } from './maglev.js';
import { argValue } from './args.js';

export interface DatapathCase {
  name: string;
  ns: number;
  baseline_ns: number;
  ratio: number;
  /**
   * Over many flows only: the baseline plus one read of a cache line picked
   * by the flow's hash in an array the size of conntrack (the memory cost of
   * any per-flow state here), and xdp_lb's ratio to that.
   */
  memory_floor_ns?: number;
  ratio_to_memory_floor?: number;
}

const VIP = '198.18.0.10';
const BACKENDS = 100;
const FLOWS_200K = 200_000;
/** Offsets in an untagged IPv4 frame: source address, TCP source port. */
const SRC_OFF = 26;
const SPORT_OFF = 34;
const XDP_MD_SIZE = 24;
/** Rounds per figure: the median round is reported. */
const ROUNDS = 9;

const backendAddr = (i: number): string => `198.18.${1 + (i >> 8)}.${i & 255}`;

/** Sets frame i's flow: source 198.19.x.y from i's low 16 bits, source port from the rest. */
function setFlow(data: Buffer, i: number): void {
  data.writeUInt16BE(0xc613, SRC_OFF); // 198.19
  data.writeUInt16BE(i & 0xffff, SRC_OFF + 2);
  data.writeUInt16BE(1024 + ((i >>> 16) & 0x7fff), SPORT_OFF);
}

class Timer {
  constructor(
    private readonly nat: NativeAddon,
    private readonly ctx: Buffer,
  ) {}

  run(fd: number, data: Buffer): number {
    this.ctx.writeUInt32LE(data.length, 4);
    return this.nat.progTestRun(fd, { data, dataOutSize: data.length + 64, ctxIn: this.ctx }).durationNs;
  }

  /**
   * The baseline's and xdp_lb's mean ns per call over `calls` single runs
   * each, alternating call by call after a warm-up; `prepare(i)` sets the
   * frame of call i. The calls are split into ROUNDS rounds and the round
   * with the median ratio is reported, so a burst of noise from the rest of
   * the machine moves one round, not the figure.
   */
  pair(baseFd: number, lbFd: number, data: Buffer, calls: number, prepare?: (i: number) => void): [number, number] {
    const warm = Math.min(1000, calls);
    const perRound = Math.max(1, Math.floor(calls / ROUNDS));
    let i = 0;
    for (; i < warm; i++) {
      prepare?.(i);
      this.run(baseFd, data);
      this.run(lbFd, data);
    }
    const rounds: Array<[number, number]> = [];
    for (let r = 0; r < ROUNDS; r++) {
      let base = 0;
      let lb = 0;
      for (let n = 0; n < perRound; n++, i++) {
        prepare?.(i);
        base += this.run(baseFd, data);
        lb += this.run(lbFd, data);
      }
      rounds.push([base / perRound, lb / perRound]);
    }
    rounds.sort((x, y) => x[1] / x[0] - y[1] / y[0]);
    return rounds[Math.floor(ROUNDS / 2)]!;
  }
}

/** The cases, in the benchmark's namespace (ingress veth `ifname`). */
export function benchDatapath(calls: number, ifname: string): DatapathCase[] {
  const nat = loadNative();
  const h = new LbHarness(`/sys/fs/bpf/ferry-bench-${process.pid}`, { ctSize: 1_000_000 });
  const base = nat.openObject(bpfObjectPath('baseline'));
  try {
    base.load();
    const baseFd = base.programFd('xdp_baseline');
    const lineFd = base.programFd('xdp_baseline_line');
    h.setConfig({ flags: 0 }); // next hops from the FIB, as in production
    const backends = Array.from({ length: BACKENDS }, (_, i) => ({ id: i, addr: backendAddr(i) }));
    h.vip({ id: 0, addr: VIP, port: 80, proto: 'tcp', m: 65537, backends });
    const ctx = Buffer.alloc(XDP_MD_SIZE);
    ctx.writeUInt32LE(nat.ifNameToIndex(ifname), 12);
    const t = new Timer(nat, ctx);
    const syn = frame({ src: '198.19.0.1', dst: VIP, proto: 'tcp', sport: 40000, dport: 80, tcpFlags: TCP_SYN });
    const ack = frame({ src: '198.19.0.1', dst: VIP, proto: 'tcp', sport: 40000, dport: 80, tcpFlags: TCP_ACK, payload: Buffer.alloc(64) });
    const other = frame({
      src: '198.19.0.1',
      dst: '198.18.0.99',
      proto: 'tcp',
      sport: 40000,
      dport: 80,
      tcpFlags: TCP_ACK,
      payload: Buffer.alloc(64),
    });
    const out: DatapathCase[] = [];
    const add = (name: string, [b, l]: [number, number]) => out.push({ name, ns: round(l), baseline_ns: round(b), ratio: round(l / b) });

    // A SYN: Maglev, a conntrack write, encapsulation; the same flow each time (hot caches).
    add('tcp_syn_maglev', t.pair(baseFd, h.dp.progFd, syn, calls));
    // Every SYN a flow of its own: the conntrack write lands in a cold cache line.
    let next = 0;
    add(
      'tcp_syn_new_flows',
      t.pair(baseFd, h.dp.progFd, syn, calls, () => setFlow(syn, next++)),
    );
    // The same with record_tcp_flows: after_handshake (a SYN flood's cost): balanced, nothing written.
    h.setConfig({ flags: 0, recordAfterHandshake: true });
    add(
      'tcp_syn_new_flows_after_handshake',
      t.pair(baseFd, h.dp.progFd, syn, calls, () => setFlow(syn, next++)),
    );
    h.setConfig({ flags: 0 });
    // One established flow, over and over: every lookup hits a hot cache.
    t.run(h.dp.progFd, ack); // a non-SYN without entry makes one
    add('established_ct_hit', t.pair(baseFd, h.dp.progFd, ack, calls));
    // 200,000 established flows in turn: conntrack lookups that miss the CPU caches.
    for (let i = 0; i < FLOWS_200K; i++) {
      setFlow(syn, 1_000_000 + i);
      t.run(h.dp.progFd, syn);
    }
    const flow200k = (i: number) => setFlow(ack, 1_000_000 + ((i * 7919) % FLOWS_200K));
    add('established_200k_flows', t.pair(baseFd, h.dp.progFd, ack, calls, flow200k));
    const [, floor] = t.pair(baseFd, lineFd, ack, calls, flow200k);
    const last = out[out.length - 1]!;
    last.memory_floor_ns = round(floor);
    last.ratio_to_memory_floor = round(last.ns / floor);
    add('non_vip_pass', t.pair(baseFd, h.dp.progFd, other, calls));
    const counters = h.dp.counterValues();
    if (counters.tx.packets === 0n || counters.fib_fallback.packets !== 0n) {
      throw new Error(
        `xdp_lb did not forward through the FIB: ${JSON.stringify(counters, (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))}`,
      );
    }
    return out;
  } finally {
    base.close();
    h.close();
  }
}

const round = (x: number): number => Math.round(x * 100) / 100;

// ---- the namespace -------------------------------------------------------------

const NS_PREFIX = 'ferrybench-dp-';
const IFNAME = 'dp0';
const PEER_MAC = '02:fe:00:00:00:b1';

function sh(args: string[], input?: string): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
}

/** A namespace whose FIB reaches every backend through dp0, neighbours resolved. */
function makeNamespace(ns: string): void {
  // Namespaces left by benchmark runs whose process is gone.
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  for (const m of list.matchAll(new RegExp(`^(${NS_PREFIX}(\\d+))\\b`, 'gm'))) {
    if (spawnSync('kill', ['-0', m[2]!]).status !== 0) spawnSync('ip', ['netns', 'del', m[1]!]);
  }
  sh(['ip', 'netns', 'add', ns]);
  const batch = [
    'link set lo up',
    `link add ${IFNAME} type veth peer name dp1 address ${PEER_MAC}`,
    `link set ${IFNAME} up`,
    'link set dp1 up',
    `addr add 198.18.0.1/16 dev ${IFNAME}`,
    ...Array.from({ length: BACKENDS }, (_, i) => `neigh replace ${backendAddr(i)} lladdr ${PEER_MAC} dev ${IFNAME} nud permanent`),
  ];
  sh(['ip', '-n', ns, '-batch', '-'], `${batch.join('\n')}\n`);
  sh(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
}

/** Runs this script inside a fresh namespace and returns what it printed. */
function runInNamespace(calls: number): { cases: DatapathCase[] } {
  const ns = `${NS_PREFIX}${process.pid}`;
  makeNamespace(ns);
  try {
    const r = spawnSync(
      'nsenter',
      [`--net=/run/netns/${ns}`, '--', process.execPath, process.argv[1]!, '--inner', '--calls', String(calls)],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
        maxBuffer: 1 << 20,
      },
    );
    if (r.status !== 0) throw new Error(`the benchmark in namespace ${ns} failed (${r.status ?? r.signal})`);
    return JSON.parse(r.stdout) as { cases: DatapathCase[] };
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const why = bpfUnavailable();
  if (why) {
    console.error(`bench:datapath: ${why}`);
    process.exit(2);
  }
  const calls = argValue('--calls', 20000);
  if (process.argv.includes('--inner')) {
    console.log(JSON.stringify({ cases: benchDatapath(calls, IFNAME) }));
    return;
  }
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  const { cases } = runInNamespace(calls);
  const maglev = measureMaglev();
  if (json) {
    console.log(JSON.stringify({ cases, maglev }));
    return;
  }
  console.log(`xdp_lb under BPF_PROG_TEST_RUN, ${calls} single runs per figure, alternating with the baseline (mean ns per packet)`);
  const width = Math.max(...cases.map((c) => c.name.length));
  console.log(`${'case'.padEnd(width)}  xdp_lb ns  baseline ns  ratio  (memory floor ns, ratio to it)`);
  for (const c of cases) {
    const floor = c.memory_floor_ns === undefined ? '' : `  (${c.memory_floor_ns}, ${c.ratio_to_memory_floor})`;
    console.log(
      `${c.name.padEnd(width)} ${String(c.ns).padStart(10)} ${String(c.baseline_ns).padStart(12)} ${String(c.ratio).padStart(6)}${floor}`,
    );
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
