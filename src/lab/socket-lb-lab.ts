/**
 * A small lab for the socket-level load balancer: a network namespace of our
 * own (only lo, so nothing it does can leave it), backends served inside it
 * by src/lab/sockserver.py, and a cgroup v2 directory for the clients.
 * Clients (src/lab/sockclient.py) run in the namespace, inside the cgroup or
 * outside it. Used by test/root/datapath/socket-lb.test.ts and bench/k8s-connect.ts.
 *
 * Every client runs in the namespace, also the ones outside the cgroup: a
 * connect() to a ClusterIP that is not translated then fails there
 * (ENETUNREACH) instead of leaving the host.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { packageRoot } from '../paths.js';
import { createCgroup, removeCgroup, removeStaleCgroups } from './cgroup.js';
import { run } from './exec.js';

export interface BackendSpec {
  /** udpsink: reads datagrams and answers none (benchmarks). */
  proto: 'tcp' | 'udp' | 'udpsink';
  address: string;
  port: number;
  /** What the backend answers. */
  name: string;
}

export interface TcpResult {
  peer?: [string, number];
  reply?: string;
  error?: string;
}

export interface UdpResult {
  replies: Array<{ source: [string, number]; reply: string }>;
  peer?: [string, number];
  error?: string;
}

export interface LoopResult {
  count: number;
  ns: number;
  errors: number;
  firstError: string | null;
}

export type ClientOp =
  | { op: 'tcp'; host: string; port: number; family?: 4 | 6; timeout?: number }
  | { op: 'udp'; host: string; port: number; family?: 4 | 6; count?: number; connect?: boolean; timeout?: number }
  | { op: 'sleep'; seconds: number }
  | { op: 'loop'; proto: 'tcp' | 'udp'; targets: Array<[string, number]>; seconds: number; max?: number; seed?: number };

const script = (name: string): string => join(packageRoot(), 'src', 'lab', name);

/** Removes namespaces named <prefix><pid>… whose process is gone. */
function removeStaleNamespaces(prefix: string): void {
  if (!existsSync('/run/netns')) return;
  for (const name of readdirSync('/run/netns')) {
    const m = new RegExp(`^${prefix}(\\d+)\\b`).exec(name);
    if (m && !existsSync(`/proc/${m[1]}`)) spawnSync('ip', ['netns', 'del', name]);
  }
}

export class SocketLbLab {
  private servers: ChildProcess[] = [];
  private nsMade = false;
  private cg: string | null = null;

  /**
   * name: `<prefix><pid>`, e.g. ferrytest-sock-1234: the namespace and the
   * cgroup (under cgroupRoot) take it; leftovers of dead runs with the same
   * prefix are removed first.
   */
  constructor(
    readonly name: string,
    private readonly cgroupRoot?: string,
  ) {}

  get ns(): string {
    return this.name;
  }

  /** The cgroup directory clients run in. */
  get cgroup(): string {
    if (this.cg === null) throw new Error('SocketLbLab not set up');
    return this.cg;
  }

  setUp(): void {
    const prefix = this.name.replace(/\d+$/, '');
    removeStaleNamespaces(prefix);
    removeStaleCgroups(prefix, this.cgroupRoot);
    run('ip', ['netns', 'add', this.name]);
    this.nsMade = true;
    run('ip', ['-n', this.name, 'link', 'set', 'lo', 'up']);
    this.cg = createCgroup(this.name, this.cgroupRoot);
  }

  /** Starts one server process for these backends; resolves once they are bound. */
  async serve(backends: readonly BackendSpec[]): Promise<void> {
    const args = backends.map((b) => `${b.proto},${b.address},${b.port},${b.name}`);
    const child = spawn('nsenter', [`--net=/run/netns/${this.name}`, '--', 'python3', script('sockserver.py'), ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.servers.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`sockserver not ready after 10 s: ${stderr}`)), 10_000);
      lines.once('line', (l) => {
        clearTimeout(timer);
        if (l.trim() === 'ready') resolve();
        else reject(new Error(`sockserver said ${JSON.stringify(l)}: ${stderr}`));
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`sockserver exited (${code}): ${stderr}`));
      });
    });
  }

  /** Sets a sysctl of the namespace (net.*), e.g. ('net.core.somaxconn', 65535). */
  sysctl(name: string, value: string | number): void {
    this.nsRun('sh', ['-c', `echo ${value} > /proc/sys/${name.replaceAll('.', '/')}`]);
  }

  /** Adds an IPv4 or IPv6 address to the namespace's lo (127.0.0.0/8 and ::1 are there already). */
  addAddress(cidr: string): void {
    run('ip', ['-n', this.name, 'addr', 'add', cidr, 'dev', 'lo', ...(cidr.includes(':') ? ['nodad'] : [])]);
  }

  /** Runs a command inside the namespace (e.g. iptables-restore); default timeout 60 s. */
  nsRun(cmd: string, args: readonly string[], input?: string, timeoutMs?: number): string {
    return run('nsenter', [`--net=/run/netns/${this.name}`, '--', cmd, ...args], { input, timeoutMs });
  }

  /**
   * Runs sockclient.py with these operations in the namespace, inside the
   * cgroup (default) or outside it, and returns its results.
   */
  async client(ops: readonly ClientOp[], opts: { inCgroup?: boolean; timeoutMs?: number } = {}): Promise<unknown[]> {
    const py = ['python3', script('sockclient.py')];
    const cmd = (opts.inCgroup ?? true) ? ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', this.cgroup, ...py] : py;
    const child = spawn('nsenter', [`--net=/run/netns/${this.name}`, '--', ...cmd], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => {}); // a client that died early; its exit status tells
    child.stdin.end(JSON.stringify(ops));
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    clearTimeout(timer);
    if (code !== 0) throw new Error(`sockclient failed (${code}): ${err.trim()}`);
    return JSON.parse(out) as unknown[];
  }

  async tcp(host: string, port: number, opts: { family?: 4 | 6; inCgroup?: boolean } = {}): Promise<TcpResult> {
    const op: ClientOp = { op: 'tcp', host, port };
    if (opts.family) op.family = opts.family;
    return (await this.client([op], opts))[0] as TcpResult;
  }

  async udp(
    host: string,
    port: number,
    opts: { family?: 4 | 6; count?: number; connect?: boolean; inCgroup?: boolean } = {},
  ): Promise<UdpResult> {
    const op: ClientOp = { op: 'udp', host, port, count: opts.count ?? 1, connect: opts.connect ?? false };
    if (opts.family) op.family = opts.family;
    return (await this.client([op], opts))[0] as UdpResult;
  }

  /** Stops the servers, deletes the namespace and the cgroup. Safe to call twice. */
  tearDown(): void {
    for (const s of this.servers) {
      s.stdin?.destroy();
      s.kill('SIGTERM');
    }
    this.servers = [];
    if (this.cg !== null) {
      removeCgroup(this.cg);
      this.cg = null;
    }
    if (this.nsMade) {
      spawnSync('ip', ['netns', 'del', this.name]);
      this.nsMade = false;
    }
  }
}
