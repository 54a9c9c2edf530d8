/**
 * The Ferry side of the Kubernetes benchmarks (bench/k8s.ts,
 * bench/k8s-paths.ts): the Kubernetes API test server on 127.0.0.1 in its
 * own thread (bench/k8s-server-thread.ts), a store
 * in a file (SQLite with its fsyncs), the datapath — a real LbDatapath in a
 * private pin directory with the real Reconciler, or the tests' fake Applier
 * — behind the Controller, and K8sSync fed by the real watch client. With
 * the real datapath the sync hands its ClusterIP list to a real socket-LB
 * (its maps and programs in the same pin directory, attached to no cgroup),
 * as ferryd's does after every batch that changes it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Controller } from '../src/control/controller.js';
import { LbDatapath } from '../src/datapath/lb.js';
import { SocketLb } from '../src/datapath/socket-lb.js';
import { K8sSync, type ClusterIpChanges, type K8sSyncOptions } from '../src/k8s/sync.js';
import type { ClusterIpEntry } from '../src/k8s/translate.js';
import { loadKubeConfig } from '../src/k8s/client.js';
import { K8sWatch } from '../src/k8s/informer.js';
import type { Applier } from '../src/model/dpstate.js';
import { IncrementalPlanner } from '../src/reconcile/plan.js';
import { Reconciler } from '../src/reconcile/reconciler.js';
import { openStore } from '../src/store/store.js';
import type { Store } from '../src/store/types.js';
import { FakeApplier } from '../test/lib/api-fixture.js';
import { ensureBpffs } from '../test/lib/harness.js';
import { node } from '../test/lib/k8s-objects.js';
import { K8sServerThread } from './k8s-server-thread.js';

export const BENCH_NODE = 'bench-node';
/** Endpoints per Service in the Kubernetes benchmarks. */
export const ENDPOINTS = 10;

/** An IPv4 address: the first octet, then n's low 24 bits. */
export const ip4 = (prefix: number, n: number): string => `${prefix}.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
/** Endpoint j of Service i (11.0.0.0/8). */
export const podIp = (i: number, j: number): string => ip4(11, i * ENDPOINTS + j + 1);
/** The k-th change of a one-change series: Service i's endpoints with one replaced by a new address (12.0.0.0/8). */
export function changedEndpoints(k: number, services: number): { i: number; eps: string[] } {
  const i = (k * 7919) % services;
  const eps = Array.from({ length: ENDPOINTS }, (_, j) => podIp(i, j));
  eps[k % ENDPOINTS] = ip4(12, k + 1);
  return { i, eps };
}

export interface SyncRigOptions {
  /** A real LbDatapath (root, BTF, the built object) or the fake Applier. */
  real: boolean;
  /** K8sSync's options but the controller. */
  sync: Omit<K8sSyncOptions, 'controller'>;
  /** Nodes the API server holds: [name, InternalIP]; the first is this node. */
  nodes?: ReadonlyArray<readonly [string, string]>;
}

export class SyncRig {
  dp: LbDatapath | undefined;
  /** The socket-LB the ClusterIP list goes to (with the real datapath). */
  socketLb: SocketLb | undefined;
  watch: K8sWatch | undefined;
  sync: K8sSync | undefined;
  controller!: Controller;

  private constructor(
    readonly server: K8sServerThread,
    readonly store: Store,
    private readonly dir: string,
    private readonly pinRoot: string,
  ) {}

  /** Everything started, the nodes listed and the first (empty) sync done. */
  static async start(o: SyncRigOptions): Promise<SyncRig> {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-k8s-'));
    const server = await K8sServerThread.start();
    const store = openStore(join(dir, 'ferry.db'), { maxVips: 16_384, maxBackends: 262_144 });
    const rig = new SyncRig(server, store, dir, `/sys/fs/bpf/ferry-bench-k8s-${process.pid}`);
    try {
      await rig.open(o);
    } catch (err) {
      await rig.close();
      throw err;
    }
    return rig;
  }

  private async open(o: SyncRigOptions): Promise<void> {
    let applier: Applier = new FakeApplier();
    if (o.real) {
      ensureBpffs();
      rmSync(this.pinRoot, { recursive: true, force: true });
      this.dp = LbDatapath.open({
        pinRoot: this.pinRoot,
        sizes: {
          maxVips: 16_384,
          maxVipAddrs: 16_384,
          maxBackends: 262_144,
          ctSize: 65_536,
          maxPolicyRules: 1024,
          maglevSlots: 16_384 * 1024,
        },
      });
      const seed = this.store.read((tx) => tx.snapshot().hash_seed);
      applier = new Reconciler(this.dp, { seed, src4: '198.19.255.0/24', src6: '2001:db8:ff::/112', skipFib: true });
      this.socketLb = SocketLb.open({ pinRoot: join(this.pinRoot, 'socklb'), sizes: { maxServices: 32_768, maxSlots: 524_288 } });
    }
    const planner = new IncrementalPlanner();
    this.controller = new Controller(this.store, applier, (state) => planner.plan(state));
    this.controller.reconcile();
    const lb = this.socketLb;
    // As K8sMode: the changes go along unless the last apply failed.
    let failed = false;
    const toSocketLb = (all: readonly ClusterIpEntry[], changes: ClusterIpChanges | null): void => {
      if (lb === undefined) return;
      const given = changes !== null && !failed ? changes : undefined;
      failed = true; // until apply() returns
      lb.apply(all, given);
      failed = false;
    };
    this.sync = new K8sSync({ controller: this.controller, ...o.sync, ...(lb !== undefined ? { onClusterIps: toSocketLb } : {}) });
    const nodes = o.nodes ?? [[BENCH_NODE, '192.0.2.1']];
    this.watch = new K8sWatch({
      kubeConfig: loadKubeConfig({ kubeconfig: this.server.kubeconfig }),
      nodeName: nodes[0]![0],
      handler: this.sync,
      resyncMs: 0,
    });
    await this.server.upsertMany(nodes.map(([name, address]) => ['nodes', node(name, [['InternalIP', address]])] as const));
    this.watch.start();
    await this.watch.waitSynced();
    const s = this.sync;
    await until(() => s.idle, 'the initial sync', 30_000);
  }

  /** Whether the sync is idle with `n` Services and `n` EndpointSlices in its watch caches. */
  settled(n: number): boolean {
    return this.sync!.idle && this.watch!.services.cache.size === n && this.watch!.endpointSlices.cache.size === n;
  }

  async close(): Promise<void> {
    await this.watch?.stop();
    this.sync?.stop();
    await this.server.close();
    this.store.close();
    this.dp?.close();
    this.socketLb?.close();
    rmSync(this.pinRoot, { recursive: true, force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Polls every 2 ms (a benchmark's wait should not add a test's 10 ms steps to what it measures). */
export async function until(cond: () => boolean, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** The p-quantile of xs (nearest rank), to 2 decimals. */
export function quantile(xs: readonly number[], p: number): number {
  const v = [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
  return Math.round(v * 100) / 100;
}
