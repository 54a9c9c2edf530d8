/**
 * Lab benchmark: Ferry against a kube-proxy-style iptables balancer and an
 * nftables balancer, in network namespaces, in one run.
 *
 *   npm run bench:lab [-- --quick] [-- --json] [-- --rate PPS] [-- --group N] [-- --backends N]
 *
 * 1. Highest lossless rate. For TCP SYNs (every one a new flow) and UDP
 *    (65,536 established flows), each balancer in turn (bench/lab-rig.ts)
 *    is offered a stepped-up rate until the backends receive less than
 *    99.9% of what was offered; the last rate forwarded without loss is
 *    refined by bisection. A rate that fails is tried up to three times
 *    (the machine is shared; one disturbed second should not decide).
 * 2. CPU per forwarded packet at the same offered rate (default: half the
 *    lowest lossless rate found in step 1), in rounds that interleave the
 *    balancers and the floor (a program that drops every frame on arrival):
 *    the CPU time of the load balancer's receive thread divided by the
 *    packets the backends received; median of the rounds. A window with
 *    loss is run again (up to three times in all).
 * 3. Connections per second and latency of short HTTP requests (a new
 *    connection each) through Ferry with DSR and through the iptables
 *    balancer (bench/lab-http.ts), alternating, median of the rounds.
 *
 * Progress goes to stderr; stdout gets the tables, or with --json one object
 * {"cpu_ns_per_pkt":{"ferry":..,"iptables":..,"nftables":..}, ...}.
 * --quick: one round and shorter windows (under a minute).
 */
import { pathToFileURL } from 'node:url';
import type { RateResult } from '../src/lab/client.js';
import { Lab, labsOfThisProcess } from '../src/lab/topology.js';
import { argValue } from './args.js';
import { HTTP_BACKENDS, IptablesHttpLab, httpRate, startFerryHttp } from './lab-http.js';
import {
  BALANCERS,
  DEFAULT_GROUP,
  RateRig,
  rigUnavailable,
  type BalancerName,
  type GeneratorKind,
  type LbMode,
  type TrafficKind,
  type Window,
} from './lab-rig.js';

const KINDS: readonly TrafficKind[] = ['syn', 'udp'];
/** Lossless: the backends received at least this share of what was offered. */
export const LOSSLESS = 0.999;
/** SYN windows stay under this many new flows: the kernel's conntrack table holds 262,144. */
const MAX_NEW_FLOWS = 200_000;
/** A window with loss is run again up to this many times in all: the machine is shared, and one disturbed second should not decide. */
const ATTEMPTS = 3;
const START_RATE = 50_000;
const MAX_RATE = 4_000_000;
/** Rate steps of the search: ×1.5 (×2 with --quick), then bisection (3 steps; 1 with --quick). */
const step = (o: Options): number => (o.quick ? 2 : 1.5);

interface Options {
  quick: boolean;
  json: boolean;
  rate: number | undefined;
  group: number;
  backends: number;
}

export interface LosslessResult {
  pps: number;
  /** What stopped the search: the balancer (loss at or inside it), the rig (loss after it), or the generator's top rate. */
  limit: 'lb' | 'rig' | 'generator';
  /** The balancer thread's busy share at the first rate with loss. */
  lb_busy_at_loss: number | null;
}

export interface HttpFigures {
  conn_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  requests: number;
}

export interface LabBench {
  cpu_ns_per_pkt: Record<BalancerName, number>;
  /** Ferry's CPU per packet divided by each peer's (below 1: Ferry uses less). */
  ratio_ferry_to: { iptables: number; nftables: number };
  by_kind: Record<TrafficKind, Record<LbMode, number>>;
  offered_pps: number;
  /** What the generator achieved in the equal-load windows (median per kind and mode). */
  achieved_pps: Record<TrafficKind, Record<LbMode, number>>;
  group: number;
  backends: number;
  rounds: number;
  lossless_pps: Record<TrafficKind, Record<BalancerName, LosslessResult>>;
  http: { ferry: HttpFigures; iptables: HttpFigures; parallel: number; seconds: number; rounds: number };
  lb_idle_ns_per_s: number;
  /** The generator's top rate (frames it emits into the floor as fast as it can). */
  generator_pps: number;
  /** Live frames (xdp_gen) or the AF_PACKET socket where the kernel refuses those. */
  generator: GeneratorKind;
  iptables_variant: string;
}

/**
 * What to undo if the process exits early (Ctrl-C, an error): each lab's
 * stop(), then any lab of this process still there (one that was starting).
 */
const cleanups = new Set<() => void>();
process.on('exit', () => {
  for (const c of cleanups) c();
  for (const prefix of labsOfThisProcess()) new Lab({ backends: 0, prefix }).down();
});

const progress = (msg: string): void => {
  process.stderr.write(`bench:lab: ${msg}\n`);
};

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const round2 = (x: number): number => Math.round(x * 100) / 100;
const kpps = (x: number): string => `${Math.round(x / 1000)}k`;

function windowMs(o: Pick<Options, 'quick'>, kind: TrafficKind, rate: number): number {
  const ms = o.quick ? 300 : 1000;
  return kind === 'syn' ? Math.min(ms, (MAX_NEW_FLOWS / rate) * 1000) : ms;
}

const lossless = (w: Window): boolean => w.forwarded >= LOSSLESS * w.offered;

const describeLoss = (w: Window): string =>
  w.forwarded === w.offered
    ? ''
    : ` (lost: ${w.lost_ingress} at the load balancer's ring, ${w.lost_in_lb} inside it, ${w.lost_downstream} after it)`;

/** Before a window: SYN windows start with an empty conntrack table, UDP ones with every flow known. */
async function prepare(rig: RateRig, kind: TrafficKind, rate: number, group: number): Promise<void> {
  if (kind === 'syn') rig.flushConntrack();
  else await rig.offer('udp', Math.min(rate, 200_000), { count: rig.udpFlows }, group);
}

/** The generator's own top rate: frames as fast as it emits them into the floor. */
async function probeGenerator(rig: RateRig): Promise<number> {
  rig.activate('floor');
  const w = await rig.offer('udp', 0, { count: 400_000 }, 64);
  return Math.round((w.offered * 1000) / w.gen_ms);
}

/** The rate a window actually offered (the generator may have run a little behind). */
const achieved = (w: Window): number => Math.round((w.offered * 1000) / w.gen_ms);

async function searchLossless(rig: RateRig, o: Options, kind: TrafficKind, b: BalancerName, genMax: number): Promise<LosslessResult> {
  rig.activate(b);
  if (kind === 'udp') await prepare(rig, kind, START_RATE, o.group);
  const top = Math.min(MAX_RATE, Math.floor(genMax * 0.9));
  let firstLoss: Window | undefined;
  let best = 0;
  const passes = async (rate: number): Promise<boolean> => {
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (kind === 'syn') rig.flushConntrack();
      const w = await rig.offer(kind, rate, { ms: windowMs(o, kind, rate) }, o.group);
      if (lossless(w)) {
        best = Math.max(best, Math.min(rate, achieved(w)));
        return true;
      }
      progress(
        `${kind} ${b}: ${kpps(rate)} pps: ${w.forwarded}/${w.offered} forwarded${describeLoss(w)}, ` +
          `its thread ${Math.round((w.lb_cpu_ns / (w.gen_ms * 1e6)) * 100)}% busy`,
      );
      firstLoss ??= w;
    }
    return false;
  };
  let good = 0;
  let bad = 0;
  for (let rate = START_RATE; ; rate = Math.min(top, Math.round(rate * step(o)))) {
    if (!(await passes(rate))) {
      bad = rate;
      break;
    }
    good = rate;
    progress(`${kind} ${b}: ${kpps(rate)} pps lossless`);
    if (rate >= top) break;
  }
  for (let i = 0; i < (o.quick ? 1 : 3) && bad > 0; i++) {
    const mid = Math.round(Math.sqrt(Math.max(good, START_RATE / 2) * bad) / 1000) * 1000;
    if (mid <= good || mid >= bad) break;
    if (await passes(mid)) good = mid;
    else bad = mid;
  }
  const w = firstLoss as Window | undefined;
  const limit = bad === 0 ? 'generator' : w && w.lost_downstream > w.lost_ingress + w.lost_in_lb ? 'rig' : 'lb';
  progress(`${kind} ${b}: highest lossless ${kpps(best)} pps (${limit === 'lb' ? `lost at ${kpps(bad)}` : `limit: ${limit}`})`);
  return { pps: best, limit, lb_busy_at_loss: w ? round2(w.lb_cpu_ns / (w.gen_ms * 1e6)) : null };
}

export interface EqualLoad {
  byKind: Record<TrafficKind, Record<LbMode, number>>;
  /** The rate the generator achieved in those windows (median): it may fall a little behind when its CPU is busy. */
  achievedByKind: Record<TrafficKind, Record<LbMode, number>>;
}

/**
 * CPU per forwarded packet of each mode at the same offered rate, in rounds
 * that interleave the modes (median of the rounds); also used by bench:k8s
 * for the NodePort paths.
 */
export async function equalLoad(
  rig: RateRig,
  o: Pick<Options, 'quick' | 'group'>,
  rate: number,
  rounds: number,
  modes: readonly LbMode[] = ['floor', ...BALANCERS],
  log: (msg: string) => void = progress,
): Promise<EqualLoad> {
  const windows: Window[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const kind of KINDS) {
      // Each round starts with another balancer, so none always follows the same one.
      for (let k = 0; k < modes.length; k++) {
        const mode = modes[(k + r) % modes.length]!;
        rig.activate(mode);
        for (let attempt = 1; ; attempt++) {
          await prepare(rig, kind, rate, o.group);
          const w = await rig.offer(kind, rate, { ms: windowMs(o, kind, rate) }, o.group);
          log(
            `round ${r + 1} ${kind} ${mode}: ${Math.round(w.lb_cpu_ns / Math.max(1, w.forwarded))} ns/packet, ` +
              `${w.forwarded}/${w.offered} forwarded at ${kpps(achieved(w))} pps${describeLoss(w)}`,
          );
          if (lossless(w) || attempt === ATTEMPTS) {
            windows.push(w);
            break;
          }
        }
      }
    }
  }
  const byKind = {} as Record<TrafficKind, Record<LbMode, number>>;
  const achievedByKind = {} as Record<TrafficKind, Record<LbMode, number>>;
  for (const kind of KINDS) {
    byKind[kind] = {} as Record<LbMode, number>;
    achievedByKind[kind] = {} as Record<LbMode, number>;
    for (const mode of modes) {
      const ws = windows.filter((w) => w.kind === kind && w.mode === mode && w.forwarded > 0);
      byKind[kind][mode] = Math.round(median(ws.map((w) => w.lb_cpu_ns / w.forwarded)));
      achievedByKind[kind][mode] = Math.round(median(ws.map(achieved)));
    }
  }
  return { byKind, achievedByKind };
}

function httpFigures(rs: RateResult[]): HttpFigures {
  return {
    conn_per_s: Math.round(median(rs.map((r) => r.per_second))),
    p50_ms: round2(median(rs.map((r) => r.latency_ms.p50))),
    p99_ms: round2(median(rs.map((r) => r.latency_ms.p99))),
    errors: rs.reduce((a, r) => a + r.errors, 0),
    requests: rs.reduce((a, r) => a + r.requests, 0),
  };
}

async function httpCompare(o: Options): Promise<LabBench['http']> {
  const rounds = o.quick ? 1 : 3;
  const ms = o.quick ? 2000 : 4000;
  const parallel = 8;
  progress(`HTTP: starting the labs (ferryd with ${HTTP_BACKENDS} backends; the iptables balancer)…`);
  const ferry = await startFerryHttp();
  const stopFerry = () => ferry.stop();
  cleanups.add(stopFerry);
  let ipt: IptablesHttpLab | undefined;
  const stopIpt = () => ipt?.stop();
  cleanups.add(stopIpt);
  try {
    ipt = await IptablesHttpLab.start();
    const f: RateResult[] = [];
    const i: RateResult[] = [];
    for (let r = 0; r < rounds; r++) {
      f.push(await httpRate(ferry.lab.client, ms, parallel));
      i.push(await httpRate(ipt.lab.client, ms, parallel));
      progress(
        `HTTP round ${r + 1}: Ferry ${f.at(-1)!.per_second}/s p99 ${f.at(-1)!.latency_ms.p99} ms, ` +
          `iptables ${i.at(-1)!.per_second}/s p99 ${i.at(-1)!.latency_ms.p99} ms`,
      );
    }
    return { ferry: httpFigures(f), iptables: httpFigures(i), parallel, seconds: ms / 1000, rounds };
  } finally {
    cleanups.delete(stopFerry);
    cleanups.delete(stopIpt);
    stopFerry();
    stopIpt();
  }
}

export async function benchLab(o: Options): Promise<LabBench> {
  progress(`packet-rate rig: ${o.backends} backends, frames in groups of ${o.group}`);
  const rig = await RateRig.start({ backends: o.backends });
  const stop = () => rig.stop();
  cleanups.add(stop);
  let result: Omit<LabBench, 'http'>;
  try {
    const idle = await rig.idleNsPerSecond(o.quick ? 300 : 1000);
    const genMax = await probeGenerator(rig);
    progress(`generator (${rig.generatorKind}): up to ${kpps(genMax)} pps`);
    const lossless = {} as Record<TrafficKind, Record<BalancerName, LosslessResult>>;
    for (const kind of KINDS) {
      lossless[kind] = {} as Record<BalancerName, LosslessResult>;
      for (const b of BALANCERS) lossless[kind][b] = await searchLossless(rig, o, kind, b, genMax);
    }
    const lowest = Math.min(...KINDS.flatMap((k) => BALANCERS.map((b) => lossless[k][b].pps)).filter((p) => p > 0));
    const rate = o.rate ?? Math.max(10_000, Math.floor(lowest / 2 / 10_000) * 10_000);
    const rounds = o.quick ? 1 : 3;
    progress(`CPU per packet at ${kpps(rate)} pps offered, ${rounds} round(s)`);
    const { byKind, achievedByKind } = await equalLoad(rig, o, rate, rounds);
    // SYN and UDP weigh the same.
    const cpu = Object.fromEntries(BALANCERS.map((b) => [b, Math.round((byKind.syn[b] + byKind.udp[b]) / 2)])) as Record<
      BalancerName,
      number
    >;
    result = {
      cpu_ns_per_pkt: cpu,
      ratio_ferry_to: { iptables: round2(cpu.ferry / cpu.iptables), nftables: round2(cpu.ferry / cpu.nftables) },
      by_kind: byKind,
      offered_pps: rate,
      achieved_pps: achievedByKind,
      group: o.group,
      backends: o.backends,
      rounds,
      lossless_pps: lossless,
      lb_idle_ns_per_s: Math.round(idle),
      generator_pps: genMax,
      generator: rig.generatorKind,
      iptables_variant: rig.iptablesVariant,
    };
  } finally {
    cleanups.delete(stop);
    stop();
  }
  return { ...result, http: await httpCompare(o) };
}

function printTables(r: LabBench): void {
  const floor = Math.round((r.by_kind.syn.floor + r.by_kind.udp.floor) / 2);
  const ratio = (b: BalancerName) => (b === 'ferry' ? '1' : String(round2(r.cpu_ns_per_pkt.ferry / r.cpu_ns_per_pkt[b])));
  const above = (b: BalancerName) => r.cpu_ns_per_pkt[b] - floor;
  const ratioAbove = (b: BalancerName) => (b === 'ferry' ? '1' : String(round2(above('ferry') / above(b))));
  const got = KINDS.flatMap((k) => Object.values(r.achieved_pps[k]));
  console.log(
    `CPU per forwarded packet on the load balancer at ${kpps(r.offered_pps)} pps offered ` +
      `(achieved ${kpps(Math.min(...got))}–${kpps(Math.max(...got))}; ${r.backends} backends, groups of ${r.group}, ` +
      `median of ${r.rounds} round(s)); floor = receive and drop`,
  );
  console.log(
    '| balancer | SYN ns/packet | UDP ns/packet | mean | Ferry ÷ this | mean above floor | Ferry ÷ this above floor | highest lossless SYN pps | highest lossless UDP pps |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  const ll = (x: LosslessResult) =>
    `${x.limit === 'generator' ? '≥ ' : ''}${x.pps.toLocaleString('en-US')}` +
    `${x.limit === 'generator' ? ' (generator)' : x.limit === 'rig' ? ' (rig)' : ''}`;
  for (const b of BALANCERS) {
    console.log(
      `| ${b} | ${r.by_kind.syn[b]} | ${r.by_kind.udp[b]} | ${r.cpu_ns_per_pkt[b]} | ${ratio(b)} | ${above(b)} | ${ratioAbove(b)} | ` +
        `${ll(r.lossless_pps.syn[b])} | ${ll(r.lossless_pps.udp[b])} |`,
    );
  }
  console.log(`| floor | ${r.by_kind.syn.floor} | ${r.by_kind.udp.floor} | ${floor} | | | | | |`);
  for (const kind of KINDS) {
    const busy = BALANCERS.map(
      (b) =>
        `${b} ${r.lossless_pps[kind][b].lb_busy_at_loss === null ? '–' : `${Math.round(r.lossless_pps[kind][b].lb_busy_at_loss! * 100)}%`}`,
    );
    console.log(`${kind.toUpperCase()}: load balancer thread busy at the first rate with loss: ${busy.join(', ')}`);
  }
  console.log(`\nShort HTTP requests (new connection each, ${r.http.parallel} in flight, ${r.http.rounds} × ${r.http.seconds} s, median):`);
  console.log('| path | connections/s | p50 ms | p99 ms | errors |');
  console.log('|---|---|---|---|---|');
  console.log(`| Ferry (DSR) | ${r.http.ferry.conn_per_s} | ${r.http.ferry.p50_ms} | ${r.http.ferry.p99_ms} | ${r.http.ferry.errors} |`);
  console.log(
    `| iptables DNAT | ${r.http.iptables.conn_per_s} | ${r.http.iptables.p50_ms} | ${r.http.iptables.p99_ms} | ${r.http.iptables.errors} |`,
  );
  console.log(
    `\niptables: ${r.iptables_variant} variant; load balancer thread idle: ${r.lb_idle_ns_per_s} ns/s; ` +
      `generator (${r.generator}) top rate ${kpps(r.generator_pps)} pps`,
  );
}

function parseOptions(): Options {
  const rateAt = process.argv.indexOf('--rate');
  return {
    quick: process.argv.includes('--quick'),
    json: process.argv.includes('--json'),
    rate: rateAt < 0 ? undefined : argValue('--rate', 0),
    group: argValue('--group', DEFAULT_GROUP),
    backends: argValue('--backends', 4),
  };
}

async function main(): Promise<void> {
  const o = parseOptions();
  if (o.group > 256) throw new Error('--group takes 1 to 256');
  if (o.backends > 9) throw new Error('--backends takes 1 to 9');
  const why = rigUnavailable();
  if (why) {
    console.error(`bench:lab: ${why}`);
    process.exit(2);
  }
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  const r = await benchLab(o);
  if (o.json) console.log(JSON.stringify(r));
  else printTables(r);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    console.error(`bench:lab: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  });
}
