/**
 * The packet-rate rig of `npm run bench:lab`: one load balancer namespace
 * that can be Ferry (xdp_lb in native XDP), a kube-proxy-style iptables DNAT
 * balancer or an nftables one, in turn, in front of the same backends, fed
 * by a generator that injects XDP live frames.
 *
 *   <p>-gen  eth0 ══ i<tag>  <p>-lb  b1 ══ s1<tag> <p>-be1
 *                                     b2 ══ s2<tag> <p>-be2  ...
 *
 * The generator injects XDP live frames (xdp_gen) where the kernel allows
 * those test runs, and otherwise sends the same numbered flows through an
 * AF_PACKET socket (the addon's packetFlood), paced the same way: either way
 * the frames reach the load balancer's veth as XDP frames.
 *
 * Two more modes compare Kubernetes' NodePort paths (bench:k8s): traffic to
 * a NodePort of the load balancer's own address, served by "pods" behind
 * the backend namespaces (their nodes) either by Ferry (xdp_lb encapsulates
 * to the pod through its node; the node program would translate the port
 * there) or by the nftables table Ferry's Kubernetes mode writes for its
 * `external_path: nat` (src/k8s/nat.ts: DNAT to the pod's port, masquerade).
 *
 * - The generator link is a veth pair straight into the load balancer, so
 *   frames arrive there as a NIC would hand them over: as XDP frames, before
 *   any socket buffer exists. xdp_lb handles them in place; for the netfilter
 *   balancers the minimal xdp_pass program (which a veth needs to take XDP
 *   frames at all) passes them to the stack, which builds an skb.
 * - Each backend has its own link from the load balancer (no bridge: the
 *   bridge costs more than the balancers under test). Ferry finds the link
 *   with bpf_fib_lookup and redirects the encapsulated frame there; the
 *   netfilter balancers route the DNATed packet there. xdp_sink on the
 *   backend's end counts what arrives and drops it.
 * - The load balancer's receive runs in a NAPI kernel thread of its own
 *   (threaded NAPI on i<tag>), pinned to the last CPU; the backends' receive
 *   runs in their own NAPI threads (pinned with the generator to CPU 0), so
 *   none of their work is done on the balancer's thread. That matters: a
 *   kernel without IRQ time accounting charges softirq work to whatever
 *   task it interrupted, so a backend's receive raised as a softirq from the
 *   balancer's thread would count as the balancer's. The NAPI threads run
 *   SCHED_FIFO, as softirq processing would preempt ordinary tasks too.
 *   The balancer thread's CPU time (/proc/<tid>/schedstat, nanoseconds) is
 *   the balancer's cost: everything from the frame's arrival to its
 *   hand-over to the backend's link, and nothing else.
 *
 * The namespaces, pins and folder use a lab prefix (src/lab/topology.ts), so
 * `npm run demo -- --down` also removes what a killed run left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { LbDatapath } from '../src/datapath/lb.js';
import { loadNative, type BpfObject } from '../src/datapath/native.js';
import { programConfig, programVip, type VipProgram } from '../src/datapath/program.js';
import { run, nsRun } from '../src/lab/exec.js';
import { runAgent } from '../src/lab/lblab.js';
import { ENCAP_SRC4, Lab } from '../src/lab/topology.js';
import { chooseMaglevM } from '../src/maglev/index.js';
import { bpfObjectPath, packageRoot } from '../src/paths.js';
import { renderNat } from '../src/k8s/nat.js';
import { parseIp } from '../src/net/addr.js';
import type { NatEntry } from '../src/k8s/translate.js';
import { ensureBpffs, liveFramesUnavailable } from '../test/lib/harness.js';
import { frame, TCP_SYN } from '../test/lib/packet.js';
import { BenchObject, GEN_FRAME_LEN, type SinkCounts } from './lab-bpf.js';

export const BALANCERS = ['ferry', 'iptables', 'nftables'] as const;
export type BalancerName = (typeof BALANCERS)[number];
/** Kubernetes NodePort paths: Ferry's XDP (ferry-nodeport) and its nftables fallback (nft-nat). */
export const NODEPORT_PATHS = ['ferry-nodeport', 'nft-nat'] as const;
export type NodePortPath = (typeof NODEPORT_PATHS)[number];
export type TrafficKind = 'syn' | 'udp';

export const VIP = '198.19.0.10';
export const TCP_PORT = 80;
export const UDP_PORT = 53;
/** Frames leave the generator in groups of this many, as a NIC's interrupt coalescing delivers them. */
export const DEFAULT_GROUP = 16;
/** Sources: by default 4,096 addresses from 198.18.128.0. */
export const SRC_BASE = '198.18.128.0';
export const PORT_BASE = 1024;
/** SYN: source ports 1024..65535 per source, so no 5-tuple repeats within 264 million packets (new flows). */
export const SYN_PORTS = 64512;
export const HASH_SEED = 0x5eed1234;

const GEN_MAC = Buffer.from('02fe00000101', 'hex');
const LB_MAC = Buffer.from('02fe00000102', 'hex');
const beMac = (i: number) => Buffer.from(`02fe000002${(i + 1).toString(16).padStart(2, '0')}`, 'hex');
/** An address's bytes in hex, as the generator process takes them. */
function ipHex(text: string): string {
  const ip = parseIp(text);
  if (typeof ip === 'string') throw new Error(`${text}: ${ip}`);
  return ip.bytes.toString('hex');
}
const macText = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

export const backendAddr = (i: number): string => `198.18.${16 + i}.2`;
const lbLinkAddr = (i: number): string => `198.18.${16 + i}.1`;
/** The load balancer's own address (the NodePort paths' frontend). */
export const LB_ADDR = '198.18.1.2';
/** The NodePorts; the pods listen on TCP_PORT and UDP_PORT. */
export const NODE_PORT_TCP = 30080;
export const NODE_PORT_UDP = 30053;
/** A "pod" behind backend namespace i, its node (a /24 the load balancer routes through the node). */
export const podAddr = (i: number): string => `198.18.${48 + i}.2`;

/** Where a mode's traffic goes: address, TCP port, UDP port. */
export interface Frontend {
  addr: string;
  tcp: number;
  udp: number;
}

export function frontendOf(mode: LbMode): Frontend {
  return (NODEPORT_PATHS as readonly string[]).includes(mode)
    ? { addr: LB_ADDR, tcp: NODE_PORT_TCP, udp: NODE_PORT_UDP }
    : { addr: VIP, tcp: TCP_PORT, udp: UDP_PORT };
}

/** The frame the generator varies (source address and port) for each kind, padded to GEN_FRAME_LEN as on the wire. */
export function template(kind: TrafficKind, to: Frontend = frontendOf('ferry')): Buffer {
  const common = { src: SRC_BASE, dst: to.addr, sport: PORT_BASE, srcMac: GEN_MAC, dstMac: LB_MAC };
  const f =
    kind === 'syn'
      ? frame({ ...common, proto: 'tcp', dport: to.tcp, tcpFlags: TCP_SYN })
      : frame({ ...common, proto: 'udp', dport: to.udp, payload: Buffer.alloc(18, 0x61) });
  return Buffer.concat([f, Buffer.alloc(GEN_FRAME_LEN - f.length)]);
}

// ---- rule sets ----------------------------------------------------------------

/** kube-proxy's chain names: prefix + the first 16 characters of base32(sha256(key)). */
function kubeChain(prefix: string, key: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of createHash('sha256').update(key).digest()) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < 16) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= 16) break;
  }
  return prefix + out;
}

/**
 * The nat table kube-proxy (iptables mode) writes for a ClusterIP-style
 * Service on VIP with these endpoints, one TCP port and one UDP port:
 * KUBE-SERVICES → KUBE-SVC-* (one `statistic --mode random` rule per
 * endpoint but the last) → KUBE-SEP-* (hairpin mark, DNAT). Without
 * masquerading, so backends see the client's address as they do with Ferry.
 */
export function kubeProxyRules(backends: readonly string[]): string {
  const chains = [':PREROUTING ACCEPT [0:0]', ':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
  ];
  for (const [proto, port] of [
    ['tcp', TCP_PORT],
    ['udp', UDP_PORT],
  ] as const) {
    const spn = `bench/lb:${proto}`;
    const svc = kubeChain('KUBE-SVC-', `${spn}${proto}`);
    chains.push(`:${svc} - [0:0]`);
    rules.push(`-A KUBE-SERVICES -d ${VIP}/32 -p ${proto} -m comment --comment "${spn} cluster IP" -m ${proto} --dport ${port} -j ${svc}`);
    backends.forEach((addr, j) => {
      const ep = `${addr}:${port}`;
      const sep = kubeChain('KUBE-SEP-', `${spn}${proto}${ep}`);
      chains.push(`:${sep} - [0:0]`);
      const left = backends.length - j;
      rules.push(
        left > 1
          ? `-A ${svc} -m comment --comment "${spn} -> ${ep}" -m statistic --mode random --probability ${(1 / left).toFixed(11)} -j ${sep}`
          : `-A ${svc} -m comment --comment "${spn} -> ${ep}" -j ${sep}`,
      );
      rules.push(
        `-A ${sep} -s ${addr}/32 -m comment --comment "${spn}" -j KUBE-MARK-MASQ`,
        `-A ${sep} -p ${proto} -m comment --comment "${spn}" -m ${proto} -j DNAT --to-destination ${ep}`,
      );
    });
  }
  return ['*nat', ...chains, ...rules, 'COMMIT', ''].join('\n');
}

/** The nftables balancer: one rule per port, `numgen random mod N` into a map of backends. */
export function nftRules(backends: readonly string[]): string {
  const map = `{ ${backends.map((a, i) => `${i} : ${a}`).join(', ')} }`;
  return [
    'table ip ferrybench {',
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    `    ip daddr ${VIP} tcp dport ${TCP_PORT} dnat to numgen random mod ${backends.length} map ${map}`,
    `    ip daddr ${VIP} udp dport ${UDP_PORT} dnat to numgen random mod ${backends.length} map ${map}`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * The nftables table Ferry's Kubernetes mode writes (src/k8s/nat.ts) for a
 * NodePort Service of externalTrafficPolicy Cluster on the load balancer's
 * address: DNAT to a pod and its port, masqueraded.
 */
export function natPathRules(backends: number): string {
  const entry = (protocol: 'tcp' | 'udp', port: number, target: number): NatEntry => ({
    service: `bench/nodeport:${protocol}`,
    address: LB_ADDR,
    port,
    protocol,
    masquerade: true,
    affinity: false,
    sourceRanges: null,
    backends: Array.from({ length: backends }, (_, i) => ({ address: podAddr(i), port: target })),
  });
  return renderNat([entry('tcp', NODE_PORT_TCP, TCP_PORT), entry('udp', NODE_PORT_UDP, UDP_PORT)]);
}

// ---- the generator process ------------------------------------------------------

/** lab-gen.js in the generator namespace: one run at a time. */
class Generator {
  private readonly lines: Interface;
  private readonly waiting: Array<(line: string) => void> = [];
  private stderr = '';

  constructor(private readonly proc: ChildProcess) {
    proc.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.lines = createInterface({ input: proc.stdout! });
    this.lines.on('line', (line) => this.waiting.shift()?.(line));
  }

  next(): Promise<string> {
    return new Promise((resolve, reject) => {
      const onExit = () => reject(new Error(`generator exited: ${this.stderr.trim()}`));
      this.proc.once('exit', onExit);
      this.waiting.push((line) => {
        this.proc.off('exit', onExit);
        resolve(line);
      });
    });
  }

  /**
   * Starts a live-frames run of `frame` and ends it (SIGUSR2) once done()
   * says so or after timeoutMs.
   */
  async run(frame: Buffer, done: () => boolean, timeoutMs: number): Promise<void> {
    let answered = false;
    const answer = this.next().finally(() => (answered = true));
    this.proc.stdin!.write(`${JSON.stringify({ frame: frame.toString('hex') })}\n`);
    const deadline = Date.now() + timeoutMs;
    while (!done() && Date.now() < deadline) await sleep(5);
    // Again until it answers: a signal that came before the run began interrupts nothing.
    while (!answered) {
      this.proc.kill('SIGUSR2');
      await Promise.race([answer, sleep(50)]);
    }
    await answer;
  }

  /** The AF_PACKET generator (lab-gen.js --packet): one paced run of numbered flows. */
  async flood(req: Record<string, number | string>): Promise<{ sent: number; refused: number; ms: number }> {
    const answer = this.next();
    this.proc.stdin!.write(`${JSON.stringify({ flood: req })}\n`);
    return JSON.parse(await answer) as { sent: number; refused: number; ms: number };
  }

  stop(): void {
    this.proc.stdin?.end();
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- CPU accounting ----------------------------------------------------------------

/** Nanoseconds a task has run on a CPU (/proc/<tid>/schedstat, first field). */
export function taskRuntimeNs(tid: number): number {
  return Number(readFileSync(`/proc/${tid}/schedstat`, 'utf8').split(' ')[0]);
}

/** Kernel threads whose name starts with `prefix` (e.g. "napi/i1a2b-"). */
function threadsNamed(prefix: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').startsWith(prefix)) out.push(Number(d));
    } catch {
      // Exited meanwhile.
    }
  }
  return out;
}

/**
 * Moves an interface's receive (its NAPI instance) into a kernel thread of
 * its own and returns the thread's id. sysfs shows a namespace's devices only
 * when mounted inside it, which `ip netns exec` does.
 */
function threadedNapi(ns: string, ifname: string): number {
  run('ip', ['netns', 'exec', ns, 'sh', '-c', `echo 1 > /sys/class/net/${ifname}/threaded`]);
  const tids = threadsNamed(`napi/${ifname}-`.slice(0, 15));
  if (tids.length !== 1) throw new Error(`expected one NAPI thread for ${ifname} in ${ns}, found ${tids.length}`);
  return tids[0]!;
}

/**
 * Pins a NAPI thread to a CPU and gives it a real-time priority: receive
 * processing in softirq context preempts ordinary tasks too, and a backend
 * thread that waited behind the generator's busy CPU would overflow its
 * 256-slot ring.
 */
function pin(tid: number, cpu: number): void {
  run('taskset', ['-p', '-c', String(cpu), String(tid)]);
  run('chrt', ['-f', '-p', '50', String(tid)]);
}

// ---- the rig ----------------------------------------------------------------------

export interface RigOptions {
  backends: number;
  /** The generator; default live frames where the kernel allows them, else an AF_PACKET socket. */
  generator?: GeneratorKind;
  /** Source addresses (default 4,096). */
  sources?: number;
  /** UDP source ports per source address (default 16): sources × udpPorts UDP flows repeat (established flows). */
  udpPorts?: number;
}

/**
 * What the load balancer namespace runs: one of the balancers, or the floor
 * (xdp_sink on its interface: every frame received and dropped at once,
 * the cost any balancer pays before doing anything).
 */
export type LbMode = BalancerName | NodePortPath | 'floor';

/** How frames are made: xdp_gen in live-frames test runs, or AF_PACKET sendmmsg (the addon's packetFlood). */
export type GeneratorKind = 'live-frames' | 'packet-socket';

export interface Window {
  mode: LbMode;
  kind: TrafficKind;
  /** The generator's sequence number of the window's first frame (bench.bpf.c: it names the frame's flow). */
  first_seq: number;
  /** Requested rate (packets/s) and group size. */
  rate: number;
  group: number;
  /** Frames the generator sent, and from its first to its last group (ms). */
  offered: number;
  gen_ms: number;
  /** Packets counted by the backends' sinks (the floor: by its own sink). */
  forwarded: number;
  per_backend: number[];
  /** Of those, encapsulated (IPv4-in-IPv4). */
  ipip: number;
  /** Frames the load balancer's receive ring refused (it fell behind). */
  lost_ingress: number;
  /** Frames the load balancer took in but did not send on. */
  lost_in_lb: number;
  /** Packets sent towards the backends that their links or sinks dropped (the rig's limit, not the balancer's). */
  lost_downstream: number;
  /** CPU time of the load balancer's receive thread over the window (ns), and the window's length. */
  lb_cpu_ns: number;
  wall_ns: number;
}

interface LinkSnapshot {
  genTxDropped: number;
  lbTxToBackends: number;
}

export class RateRig {
  readonly lab: Lab;
  readonly gen: string;
  readonly lb: string;
  readonly backendNs: string[];
  readonly backends: string[];
  /** The load balancer's interface facing the generator (unique: it names the NAPI thread). */
  readonly lbIf: string;
  readonly lbCpu: number;
  lbThread = 0;
  dp: LbDatapath | undefined;
  private genObj: BenchObject | undefined;
  private floorObj: BenchObject | undefined;
  private sinks: BenchObject[] = [];
  private passObj: BpfObject | undefined;
  private generator: Generator | undefined;
  readonly generatorKind: GeneratorKind;
  /** The packet-socket generator's next frame number (xdp_gen keeps its own). */
  private packetSeq = 0;
  private readonly tag = process.pid.toString(36);
  readonly iptablesVariant: string;
  active: LbMode | undefined;
  readonly sources: number;
  readonly udpPorts: number;
  /** Ferry's Maglev tables (backend ids: 16 × VIP id + backend index), by traffic kind. */
  readonly tables = new Map<TrafficKind, Uint32Array>();

  private constructor(readonly o: RigOptions) {
    this.sources = o.sources ?? 4096;
    this.udpPorts = o.udpPorts ?? 16;
    if (!Number.isInteger(this.sources) || this.sources < 1 || this.sources > 32768) throw new RangeError('sources: 1 to 32768');
    if (!Number.isInteger(o.backends) || o.backends < 1 || o.backends > 9) throw new RangeError('backends: 1 to 9');
    this.lab = new Lab({ backends: 0 });
    this.gen = `${this.lab.prefix}-gen`;
    this.lb = `${this.lab.prefix}-lb`;
    this.backendNs = Array.from({ length: o.backends }, (_, i) => `${this.lab.prefix}-be${i + 1}`);
    this.backends = this.backendNs.map((_, i) => backendAddr(i));
    this.lbIf = `i${this.tag}`;
    this.lbCpu = Math.max(0, cpus().length - 1);
    this.iptablesVariant = /\((\w+)\)/.exec(run('iptables', ['--version']))?.[1] ?? 'unknown';
    this.generatorKind = o.generator ?? (liveFramesUnavailable() ? 'packet-socket' : 'live-frames');
  }

  static async start(o: RigOptions): Promise<RateRig> {
    const r = new RateRig(o);
    try {
      await r.bringUp();
    } catch (err) {
      r.stop();
      throw err;
    }
    return r;
  }

  private get linkPin(): string {
    return join(this.lab.bpfRoot, 'lb', 'link');
  }

  private async bringUp(): Promise<void> {
    const { lab } = this;
    ensureBpffs();
    lab.claim();
    for (const ns of [this.gen, this.lb, ...this.backendNs]) {
      run('ip', ['netns', 'add', ns]);
      nsRun(ns, 'ip', ['link', 'set', 'lo', 'up']);
      // No IPv6: its neighbour and router solicitations would pass through the counted links.
      for (const k of ['all', 'default']) nsRun(ns, 'sysctl', ['-q', '-w', `net.ipv6.conf.${k}.disable_ipv6=1`]);
    }
    // Generator ══ load balancer.
    run('ip', [
      'link',
      'add',
      'eth0',
      'netns',
      this.gen,
      'address',
      macText(GEN_MAC),
      'type',
      'veth',
      'peer',
      'name',
      this.lbIf,
      'netns',
      this.lb,
      'address',
      macText(LB_MAC),
    ]);
    nsRun(this.gen, 'ip', ['addr', 'add', '198.18.1.1/24', 'dev', 'eth0']);
    nsRun(this.gen, 'ip', ['link', 'set', 'eth0', 'up']);
    nsRun(this.lb, 'ip', ['addr', 'add', '198.18.1.2/24', 'dev', this.lbIf]);
    nsRun(this.lb, 'ip', ['link', 'set', this.lbIf, 'up']);
    for (const [k, v] of [
      ['net.ipv4.ip_forward', '1'],
      ['net.ipv4.conf.all.rp_filter', '0'],
      ['net.ipv4.conf.default.rp_filter', '0'],
      ['net.ipv4.conf.all.send_redirects', '0'],
      [`net.ipv4.conf.${this.lbIf}.rp_filter`, '0'],
      // A NIC checks receive checksums in hardware; a veth cannot, so conntrack is told not to.
      ['net.netfilter.nf_conntrack_checksum', '0'],
    ])
      nsRun(this.lb, 'sysctl', ['-q', '-w', `${k}=${v}`]);
    // Load balancer ══ each backend.
    this.backendNs.forEach((ns, i) => {
      const sinkIf = this.sinkIf(i);
      run('ip', [
        'link',
        'add',
        `b${i + 1}`,
        'netns',
        this.lb,
        'type',
        'veth',
        'peer',
        'name',
        sinkIf,
        'netns',
        ns,
        'address',
        macText(beMac(i)),
      ]);
      nsRun(ns, 'ip', ['addr', 'add', `${backendAddr(i)}/24`, 'dev', sinkIf]);
      nsRun(ns, 'ip', ['link', 'set', sinkIf, 'up']);
      nsRun(this.lb, 'ip', ['addr', 'add', `${lbLinkAddr(i)}/24`, 'dev', `b${i + 1}`]);
      nsRun(this.lb, 'ip', ['link', 'set', `b${i + 1}`, 'up']);
      // Without TSO on the sending side, veth hands the skb to the peer's NAPI
      // (its thread) instead of the backlog of the CPU that sends it.
      nsRun(this.lb, 'ethtool', ['-K', `b${i + 1}`, 'tx', 'off']);
      nsRun(this.lb, 'ip', ['neigh', 'replace', backendAddr(i), 'lladdr', macText(beMac(i)), 'dev', `b${i + 1}`, 'nud', 'permanent']);
      // The node's pods: the nftables path routes to them through it (Ferry's names the node as `via`).
      nsRun(this.lb, 'ip', ['route', 'add', `${podAddr(i).replace(/\.2$/, '.0')}/24`, 'via', backendAddr(i)]);
    });

    // Backends: xdp_sink, each with its own counters.
    const attach: Array<Promise<void>> = [];
    this.backendNs.forEach((ns, i) => {
      const sink = new BenchObject(join(this.lab.bpfRoot, `be${i + 1}`));
      this.sinks.push(sink);
      sink.setSinkPorts(TCP_PORT, UDP_PORT);
      attach.push(runAgent(ns, ['xdp', sink.progPin('xdp_sink'), join(sink.dir, 'link'), this.sinkIf(i)]));
    });
    // The floor's sink, swapped onto the load balancer's interface by activate('floor').
    this.floorObj = new BenchObject(join(this.lab.bpfRoot, 'floor'));
    this.floorObj.setSinkPorts(TCP_PORT, UDP_PORT);
    // The load balancer's interface starts with xdp_pass; activate() swaps programs through the link.
    const nat = loadNative();
    this.passObj = nat.openObject(bpfObjectPath('lab'));
    this.passObj.load();
    const passPin = join(lab.bpfRoot, 'lb', 'prog_xdp_pass');
    mkdirSync(join(lab.bpfRoot, 'lb'), { recursive: true });
    nat.objPin(this.passObj.programFd('xdp_pass'), passPin);
    attach.push(runAgent(this.lb, ['xdp', passPin, this.linkPin, this.lbIf]));
    await Promise.all(attach);

    // Ferry's datapath: one VIP address, TCP and UDP ports, the same backends.
    this.dp = LbDatapath.open({
      pinRoot: join(lab.bpfRoot, 'ferry'),
      sizes: { maxVips: 16, maxVipAddrs: 16, maxBackends: 64, ctSize: 262_144, maxPolicyRules: 16 },
    });
    programConfig(this.dp, { seed: HASH_SEED, src4: ENCAP_SRC4, src6: null, skipFib: false });
    for (const [id, proto, port] of [
      [0, 'tcp', TCP_PORT],
      [1, 'udp', UDP_PORT],
    ] as const) {
      const v: VipProgram = {
        id,
        addr: VIP,
        port,
        proto,
        m: chooseMaglevM(this.backends.length),
        backends: this.backends.map((addr, i) => ({ id: id * 16 + i, addr })),
      };
      this.tables.set(proto === 'tcp' ? 'syn' : 'udp', programVip(this.dp, v, HASH_SEED));
    }
    // The NodePort path: the load balancer's own address, each pod reached through its node.
    for (const [id, proto, port] of [
      [2, 'tcp', NODE_PORT_TCP],
      [3, 'udp', NODE_PORT_UDP],
    ] as const) {
      programVip(
        this.dp,
        {
          id,
          addr: LB_ADDR,
          port,
          proto,
          m: chooseMaglevM(this.backends.length),
          backends: this.backends.map((node, i) => ({ id: id * 16 + i, addr: podAddr(i), via: node })),
        },
        HASH_SEED,
      );
    }

    // Threads: the balancer's receive on the last CPU, backends' with the generator on CPU 0.
    this.lbThread = threadedNapi(this.lb, this.lbIf);
    pin(this.lbThread, this.lbCpu);
    this.backendNs.forEach((ns, i) => pin(threadedNapi(ns, this.sinkIf(i)), 0));

    // The generator: CPU 0 at the highest ordinary priority, so that the rest of
    // the machine's work does not thin out the offered rate (the backends'
    // real-time threads still preempt it).
    let genArgs = ['--packet', 'eth0'];
    if (this.generatorKind === 'live-frames') {
      this.genObj = new BenchObject(join(lab.bpfRoot, 'gen'));
      genArgs = [this.genObj.progPin('xdp_gen'), 'eth0'];
    }
    const proc = spawn(
      'nice',
      [
        '-n',
        '-20',
        'taskset',
        '-c',
        '0',
        'nsenter',
        `--net=/run/netns/${this.gen}`,
        '--',
        process.execPath,
        join(packageRoot(), 'dist', 'bench', 'lab-gen.js'),
        ...genArgs,
      ],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    this.generator = new Generator(proc);
    const ready = await this.generator.next();
    if (ready !== 'ready') throw new Error(`generator: ${ready}`);
  }

  private sinkIf(i: number): string {
    return `s${i + 1}${this.tag}`;
  }

  // ---- balancers ------------------------------------------------------------------

  /** Removes every netfilter rule of the load balancer's namespace and its connection tracking entries. */
  private clearNetfilter(): void {
    if (this.iptablesVariant === 'legacy') nsRun(this.lb, 'iptables-restore', [], { input: '*nat\nCOMMIT\n' });
    nsRun(this.lb, 'nft', ['flush', 'ruleset']);
    this.flushConntrack();
  }

  /** Empties the load balancer's connection tracking table. */
  flushConntrack(): void {
    nsRun(this.lb, 'conntrack', ['-F']);
  }

  /** Makes `mode` the load balancer: its program on the interface, its rules, an empty conntrack table. */
  activate(mode: LbMode): void {
    const nat = loadNative();
    const link = nat.objGet(this.linkPin);
    const ferry = mode === 'ferry' || mode === 'ferry-nodeport';
    const prog = ferry
      ? this.dp!.progFd
      : mode === 'floor'
        ? nat.objGet(this.floorObj!.progPin('xdp_sink'))
        : this.passObj!.programFd('xdp_pass');
    try {
      nat.linkUpdate(link, prog);
    } finally {
      nat.closeFd(link);
      if (mode === 'floor') nat.closeFd(prog);
    }
    this.clearNetfilter();
    if (mode === 'iptables') nsRun(this.lb, 'iptables-restore', ['--noflush'], { input: kubeProxyRules(this.backends) });
    if (mode === 'nftables') nsRun(this.lb, 'nft', ['-f', '-'], { input: nftRules(this.backends) });
    if (mode === 'nft-nat') nsRun(this.lb, 'nft', ['-f', '-'], { input: natPathRules(this.backends.length) });
    // The sinks count what reaches a pod: Ferry's encapsulated packet keeps the
    // NodePort (its node translates it), the nftables path's carries the pod's port.
    const counted = mode === 'ferry-nodeport' ? frontendOf(mode) : { tcp: TCP_PORT, udp: UDP_PORT };
    for (const sink of this.sinks) sink.setSinkPorts(counted.tcp, counted.udp);
    this.active = mode;
  }

  /** The rule set the active netfilter balancer runs, as its tool lists it. */
  listRules(): string {
    if (this.active === 'iptables') return nsRun(this.lb, 'iptables-save', ['-c', '-t', 'nat']);
    if (this.active === 'nftables' || this.active === 'nft-nat') return nsRun(this.lb, 'nft', ['list', 'ruleset']);
    return '';
  }

  /** Connection tracking entries in the load balancer's namespace. */
  conntrackCount(): number {
    return Number(nsRun(this.lb, 'conntrack', ['-C']).trim());
  }

  // ---- traffic --------------------------------------------------------------------

  /** The generator's flows for a kind of traffic: sources, and ports per source. */
  private flows(kind: TrafficKind): { srcCount: number; portCount: number } {
    return { srcCount: this.sources, portCount: kind === 'syn' ? SYN_PORTS : this.udpPorts };
  }

  /**
   * Sends `count` frames of `kind` to the active mode's frontend at `rate`
   * (0: as fast as the generator can) in groups; the first frame's number,
   * how many went out and over how long (ms).
   */
  private async emit(
    kind: TrafficKind,
    rate: number,
    count: number,
    group: number,
  ): Promise<{ first: number; offered: number; ms: number }> {
    const to = frontendOf(this.active!);
    const timeoutMs = rate > 0 ? (count / rate) * 3000 + 2000 : 60_000;
    if (this.generatorKind === 'packet-socket') {
      const first = this.packetSeq;
      const r = await this.generator!.flood({
        dstMac: LB_MAC.toString('hex'),
        srcMac: GEN_MAC.toString('hex'),
        dstIp: ipHex(to.addr),
        srcNet: ipHex(SRC_BASE),
        dstPort: kind === 'syn' ? to.tcp : to.udp,
        proto: kind === 'syn' ? 'tcp' : 'udp',
        ...this.flows(kind),
        portBase: PORT_BASE,
        first,
        count,
        rate,
        group: Math.min(group, 64),
        milliseconds: Math.ceil(timeoutMs),
      });
      this.packetSeq += r.sent;
      return { first, offered: r.sent, ms: r.ms };
    }
    const gen = this.genObj!;
    gen.setGen(template(kind, to), this.flows(kind));
    const seq0 = gen.genState().seq;
    const stopAt = gen.armGen(rate, count, group);
    const tRun = performance.now();
    let tDone = 0;
    const done = () => gen.genState().seq >= stopAt && (tDone = performance.now()) > 0;
    await this.generator!.run(template(kind, to), done, timeoutMs);
    const st = gen.genState();
    // Paced: from the first group's start to the last group's end. Unpaced:
    // as the parent saw it (to within its 5 ms polling).
    const ms = rate > 0 ? Number(st.last_ns - st.first_ns) / 1e6 + (group * 1000) / rate : (tDone || performance.now()) - tRun;
    return { first: Number(seq0), offered: Number(st.seq - seq0), ms };
  }

  /** UDP flows the generator cycles through. */
  get udpFlows(): number {
    return this.sources * this.udpPorts;
  }

  sinkCounts(): SinkCounts[] {
    return this.sinks.map((s) => s.sinkCounts());
  }

  /** What each backend's sink counted; the floor's own sink while the floor is active. */
  private counted(): SinkCounts[] {
    return this.active === 'floor' ? [this.floorObj!.sinkCounts()] : this.sinkCounts();
  }

  /** Waits until the sinks' counts stop moving (the tail of a window has arrived). */
  async settle(): Promise<void> {
    let last = -1;
    for (let i = 0; i < 100; i++) {
      const now = this.counted().reduce((a, c) => a + c.tcp + c.udp + c.passed, 0);
      if (now === last) return;
      last = now;
      await sleep(25);
    }
  }

  private links(): LinkSnapshot {
    type Stats = Array<{ ifname: string; stats64: { tx: { packets: number; dropped: number } } }>;
    const gen = JSON.parse(nsRun(this.gen, 'ip', ['-s', '-j', 'link', 'show', 'eth0'])) as Stats;
    const lb = JSON.parse(nsRun(this.lb, 'ip', ['-s', '-j', 'link', 'show'])) as Stats;
    return {
      genTxDropped: gen[0]!.stats64.tx.dropped,
      lbTxToBackends: lb.filter((l) => /^b\d+$/.test(l.ifname)).reduce((a, l) => a + l.stats64.tx.packets, 0),
    };
  }

  /**
   * Offers `kind` traffic to the active mode: `count` frames (or rate × ms)
   * at `rate` per second (0: as fast as the generator can) in groups of `group`; what the backends received,
   * where the rest was lost, and what the balancer's thread spent.
   */
  async offer(kind: TrafficKind, rate: number, limit: { ms: number } | { count: number }, group = DEFAULT_GROUP): Promise<Window> {
    const mode = this.active;
    if (!mode) throw new Error('no balancer is active');
    const count = 'count' in limit ? limit.count : Math.round((rate * limit.ms) / 1000);
    await this.settle();
    const c0 = this.counted();
    const l0 = this.links();
    const t0 = process.hrtime.bigint();
    const r0 = taskRuntimeNs(this.lbThread);
    const sent = await this.emit(kind, rate, count, group);
    await this.settle();
    const r1 = taskRuntimeNs(this.lbThread);
    const t1 = process.hrtime.bigint();
    const c1 = this.counted();
    const l1 = this.links();
    const key = kind === 'syn' ? 'tcp' : 'udp';
    const per = c1.map((c, i) => c[key] - c0[i]![key]);
    const { offered } = sent;
    const forwarded = per.reduce((a, b) => a + b, 0);
    const ingress = l1.genTxDropped - l0.genTxDropped;
    const toBackends = mode === 'floor' ? forwarded : l1.lbTxToBackends - l0.lbTxToBackends;
    return {
      mode,
      kind,
      first_seq: sent.first,
      rate,
      group,
      offered,
      gen_ms: sent.ms,
      forwarded,
      per_backend: per,
      ipip: c1.reduce((a, c, i) => a + c.ipip - c0[i]!.ipip, 0),
      lost_ingress: ingress,
      lost_in_lb: Math.max(0, offered - ingress - toBackends),
      lost_downstream: Math.max(0, toBackends - forwarded),
      lb_cpu_ns: r1 - r0,
      wall_ns: Number(t1 - t0),
    };
  }

  /** CPU time the balancer's thread spends while nothing is offered, per second of wall time. */
  async idleNsPerSecond(ms: number): Promise<number> {
    const r0 = taskRuntimeNs(this.lbThread);
    const t0 = process.hrtime.bigint();
    await sleep(ms);
    return ((taskRuntimeNs(this.lbThread) - r0) * 1e9) / Number(process.hrtime.bigint() - t0);
  }

  // ---- life cycle --------------------------------------------------------------------

  /** Stops the generator, closes the objects, removes the namespaces (and their rules), pins and folder. */
  stop(): void {
    this.generator?.stop();
    this.generator = undefined;
    this.genObj?.close();
    this.floorObj?.close();
    for (const s of this.sinks) s.close();
    this.sinks = [];
    this.passObj?.close();
    this.dp?.close();
    this.dp = undefined;
    this.lab.down();
  }
}

/** Whether this machine can run the rig, or why not (without live frames its generator uses an AF_PACKET socket). */
export function rigUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, BPF)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'kernel has no BTF';
  for (const cmd of ['iptables-restore', 'nft', 'conntrack', 'taskset', 'chrt', 'ethtool']) {
    try {
      run('sh', ['-c', `command -v ${cmd}`]);
    } catch {
      return `${cmd} is missing (scripts/setup.sh installs it)`;
    }
  }
  if (!existsSync(bpfObjectPath('bench'))) return 'build/bpf/bench.bpf.o is missing (npm run build)';
  return undefined;
}
