/**
 * Kubernetes NodePorts on Ferry's two paths, measured in one run (part of
 * `npm run bench:k8s`):
 *
 * - **xdp** (`external_path: xdp`, the default): the NodePort is an XDP VIP
 *   on the node's address; xdp_lb picks the endpoint and encapsulates to it
 *   through its node, whose node program translates the port.
 * - **nat** (`external_path: nat`, the fallback): the nftables table of
 *   src/k8s/nat.ts DNATs to the endpoint's port and masquerades.
 *
 * 1. Per packet (`measureNodePortPackets`): the packet-rate rig
 *    (bench/lab-rig.ts) offers the same frames at the same rate to a NodePort
 *    of the load balancer's own address, served in turn by each path and by
 *    the floor (receive and drop), in rounds that interleave them; the figure
 *    is the CPU time of the balancing node's receive thread per packet the
 *    pods received (median of the rounds), as bench:lab measures it. Only the
 *    client → pod direction: on the nat path every reply also comes back
 *    through the balancing node to be un-NATed, which Ferry's path never
 *    does, and on the xdp path the endpoint's node runs its node program.
 * 2. One endpoint change at N NodePort Services (`measureNodePortChanges`):
 *    N NodePort Services × 10 endpoints on another node, synced by K8sSync
 *    from the test API server, then one endpoint of one Service changed at a
 *    time: how long until the path's kernel state holds it (xdp: committed and
 *    applied to a real LbDatapath; nat: NatTable's nft run in a namespace of
 *    its own finished), from the sync's batch and from the API server's event.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { NatTable, nftRunner } from '../src/k8s/nat.js';
import type { BatchReport } from '../src/k8s/sync.js';
import type { ExternalPath, NatEntry } from '../src/k8s/translate.js';
import type { KubeObject } from '../src/k8s/types.js';
import { service, slice } from '../test/lib/k8s-objects.js';
import type { ResourceName } from '../test/lib/k8s-server.js';
import { BENCH_NODE, changedEndpoints, ENDPOINTS, ip4, podIp, quantile, SyncRig, until } from './k8s-sync.js';
import { equalLoad } from './lab.js';
import { RateRig, type GeneratorKind, type NodePortPath, type TrafficKind } from './lab-rig.js';

type Mode = NodePortPath | 'floor';

export interface NodePortPackets {
  offered_pps: number;
  rounds: number;
  backends: number;
  generator: GeneratorKind;
  /** CPU of the balancing node's receive thread per packet the pods received, ns (median of the rounds). */
  ns_per_pkt: Record<TrafficKind, Record<Mode, number>>;
  /** The mean of SYN (new connections) and UDP (established flows). */
  mean_ns_per_pkt: Record<Mode, number>;
  /** nft-nat's mean ÷ ferry-nodeport's: how many times the nftables path costs what XDP does. */
  ratio_nat_to_xdp: number;
  /** The same above the floor (what each path adds to receiving a frame). */
  ratio_nat_to_xdp_above_floor: number;
}

export interface PathChange {
  path: ExternalPath;
  services: number;
  changes: number;
  /** From the sync's batch start to the path's kernel state updated (xdp: store + datapath; nat: also nft). */
  applied_ms_p50: number;
  applied_ms_p99: number;
  /** From the API server's event: also holds the sync's batching (back to back: a quarter of batch_delay_ms after the last batch began). */
  end_to_end_ms_p50: number;
  end_to_end_ms_p99: number;
  /** What held the path's state: the real XDP datapath, the tests' fake one (no BPF here), or nftables. */
  datapath: 'real' | 'fake' | 'nftables';
}

const progress = (msg: string): void => {
  process.stderr.write(`bench:k8s: ${msg}\n`);
};

const round = (x: number, d = 0): number => Math.round(x * 10 ** d) / 10 ** d;

/** The per-packet comparison in the packet-rate rig. */
export async function measureNodePortPackets(o: { quick: boolean; rate: number; backends?: number }): Promise<NodePortPackets> {
  const backends = o.backends ?? 4;
  const rig = await RateRig.start({ backends });
  try {
    const rounds = o.quick ? 1 : 3;
    const modes: Mode[] = ['floor', 'ferry-nodeport', 'nft-nat'];
    const { byKind } = await equalLoad(rig, { quick: o.quick, group: 16 }, o.rate, rounds, modes, progress);
    const mean = Object.fromEntries(modes.map((m) => [m, Math.round((byKind.syn[m] + byKind.udp[m]) / 2)])) as Record<Mode, number>;
    const ns = Object.fromEntries(
      (['syn', 'udp'] as const).map((k) => [k, Object.fromEntries(modes.map((m) => [m, byKind[k][m]]))]),
    ) as Record<TrafficKind, Record<Mode, number>>;
    return {
      offered_pps: o.rate,
      rounds,
      backends,
      generator: rig.generatorKind,
      ns_per_pkt: ns,
      mean_ns_per_pkt: mean,
      ratio_nat_to_xdp: round(mean['nft-nat'] / mean['ferry-nodeport'], 2),
      ratio_nat_to_xdp_above_floor: round((mean['nft-nat'] - mean.floor) / Math.max(1, mean['ferry-nodeport'] - mean.floor), 2),
    };
  } finally {
    rig.stop();
  }
}

const OTHER = 'bench-node-b';
const nodePort = (i: number): number => 20_000 + i;

/** N NodePort Services (port 80 → the pods' 8080), their endpoints on the other node. */
function nodePortServices(n: number): Array<readonly [ResourceName, KubeObject]> {
  const out: Array<readonly [ResourceName, KubeObject]> = [];
  for (let i = 0; i < n; i++) {
    out.push([
      'services',
      service(`np-${i}`, {
        namespace: 'bench',
        type: 'NodePort',
        clusterIP: ip4(10, 0x600000 + i + 1),
        ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080, nodePort: nodePort(i) }],
      }),
    ]);
    out.push([
      'endpointslices',
      endpoints(
        i,
        Array.from({ length: ENDPOINTS }, (_, j) => podIp(i, j)),
      ),
    ]);
  }
  return out;
}

function endpoints(i: number, addrs: readonly string[]): KubeObject {
  return slice(
    `np-${i}-x`,
    addrs.map((a) => [a, { node: OTHER }] as const),
    {
      namespace: 'bench',
      service: `np-${i}`,
      ports: [{ name: 'http', port: 8080 }],
    },
  );
}

/** One path: N NodePort Services synced, then `changes` endpoint changes one at a time. */
export async function measureNodePortChanges(path: ExternalPath, n: number, changes: number, real: boolean): Promise<PathChange> {
  const ns = `ferrytest-k8spath-${process.pid}`;
  // The nat path's table lives in a namespace of its own; its runs are timed as they finish.
  let nat: NatTable | undefined;
  let natRuns = 0;
  let natMs = 0;
  let natDone = Promise.resolve();
  if (path === 'nat') {
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    execFileSync('ip', ['netns', 'add', ns]);
    nat = new NatTable(nftRunner(ns), async () => undefined);
  }
  let lastBatch: BatchReport | undefined;
  let rig: SyncRig | undefined;
  try {
    rig = await SyncRig.start({
      real: real && path !== 'nat',
      nodes: [
        [BENCH_NODE, '192.0.2.1'],
        [OTHER, '192.0.2.2'],
      ],
      sync: {
        translate: { nodeName: BENCH_NODE, externalPath: path },
        drainSeconds: 30,
        onBatch: (b) => (lastBatch = b),
        onNat: (list: NatEntry[]) => {
          const t = performance.now();
          natDone = nat!.apply(list).then(() => {
            natMs = performance.now() - t;
            natRuns++;
          });
        },
      },
    });
    const { server, store, controller } = rig;
    const r = rig;
    progress(`${path} path: ${n} NodePort Services × ${ENDPOINTS} endpoints…`);
    await server.upsertMany(nodePortServices(n));
    await until(() => r.settled(n), 'the NodePort Services', 600_000);
    await natDone;
    if (path === 'nat' && nat!.stats.full !== 1) throw new Error(`nat: the whole table was not written: ${JSON.stringify(nat!.stats)}`);
    if (path !== 'nat') {
      const vips = store.read((tx) => tx.snapshot().vips.length);
      if (vips !== n) throw new Error(`xdp: expected ${n} NodePort VIPs, the store has ${vips}`);
    }

    const applied: number[] = [];
    const endToEnd: number[] = [];
    for (let k = 0; k < changes; k++) {
      const { i, eps } = changedEndpoints(k, n);
      const before = lastBatch;
      const rev = store.revision();
      const runs = natRuns;
      const t = performance.now();
      await server.upsert('endpointslices', endpoints(i, eps));
      if (path === 'nat') {
        await until(() => natRuns > runs, 'the NAT table change', 30_000);
      } else {
        await until(
          () => lastBatch !== before && store.revision() > rev && controller.appliedRevision === store.revision(),
          'an endpoint change',
          30_000,
        );
      }
      endToEnd.push(performance.now() - t);
      // The batch (translation, store, planning, datapath); the nat path's nft run starts as it ends.
      applied.push(lastBatch!.ms + (path === 'nat' ? natMs : 0));
    }
    if (path === 'nat' && nat!.stats.incremental < changes) throw new Error(`nat: ${JSON.stringify(nat!.stats)}`);
    return {
      path,
      services: n,
      changes,
      datapath: path === 'nat' ? 'nftables' : rig.dp ? 'real' : 'fake',
      applied_ms_p50: quantile(applied, 0.5),
      applied_ms_p99: quantile(applied, 0.99),
      end_to_end_ms_p50: quantile(endToEnd, 0.5),
      end_to_end_ms_p99: quantile(endToEnd, 0.99),
    };
  } finally {
    await rig?.close();
    if (path === 'nat') spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}
