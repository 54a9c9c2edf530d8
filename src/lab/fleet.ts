/**
 * A fleet lab: several Ferry hosts behind one router with ECMP, as Maglev
 * was designed to run.
 *
 *   client ── router ─┬─ bridge ─┬─ lb1..lbN  (ferryd + BIRD each; same hash seed, same VIPs)
 *   (routed)  (BIRD,  │          └─ be1..beM  (tc_decap, servers; answer the client via the router)
 *             ECMP)   ┘
 *
 * Every load balancer runs the real ferryd with `bgp.enabled`: it writes
 * its BIRD's config and reloads it; its BIRD peers with the router's BIRD,
 * which merges the equal routes into one multipath route in the kernel
 * (`merge paths`) and hashes flows over them by their ports too. The
 * router's BIRD is the lab's, not Ferry's: it stands for the operator's
 * router. With the fleet store (the default), an etcd in the router's
 * namespace holds the members' VIPs and their shared Maglev seed: a VIP is
 * created through one member and every member takes it from etcd.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../cli/client.js';
import { FERRY_AF_INET } from '../datapath/abi.js';
import { dpAddr } from '../datapath/addr.js';
import { LbDatapath } from '../datapath/lb.js';
import type { BgpView } from '../model/bgp.js';
import type { VipWithBackends } from '../model/types.js';
import type { ClientResult } from './client.js';
import { Etcd } from './etcd.js';
import { nsRun, nsSpawn } from './exec.js';
import { LabFerryd, LAB_SIZES, runFerryctl } from './ferryd.js';
import {
  openStream,
  runAgent,
  runClient,
  spawnServer,
  streamOwner,
  type ClientOptions,
  type LabStream,
  type StreamOptions,
} from './lblab.js';
import { Lab, type LabHost } from './topology.js';

export const ROUTER_AS = 65000;
export const FLEET_AS = 65001;

export interface FleetOptions {
  /** Load balancer hosts (2 or 3 make a fleet). */
  hosts: number;
  backends: number;
  /** VIP addresses every backend holds on lo and decapsulates for. */
  vips: string[];
  /**
   * The fleet store: 'etcd' (default) shares the VIPs and the seed through
   * etcd; 'none' leaves each member on its own (VIPs created on each).
   */
  store?: 'etcd' | 'none';
  /**
   * The Maglev seed (datapath.hash_seed): by default the fleet store's (or a
   * fixed one without it); 'own' gives each host its store's random one (a
   * misconfigured fleet, without a fleet store).
   */
  hashSeed?: number | 'own';
  /** More keys of each ferryd's bgp section (e.g. `med: 50`). */
  bgp?: readonly string[];
}

export interface FleetMember {
  host: LabHost;
  ferryd: LabFerryd;
  api: Client;
  /** BIRD beside this ferryd (started after it: ferryd writes its config first). */
  bird: ChildProcess | undefined;
  birdConfig: string;
  birdSocket: string;
}

const DEFAULT_SEED = 0x5eed_f1ee;

/** The datapath section's seed for these options: none where the fleet store or the host's store gives it. */
function seedConfig(o: FleetOptions): { datapath?: { hash_seed: number } } {
  if (typeof o.hashSeed === 'number') return { datapath: { hash_seed: o.hashSeed } };
  if (o.hashSeed === 'own' || (o.store ?? 'etcd') === 'etcd') return {};
  return { datapath: { hash_seed: DEFAULT_SEED } };
}

export class FleetLab {
  readonly members: FleetMember[];
  private readonly streams = new Set<LabStream>();
  private readonly dps = new Map<string, LbDatapath>();
  /** The fleet store (store: 'etcd'), in the router's namespace. */
  etcd: Etcd | undefined;

  private constructor(
    readonly lab: Lab,
    private readonly o: FleetOptions,
  ) {
    const fleet =
      (o.store ?? 'etcd') === 'etcd'
        ? [
            'fleet:',
            `  etcd: { endpoints: ["http://${lab.router!.addr4}:2379"], prefix: /ferry/, dial_timeout_ms: 1000 }`,
            '  member_ttl_seconds: 3',
          ]
        : [];
    this.members = lab.lbs.map((host) => {
      const dir = join(lab.dir, host.name);
      const birdConfig = join(dir, 'bird.conf');
      const birdSocket = join(dir, 'bird.ctl');
      const ferryd = new LabFerryd({
        ns: host.ns,
        dir,
        pinRoot: join(lab.bpfRoot, host.name),
        ...seedConfig(o),
        extraConfig: [
          ...fleet,
          ...(fleet.length > 0 ? [`  host_name: ${host.name}`] : []),
          'bgp:',
          '  enabled: true',
          `  bird_config: ${birdConfig}`,
          `  bird_socket: ${birdSocket}`,
          `  router_id: ${host.addr4}`,
          `  local_as: ${FLEET_AS}`,
          '  neighbors:',
          `    - { address: ${lab.router!.addr4}, as: ${ROUTER_AS} }`,
          `    - { address: "${lab.router!.addr6}", as: ${ROUTER_AS} }`,
          '  hold_time_seconds: 3',
          '  connect_retry_seconds: 1',
          '  status_interval_seconds: 1',
          ...(o.bgp ?? []).map((l) => `  ${l}`),
        ],
      });
      return { host, ferryd, api: new Client({ socket: ferryd.socket }), bird: undefined, birdConfig, birdSocket };
    });
  }

  static async start(o: FleetOptions): Promise<FleetLab> {
    const f = new FleetLab(new Lab({ backends: o.backends, lbs: o.hosts, routed: true }), o);
    try {
      await f.bringUp();
    } catch (err) {
      f.stop();
      throw err;
    }
    return f;
  }

  get router(): LabHost {
    return this.lab.router!;
  }

  private async bringUp(): Promise<void> {
    const { lab } = this;
    lab.up();
    const vips = this.o.vips;
    // veth hands XDP_TX frames on only to a peer running XDP itself.
    const agents = lab.lbs.map((lb) => runAgent(lab.sw, ['pass', join(lab.bpfRoot, 'sw', `xdp_${lb.port}`), lb.port]));
    for (const b of lab.backends) {
      for (const v of vips) lab.addVipOnBackend(b, v);
      agents.push(runAgent(b.ns, ['decap', join(lab.bpfRoot, b.name), 'eth0', vips.join(',')]));
      for (const lb of lab.lbs) lab.pinNeighbour(lb, b);
    }
    await Promise.all(agents);
    this.startRouterBird();
    if ((this.o.store ?? 'etcd') === 'etcd') {
      this.etcd = await Etcd.start({ dir: join(lab.dir, 'etcd'), host: this.router.addr4, netns: this.router.ns });
    }
    for (const m of this.members) m.ferryd.writeConfig();
    await Promise.all([
      ...this.members.map(async (m) => {
        await m.ferryd.start();
        this.startBird(m);
      }),
      ...lab.backends.map((b) => spawnServer(lab, b, vips)),
    ]);
  }

  private spawnBird(ns: string, config: string, socket: string, name: string): ChildProcess {
    const fd = openSync(join(this.lab.dir, `bird-${name}.log`), 'a');
    try {
      return nsSpawn(ns, 'bird', ['-f', '-c', config, '-s', socket], { stdio: ['ignore', fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
  }

  /** The router's BIRD: one session per load balancer, their equal routes merged into one ECMP route. */
  private startRouterBird(): void {
    const dir = join(this.lab.dir, 'router');
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'bird.conf');
    writeFileSync(
      conf,
      [
        `router id ${this.router.addr4};`,
        'timeformat protocol iso long;',
        'protocol device {}',
        'protocol kernel { ipv4 { import none; export all; }; merge paths on; }',
        'protocol kernel { ipv6 { import none; export all; }; merge paths on; }',
        ...(['ipv4', 'ipv6'] as const).flatMap((family) => [
          `template bgp ferry_${family} {`,
          `  local as ${ROUTER_AS};`,
          '  direct;',
          '  hold time 3; keepalive time 1;',
          '  connect delay time 1; connect retry time 1; error wait time 1, 5;',
          `  ${family} { import all; export none; };`,
          '}',
        ]),
        ...this.lab.lbs.flatMap((lb) => [
          `protocol bgp ${lb.name} from ferry_ipv4 { neighbor ${lb.addr4} as ${FLEET_AS}; }`,
          `protocol bgp ${lb.name}_6 from ferry_ipv6 { neighbor ${lb.addr6} as ${FLEET_AS}; }`,
        ]),
        '',
      ].join('\n'),
    );
    this.spawnBird(this.router.ns, conf, join(dir, 'bird.ctl'), 'router');
  }

  private startBird(m: FleetMember): void {
    m.bird = this.spawnBird(m.host.ns, m.birdConfig, m.birdSocket, m.host.name);
  }

  /** birdc on the router's BIRD. */
  routerBirdc(args: readonly string[]): string {
    return nsRun(this.router.ns, 'birdc', ['-s', join(this.lab.dir, 'router', 'bird.ctl'), ...args]);
  }

  /** The next hops (load balancer addresses) of the router's kernel route to a VIP; [] when it has none. */
  nexthops(vip: string): string[] {
    const v6 = vip.includes(':');
    const routes = JSON.parse(
      nsRun(this.router.ns, 'ip', [...(v6 ? ['-6'] : []), '-j', 'route', 'show', `${vip}/${v6 ? 128 : 32}`]),
    ) as Array<{
      gateway?: string;
      nexthops?: Array<{ gateway: string }>;
    }>;
    const r = routes[0];
    if (r === undefined) return [];
    return (r.nexthops?.map((n) => n.gateway) ?? (r.gateway ? [r.gateway] : [])).sort();
  }

  /** Waits until the router routes the VIP over exactly these load balancers. */
  async untilNexthops(vip: string, hosts: readonly LabHost[], timeoutMs = 20_000): Promise<void> {
    const want = hosts
      .map((h) => (vip.includes(':') ? h.addr6 : h.addr4))
      .sort()
      .join(',');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.nexthops(vip).join(',');
      if (got === want) return;
      if (Date.now() > deadline)
        throw new Error(`router routes ${vip} via [${got}], not [${want}]:\n${this.routerBirdc(['show', 'protocols'])}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * The load balancers whose conntrack holds a TCP flow from the client
   * (read from each one's pinned maps): before a host fails, the one the
   * router sends the flow to.
   */
  carriers(vip: string, port: number, clientPort: number): LabHost[] {
    const flow = {
      src: dpAddr(this.lab.client.addr4).bytes,
      dst: dpAddr(vip).bytes,
      sport: clientPort,
      dport: port,
      proto: 6,
      family: FERRY_AF_INET,
      pad: 0,
    };
    return this.members.filter((m) => this.datapath(m).ct.get(flow) !== undefined).map((m) => m.host);
  }

  /** The one load balancer carrying a stream; throws unless exactly one does. */
  carrierOf(vip: string, s: LabStream, port = 7): LabHost {
    const c = this.carriers(vip, port, s.localPort);
    if (c.length !== 1) throw new Error(`${c.length} hosts carry the stream from port ${s.localPort}: ${c.map((h) => h.name).join(', ')}`);
    return c[0]!;
  }

  /** A member's datapath over its pinned maps (opened once). */
  private datapath(m: FleetMember): LbDatapath {
    let dp = this.dps.get(m.host.name);
    if (dp === undefined) {
      dp = LbDatapath.open({ pinRoot: m.ferryd.o.pinRoot, sizes: LAB_SIZES });
      this.dps.set(m.host.name, dp);
    }
    return dp;
  }

  /**
   * Creates the VIP with its backends: through the first member, then
   * waits until every member took it from the fleet store; without one, on
   * every member, one call each.
   */
  async createVip(v: VipWithBackends): Promise<void> {
    const { backends, ...spec } = v;
    const through = this.etcd === undefined ? this.members : this.members.slice(0, 1);
    for (const m of through) {
      await m.api.request('POST', '/v1/vips', { body: spec });
      for (const b of backends ?? []) await m.api.request('POST', `/v1/vips/${v.name}/backends`, { body: b });
    }
    const want = backends?.length ?? 0;
    const end = Date.now() + 15_000;
    for (const m of this.members) {
      for (;;) {
        // 404 until the VIP arrives.
        const page = await m.api.get<{ items: unknown[] }>(`/v1/vips/${v.name}/backends`).catch(() => null);
        if (page !== null && page.items.length === want) break;
        if (Date.now() > end) throw new Error(`${m.host.name} did not take VIP ${v.name} from the fleet store within 15 s`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  bgp(m: FleetMember): Promise<BgpView> {
    return m.api.get<BgpView>('/v1/bgp');
  }

  /** The real ferryctl against a member's daemon. */
  ferryctl(m: FleetMember, args: readonly string[]): { code: number; out: string; err: string } {
    return runFerryctl(m.ferryd.socket, args);
  }

  /**
   * `ferryctl fleet status` (the fleet store's members) on a member, asked
   * again until the members agree or `timeoutMs` passed: a member's record
   * follows its applies within a moment. The last answer either way.
   */
  async fleetStatus(m: FleetMember, args: readonly string[] = [], timeoutMs = 10_000): Promise<{ code: number; out: string; err: string }> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const r = this.ferryctl(m, [...args, 'fleet', 'status']);
      if (r.code === 0 || Date.now() > end) return r;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  /**
   * The host dies: ferryd and BIRD SIGKILLed (the kernel closes BIRD's
   * session, so the router withdraws at once) and its link goes down.
   */
  async killMember(m: FleetMember): Promise<void> {
    m.bird?.kill('SIGKILL');
    await m.ferryd.stop('SIGKILL');
    nsRun(m.host.ns, 'ip', ['link', 'set', 'eth0', 'down']);
  }

  /** Runs the traffic client from the client (behind the router). */
  client(kind: 'http' | 'udp', vip: string, count: number, o: ClientOptions = {}): Promise<ClientResult> {
    return runClient(this.lab.client.ns, kind, vip, count, o);
  }

  /** A long-lived TCP stream from the client to the backends' echo server through the VIP. */
  stream(vip: string, o: StreamOptions = {}): Promise<LabStream> {
    return openStream(this.lab.client.ns, vip, o, this.streams);
  }

  /** The one backend holding a stream's connection; throws unless exactly one does. */
  streamOwner(s: LabStream): LabHost {
    return streamOwner(this.lab.backends, s);
  }

  /** Whether a stream still flows, byte for byte (`bytes` more within `timeoutMs`), on the backend it started on. */
  async intact(s: LabStream, owner: LabHost, bytes = 4_000, timeoutMs = 8_000): Promise<boolean> {
    try {
      await s.flowing(bytes, timeoutMs);
      return this.streamOwner(s).name === owner.name;
    } catch {
      return false;
    }
  }

  private closeDatapaths(): void {
    for (const dp of this.dps.values()) dp.close();
    this.dps.clear();
  }

  /** Leaves the fleet running after this process exits (demo --keep). */
  release(): void {
    this.closeDatapaths();
    for (const s of this.streams) s.kill();
    this.streams.clear();
    for (const m of this.members) {
      m.ferryd.release();
      m.bird?.unref();
    }
    this.lab.markKept();
  }

  /** Stops everything and removes the lab (every process runs in one of its namespaces). Idempotent. */
  stop(): void {
    this.closeDatapaths();
    for (const s of this.streams) s.kill();
    this.streams.clear();
    this.lab.down();
  }
}
