/**
 * A real ferryd for tests: its own network namespace with a veth pair (the
 * daemon attaches xdp_lb to one end), a state folder, a pin root and a unix
 * socket, all private to the test and removed afterwards.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAddr } from '../../src/datapath/addr.js';
import { LbDatapath } from '../../src/datapath/lb.js';
import { probe as labProbe } from '../../src/lab/ferryd.js';
import { packageRoot } from '../../src/paths.js';

export interface FerrydEnv {
  ns: string;
  dir: string;
  socket: string;
  pinRoot: string;
  config: string;
}

const run = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};

/** Namespace `ferrytest-<tag>-<pid>` with veth0 (XDP side) and veth1. */
/** `apiExtra`: more YAML lines for the api section (indented by the caller). */
export function makeFerrydEnv(tag: string, apiExtra: string[] = []): FerrydEnv {
  const ns = `ferrytest-${tag}-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), `ferry-${tag}-`));
  const pinRoot = `/sys/fs/bpf/${ns}`;
  run('ip', ['netns', 'add', ns]);
  const inNs = (args: string[]) => run('nsenter', [`--net=/run/netns/${ns}`, '--', ...args]);
  inNs(['ip', 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1']);
  inNs(['ip', 'link', 'set', 'lo', 'up']);
  inNs(['ip', 'link', 'set', 'veth0', 'up']);
  inNs(['ip', 'link', 'set', 'veth1', 'up']);
  const socket = join(dir, 'ferry.sock');
  const config = join(dir, 'ferry.yaml');
  writeFileSync(
    config,
    [
      `state_dir: ${dir}/state`,
      'bpf:',
      `  pin_root: ${pinRoot}`,
      '  max_vips: 64',
      '  max_backends: 1024',
      '  conntrack_entries: 65536',
      '  max_policy_rules: 1024',
      'interfaces:',
      '  - name: veth0',
      '    mode: native',
      'datapath:',
      '  encap_source_v4: 198.19.255.0/24',
      '  encap_source_v6: 2001:db8:ff::/112',
      '  drain_seconds: 1',
      '  gateway_mac: 02:00:00:00:fe:01',
      '  reconcile_interval_seconds: 1',
      'api:',
      `  socket: ${socket}`,
      ...apiExtra,
      'log:',
      '  level: info',
    ].join('\n'),
  );
  return { ns, dir, socket, pinRoot, config };
}

export function destroyFerrydEnv(e: FerrydEnv): void {
  if (existsSync(`/run/netns/${e.ns}`)) spawnSync('ip', ['netns', 'del', e.ns]);
  rmSync(e.pinRoot, { recursive: true, force: true });
  rmSync(e.dir, { recursive: true, force: true });
}

export interface Ferryd {
  proc: ChildProcess;
  logs: () => string;
}

/** Starts ferryd inside the namespace; resolves once `until` (default /readyz) answers 200. */
export async function startFerryd(e: FerrydEnv, args: string[] = [], env: NodeJS.ProcessEnv = {}, until = '/readyz'): Promise<Ferryd> {
  const script = join(packageRoot(), 'dist', 'src', 'daemon', 'ferryd.js');
  const proc = spawn('nsenter', [`--net=/run/netns/${e.ns}`, '--', process.execPath, script, '--config', e.config, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`ferryd exited ${proc.exitCode}: ${out}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`ferryd not ready in 20 s: ${out}`);
    }
    if ((await probe(e.socket, until)) === 200) return { proc, logs: () => out };
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The map sizes every test ferryd config uses (see makeFerrydEnv). */
export const FERRYD_SIZES = { maxVips: 64, maxVipAddrs: 64, maxBackends: 1024, ctSize: 65536, maxPolicyRules: 1024 };

/** A second handle on the daemon's pinned maps (its own xdp_lb instance, unattached). */
export function openDaemonDatapath(e: FerrydEnv): LbDatapath {
  return LbDatapath.open({ pinRoot: e.pinRoot, sizes: FERRYD_SIZES });
}

/** The VIPs ("address:port") in the daemon's pinned maps, read from outside. */
export function mapVips(e: FerrydEnv): string[] {
  const dp = openDaemonDatapath(e);
  try {
    return dp.vipIndex
      .entries()
      .map(([k]) => `${formatAddr(k.family, k.addr)}:${k.port}`)
      .sort();
  } finally {
    dp.close();
  }
}

/** The body of GET path over the unix socket. */
export function getText(socket: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Status code of GET path over the socket, or 0 when nothing answers within a second. */
export const probe = (socket: string, path: string): Promise<number> => labProbe(socket, path, 1000);

export async function stopFerryd(d: Ferryd, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (d.proc.exitCode !== null) return d.proc.exitCode;
  d.proc.kill(signal);
  const [code] = (await once(d.proc, 'exit')) as [number | null];
  return code;
}

/** Runs ferryctl against the socket; returns exit code and output. */
export function ferryctl(e: FerrydEnv, args: string[], input?: string): { code: number; out: string; err: string } {
  const script = join(packageRoot(), 'dist', 'src', 'cli', 'ferryctl.js');
  const r = spawnSync(process.execPath, [script, '--socket', e.socket, ...args], { encoding: 'utf8', input, timeout: 30_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** Runs ferryctl inside the namespace (for the TCP listener on its loopback). */
export function ferryctlInNs(e: FerrydEnv, args: string[], env: NodeJS.ProcessEnv = {}): { code: number; out: string; err: string } {
  const script = join(packageRoot(), 'dist', 'src', 'cli', 'ferryctl.js');
  const r = spawnSync('nsenter', [`--net=/run/netns/${e.ns}`, '--', process.execPath, script, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, ...env },
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** The XDP program id attached to an interface in the namespace (0 = none). */
export function xdpProgId(e: FerrydEnv, ifname: string): number {
  const j = JSON.parse(run('nsenter', [`--net=/run/netns/${e.ns}`, '--', 'ip', '-j', '-d', 'link', 'show', ifname])) as Array<{
    xdp?: { prog?: { id: number }; attached?: Array<{ prog: { id: number } }> };
  }>;
  const x = j[0]?.xdp;
  return x?.prog?.id ?? x?.attached?.[0]?.prog.id ?? 0;
}
