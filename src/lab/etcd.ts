/**
 * A one-member etcd (Debian's etcd-server) for the fleet store's tests and
 * the fleet lab: on loopback with ports of its own, or inside one of the
 * lab's namespaces. Its data lives in a folder given by the caller, so it
 * can be killed and started again on the same data.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { nsSpawn } from './exec.js';

export interface EtcdOptions {
  /** Where its data (and log) go. */
  dir: string;
  /** The address it listens on (default 127.0.0.1). */
  host?: string;
  /** A lab namespace to run it in (its ports are then 2379 and 2380). */
  netns?: string;
}

/** A free TCP port on loopback (bound and released). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export class Etcd {
  private child: ChildProcess | undefined;
  private log = '';
  /** etcd logged that it serves clients (the namespaced one cannot be asked from here). */
  private serving = false;

  private constructor(
    private readonly o: EtcdOptions,
    private readonly clientPort: number,
    private readonly peerPort: number,
  ) {}

  static async start(o: EtcdOptions): Promise<Etcd> {
    const ports = o.netns === undefined ? [await freePort(), await freePort()] : [2379, 2380];
    const e = new Etcd(o, ports[0]!, ports[1]!);
    await e.run();
    return e;
  }

  /** The client URL. */
  get url(): string {
    return `http://${this.o.host ?? '127.0.0.1'}:${this.clientPort}`;
  }

  /** Starts it (again, on the same data) and waits until it answers. */
  async run(): Promise<void> {
    if (this.child !== undefined) return;
    mkdirSync(this.o.dir, { recursive: true });
    const host = this.o.host ?? '127.0.0.1';
    const peer = `http://${host}:${this.peerPort}`;
    const args = [
      '--name',
      'ferry-lab',
      '--data-dir',
      join(this.o.dir, 'data'),
      '--listen-client-urls',
      this.url,
      '--advertise-client-urls',
      this.url,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `ferry-lab=${peer}`,
      // Writes the fleet makes in one transaction (a whole desired state) may be large.
      '--max-txn-ops',
      '10000',
      '--logger',
      'zap',
      '--log-outputs',
      'stderr',
    ];
    const child =
      this.o.netns === undefined
        ? spawn('etcd', args, { stdio: ['ignore', 'ignore', 'pipe'] })
        : nsSpawn(this.o.netns, 'etcd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    this.log = '';
    this.serving = false;
    child.stderr?.on('data', (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-8000);
      if (/serving client traffic|ready to serve client requests/.test(this.log)) this.serving = true;
    });
    child.once('exit', () => {
      if (this.child === child) this.child = undefined;
    });
    const end = Date.now() + 20_000;
    while (!(await this.healthy())) {
      if (this.child === undefined) throw new Error(`etcd exited at start: ${this.log.slice(-2000)}`);
      if (Date.now() > end) throw new Error(`etcd did not answer within 20 s: ${this.log.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async healthy(): Promise<boolean> {
    if (this.o.netns !== undefined) return this.serving;
    try {
      const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(1000) });
      return res.ok;
    } catch {
      return false;
    }
  }

  /** Kills it (SIGKILL) and waits for the exit. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    this.child = undefined;
  }
}
