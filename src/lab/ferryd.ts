/**
 * The real ferryd in the lab's lb namespace: its config (state, socket and
 * logs in the lab's folder, maps pinned under the lab's bpffs folder), the
 * process (`nsenter --net=… node dist/src/daemon/ferryd.js --config …`),
 * readiness, and the ways an operator stops it: SIGKILL, SIGTERM.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { LbSizes } from '../datapath/lb.js';
import { packageRoot } from '../paths.js';
import { nsSpawn } from './exec.js';
import { ENCAP_SRC4, ENCAP_SRC6 } from './topology.js';

/** Map capacities of the lab's daemon: small, so start-up and restarts stay quick. */
export const LAB_BPF = {
  max_vips: 64,
  max_backends: 1024,
  conntrack_entries: 65536,
  max_policy_rules: 1024,
  maglev_slots: 262144,
} as const;

/** The same capacities as LbDatapath.open wants them (the daemon uses max_vips for VIP addresses too). */
export const LAB_SIZES: LbSizes = {
  maxVips: LAB_BPF.max_vips,
  maxVipAddrs: LAB_BPF.max_vips,
  maxBackends: LAB_BPF.max_backends,
  ctSize: LAB_BPF.conntrack_entries,
  maxPolicyRules: LAB_BPF.max_policy_rules,
  maglevSlots: LAB_BPF.maglev_slots,
};

export interface LabFerrydOptions {
  /** Namespace ferryd runs in; it attaches xdp_lb to its eth0. */
  ns: string;
  /** Folder for the config, the state (SQLite), the API socket and the log. */
  dir: string;
  pinRoot: string;
  /** How long removed backends keep their flows (default 5). */
  drainSeconds?: number;
  /** Periodic full compare of maps and store (default 30: longer than a test, so status shows the start-up reconcile). */
  reconcileIntervalSeconds?: number;
  /** More top-level YAML for the config (e.g. `mode: kubernetes` and its section). */
  extraConfig?: readonly string[];
  /** More keys of the config's datapath section (e.g. record_tcp_flows). */
  datapath?: Readonly<Record<string, string | number | boolean>>;
  /**
   * Source NAT addresses written into the config (ferryd would take its
   * interface's anyway; written, a test process outside the namespace
   * computes the same datapath config).
   */
  snatSource?: { v4: string; v6: string };
  /** More keys of the config's api section (e.g. listen, tokens_file). */
  api?: Readonly<Record<string, string>>;
}

export const ferrydScript = (): string => join(packageRoot(), 'dist', 'src', 'daemon', 'ferryd.js');
export const ferryctlScript = (): string => join(packageRoot(), 'dist', 'src', 'cli', 'ferryctl.js');

/** Runs the real ferryctl against the daemon on this socket. */
export function runFerryctl(socket: string, args: readonly string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [ferryctlScript(), '--socket', socket, ...args], { encoding: 'utf8', input, timeout: 30_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const READY_TIMEOUT_MS = 30_000;

export class LabFerryd {
  readonly config: string;
  readonly socket: string;
  readonly log: string;
  private proc: ChildProcess | undefined;

  constructor(readonly o: LabFerrydOptions) {
    this.config = join(o.dir, 'ferry.yaml');
    this.socket = join(o.dir, 'ferry.sock');
    this.log = join(o.dir, 'ferryd.log');
  }

  /** Writes the daemon's config file. */
  writeConfig(): void {
    const o = this.o;
    mkdirSync(o.dir, { recursive: true });
    writeFileSync(
      this.config,
      [
        '# ferryd in a Ferry lab (written by src/lab/ferryd.ts)',
        `state_dir: ${join(o.dir, 'state')}`,
        'bpf:',
        `  pin_root: ${o.pinRoot}`,
        ...Object.entries(LAB_BPF).map(([k, v]) => `  ${k}: ${v}`),
        'interfaces:',
        '  - name: eth0',
        '    mode: native',
        'datapath:',
        `  encap_source_v4: ${ENCAP_SRC4}`,
        `  encap_source_v6: ${ENCAP_SRC6}`,
        `  drain_seconds: ${o.drainSeconds ?? 5}`,
        `  reconcile_interval_seconds: ${o.reconcileIntervalSeconds ?? 30}`,
        ...(o.snatSource ? [`  snat_source_v4: ${o.snatSource.v4}`, `  snat_source_v6: "${o.snatSource.v6}"`] : []),
        ...Object.entries(o.datapath ?? {}).map(([k, v]) => `  ${k}: ${String(v)}`),
        'api:',
        `  socket: ${this.socket}`,
        ...Object.entries(o.api ?? {}).map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`),
        'log:',
        '  level: info',
        ...(o.extraConfig ?? []),
        '',
      ].join('\n'),
    );
  }

  get pid(): number | undefined {
    return this.running ? this.proc?.pid : undefined;
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Starts ferryd and resolves once /readyz answers 200 (it has reconciled and attached). */
  async start(): Promise<void> {
    if (this.running) throw new Error('ferryd is already running');
    const out = openSync(this.log, 'a');
    try {
      this.proc = nsSpawn(this.o.ns, process.execPath, [ferrydScript(), '--config', this.config], {
        stdio: ['ignore', out, out],
        detached: true,
      });
    } finally {
      closeSync(out);
    }
    const p = this.proc;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (p.exitCode !== null || p.signalCode !== null) {
        throw new Error(`ferryd exited (${p.exitCode ?? p.signalCode}) before it was ready:\n${this.logTail()}`);
      }
      if (Date.now() > deadline) {
        await this.stop('SIGKILL');
        throw new Error(`ferryd not ready within ${READY_TIMEOUT_MS / 1000} s:\n${this.logTail()}`);
      }
      if ((await probe(this.socket, '/readyz')) === 200) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Sends a signal and waits for the process to exit; returns its exit code (null when killed by the signal). */
  async stop(signal: NodeJS.Signals): Promise<number | null> {
    const p = this.proc;
    if (!p || !this.running) return p?.exitCode ?? null;
    const exited = once(p, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    p.kill(signal);
    const [code] = await exited;
    return code;
  }

  /** Lets this process exit while ferryd keeps running (demo --keep). */
  release(): void {
    this.proc?.unref();
    this.proc = undefined;
  }

  logText(): string {
    return existsSync(this.log) ? readFileSync(this.log, 'utf8') : '';
  }

  logTail(lines = 30): string {
    return this.logText().trimEnd().split('\n').slice(-lines).join('\n');
  }
}

/** Status code of GET path over a unix socket, or 0 when nothing answers (within timeoutMs). */
export function probe(socket: string, path: string, timeoutMs = 2000): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}
