/**
 * Kubernetes mode benchmark: how long a burst of N Service + EndpointSlice
 * changes (N LoadBalancer Services × 10 endpoints, created at once) takes
 * from the API server's watch streams to the store committed and the
 * datapath applied — against the time iptables-restore takes to load the
 * equivalent kube-proxy ruleset (iptables mode: KUBE-SERVICES, KUBE-EXT-*,
 * KUBE-SVC-* with statistic random, KUBE-SEP-* DNAT) into an empty network
 * namespace, measured in the same run.
 *
 * Ferry side: the Kubernetes API test server (test/lib/k8s-server.ts) on
 * 127.0.0.1 in a thread of its own (bench/k8s-server-thread.ts: a real API
 * server is another process), the real watch client, K8sSync, a store in a
 * file (SQLite with its fsyncs), and — as root with BTF — a real LbDatapath
 * in a private pin directory with the real Reconciler (Maglev tables built
 * and swapped into the maps); otherwise the fake Applier of the tests. The
 * clock starts once the server's thread has the events ready to send (the
 * objects stamped and encoded), before it stores them and writes them to
 * the watch connections, and stops when every Service is committed and
 * applied. An untimed burst of WARMUP_SERVICES comes first, in a rig of
 * its own: V8 compiles the hot code then, as a running ferryd has since
 * its first list (the first size measured otherwise paid for compiling:
 * 0.59 s at 1,000 Services against 0.35 s after it). V8 drops part of that
 * code with the rig and compiles it again on its helper threads during the
 * next burst, which does not wait for it (BENCHMARKS.md).
 *
 * iptables side: the ruleset text is generated beforehand (kube-proxy's
 * computing is not counted either), then `iptables-restore --noflush
 * --counters` (as kube-proxy calls it) loads it in a namespace
 * ferrytest-k8sbench-<pid> (entered with nsenter --net, deleted after).
 * iptables is installed with apt-get when missing. Debian's iptables-restore
 * is the nf_tables variant; the legacy variant is timed too when present.
 * The nf_tables variant needs far more than 10 minutes at N = 10,000 on the
 * development machine: every run is killed after --iptables-timeout and
 * reported as "did not finish within X s" (the ratio then a lower bound).
 *
 * Ferry's event-loop delay during the burst is measured too (its maximum is
 * the longest the daemon could not answer the API or a health check), with
 * the longest single store transaction.
 *
 * Two of the sync's sinks are measured on their own at 10,000 entries:
 * the kernel NAT table (nftables, in a namespace: whole, then one entry
 * changed at a time) and the socket-LB's planning of the ClusterIP list
 * (parse, plan, capacity; no maps: one ClusterIP changed at a time, the
 * others given again as the same objects, against the same changes with
 * every entry a new object).
 *
 *   node dist/bench/k8s.js [--quick] [--json] [--iptables-timeout SECONDS] [--ferry-only]
 *                          [--services-per-tx N] [--max-tx-per-batch N]
 *     --quick   N = 1,000 only, and the ClusterIP comparison at 1,000 Services in one round (about a minute)
 *     --no-connect  skip the ClusterIP per-connection comparison (socket-LB vs iptables DNAT, bench/k8s-connect.ts)
 *     --iptables-timeout  kill iptables-restore after this long (default 180 s; the full run takes about 5 minutes)
 *     --ferry-only        skip iptables-restore (e.g. to compare K8sSync settings)
 *     --burst-only        only the bursts: not the one-change series or ferryd's RSS
 *     --profile DIR       write a V8 CPU profile of each burst into DIR (started after the programs are
 *                         loaded: a profiler's signals interrupt the verifier, which then refuses the load)
 *     --services-per-tx, --max-tx-per-batch  K8sSync's caps (default: its defaults)
 *     --no-nodeport  skip the NodePort paths (bench/k8s-paths.ts: XDP vs the nftables NAT, per packet and per change)
 *     --nodeport-rate PPS  the rate both NodePort paths are offered (default 50,000)
 *     --json    one object: {sizes: [...], ratio_vs_iptables} (iptables-restore ms / Ferry ms at the largest N)
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client } from '../src/cli/client.js';
import {
  checkCapacity,
  ListPlanner,
  ServiceIds,
  type InstalledService,
  type LiveCounts,
  type SocketLbService,
} from '../src/datapath/socket-lb-plan.js';
import { NatTable, nftRunner } from '../src/k8s/nat.js';
import type { BatchReport } from '../src/k8s/sync.js';
import type { NatEntry } from '../src/k8s/translate.js';
import type { KubeObject } from '../src/k8s/types.js';
import { packageRoot } from '../src/paths.js';
import { service, slice } from '../test/lib/k8s-objects.js';
import type { ResourceName } from '../test/lib/k8s-server.js';
import { argValue } from './args.js';
import type { K8sServerThread } from './k8s-server-thread.js';
import { measureK8sConnect, type K8sConnectResult } from './k8s-connect.js';
import { measureNodePortChanges, measureNodePortPackets, type NodePortPackets, type PathChange } from './k8s-paths.js';
import { BENCH_NODE as NODE, changedEndpoints, ENDPOINTS, ip4, podIp, quantile, SyncRig, until } from './k8s-sync.js';
import { rigUnavailable } from './lab-rig.js';

export interface SizeResult {
  n: number;
  endpoints_per_service: number;
  ferry_ms: number;
  ferry_transactions: number;
  ferry_batches: number;
  /** The longest step of a batch (translation, store transaction, datapath apply), ms. */
  ferry_longest_step_ms: number;
  /** Event-loop delay during the burst, ms: the longest the process could not run anything else, and p99. */
  ferry_loop_delay_max_ms: number;
  ferry_loop_delay_p99_ms: number;
  /** CPU time during the burst: the main thread (the control plane) and the process, user and system. */
  ferry_cpu: CpuTime;
  datapath: 'real' | 'fake';
  /** At 10,000 Services: one endpoint change at a time (null at smaller sizes). */
  one_change: OneChange | null;
  /** At 10,000 Services with the real datapath: a real ferryd in Kubernetes mode syncing them all. */
  ferryd: FerrydRss | null;
  iptables_restore_ms: number | null;
  iptables_variant: string | null;
  iptables_legacy_restore_ms: number | null;
  iptables_rules: number;
  iptables_chains: number;
  /** The iptables-restore run did not finish within this long and was killed (then ratio is a lower bound). */
  iptables_restore_timeout_ms: number | null;
  iptables_legacy_restore_timeout_ms: number | null;
  /** iptables-restore's outcome in words: "12345 ms" or "did not finish within 180 s". */
  iptables_restore_result: string | null;
  iptables_legacy_restore_result: string | null;
  ratio: number | null;
  ratio_is_lower_bound: boolean;
  /** iptables-legacy-restore ms / Ferry ms (a lower bound if it did not finish). */
  legacy_ratio: number | null;
  legacy_ratio_is_lower_bound: boolean;
}

export interface SyncCaps {
  servicesPerTransaction?: number;
  maxTransactionsPerBatch?: number;
}

/** The kernel NAT table (src/k8s/nat.ts) at 10,000 entries: written whole once, then one entry changed at a time. */
export interface NatBench {
  entries: number;
  full_write_ms: number;
  one_change_ms_p50: number;
  one_change_ms_p99: number;
  changes: number;
  /**
   * The baseline in the same run: the same entries as one chain of rules
   * (one DNAT rule each, matched in turn), written whole, which is what
   * every change cost when the table was replaced as a whole.
   */
  one_chain_write_ms: number;
}

/**
 * The socket-LB's planning (src/datapath/socket-lb-plan.ts: parse, plan,
 * capacity; the map writes are not in it) at 10,000 ClusterIPs × 10
 * endpoints: the whole list once, then one ClusterIP's endpoints changed at
 * a time, the others given again as the same objects (as the sync does).
 */
export interface SocketLbPlanBench {
  entries: number;
  changes: number;
  whole_ms: number;
  one_change_ms_p50: number;
  one_change_ms_p99: number;
  /** Baseline in the same run: the same changes with every entry a new object (each checked, compared by its text). */
  copies_ms_p50: number;
}

export interface K8sBench {
  sizes: SizeResult[];
  nat: NatBench | null;
  socket_lb_plan: SocketLbPlanBench;
  ratio_vs_iptables: number | null;
  /** Per-connection cost of a ClusterIP: socket-LB vs kube-proxy's iptables chain (bench/k8s-connect.ts); null when skipped. */
  connect: K8sConnectResult | null;
  /** NodePorts on the XDP path and on the nftables NAT path (bench/k8s-paths.ts); null when skipped. */
  nodeport: { packets: NodePortPackets | null; changes: PathChange[] } | null;
  notes: string[];
}

const clusterIp = (i: number): string => ip4(10, 0x600000 + i + 1); // 10.96.0.0/12-ish
const ingressIp = (i: number): string => `198.18.${(i >> 8) & 255}.${i & 255}`;

function burst(n: number): Array<readonly [ResourceName, KubeObject]> {
  const out: Array<readonly [ResourceName, KubeObject]> = [];
  for (let i = 0; i < n; i++) {
    const name = `svc-${i}`;
    out.push([
      'services',
      service(name, {
        namespace: 'bench',
        type: 'LoadBalancer',
        clusterIP: clusterIp(i),
        ingress: [ingressIp(i)],
        allocateLoadBalancerNodePorts: false,
      }),
    ]);
    out.push([
      'endpointslices',
      slice(
        `${name}-x`,
        Array.from({ length: ENDPOINTS }, (_, j) => podIp(i, j)),
        { namespace: 'bench', service: name },
      ),
    ]);
  }
  return out;
}

/**
 * Starts a real ferryd in Kubernetes mode against the test API server, which
 * holds the burst: how long until it is ready (everything listed, written
 * and applied) and its resident memory then. No interface is attached, and
 * the socket-LB and the kernel NAT are off (they would act on this host).
 */
async function measureFerrydRss(server: K8sServerThread, n: number): Promise<FerrydRss> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-k8sd-'));
  const pinRoot = `/sys/fs/bpf/ferry-bench-k8sd-${process.pid}`;
  const socket = join(dir, 'ferry.sock');
  const config = join(dir, 'ferry.yaml');
  writeFileSync(
    config,
    [
      'mode: kubernetes',
      `state_dir: ${dir}/state`,
      'bpf:',
      `  pin_root: ${pinRoot}`,
      '  max_vips: 16384',
      '  max_backends: 262144',
      '  conntrack_entries: 65536',
      `  maglev_slots: ${16_384 * 1024}`,
      'datapath:',
      '  encap_source_v4: 198.19.255.0/24',
      '  reconcile_interval_seconds: 3600',
      'api:',
      `  socket: ${socket}`,
      'log:',
      '  level: warn',
      'kubernetes:',
      `  kubeconfig: ${server.kubeconfig}`,
      `  node_name: ${NODE}`,
      '  health_check_addresses: ["127.0.0.1"]',
      '  socket_lb:',
      '    enabled: false',
      '  nat:',
      '    enabled: false',
    ].join('\n'),
  );
  const t0 = performance.now();
  const proc = spawn(process.execPath, [join(packageRoot(), 'dist/src/daemon/ferryd.js'), '--config', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const api = new Client({ socket });
  try {
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`ferryd exited: ${err}`);
      if (performance.now() - t0 > 300_000) throw new Error(`ferryd not ready in 300 s: ${err}`);
      const ready = await api.get('/readyz').then(
        () => true,
        () => false,
      );
      if (ready) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const readyMs = performance.now() - t0;
    const status = await api.get<{ maps?: Array<{ name: string; used?: number }> }>('/v1/status');
    const vips = status.maps?.find((m) => m.name === 'ferry_vips')?.used;
    if (vips !== n) throw new Error(`ferryd holds ${String(vips)} VIPs, expected ${n}`);
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))?.[1] ?? 0);
    return { ready_ms: Math.round(readyMs), rss_mib: Math.round(kb / 1024) };
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(pinRoot, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

function bpfUsable(): boolean {
  return process.getuid?.() === 0 && existsSync('/sys/kernel/btf/vmlinux') && existsSync(join(packageRoot(), 'build/bpf/xdp_lb.bpf.o'));
}

/**
 * Event-loop delay: a 10 ms interval timer notes how late each tick runs.
 * The longest lateness is the longest the process could not answer
 * anything else (an API request, a health check's reply).
 */
function loopDelayProbe(): { stop(): { maxMs: number; p99Ms: number } } {
  const period = 10;
  const late: number[] = [];
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    late.push(Math.max(0, now - last - period));
    last = now;
  }, period);
  return {
    stop() {
      clearInterval(t);
      late.push(Math.max(0, performance.now() - last - period));
      late.sort((a, b) => a - b);
      return { maxMs: late.at(-1) ?? 0, p99Ms: late[Math.floor(0.99 * (late.length - 1))] ?? 0 };
    },
  };
}

/** CPU time in ms, user and system (the kernel's), of the main thread and of the whole process (every thread). */
interface CpuTime {
  main_user_ms: number;
  main_system_ms: number;
  process_user_ms: number;
  process_system_ms: number;
}

/**
 * A CPU clock: the main thread's times from /proc (USER_HZ ticks, 10 ms on
 * Linux), the process's from the runtime. The main thread runs Ferry's
 * control plane; the other threads build Maglev tables, serve the test API
 * server and run V8's helpers (garbage collection, compilation). System
 * time is the kernel's part: syscalls (map updates, SQLite's writes and
 * fsyncs, sockets) and page faults.
 */
function cpuClock(): () => CpuTime {
  const main = (): [number, number] => {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [Number(fields[11]) * 10, Number(fields[12]) * 10];
  };
  const [mu, ms] = main();
  const p0 = process.cpuUsage();
  return () => {
    const [mu1, ms1] = main();
    const p = process.cpuUsage(p0);
    return {
      main_user_ms: mu1 - mu,
      main_system_ms: ms1 - ms,
      process_user_ms: Math.round(p.user / 1000),
      process_system_ms: Math.round(p.system / 1000),
    };
  };
}

/** Ferry: burst → committed in SQLite and applied to the datapath. */
interface FerryResult {
  ms: number;
  transactions: number;
  batches: number;
  longestStepMs: number;
  loopDelayMaxMs: number;
  loopDelayP99Ms: number;
  cpu: CpuTime;
  oneChange: OneChange | null;
  ferrydRss: FerrydRss | null;
}

/** One endpoint of one Service changed at a time, at the burst's size. */
export interface OneChange {
  changes: number;
  /** The change committed and applied: translation, store transaction (fsync included), planning, datapath apply. */
  applied_ms_p50: number;
  applied_ms_p99: number;
  /** The whole batch: also publishing the socket-LB, health-check node port and NAT lists. */
  batch_ms_p50: number;
  batch_ms_p99: number;
  /**
   * From the API server's event to applied: also holds the sync's batching (the changes come back to back, so
   * each waits until a quarter of batch_delay_ms, 50 ms, after the previous batch began).
   */
  end_to_end_ms_p50: number;
  end_to_end_ms_p99: number;
}

/** A real ferryd in Kubernetes mode started against the same API server, with the whole burst to sync. */
export interface FerrydRss {
  /** From start to /readyz 200 (the first list and batch written). */
  ready_ms: number;
  rss_mib: number;
}

/** The untimed burst before the measured ones (benchK8s). */
const WARMUP_SERVICES = 2000;

/** Endpoint changes measured after the burst at the largest size. */
const ONE_CHANGES = 100;

/** A CPU profile of what runs until stop(), written as DIR/burst-N.cpuprofile (Chrome DevTools' format). */
async function startProfile(dir: string, name: string): Promise<() => Promise<void>> {
  const session = new Session();
  session.connect();
  const post = (method: string): Promise<unknown> =>
    new Promise((resolve, reject) => session.post(method, (err, res) => (err ? reject(err) : resolve(res))));
  await post('Profiler.enable');
  await post('Profiler.start');
  return async () => {
    const { profile } = (await post('Profiler.stop')) as { profile: unknown };
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
    session.disconnect();
  };
}

export async function ferryRun(n: number, real: boolean, caps: SyncCaps, burstOnly = false, profileDir?: string): Promise<FerryResult> {
  let longest = 0;
  let measuring = false;
  let lastBatch: BatchReport | undefined;
  const rig = await SyncRig.start({
    real,
    sync: {
      translate: { nodeName: NODE },
      drainSeconds: 30,
      ...caps,
      onBatch: (b) => {
        lastBatch = b;
        if (measuring) longest = Math.max(longest, b.longestStepMs);
      },
    },
  });
  const { server, store, controller } = rig;
  const s = rig.sync!;
  try {
    const rev0 = store.revision();
    const batches0 = s.stats.batches;
    await server.stage(burst(n));
    const stopProfile = profileDir === undefined ? null : await startProfile(profileDir, `burst-${n}`);
    const probe = loopDelayProbe();
    measuring = true;
    const cpuNow = cpuClock();
    const t0 = performance.now();
    await server.publish();
    await until(() => rig.settled(n), 'the burst', 600_000);
    const ms = performance.now() - t0;
    const cpu = cpuNow();
    await stopProfile?.();
    const delay = probe.stop();
    measuring = false;
    const counts = store.read((tx) => {
      const snap = tx.snapshot();
      return { vips: snap.vips.length, backends: snap.backends.length };
    });
    if (counts.vips !== n || counts.backends !== n * ENDPOINTS)
      throw new Error(`ferry: expected ${n} VIPs × ${ENDPOINTS}, the store has ${counts.vips} VIPs, ${counts.backends} backends`);
    if (controller.appliedRevision !== store.revision()) throw new Error('ferry: the datapath is behind the store');
    // Each Service's ClusterIP, and its LoadBalancer IP for the node's own sockets.
    const socketLbServices = rig.socketLb?.stats().services;
    if (socketLbServices !== undefined && socketLbServices !== 2 * n) {
      throw new Error(`ferry: the socket-LB holds ${socketLbServices} services, not ${2 * n}`);
    }
    const transactions = store.revision() - rev0;
    const batches = s.stats.batches - batches0;

    // One endpoint of one Service at a time, as a rolling update changes them.
    let oneChange: OneChange | null = null;
    if (n >= 10_000 && !burstOnly) {
      const batchMs: number[] = [];
      const appliedMs: number[] = [];
      const endToEnd: number[] = [];
      const socketLbApplies = rig.socketLb?.stats().applies;
      for (let k = 0; k < ONE_CHANGES; k++) {
        const { i, eps } = changedEndpoints(k, n);
        const rev = store.revision();
        const before = lastBatch;
        const t = performance.now();
        await server.upsert('endpointslices', slice(`svc-${i}-x`, eps, { namespace: 'bench', service: `svc-${i}` }));
        await until(
          () => lastBatch !== before && store.revision() > rev && controller.appliedRevision === store.revision(),
          'an endpoint change',
          30_000,
        );
        endToEnd.push(performance.now() - t);
        batchMs.push(lastBatch!.ms);
        appliedMs.push(lastBatch!.longestStepMs);
      }
      const applied = rig.socketLb?.stats().applies;
      if (applied !== undefined && applied - socketLbApplies! !== ONE_CHANGES) {
        throw new Error(`ferry: the socket-LB applied ${applied - socketLbApplies!} of ${ONE_CHANGES} endpoint changes`);
      }
      oneChange = {
        changes: ONE_CHANGES,
        applied_ms_p50: quantile(appliedMs, 0.5),
        applied_ms_p99: quantile(appliedMs, 0.99),
        batch_ms_p50: quantile(batchMs, 0.5),
        batch_ms_p99: quantile(batchMs, 0.99),
        end_to_end_ms_p50: quantile(endToEnd, 0.5),
        end_to_end_ms_p99: quantile(endToEnd, 0.99),
      };
    }
    const ferrydRss = n >= 10_000 && real && !burstOnly ? await measureFerrydRss(server, n) : null;
    return {
      ms,
      transactions,
      batches,
      longestStepMs: longest,
      loopDelayMaxMs: delay.maxMs,
      loopDelayP99Ms: delay.p99Ms,
      cpu,
      oneChange,
      ferrydRss,
    };
  } finally {
    await rig.close();
  }
}

// ------------------------------------------------------------- kube-proxy

/** kube-proxy's chain name: prefix + the first 16 characters of base32(sha256(key)). */
function chain(prefix: string, key: string): string {
  const digest = createHash('sha256').update(key).digest();
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of digest) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < 16) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= 16) break;
  }
  return `${prefix}${out}`;
}

/** The iptables-restore input kube-proxy (iptables mode) writes for N LoadBalancer Services × E endpoints. */
export function kubeProxyRules(n: number): { text: string; rules: number; chains: number } {
  const filter = [
    '*filter',
    ':KUBE-NODEPORTS - [0:0]',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-EXTERNAL-SERVICES - [0:0]',
    ':KUBE-FIREWALL - [0:0]',
    ':KUBE-FORWARD - [0:0]',
    ':KUBE-PROXY-FIREWALL - [0:0]',
    '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    'COMMIT',
  ];
  const chains: string[] = [':KUBE-SERVICES - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules: string[] = [
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
  ];
  const services: string[] = [];
  for (let i = 0; i < n; i++) {
    const spn = `bench/svc-${i}:http`;
    const svc = chain('KUBE-SVC-', `${spn}tcp`);
    const ext = chain('KUBE-EXT-', `${spn}tcp`);
    chains.push(`:${svc} - [0:0]`, `:${ext} - [0:0]`);
    services.push(
      `-A KUBE-SERVICES -m comment --comment "${spn} cluster IP" -m tcp -p tcp -d ${clusterIp(i)}/32 --dport 80 -j ${svc}`,
      `-A KUBE-SERVICES -m comment --comment "${spn} loadbalancer IP" -m tcp -p tcp -d ${ingressIp(i)}/32 --dport 80 -j ${ext}`,
    );
    rules.push(
      `-A ${ext} -m comment --comment "masquerade traffic for ${spn} external destinations" -j KUBE-MARK-MASQ`,
      `-A ${ext} -j ${svc}`,
      `-A ${svc} -m comment --comment "${spn} cluster IP" -m tcp -p tcp -d ${clusterIp(i)}/32 --dport 80 ! -s 11.0.0.0/8 -j KUBE-MARK-MASQ`,
    );
    for (let j = 0; j < ENDPOINTS; j++) {
      const ep = `${podIp(i, j)}:80`;
      const sep = chain('KUBE-SEP-', `${spn}tcp${ep}`);
      chains.push(`:${sep} - [0:0]`);
      const left = ENDPOINTS - j;
      rules.push(
        left > 1
          ? `-A ${svc} -m comment --comment "${spn} -> ${ep}" -m statistic --mode random --probability ${(1 / left).toFixed(10)} -j ${sep}`
          : `-A ${svc} -m comment --comment "${spn} -> ${ep}" -j ${sep}`,
      );
      rules.push(
        `-A ${sep} -m comment --comment "${spn}" -s ${podIp(i, j)}/32 -j KUBE-MARK-MASQ`,
        `-A ${sep} -m comment --comment "${spn}" -m tcp -p tcp -j DNAT --to-destination ${ep}`,
      );
    }
  }
  services.push(
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
  );
  const text = [...filter, '*nat', ...chains, ...services, ...rules, 'COMMIT', ''].join('\n');
  return { text, rules: services.length + rules.length + 4, chains: chains.length + 6 };
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** iptables-restore, installed from Debian's iptables package when missing; null if it cannot be. */
function ensureIptables(notes: string[]): boolean {
  if (have('iptables-restore')) return true;
  if (process.getuid?.() !== 0) {
    notes.push('iptables-restore is missing and installing it needs root');
    return false;
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'iptables'], { env, stdio: 'ignore' });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { env, stdio: 'ignore' });
    r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'iptables'], { env, stdio: 'ignore' });
  }
  if (r.status !== 0 || !have('iptables-restore')) {
    notes.push('iptables could not be installed (apt-get install iptables failed)');
    return false;
  }
  notes.push("installed Debian's iptables package (iptables-restore was missing)");
  return true;
}

const NS = `ferrytest-k8sbench-${process.pid}`;

function deleteNs(): void {
  spawnSync('ip', ['netns', 'delete', NS], { stdio: 'ignore' });
}

/**
 * Loads `text` with `cmd` in a fresh namespace; milliseconds, or null when
 * it ran longer than timeoutMs (killed); throws with its error output.
 */
function timeRestore(cmd: string, text: string, expectRules: number, timeoutMs: number): number | null {
  deleteNs();
  execFileSync('ip', ['netns', 'add', NS]);
  try {
    const enter = ['--net=/run/netns/' + NS];
    // Warm-up, not timed: loads the kernel modules and the extensions the ruleset uses.
    const warm = kubeProxyRules(1).text;
    const w = spawnSync('nsenter', [...enter, cmd, '--noflush', '--counters'], { input: warm });
    if (w.status !== 0) throw new Error(`${cmd}: ${w.stderr.toString().trim()}`);
    const t0 = performance.now();
    const r = spawnSync('nsenter', [...enter, cmd, '--noflush', '--counters'], {
      input: text,
      maxBuffer: 64 << 20,
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
    });
    const ms = performance.now() - t0;
    if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') return null;
    if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr.toString().trim().slice(0, 500)}`);
    const save = cmd.replace(/-restore$/, '-save');
    const dump = spawnSync('nsenter', [...enter, save, '-t', 'nat'], { maxBuffer: 1 << 30 });
    const loaded = dump.stdout
      .toString()
      .split('\n')
      .filter((l) => l.startsWith('-A KUBE-')).length;
    if (loaded < expectRules - 4) throw new Error(`${cmd}: loaded ${loaded} KUBE-* nat rules, expected about ${expectRules}`);
    return ms;
  } finally {
    deleteNs();
  }
}

function variantOf(cmd: string): string {
  const r = spawnSync(cmd, ['--version']);
  const m = /\((\w+)\)/.exec(r.stdout.toString());
  return m?.[1] ?? 'unknown';
}

function progress(msg: string): void {
  process.stderr.write(`bench:k8s: ${msg}\n`);
}

export interface BenchOptions {
  noNodePort: boolean;
  nodePortRate: number;
  quick: boolean;
  /** Skip the per-connection ClusterIP comparison. */
  noConnect?: boolean;
  iptablesTimeoutMs: number;
  ferryOnly: boolean;
  /** Only the burst: not the one-change series or ferryd's RSS (for profiling). */
  burstOnly?: boolean;
  /** Where to write a CPU profile of each burst. */
  profileDir?: string;
  caps: SyncCaps;
}

const round = (v: number, digits = 0): number => Math.round(v * 10 ** digits) / 10 ** digits;

/** "1234 ms", or "did not finish within 180 s" for a run that was killed. */
function outcome(ms: number | null, timeoutMs: number): string {
  return ms === null ? `did not finish within ${round(timeoutMs / 1000, 1)} s` : `${Math.round(ms)} ms`;
}

export async function benchK8s(o: BenchOptions): Promise<K8sBench> {
  const notes: string[] = [];
  const real = bpfUsable();
  if (!real) notes.push('no BPF here (needs root, BTF and build/bpf/xdp_lb.bpf.o): the datapath is the fake Applier');
  const canNs = !o.ferryOnly && process.getuid?.() === 0 && have('nsenter') && have('ip');
  const ipt = canNs && ensureIptables(notes);
  if (o.ferryOnly) notes.push('--ferry-only: iptables-restore not timed');
  else if (!canNs) notes.push('no network namespaces (needs root, ip and nsenter): iptables-restore not timed');
  const legacy = ipt && have('iptables-legacy-restore');
  const timeoutMs = o.iptablesTimeoutMs;
  const sizes: SizeResult[] = [];
  process.on('exit', deleteNs);
  progress(`warm-up: a burst of ${WARMUP_SERVICES} Services, not timed…`);
  await ferryRun(WARMUP_SERVICES, real, o.caps, true);
  for (const n of o.quick ? [1000] : [1000, 10_000]) {
    progress(`N=${n}: Ferry (${real ? 'real' : 'fake'} datapath)…`);
    const f = await ferryRun(n, real, o.caps, o.burstOnly, o.profileDir);
    progress(
      `N=${n}: Ferry ${Math.round(f.ms)} ms in ${f.transactions} transactions (longest ${Math.round(f.longestStepMs)} ms, ` +
        `event-loop delay max ${Math.round(f.loopDelayMaxMs)} ms); CPU: main thread ${f.cpu.main_user_ms} ms user + ` +
        `${f.cpu.main_system_ms} ms system, process ${f.cpu.process_user_ms} + ${f.cpu.process_system_ms} ms`,
    );
    if (f.oneChange) {
      progress(
        `N=${n}: one endpoint change: committed + applied p50 ${f.oneChange.applied_ms_p50} ms, p99 ${f.oneChange.applied_ms_p99} ms; ` +
          `batch p50 ${f.oneChange.batch_ms_p50} ms, p99 ${f.oneChange.batch_ms_p99} ms; ` +
          `event to applied p50 ${f.oneChange.end_to_end_ms_p50} ms, p99 ${f.oneChange.end_to_end_ms_p99} ms`,
      );
    }
    if (f.ferrydRss) progress(`N=${n}: ferryd in Kubernetes mode ready in ${f.ferrydRss.ready_ms} ms, RSS ${f.ferrydRss.rss_mib} MiB`);
    const rules = kubeProxyRules(n);
    let legacyMs: number | null = null;
    if (legacy) {
      legacyMs = timeRestore('iptables-legacy-restore', rules.text, rules.rules, timeoutMs);
      progress(`N=${n}: iptables-legacy-restore ${outcome(legacyMs, timeoutMs)}`);
    }
    let iptMs: number | null = null;
    if (ipt) {
      progress(`N=${n}: iptables-restore of ${rules.rules} rules (at most ${round(timeoutMs / 1000, 1)} s)…`);
      iptMs = timeRestore('iptables-restore', rules.text, rules.rules, timeoutMs);
      progress(`N=${n}: iptables-restore ${outcome(iptMs, timeoutMs)}`);
    }
    const timedOut = ipt && iptMs === null;
    const legacyTimedOut = legacy && legacyMs === null;
    const ratio = (ms: number | null, out: boolean): number | null => (ms === null && !out ? null : round((ms ?? timeoutMs) / f.ms, 2));
    sizes.push({
      n,
      endpoints_per_service: ENDPOINTS,
      ferry_ms: Math.round(f.ms),
      ferry_transactions: f.transactions,
      ferry_batches: f.batches,
      ferry_longest_step_ms: Math.round(f.longestStepMs),
      ferry_loop_delay_max_ms: Math.round(f.loopDelayMaxMs),
      ferry_loop_delay_p99_ms: Math.round(f.loopDelayP99Ms),
      ferry_cpu: f.cpu,
      datapath: real ? 'real' : 'fake',
      one_change: f.oneChange,
      ferryd: f.ferrydRss,
      iptables_restore_ms: iptMs === null ? null : Math.round(iptMs),
      iptables_variant: ipt ? variantOf('iptables-restore') : null,
      iptables_legacy_restore_ms: legacyMs === null ? null : Math.round(legacyMs),
      iptables_rules: rules.rules,
      iptables_chains: rules.chains,
      iptables_restore_timeout_ms: timedOut ? timeoutMs : null,
      iptables_legacy_restore_timeout_ms: legacyTimedOut ? timeoutMs : null,
      iptables_restore_result: ipt ? outcome(iptMs, timeoutMs) : null,
      iptables_legacy_restore_result: legacy ? outcome(legacyMs, timeoutMs) : null,
      ratio: ratio(iptMs, timedOut),
      ratio_is_lower_bound: timedOut,
      legacy_ratio: ratio(legacyMs, legacyTimedOut),
      legacy_ratio_is_lower_bound: legacyTimedOut,
    });
  }
  let connect: K8sConnectResult | null = null;
  if (o.noConnect) notes.push('--no-connect: the per-connection ClusterIP comparison was not run');
  else if (!ipt) notes.push('no iptables in a namespace: the per-connection ClusterIP comparison was not run');
  else {
    // --quick: fewer Services and one short round, to stay within a minute.
    const services = o.quick ? 1000 : 10_000;
    progress(`ClusterIP per-connection cost at ${services} Services: socket-LB vs iptables…`);
    connect = await measureK8sConnect({ services, seconds: o.quick ? 1 : 2, rounds: o.quick ? 1 : 3, log: progress });
  }
  let nodeport: K8sBench['nodeport'] = null;
  if (o.noNodePort) notes.push('--no-nodeport: the NodePort paths were not compared');
  else {
    const services = o.quick ? 1000 : 10_000;
    const canNat = process.getuid?.() === 0 && have('nft');
    if (!canNat) notes.push('no nft (or not root): the NodePort nat path was not measured');
    const changes: PathChange[] = [];
    for (const path of canNat ? (['xdp', 'nat'] as const) : (['xdp'] as const)) {
      const c = await measureNodePortChanges(path, services, o.quick ? 10 : 50, real);
      progress(
        `NodePort ${path} path, one endpoint change at ${services} Services: applied p50 ${c.applied_ms_p50} ms, ` +
          `p99 ${c.applied_ms_p99} ms; from the event p50 ${c.end_to_end_ms_p50} ms, p99 ${c.end_to_end_ms_p99} ms`,
      );
      changes.push(c);
    }
    const why = rigUnavailable();
    let packets: NodePortPackets | null = null;
    if (why) notes.push(`the NodePort paths' per-packet cost was not measured: ${why}`);
    else {
      progress(`NodePort paths per packet at ${o.nodePortRate} pps (packet-rate rig)…`);
      packets = await measureNodePortPackets({ quick: o.quick, rate: o.nodePortRate });
      progress(
        `NodePort per packet: xdp ${packets.mean_ns_per_pkt['ferry-nodeport']} ns, nat ${packets.mean_ns_per_pkt['nft-nat']} ns, ` +
          `floor ${packets.mean_ns_per_pkt.floor} ns (nat ÷ xdp ${packets.ratio_nat_to_xdp})`,
      );
    }
    nodeport = { packets, changes };
  }
  let nat: NatBench | null = null;
  if (process.getuid?.() === 0 && have('nft') && have('nsenter')) {
    const entries = o.quick ? 1000 : 10_000;
    progress(`kernel NAT table of ${entries} entries: written whole, then one entry at a time…`);
    nat = await measureNat(entries);
  } else {
    notes.push('no nft (or not root): the kernel NAT table was not measured');
  }
  const entries = o.quick ? 1000 : 10_000;
  progress(`socket-LB planning of ${entries} ClusterIPs: the whole list, then one change at a time…`);
  const socketLbPlan = measureSocketLbPlan(entries);
  return { sizes, nat, socket_lb_plan: socketLbPlan, ratio_vs_iptables: sizes.at(-1)?.ratio ?? null, connect, nodeport, notes };
}

export function measureSocketLbPlan(n: number): SocketLbPlanBench {
  const entry = (i: number, k: number): SocketLbService => ({
    service: `bench/svc-${i}`,
    portName: 'http',
    ip: clusterIp(i),
    port: 80,
    protocol: 'tcp',
    // Change k replaces the last endpoint with one of 12.0.0.0/8 (as changedEndpoints does).
    backends: Array.from({ length: ENDPOINTS }, (_, j) => ({
      address: k > 0 && j === ENDPOINTS - 1 ? ip4(12, k) : podIp(i, j),
      port: 8080,
    })),
  });
  const list = Array.from({ length: n }, (_, i) => entry(i, 0));
  const ids = new ServiceIds();
  const planner = new ListPlanner();
  let installed = new Map<string, InstalledService>();
  let live: LiveCounts = { slots: 0, members: 0 };
  const plan = (all: readonly SocketLbService[]): number => {
    const t = performance.now();
    const listed = planner.plan(all, installed, ids);
    const fit = checkCapacity({ maxServices: 1 << 20, maxSlots: 1 << 24 }, listed.services, live, listed.plan, {
      staleSlots: 0,
      staleMembers: 0,
      retiredSlots: 0,
      reusesRetired: false,
    });
    if (fit.problem !== null) throw new Error(`socket-LB plan: ${fit.problem}`);
    installed = listed.commit(installed);
    live = listed.liveAfter(live);
    return performance.now() - t;
  };
  const wholeMs = plan(list);
  const changes = 50;
  const same: number[] = [];
  const copies: number[] = [];
  for (let k = 1; k <= 2 * changes; k++) {
    const i = (k * 7919) % n;
    list[i] = entry(i, k);
    if (k <= changes) same.push(plan(list));
    else copies.push(plan(list.map((e) => ({ ...e, backends: e.backends.map((b) => ({ ...b })) }))));
  }
  same.sort((a, b) => a - b);
  copies.sort((a, b) => a - b);
  return {
    entries: n,
    changes,
    whole_ms: Math.round(wholeMs),
    one_change_ms_p50: round(same[Math.floor(changes / 2)]!, 1),
    one_change_ms_p99: round(same[changes - 1]!, 1),
    copies_ms_p50: round(copies[Math.floor(changes / 2)]!, 1),
  };
}

/** NatTable in a namespace of its own: the whole table once, then single-entry changes. */
export async function measureNat(n: number): Promise<NatBench> {
  const ns = `ferrytest-k8snat-${process.pid}`;
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const table = new NatTable(nftRunner(ns), async () => undefined);
    const entry = (i: number, backend: number): NatEntry => ({
      service: `bench/svc-${i}`,
      address: '192.0.2.1',
      port: 1024 + i,
      protocol: 'tcp',
      masquerade: true,
      affinity: false,
      sourceRanges: null,
      backends: [
        { address: ip4(11, 2 * i + backend), port: 8080 },
        { address: ip4(11, 2 * i + 1), port: 8080 },
      ],
    });
    const list = Array.from({ length: n }, (_, i) => entry(i, 0));
    let t = performance.now();
    await table.apply(list);
    const fullMs = performance.now() - t;
    const changes = 50;
    const times: number[] = [];
    for (let k = 0; k < changes; k++) {
      const i = (k * 7919) % n;
      list[i] = entry(i, 10_000 + k); // a new endpoint each time: every apply is a change
      t = performance.now();
      await table.apply([...list]);
      times.push(performance.now() - t);
    }
    if (table.stats.full !== 1 || table.stats.incremental !== changes) throw new Error(`nat: ${JSON.stringify(table.stats)}`);
    times.sort((a, b) => a - b);
    await table.remove();
    // The baseline: one chain, one rule per entry, replaced as a whole.
    const rules = list.map(
      (e) =>
        `    ip daddr ${e.address} tcp dport ${e.port} ct mark set ct mark | 0x10000000 dnat ip to numgen random mod 2 ` +
        `map { 0 : ${e.backends[0]!.address} . 8080, 1 : ${e.backends[1]!.address} . 8080 }`,
    );
    const script = [
      'table inet ferry_bench_one',
      'delete table inet ferry_bench_one',
      'table inet ferry_bench_one {',
      '  chain prerouting {',
      '    type nat hook prerouting priority dstnat; policy accept;',
      ...rules,
      '  }',
      '}',
      '',
    ].join('\n');
    t = performance.now();
    await nftRunner(ns)(script);
    const oneChainMs = performance.now() - t;
    return {
      entries: n,
      full_write_ms: Math.round(fullMs),
      changes,
      one_change_ms_p50: round(times[Math.floor(changes / 2)]!, 1),
      one_change_ms_p99: round(times[changes - 1]!, 1),
      one_chain_write_ms: Math.round(oneChainMs),
    };
  } finally {
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}

function optional(name: string): number | undefined {
  return process.argv.includes(name) ? argValue(name, 1) : undefined;
}

async function main(): Promise<void> {
  const spt = optional('--services-per-tx');
  const mtb = optional('--max-tx-per-batch');
  const pi = process.argv.indexOf('--profile');
  const profileDir = pi > 0 ? process.argv[pi + 1] : undefined;
  const r = await benchK8s({
    quick: process.argv.includes('--quick'),
    iptablesTimeoutMs: argValue('--iptables-timeout', 180) * 1000,
    ferryOnly: process.argv.includes('--ferry-only'),
    noConnect: process.argv.includes('--no-connect'),
    burstOnly: process.argv.includes('--burst-only'),
    ...(profileDir !== undefined ? { profileDir } : {}),
    noNodePort: process.argv.includes('--no-nodeport'),
    nodePortRate: argValue('--nodeport-rate', 50_000),
    caps: { ...(spt !== undefined ? { servicesPerTransaction: spt } : {}), ...(mtb !== undefined ? { maxTransactionsPerBatch: mtb } : {}) },
  });
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(r));
    return;
  }
  console.log(
    `Burst of N LoadBalancer Services × ${ENDPOINTS} endpoints: Ferry (watch → store committed → datapath applied) vs iptables-restore of kube-proxy's ruleset`,
  );
  console.log(
    '| N | Ferry ms (transactions; longest; loop delay max) | iptables-restore (variant) | iptables-legacy-restore | kube-proxy rules / chains | ratio (legacy) |',
  );
  console.log('|---|---|---|---|---|---|');
  for (const s of r.sizes) {
    const ratio = (v: number | null, lower: boolean): string => (v === null ? '–' : `${lower ? '> ' : ''}${v}`);
    console.log(
      `| ${s.n} | ${s.ferry_ms} (${s.ferry_transactions}; ${s.ferry_longest_step_ms} ms; ${s.ferry_loop_delay_max_ms} ms; ${s.datapath} datapath) ` +
        `| ${s.iptables_restore_result ?? '–'} (${s.iptables_variant ?? '–'}) | ${s.iptables_legacy_restore_result ?? '–'} ` +
        `| ${s.iptables_rules} / ${s.iptables_chains} | ${ratio(s.ratio, s.ratio_is_lower_bound)} (${ratio(s.legacy_ratio, s.legacy_ratio_is_lower_bound)}) |`,
    );
  }
  const c = r.connect;
  if (c !== null) {
    console.log('');
    console.log(
      `ClusterIP per new connection at ${c.services} Services (${c.service_ports} ports; kube-proxy: ${c.iptables_rules} rules), ns, median of ${c.rounds} round(s)`,
    );
    console.log('| | direct | socket-LB | iptables DNAT | iptables ÷ socket-LB |');
    console.log('|---|---|---|---|---|');
    for (const [name, p] of [
      ['TCP connect + close', c.tcp],
      ['UDP new socket + datagram', c.udp],
    ] as const) {
      if (p === null) continue;
      console.log(
        `| ${name} | ${p.direct.ns_per_connection} | ${p.socket_lb.ns_per_connection} | ${p.iptables.ns_per_connection} | ${p.ratio_iptables_to_socket_lb} |`,
      );
    }
  }
  for (const s of r.sizes) {
    if (s.one_change) {
      const o = s.one_change;
      console.log(
        `\nOne endpoint change at ${s.n} Services (${o.changes} changes, one at a time): committed + applied ` +
          `(translation, store, plan, datapath) p50 ${o.applied_ms_p50} ms, p99 ${o.applied_ms_p99} ms; the whole batch (also the ` +
          `socket-LB and NAT lists) p50 ${o.batch_ms_p50} ms, p99 ${o.batch_ms_p99} ms; from the API server's event to applied ` +
          `p50 ${o.end_to_end_ms_p50} ms, p99 ${o.end_to_end_ms_p99} ms (with the sync's batching: each change comes right after the last one's batch, so it waits for the quarter window, 50 ms, after that batch began)`,
      );
    }
    if (s.ferryd)
      console.log(`ferryd in Kubernetes mode with ${s.n} Services: ready in ${s.ferryd.ready_ms} ms, RSS ${s.ferryd.rss_mib} MiB`);
  }
  if (r.nat) {
    console.log(
      `\nKernel NAT table (nftables, ${r.nat.entries} entries): written whole in ${r.nat.full_write_ms} ms; one entry changed: ` +
        `p50 ${r.nat.one_change_ms_p50} ms, p99 ${r.nat.one_change_ms_p99} ms (${r.nat.changes} changes, nft included); the same entries ` +
        `as one chain of rules, replaced whole on every change as before: ${r.nat.one_chain_write_ms} ms`,
    );
  }
  const sp = r.socket_lb_plan;
  console.log(
    `\nSocket-LB planning (${sp.entries} ClusterIPs × ${ENDPOINTS} endpoints; parse, plan and capacity, no map writes): whole list ` +
      `${sp.whole_ms} ms; one ClusterIP changed, the others the same objects: p50 ${sp.one_change_ms_p50} ms, p99 ` +
      `${sp.one_change_ms_p99} ms (${sp.changes} changes); the same changes with every entry a new object: p50 ${sp.copies_ms_p50} ms`,
  );
  const np = r.nodeport;
  if (np) {
    if (np.packets) {
      const p = np.packets;
      console.log(
        `\nNodePort per packet, balancing node's receive thread, ns (${p.offered_pps} pps offered, ${p.backends} pods, median of ${p.rounds} round(s), ${p.generator} generator)`,
      );
      console.log('| path | SYN | UDP | mean | ÷ XDP |');
      console.log('|---|---|---|---|---|');
      for (const [name, m] of [
        ['XDP (ferry-nodeport)', 'ferry-nodeport'],
        ['nftables NAT (nft-nat)', 'nft-nat'],
        ['floor (receive, drop)', 'floor'],
      ] as const) {
        console.log(
          `| ${name} | ${p.ns_per_pkt.syn[m]} | ${p.ns_per_pkt.udp[m]} | ${p.mean_ns_per_pkt[m]} | ${m === 'floor' ? '' : Math.round((p.mean_ns_per_pkt[m] / p.mean_ns_per_pkt['ferry-nodeport']) * 100) / 100} |`,
        );
      }
    }
    for (const c of np.changes) {
      console.log(
        `NodePort ${c.path} path, one endpoint change at ${c.services} Services (${c.changes} changes): applied p50 ${c.applied_ms_p50} ms, ` +
          `p99 ${c.applied_ms_p99} ms; from the API server's event p50 ${c.end_to_end_ms_p50} ms, p99 ${c.end_to_end_ms_p99} ms (state in: ${c.datapath})`,
      );
    }
  }
  for (const n of r.notes) console.log(`note: ${n}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    deleteNs();
    console.error(`bench:k8s: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  });
}
