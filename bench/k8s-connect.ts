/**
 * Per-connection cost of reaching a Kubernetes ClusterIP at 10,000 Services:
 * Ferry's socket-level load balancer (sock_lb in a cgroup: the destination
 * is rewritten at connect()/sendmsg(), no NAT, no conntrack) against
 * kube-proxy's iptables mode (nat OUTPUT → KUBE-SERVICES, one rule per
 * Service port, → KUBE-SVC-* with statistic random → KUBE-SEP-* DNAT, every
 * new connection through conntrack), measured in the same run, on the same
 * machine, with the same client and servers.
 *
 * Lab: two network namespaces of our own, each with only lo, backends
 * 10.244.0.1..B on lo served by src/lab/sockserver.py (TCP 8080 accepting,
 * UDP 5353 reading):
 *   - ferrybench-kcipt-<pid>: the kube-proxy ruleset loaded with
 *     iptables-restore, ClusterIPs 10.96.0.0/12 routed to lo, the client a
 *     "pod" 10.244.255.1 (no masquerade, no hairpin: iptables' cheapest case);
 *   - ferrybench-kcsock-<pid>: no rules; sock_lb attached to the cgroup
 *     ferrybench-kcsock-<pid> (under /sys/fs/cgroup/unified), the same
 *     Services applied with SocketLb.apply().
 * Each Service has a TCP port 80 → 8080 and a UDP port 53 → 5353 with K
 * backends (default 2), so the ruleset holds 2 × N Service ports.
 *
 * The client (src/lab/sockclient.py, op "loop") opens as many connections as
 * it can in `seconds` to ClusterIPs drawn at random over all Services: TCP
 * connect() then close() with a RST (no TIME_WAIT), UDP a new socket sending
 * one datagram. "direct" is the same client connecting straight to the
 * backends in the rule-free namespace, outside the cgroup: the floor that
 * both load balancers add to. Variants alternate for `rounds` rounds; the
 * figures are medians over the rounds.
 *
 *   node dist/bench/k8s-connect.js [--json] [--services N] [--seconds S] [--rounds R]
 *                                  [--backends-per-service K] [--no-udp]
 *     --json   one object (K8sConnectResult) on stdout; progress on stderr
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SocketLb } from '../src/datapath/socket-lb.js';
import type { SocketLbService } from '../src/datapath/socket-lb-plan.js';
import { cgroup2Unavailable } from '../src/lab/cgroup.js';
import { SocketLbLab, type BackendSpec, type LoopResult } from '../src/lab/socket-lb-lab.js';
import { BPFFS, bpfUnavailable, ensureBpffs } from '../test/lib/harness.js';
import { argValue } from './args.js';

export interface K8sConnectOptions {
  /** Kubernetes Services, each with a TCP and a UDP port (default 10,000). */
  services?: number;
  /** Endpoints per Service port (default 2). */
  backendsPerService?: number;
  /** Distinct backend addresses the endpoints are spread over (default 16). */
  backendAddresses?: number;
  /** Seconds per run (default 2). */
  seconds?: number;
  /** Rounds of direct, socket-LB, iptables (default 3). */
  rounds?: number;
  /** Also measure UDP (default true). */
  udp?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface ConnectRate {
  /** Median over the rounds. */
  ns_per_connection: number;
  /** Every round's figure, in order. */
  rounds_ns: number[];
  connections: number;
  errors: number;
}

export interface ProtoResult {
  direct: ConnectRate;
  socket_lb: ConnectRate;
  iptables: ConnectRate;
  /** iptables ns per connection / socket-LB ns per connection. */
  ratio_iptables_to_socket_lb: number;
  /** What each adds to a direct connection, ns. */
  socket_lb_added_ns: number;
  iptables_added_ns: number;
}

export interface K8sConnectResult {
  services: number;
  /** ClusterIP entries (Service ports) in both load balancers. */
  service_ports: number;
  backends_per_service: number;
  backend_addresses: number;
  seconds: number;
  rounds: number;
  iptables_rules: number;
  iptables_restore_ms: number;
  socket_lb_apply_ms: number;
  tcp: ProtoResult;
  udp: ProtoResult | null;
}

const TCP_PORT = 80;
const TCP_TARGET = 8080;
const UDP_PORT = 53;
const UDP_TARGET = 5353;
const CLIENT_POD = '10.244.255.1';
const CLUSTER_CIDR = '10.244.0.0/16';

/** The n-th ClusterIP: 10.96.0.1, 10.96.0.2, … (10.96.0.0/12 holds a million). */
const clusterIp = (i: number): string => {
  const x = i + 1;
  return `10.${96 + (x >> 16)}.${(x >> 8) & 255}.${x & 255}`;
};
const backendIp = (k: number): string => `10.244.0.${k + 1}`;

/** kube-proxy's chain names: a prefix and 16 characters of base32(SHA-256). */
function chain(prefix: string, what: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const h = createHash('sha256').update(what).digest();
  let out = '';
  for (let i = 0; out.length < 16; i++) out += alphabet[h[i]! & 31];
  return `${prefix}${out}`;
}

/** One Service port of the benchmark. */
export interface ServicePort {
  svc: number;
  proto: 'tcp' | 'udp';
  port: number;
  target: number;
  backends: string[];
}

function servicePorts(n: number, k: number, b: number): ServicePort[] {
  const out: ServicePort[] = [];
  for (let i = 0; i < n; i++) {
    const backends = Array.from({ length: k }, (_, j) => backendIp((i * k + j) % b));
    out.push({ svc: i, proto: 'tcp', port: TCP_PORT, target: TCP_TARGET, backends });
    out.push({ svc: i, proto: 'udp', port: UDP_PORT, target: UDP_TARGET, backends });
  }
  return out;
}

/**
 * The iptables-restore input of kube-proxy (iptables mode) for these
 * ClusterIP ports: nat OUTPUT → KUBE-SERVICES (one rule per port, then the
 * NodePort jump kube-proxy puts last), KUBE-SVC-* (masquerade of traffic from
 * outside the cluster CIDR, then endpoints by statistic random), KUBE-SEP-*
 * (hairpin masquerade, DNAT); KUBE-POSTROUTING masquerades marked traffic.
 */
export function kubeProxyClusterIpRules(ports: readonly ServicePort[]): { text: string; rules: number } {
  const chains = [':KUBE-SERVICES - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const services: string[] = [];
  const rules = [
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
  ];
  for (const p of ports) {
    const spn = `bench/svc-${p.svc}:${p.proto}`;
    const ip = clusterIp(p.svc);
    const svc = chain('KUBE-SVC-', `${spn}${p.proto}`);
    chains.push(`:${svc} - [0:0]`);
    services.push(
      `-A KUBE-SERVICES -m comment --comment "${spn} cluster IP" -m ${p.proto} -p ${p.proto} -d ${ip}/32 --dport ${p.port} -j ${svc}`,
    );
    rules.push(
      `-A ${svc} -m comment --comment "${spn} cluster IP" -m ${p.proto} -p ${p.proto} -d ${ip}/32 --dport ${p.port} ! -s ${CLUSTER_CIDR} -j KUBE-MARK-MASQ`,
    );
    p.backends.forEach((be, j) => {
      const ep = `${be}:${p.target}`;
      const sep = chain('KUBE-SEP-', `${spn}${p.proto}${ep}`);
      chains.push(`:${sep} - [0:0]`);
      const left = p.backends.length - j;
      rules.push(
        left > 1
          ? `-A ${svc} -m comment --comment "${spn} -> ${ep}" -m statistic --mode random --probability ${(1 / left).toFixed(10)} -j ${sep}`
          : `-A ${svc} -m comment --comment "${spn} -> ${ep}" -j ${sep}`,
      );
      rules.push(
        `-A ${sep} -m comment --comment "${spn}" -s ${be}/32 -j KUBE-MARK-MASQ`,
        `-A ${sep} -m comment --comment "${spn}" -m ${p.proto} -p ${p.proto} -j DNAT --to-destination ${ep}`,
      );
    });
  }
  services.push(
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
  );
  const text = ['*nat', ...chains, ...services, ...rules, 'COMMIT', ''].join('\n');
  return { text, rules: services.length + rules.length };
}

function unavailable(): string | undefined {
  const why = bpfUnavailable() ?? cgroup2Unavailable();
  if (why) return why;
  if (spawnSync('python3', ['--version']).status !== 0) return 'python3 is not installed';
  if (spawnSync('sh', ['-c', 'command -v iptables-restore'], { stdio: 'ignore' }).status !== 0) {
    return 'iptables-restore is not installed (apt-get install iptables; scripts/setup.sh does)';
  }
  return undefined;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const r1 = (x: number): number => Math.round(x * 10) / 10;
const r2 = (x: number): number => Math.round(x * 100) / 100;

type Variant = 'direct' | 'socket_lb' | 'iptables';

function rate(runs: LoopResult[]): ConnectRate {
  const per = runs.map((r) => r.ns / Math.max(1, r.count));
  return {
    ns_per_connection: r1(median(per)),
    rounds_ns: per.map(r1),
    connections: runs.reduce((n, r) => n + r.count, 0),
    errors: runs.reduce((n, r) => n + r.errors, 0),
  };
}

/** Sets a namespace up with the backends on lo; returns once they listen. */
async function backendLab(name: string, addresses: number): Promise<SocketLbLab> {
  const lab = new SocketLbLab(name);
  lab.setUp();
  lab.sysctl('net.core.somaxconn', 65535);
  const specs: BackendSpec[] = [];
  for (let k = 0; k < addresses; k++) {
    lab.addAddress(`${backendIp(k)}/32`);
    specs.push({ proto: 'tcp', address: backendIp(k), port: TCP_TARGET, name: `be${k}` });
    specs.push({ proto: 'udpsink', address: backendIp(k), port: UDP_TARGET, name: `be${k}` });
  }
  await lab.serve(specs);
  return lab;
}

export async function measureK8sConnect(opts: K8sConnectOptions = {}): Promise<K8sConnectResult> {
  const why = unavailable();
  if (why) throw new Error(`k8s-connect benchmark cannot run here: ${why}`);
  const n = opts.services ?? 10_000;
  const k = opts.backendsPerService ?? 2;
  const b = opts.backendAddresses ?? 16;
  const seconds = opts.seconds ?? 2;
  const rounds = opts.rounds ?? 3;
  const withUdp = opts.udp ?? true;
  const log = opts.log ?? (() => {});
  if (n < 1 || n > 65535) throw new RangeError(`services must be from 1 to 65535, got ${n}`);
  if (b < 1 || b > 250) throw new RangeError(`backendAddresses must be from 1 to 250, got ${b}`);

  const ports = servicePorts(n, k, b);
  const entries: SocketLbService[] = ports.map((p) => ({
    ip: clusterIp(p.svc),
    port: p.port,
    protocol: p.proto,
    backends: p.backends.map((address) => ({ address, port: p.target })),
  }));
  const { text, rules } = kubeProxyClusterIpRules(ports);
  const pinRoot = join(BPFFS, `ferrybench-kc-${process.pid}`);
  let ipt: SocketLbLab | undefined;
  let sock: SocketLbLab | undefined;
  let lb: SocketLb | undefined;
  try {
    ensureBpffs();
    log(`lab: two namespaces, ${b} backend addresses`);
    ipt = await backendLab(`ferrybench-kcipt-${process.pid}`, b);
    sock = await backendLab(`ferrybench-kcsock-${process.pid}`, b);
    ipt.addAddress(`${CLIENT_POD}/32`);
    ipt.nsRun('ip', ['route', 'add', '10.96.0.0/12', 'dev', 'lo', 'src', CLIENT_POD]);

    log(`iptables-restore: ${rules} rules for ${ports.length} Service ports`);
    let t = performance.now();
    // Into an empty namespace, so without kube-proxy's --noflush, which makes
    // iptables-nft's restore superlinear (2,000 ports: 6.9 s with it, 1.4 s
    // without); the rules loaded are the same.
    ipt.nsRun('iptables-restore', [], text, 600_000);
    const iptablesMs = performance.now() - t;

    log(`socket-LB: apply ${entries.length} Service ports`);
    rmSync(pinRoot, { recursive: true, force: true });
    lb = SocketLb.open({
      pinRoot,
      sizes: { maxServices: Math.max(1024, entries.length), maxSlots: Math.max(4096, 2 * entries.length * k) },
    });
    lb.attach(sock.cgroup);
    t = performance.now();
    lb.apply(entries);
    const applyMs = performance.now() - t;

    // Every path reaches a backend before it is timed.
    const probe = [{ op: 'tcp' as const, host: clusterIp(n - 1), port: TCP_PORT }];
    const checks = [
      ['socket-LB', await sock.client(probe)],
      ['iptables', await ipt.client(probe, { inCgroup: false })],
      ['direct', await sock.client([{ op: 'tcp', host: backendIp(0), port: TCP_TARGET }], { inCgroup: false })],
    ] as const;
    for (const [what, [r]] of checks) {
      const res = r as { reply?: string; error?: string };
      if (!res.reply?.startsWith('be')) throw new Error(`${what}: no backend answered: ${JSON.stringify(res)}`);
    }

    const targets = (proto: 'tcp' | 'udp', v: Variant): Array<[string, number]> => {
      if (v !== 'direct') return Array.from({ length: n }, (_, i) => [clusterIp(i), proto === 'tcp' ? TCP_PORT : UDP_PORT]);
      return Array.from({ length: b }, (_, i) => [backendIp(i), proto === 'tcp' ? TCP_TARGET : UDP_TARGET]);
    };
    const runOnce = async (proto: 'tcp' | 'udp', v: Variant, round: number): Promise<LoopResult> => {
      const lab = v === 'iptables' ? ipt! : sock!;
      const [r] = await lab.client([{ op: 'loop', proto, targets: targets(proto, v), seconds, seed: round + 1 }], {
        inCgroup: v === 'socket_lb',
        timeoutMs: (seconds + 60) * 1000,
      });
      return r as LoopResult;
    };
    const measure = async (proto: 'tcp' | 'udp'): Promise<ProtoResult> => {
      const runs: Record<Variant, LoopResult[]> = { direct: [], socket_lb: [], iptables: [] };
      for (let round = 0; round < rounds; round++) {
        for (const v of ['direct', 'socket_lb', 'iptables'] as const) {
          const r = await runOnce(proto, v, round);
          runs[v].push(r);
          log(
            `${proto} ${v} round ${round + 1}: ${r1(r.ns / Math.max(1, r.count))} ns/connection (${r.count}, ${r.errors} errors${r.firstError ? `: ${r.firstError}` : ''})`,
          );
        }
      }
      const direct = rate(runs.direct);
      const socketLb = rate(runs.socket_lb);
      const iptables = rate(runs.iptables);
      return {
        direct,
        socket_lb: socketLb,
        iptables,
        ratio_iptables_to_socket_lb: r2(iptables.ns_per_connection / socketLb.ns_per_connection),
        socket_lb_added_ns: r1(socketLb.ns_per_connection - direct.ns_per_connection),
        iptables_added_ns: r1(iptables.ns_per_connection - direct.ns_per_connection),
      };
    };
    const tcp = await measure('tcp');
    const udp = withUdp ? await measure('udp') : null;
    return {
      services: n,
      service_ports: ports.length,
      backends_per_service: k,
      backend_addresses: b,
      seconds,
      rounds,
      iptables_rules: rules,
      iptables_restore_ms: Math.round(iptablesMs),
      socket_lb_apply_ms: Math.round(applyMs),
      tcp,
      udp,
    };
  } finally {
    lb?.destroy();
    sock?.tearDown();
    ipt?.tearDown();
    if (existsSync(pinRoot)) rmSync(pinRoot, { recursive: true, force: true });
  }
}

function printHuman(r: K8sConnectResult): void {
  const signed = (x: number): string => (x < 0 ? `${x}` : `+${x}`);
  const line = (name: string, p: ProtoResult): void => {
    console.log(
      `${name}: direct ${p.direct.ns_per_connection} ns, socket-LB ${p.socket_lb.ns_per_connection} ns (${signed(p.socket_lb_added_ns)}), ` +
        `iptables ${p.iptables.ns_per_connection} ns (${signed(p.iptables_added_ns)}); iptables / socket-LB = ${p.ratio_iptables_to_socket_lb}` +
        `; errors ${p.direct.errors}/${p.socket_lb.errors}/${p.iptables.errors}`,
    );
  };
  console.log(
    `${r.services} Services (${r.service_ports} ClusterIP ports, ${r.backends_per_service} endpoints each), ` +
      `${r.rounds} rounds of ${r.seconds} s; iptables-restore of ${r.iptables_rules} rules ${r.iptables_restore_ms} ms, ` +
      `socket-LB apply ${r.socket_lb_apply_ms} ms`,
  );
  line('TCP connect+close', r.tcp);
  if (r.udp) line('UDP new socket + send', r.udp);
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const result = await measureK8sConnect({
    services: argValue('--services', 10_000),
    backendsPerService: argValue('--backends-per-service', 2),
    seconds: argValue('--seconds', 2),
    rounds: argValue('--rounds', 3),
    udp: !process.argv.includes('--no-udp'),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else printHuman(result);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
