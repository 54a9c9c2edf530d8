/**
 * Reaching the Kubernetes API test server (test/lib/k8s-server.ts, on the
 * test's own loopback) from a ferryd inside a network namespace, without
 * connecting the namespace to the host's network: a forwarder process in
 * the namespace listens on its loopback (127.0.0.1:PORT, so the server's
 * certificate for 127.0.0.1 still matches) and carries each connection over
 * a unix socket (a file: visible from every network namespace) to a gate in
 * the test process, which pipes it to the server. The gate can hold new
 * connections (the daemon's first list then waits) and release them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';

export class UnixGate {
  private held: net.Socket[] = [];
  private readonly open = new Set<net.Socket>();
  private holding: boolean;

  private constructor(
    readonly path: string,
    private readonly port: number,
    private readonly server: net.Server,
    hold: boolean,
  ) {
    this.holding = hold;
  }

  /** Listens on `path`; connections go to 127.0.0.1:`port` (or wait while held). */
  static async start(path: string, port: number, o: { hold?: boolean } = {}): Promise<UnixGate> {
    rmSync(path, { force: true });
    const server = net.createServer();
    const gate = new UnixGate(path, port, server, o.hold ?? false);
    server.on('connection', (c) => gate.accept(c));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return gate;
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Lets held connections (and every later one) through. */
  release(): void {
    this.holding = false;
    for (const c of this.held.splice(0)) this.pipe(c);
  }

  private accept(c: net.Socket): void {
    this.open.add(c);
    c.on('close', () => this.open.delete(c));
    c.on('error', () => c.destroy());
    if (this.holding) this.held.push(c);
    else this.pipe(c);
  }

  private pipe(c: net.Socket): void {
    const up = net.connect(this.port, '127.0.0.1');
    this.open.add(up);
    up.on('close', () => {
      this.open.delete(up);
      c.destroy();
    });
    up.on('error', () => up.destroy());
    c.on('close', () => up.destroy());
    c.pipe(up).pipe(c);
  }

  async close(): Promise<void> {
    for (const s of this.open) s.destroy();
    await new Promise((r) => this.server.close(r));
    rmSync(this.path, { force: true });
  }
}

const FORWARDER = `
const net = require('net');
const [port, path] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(path);
  c.on('error', () => c.destroy()); u.on('error', () => u.destroy());
  c.on('close', () => u.destroy()); u.on('close', () => c.destroy());
  c.pipe(u).pipe(c);
}).listen(Number(port), '127.0.0.1', () => console.log('listening'));
`;

/** A forwarder in namespace `ns`: 127.0.0.1:`port` there → the unix socket `path`. */
export async function startNetnsForwarder(ns: string, port: number, path: string): Promise<{ proc: ChildProcess; stop(): Promise<void> }> {
  const proc = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, '-e', FORWARDER, String(port), path], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 10_000;
  while (!out.includes('listening')) {
    if (proc.exitCode !== null) throw new Error(`forwarder exited ${proc.exitCode}: ${out}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`forwarder not listening: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      await once(proc, 'exit');
    },
  };
}

/** A kubeconfig for `server` (https, the given CA) with a bearer token. */
export function writeKubeconfig(file: string, server: string, caFile: string, token: string): void {
  writeFileSync(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: lab',
      '  cluster:',
      `    server: ${server}`,
      `    certificate-authority: ${caFile}`,
      'users:',
      '- name: ferry',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: lab',
      '  context:',
      '    cluster: lab',
      '    user: ferry',
      'current-context: lab',
      '',
    ].join('\n'),
  );
}
