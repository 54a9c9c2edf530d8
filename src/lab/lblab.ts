/**
 * A running lab: the topology, the real ferryd in the lb namespace (it
 * attaches xdp_lb to eth0 in native mode and serves the REST API on a unix
 * socket in the lab's folder), tc_decap and real servers on every backend,
 * and the tools to drive it: the API client, ferryctl, the daemon's life
 * cycle (SIGKILL, restart, upgrade in place), traffic from the client
 * namespace, and what the kernel counts along the way.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { StatsBody, StatusBody } from '../model/status.js';
import { Client } from '../cli/client.js';
import type { CounterName } from '../datapath/abi.js';
import { LbDatapath } from '../datapath/lb.js';
import type { BackendSpec, DesiredState, VipWithBackends } from '../model/types.js';
import { packageRoot } from '../paths.js';
import { nsRun, nsSpawn } from './exec.js';
import { LabFerryd, LAB_SIZES, runFerryctl } from './ferryd.js';
import { Lab, ROUTER4, ROUTER6, type LabHost } from './topology.js';
import type { ClientResult, StreamReport } from './client.js';
import type { FloodResult, FloodSpec } from './flood.js';

export interface LbLabOptions {
  backends: number;
  /** VIP addresses every backend holds on lo, decapsulates for and serves UDP on. */
  vips: string[];
  /** How long removed backends keep their flows (ferryd's drain_seconds; default 5). */
  drainSeconds?: number;
  /** ferryd's periodic compare, which also ends drained backends (default 30 s). */
  reconcileIntervalSeconds?: number;
  /** More top-level YAML for ferryd's config (e.g. kubernetes mode). */
  ferrydConfig?: readonly string[];
  /** Runs once the namespaces exist, before ferryd starts (e.g. whatever ferryd must reach to become ready). */
  beforeDaemon?: (lab: Lab) => Promise<void>;
  /**
   * Backends are other hosts (e.g. Kubernetes nodes running a ferryd of their
   * own): no VIP on their lo, no decap, no servers; the load balancer still
   * knows their MAC addresses.
   */
  plainBackends?: boolean;
  /** More keys of ferryd's api section (e.g. a TCP listener and its tokens). */
  api?: Readonly<Record<string, string>>;
  /** More keys of ferryd's datapath section (e.g. events_flow_sample). */
  datapath?: Readonly<Record<string, string | number | boolean>>;
}

export interface ClientOptions {
  port?: number;
  /** Local address to send from (one of the client's; see Lab.addClientAddress). */
  source?: string;
  timeoutMs?: number;
  parallel?: number;
}

/** The compiled lab program NAME (dist/src/lab/NAME.js), run with node inside a namespace. */
export const script = (name: string): string => join(packageRoot(), 'dist', 'src', 'lab', `${name}.js`);

/**
 * Direct server return, from interface counters over a traffic run: the load
 * balancer receives what the client sends (plus a little ARP/ND) but not the
 * replies; were they to cross it, it would receive about clientTx + clientRx.
 */
export function repliesBypassedLb(lbRx: number, clientTx: number, clientRx: number): boolean {
  return clientRx > 0 && lbRx < clientTx + clientRx / 2;
}

export class LbLab {
  readonly ferryd: LabFerryd;
  /** The REST API over ferryd's unix socket. */
  readonly api: Client;
  private readonly servers = new Map<string, ChildProcess>();
  private readonly streams = new Set<LabStream>();
  private dpHandle: LbDatapath | undefined;

  private constructor(
    readonly lab: Lab,
    private readonly opts: LbLabOptions,
  ) {
    this.ferryd = new LabFerryd({
      ns: lab.lb.ns,
      dir: lab.dir,
      pinRoot: join(lab.bpfRoot, 'lb'),
      drainSeconds: opts.drainSeconds ?? 5,
      snatSource: { v4: lab.lb.addr4, v6: lab.lb.addr6 },
      ...(opts.reconcileIntervalSeconds ? { reconcileIntervalSeconds: opts.reconcileIntervalSeconds } : {}),
      ...(opts.ferrydConfig ? { extraConfig: opts.ferrydConfig } : {}),
      ...(opts.api ? { api: opts.api } : {}),
      ...(opts.datapath ? { datapath: opts.datapath } : {}),
    });
    this.api = new Client({ socket: this.ferryd.socket });
  }

  static async start(opts: LbLabOptions): Promise<LbLab> {
    const l = new LbLab(new Lab({ backends: opts.backends }), opts);
    try {
      await l.bringUp();
    } catch (err) {
      l.stop();
      throw err;
    }
    return l;
  }

  get socket(): string {
    return this.ferryd.socket;
  }

  private async bringUp(): Promise<void> {
    const { lab } = this;
    lab.up();
    mkdirSync(join(lab.dir, 'logs'), { recursive: true });
    const vips = this.opts.vips;
    const agents: Array<Promise<void>> = [
      // veth hands XDP_TX frames on only to a peer running XDP itself.
      runAgent(lab.sw, ['pass', join(lab.bpfRoot, 'sw', `xdp_${lab.lb.port}`), lab.lb.port]),
    ];
    const plain = this.opts.plainBackends ?? false;
    for (const b of lab.backends) {
      if (!plain) {
        for (const v of vips) lab.addVipOnBackend(b, v);
        agents.push(runAgent(b.ns, ['decap', join(lab.bpfRoot, b.name), 'eth0', vips.join(',')]));
      }
      lab.pinNeighbour(lab.lb, b);
    }
    await Promise.all(agents);
    await this.opts.beforeDaemon?.(lab);
    this.ferryd.writeConfig();
    await Promise.all([this.ferryd.start(), ...(plain ? [] : lab.backends.map((b) => this.startServer(b)))]);
  }

  // ---- the daemon ------------------------------------------------------------

  /** Starts ferryd (when it is not running); resolves once it is ready. */
  startDaemon(): Promise<void> {
    return this.ferryd.start();
  }

  /** SIGKILL: the daemon dies mid-whatever; the datapath keeps forwarding. */
  async killDaemon(): Promise<void> {
    await this.ferryd.stop('SIGKILL');
  }

  /** SIGKILL, then a new ferryd against the same pinned maps and database. */
  async restartDaemon(): Promise<void> {
    await this.killDaemon();
    await this.startDaemon();
  }

  /**
   * Upgrade in place: a clean stop (SIGTERM; it must exit 0 and leave the
   * datapath attached), then a new process — in a real upgrade, the new
   * version — adopts the pinned maps, the pinned link and the database.
   */
  async upgradeDaemon(): Promise<void> {
    const code = await this.ferryd.stop('SIGTERM');
    if (code !== 0) throw new Error(`ferryd exited ${code} on SIGTERM:\n${this.ferryd.logTail()}`);
    await this.startDaemon();
  }

  /**
   * How an operator changes a setting: a clean stop, the config's datapath
   * section changed (these keys replace the previous ones), a start. The
   * datapath forwards throughout, as in upgradeDaemon.
   */
  async reconfigureDaemon(datapath: Readonly<Record<string, string | number | boolean>>): Promise<void> {
    const code = await this.ferryd.stop('SIGTERM');
    if (code !== 0) throw new Error(`ferryd exited ${code} on SIGTERM:\n${this.ferryd.logTail()}`);
    this.ferryd.o.datapath = datapath;
    this.ferryd.writeConfig();
    await this.startDaemon();
  }

  /** Runs the real ferryctl against the lab's daemon. */
  ferryctl(args: readonly string[], input?: string): { code: number; out: string; err: string } {
    return runFerryctl(this.socket, args, input);
  }

  // ---- the API -----------------------------------------------------------------

  /** Creates a VIP and then its backends, one call each (as an operator would). */
  async createVip(v: VipWithBackends): Promise<void> {
    const { backends, ...spec } = v;
    await this.api.request('POST', '/v1/vips', { body: spec });
    for (const b of backends ?? []) await this.addBackend(v.name, b);
  }

  async addBackend(vip: string, b: BackendSpec): Promise<void> {
    await this.api.request('POST', `/v1/vips/${vip}/backends`, { body: b });
  }

  /** Changes a backend's weight and/or state (GET, then PUT with If-Match). */
  async setBackend(vip: string, address: string, patch: Omit<BackendSpec, 'address'>): Promise<void> {
    const path = `/v1/vips/${vip}/backends/${address}`;
    const cur = await this.api.request<Required<BackendSpec>>('GET', path);
    const body = { address: cur.body.address, weight: patch.weight ?? cur.body.weight, state: patch.state ?? cur.body.state };
    await this.api.request('PUT', path, { body, headers: cur.headers.etag ? { 'if-match': String(cur.headers.etag) } : {} });
  }

  /** Removes a backend: its established flows drain for drain_seconds. */
  async removeBackend(vip: string, address: string): Promise<void> {
    await this.api.request('DELETE', `/v1/vips/${vip}/backends/${address}`);
  }

  /** Changes some settings of a VIP (GET, merge, PUT with If-Match). */
  async updateVip(name: string, patch: Partial<VipWithBackends>): Promise<void> {
    const cur = await this.api.request<Record<string, unknown>>('GET', `/v1/vips/${name}`);
    const keep = [
      'name',
      'address',
      'port',
      'protocol',
      'encap',
      'allow',
      'deny',
      'policies',
      'rate_limit',
      'maglev_m',
      'source_affinity',
      'forwarding',
    ];
    const body: Record<string, unknown> = Object.fromEntries(keep.filter((k) => k in cur.body).map((k) => [k, cur.body[k]]));
    Object.assign(body, patch);
    await this.api.request('PUT', `/v1/vips/${name}`, { body, headers: cur.headers.etag ? { 'if-match': String(cur.headers.etag) } : {} });
  }

  stats(): Promise<StatsBody> {
    return this.api.get<StatsBody>('/v1/stats');
  }

  status(): Promise<StatusBody> {
    return this.api.get<StatusBody>('/v1/status');
  }

  /** The whole desired state as the API exports it. */
  state(): Promise<DesiredState> {
    return this.api.get<DesiredState>('/v1/state');
  }

  // ---- traffic -------------------------------------------------------------------

  /** Runs the traffic client in the client namespace (http: one connection per request; udp: one datagram per source port). */
  client(kind: 'http' | 'udp', vip: string, count: number, o: ClientOptions = {}): Promise<ClientResult> {
    return runClient(this.lab.client.ns, kind, vip, count, o);
  }

  /** A flood of SYNs or UDP datagrams from random sources in srcNet to vip:port, from the client (src/lab/flood.ts). */
  async flood(spec: Omit<FloodSpec, 'dstMac' | 'srcMac'>): Promise<FloodResult> {
    const full: FloodSpec = { ...spec, dstMac: this.lab.lb.mac, srcMac: this.lab.client.mac };
    const p = nsSpawn(this.lab.client.ns, process.execPath, [script('flood'), JSON.stringify(full)]);
    let out = '';
    let err = '';
    p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = (await once(p, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`flood ${spec.kind} ${spec.vip} failed (${code}): ${err.trim()}`);
    return JSON.parse(out) as FloodResult;
  }

  /** Opens a long-lived TCP stream from the client to the backends' echo server through the VIP. */
  stream(vip: string, o: StreamOptions = {}): Promise<LabStream> {
    return openStream(this.lab.client.ns, vip, o, this.streams);
  }

  /** ICMP echo from the client (raw sockets): how many of `count` were answered, and from where. */
  ping(dst: string, count = 3, src?: string): { sent: number; received: number; from: Record<string, number> } {
    const source = src ?? (dst.includes(':') ? this.lab.client.addr6 : this.lab.client.addr4);
    return JSON.parse(nsRun(this.lab.client.ns, 'python3', [icmpScript(), 'echo', source, dst, String(count), '3'])) as {
      sent: number;
      received: number;
      from: Record<string, number>;
    };
  }

  /**
   * Sends `count` ICMP frag-needed (IPv4) / packet-too-big (IPv6) to a VIP
   * from the lab's router address on the client link, quoting a packet the
   * backend sent for a flow (VIP:vipPort → client:clientPort), as a router
   * on the return path would.
   */
  sendTooBig(vip: string, proto: 'tcp' | 'udp', vipPort: number, client: string, clientPort: number, mtu: number, count: number): void {
    const router = vip.includes(':') ? ROUTER6 : ROUTER4;
    nsRun(this.lab.client.ns, 'python3', [
      icmpScript(),
      'toobig',
      router,
      vip,
      vip,
      client,
      proto,
      String(vipPort),
      String(clientPort),
      String(mtu),
      String(count),
    ]);
  }

  // ---- observation -----------------------------------------------------------------

  /** Packet counters of a host's eth0, from the kernel. */
  linkCounters(host: LabHost): { rxPackets: number; txPackets: number } {
    const j = JSON.parse(nsRun(host.ns, 'ip', ['-s', '-j', 'link', 'show', 'eth0'])) as Array<{
      stats64: { rx: { packets: number }; tx: { packets: number } };
    }>;
    const s = j[0]!.stats64;
    return { rxPackets: s.rx.packets, txPackets: s.tx.packets };
  }

  /** The id of the XDP program attached to the load balancer's eth0 (0 = none). */
  xdpProgId(): number {
    const j = JSON.parse(nsRun(this.lab.lb.ns, 'ip', ['-j', '-d', 'link', 'show', 'eth0'])) as Array<{
      xdp?: { prog?: { id: number }; attached?: Array<{ prog: { id: number } }> };
    }>;
    const x = j[0]?.xdp;
    return x?.prog?.id ?? x?.attached?.[0]?.prog.id ?? 0;
  }

  /** A host's SNMP counters (/proc/net/snmp as "Icmp.InDestUnreachs", /proc/net/snmp6 as "Icmp6InPktTooBigs"). */
  snmp(host: LabHost): Record<string, number> {
    const out: Record<string, number> = {};
    const lines = nsRun(host.ns, 'cat', ['/proc/net/snmp']).trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/);
      const values = lines[i + 1]!.split(/\s+/);
      const group = names[0]!.replace(':', '');
      for (let k = 1; k < names.length; k++) out[`${group}.${names[k]}`] = Number(values[k]);
    }
    for (const line of nsRun(host.ns, 'cat', ['/proc/net/snmp6']).trim().split('\n')) {
      const [k, v] = line.trim().split(/\s+/);
      if (k && v) out[k] = Number(v);
    }
    return out;
  }

  /** The one backend holding a stream's connection (to the echo port, 7); throws unless exactly one does. */
  streamOwner(s: LabStream): LabHost {
    return streamOwner(this.lab.backends, s);
  }

  /** The backends holding an established TCP connection with these ports (server side: serverPort, peer: clientPort). */
  tcpOwners(serverPort: number, clientPort: number): LabHost[] {
    return tcpOwners(this.lab.backends, serverPort, clientPort);
  }

  /**
   * xdp_lb's global counters (echo answered, ICMP steered, tx, ...), which
   * the API does not export: read from the pinned maps.
   */
  datapathCounters(): Record<CounterName, bigint> {
    return Object.fromEntries(Object.entries(this.datapath().counterValues()).map(([k, v]) => [k, v.packets])) as Record<
      CounterName,
      bigint
    >;
  }

  /**
   * The datapath over the lab's pinned maps, with a program instance of its
   * own for BPF_PROG_TEST_RUN (its packets meet the daemon's maps and config).
   */
  datapath(): LbDatapath {
    this.dpHandle ??= LbDatapath.open({ pinRoot: this.ferryd.o.pinRoot, sizes: LAB_SIZES });
    return this.dpHandle;
  }

  /**
   * The run time of the xdp_lb attached to the load balancer's eth0 and its
   * runs: zero unless run-time statistics are on (the addon's enableStats).
   */
  xdpRunTime(): { ns: number; runs: number } {
    const dp = this.datapath();
    const nat = dp.nat;
    const link = nat.objGet(dp.linkPath('eth0'));
    try {
      const prog = nat.progFdById(nat.linkInfo(link).progId);
      try {
        const info = nat.progInfo(prog);
        return { ns: info.runTimeNs, runs: info.runCount };
      } finally {
        nat.closeFd(prog);
      }
    } finally {
      nat.closeFd(link);
    }
  }

  // ---- backends' servers -------------------------------------------------------------

  /**
   * Starts a host's servers (HTTP 80, echo 7, UDP 53 on each of `vips`,
   * by default every VIP: a backend holds them); resolves once they listen.
   */
  async startServer(b: LabHost, vips: readonly string[] = this.opts.vips): Promise<void> {
    if (this.servers.has(b.name)) throw new Error(`server on ${b.name} is already running`);
    this.servers.set(b.name, await spawnServer(this.lab, b, vips));
  }

  /** Stops a backend's servers (nothing listens there afterwards). */
  async stopServer(b: LabHost): Promise<void> {
    const p = this.servers.get(b.name);
    if (!p) return;
    this.servers.delete(b.name);
    if (p.exitCode === null && p.signalCode === null) {
      const exited = once(p, 'exit');
      p.kill('SIGKILL');
      await exited;
    }
  }

  // ---- life cycle ----------------------------------------------------------------------

  /** Leaves the lab running (ferryd, servers) after this process exits: demo --keep. */
  release(): void {
    this.ferryd.release();
    for (const p of this.servers.values()) p.unref();
    this.servers.clear();
    for (const s of this.streams) s.kill();
    this.dpHandle?.close();
    this.dpHandle = undefined;
    this.lab.markKept();
  }

  /** Stops everything the lab started and removes it (namespaces, pins, folder). Idempotent. */
  stop(): void {
    for (const s of this.streams) s.kill();
    this.streams.clear();
    this.dpHandle?.close();
    this.dpHandle = undefined;
    // Every process of the lab runs inside one of its namespaces: down() stops them all.
    this.lab.down();
    this.servers.clear();
  }
}

/**
 * A long-lived TCP stream from the client namespace (client.js stream): it
 * writes a known byte sequence and checks every echoed byte.
 */
export class LabStream {
  /** Resolves with the first report once connected. */
  readonly connected: Promise<StreamReport>;
  private readonly waiting: Array<(r: StreamReport) => void> = [];
  private last: StreamReport | undefined;
  private stderr = '';

  constructor(private readonly proc: ChildProcess) {
    proc.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    const lines = createInterface({ input: proc.stdout! });
    lines.on('line', (line) => {
      let r: StreamReport;
      try {
        r = JSON.parse(line) as StreamReport;
      } catch {
        return;
      }
      this.last = r;
      this.waiting.shift()?.(r);
    });
    this.connected = this.next().then((r) => {
      if (r.event !== 'connected') throw new Error(`stream did not connect: ${JSON.stringify(r)} ${this.stderr}`);
      return r;
    });
  }

  get localPort(): number {
    return this.last?.local_port ?? 0;
  }

  get localAddress(): string {
    return this.last?.local_address ?? '';
  }

  private next(): Promise<StreamReport> {
    return new Promise((resolve, reject) => {
      const onExit = () => reject(new Error(`stream client exited: ${this.stderr.trim() || JSON.stringify(this.last)}`));
      this.proc.once('exit', onExit);
      this.waiting.push((r) => {
        this.proc.off('exit', onExit);
        resolve(r);
      });
    });
  }

  /** The stream's counters now. */
  report(): Promise<StreamReport> {
    const r = this.next();
    this.proc.stdin!.write('report\n');
    return r;
  }

  /**
   * Waits until `bytes` more have been echoed and checked; throws as soon as
   * the stream reports an error, a mismatch or a close, or after timeoutMs
   * without that progress (a stalled stream).
   */
  async flowing(bytes = 256 * 1024, timeoutMs = 15_000): Promise<StreamReport> {
    const start = await this.report();
    const deadline = Date.now() + timeoutMs;
    for (let r = start; ; r = await this.report()) {
      if (r.error || r.first_mismatch !== null || r.closed_by_peer) throw new Error(`stream broken: ${JSON.stringify(r)}`);
      if (r.received >= start.received + bytes) return r;
      if (Date.now() > deadline) throw new Error(`stream stalled: ${JSON.stringify(start)} → ${JSON.stringify(r)}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  /** Stops writing, waits for every byte's echo, closes; the final report. */
  stop(): Promise<StreamReport> {
    const r = this.next();
    this.proc.stdin!.write('stop\n');
    return r;
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

function clientArgs(o: ClientOptions): string[] {
  const a: string[] = [];
  if (o.port !== undefined) a.push('--port', String(o.port));
  if (o.source) a.push('--source', o.source);
  if (o.timeoutMs !== undefined) a.push('--timeout', String(o.timeoutMs));
  if (o.parallel !== undefined) a.push('--parallel', String(o.parallel));
  return a;
}

const icmpScript = (): string => join(packageRoot(), 'src', 'lab', 'icmp.py');

/** Runs the traffic client (src/lab/client.ts) in a namespace: http, one connection per request; udp, one datagram per source port. */
export async function runClient(
  ns: string,
  kind: 'http' | 'udp',
  vip: string,
  count: number,
  o: ClientOptions = {},
): Promise<ClientResult> {
  const p = nsSpawn(ns, process.execPath, [script('client'), kind, vip, String(count), ...clientArgs(o)]);
  let out = '';
  let err = '';
  p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(p, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`client ${kind} ${vip} failed (${code}): ${err.trim()}`);
  return JSON.parse(out) as ClientResult;
}

/** Options of a stream: the client's, and its pace in bytes per second. */
export type StreamOptions = ClientOptions & { rate?: number };

/**
 * Opens a long-lived TCP stream from a namespace to the echo server
 * (client.js stream; port 7 unless given), kept in `into` so its lab can
 * end it; resolves once connected.
 */
export async function openStream(ns: string, vip: string, o: StreamOptions, into: Set<LabStream>): Promise<LabStream> {
  const args = [...clientArgs({ ...o, port: o.port ?? 7 }), ...(o.rate ? ['--rate', String(o.rate)] : [])];
  const s = new LabStream(nsSpawn(ns, process.execPath, [script('client'), 'stream', vip, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
  into.add(s);
  await s.connected;
  return s;
}

/** The one backend holding a stream's connection (to the echo port, 7); throws unless exactly one does. */
export function streamOwner(backends: readonly LabHost[], s: LabStream): LabHost {
  const owners = tcpOwners(backends, 7, s.localPort);
  if (owners.length !== 1)
    throw new Error(`${owners.length} backends hold the stream from port ${s.localPort}: ${owners.map((b) => b.name).join(', ')}`);
  return owners[0]!;
}

/** The hosts holding an established TCP connection with these ports (server side: serverPort, peer: clientPort). */
export function tcpOwners(hosts: readonly LabHost[], serverPort: number, clientPort: number): LabHost[] {
  return hosts.filter(
    (b) => nsRun(b.ns, 'ss', ['-Htn', 'state', 'established', `( sport = :${serverPort} and dport = :${clientPort} )`]).trim() !== '',
  );
}

/**
 * Starts a host's servers (src/lab/server.ts: HTTP 80, echo 7, UDP 53 on
 * each VIP), logging into the lab's folder; resolves once they listen.
 */
export async function spawnServer(lab: Lab, b: LabHost, vips: readonly string[]): Promise<ChildProcess> {
  const log = join(lab.dir, 'logs', `server-${b.name}.log`);
  mkdirSync(join(lab.dir, 'logs'), { recursive: true });
  const from = existsSync(log) ? statSync(log).size : 0;
  const fd = openSync(log, 'a');
  let p: ChildProcess;
  try {
    p = nsSpawn(b.ns, process.execPath, [script('server'), b.name, vips.join(',')], { stdio: ['ignore', fd, fd], detached: true });
  } finally {
    closeSync(fd);
  }
  const deadline = Date.now() + 20_000;
  for (;;) {
    const text = readFileSync(log, 'utf8').slice(from);
    if (text.includes('ready')) return p;
    if (p.exitCode !== null || p.signalCode !== null || Date.now() > deadline) {
      p.kill('SIGKILL');
      throw new Error(`server on ${b.name} did not start: ${text.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Runs agent.js in a namespace (asynchronously, so several can run at once). */
export function runAgent(ns: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = nsSpawn(ns, process.execPath, [script('agent'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`agent ${args.join(' ')} in ${ns} failed (${code}): ${err.trim()}`)),
    );
  });
}
