/**
 * Short HTTP requests through Ferry and through a kube-proxy-style iptables
 * balancer, in the namespace lab of the demo and end-to-end tests (a client,
 * a load balancer and backends on a bridge):
 *
 * - Ferry: LbLab, the real ferryd with xdp_lb on the load balancer's veth,
 *   tc_decap on the backends, which answer the client directly (DSR).
 * - iptables: the same topology without ferryd; the load balancer runs the
 *   kube-proxy nat rules of bench/lab-rig.ts (DNAT to the backends' own
 *   addresses, connection tracking on) and the backends route the client's
 *   address through it, so the replies come back through it to be un-NATed.
 *
 * The lab client (src/lab/client.js rate) keeps N requests in flight, each
 * on a new connection, for a fixed time: connections per second and latency
 * percentiles from connect to the last byte of the answer.
 */
import { once } from 'node:events';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RateResult } from '../src/lab/client.js';
import { nsRun, nsSpawn } from '../src/lab/exec.js';
import { LbLab, script } from '../src/lab/lblab.js';
import { Lab, type LabHost } from '../src/lab/topology.js';
import { kubeProxyRules } from './lab-rig.js';

export const HTTP_VIP = '198.19.0.10';
export const HTTP_BACKENDS = 3;

/** Runs the lab client's rate mode in the client namespace. */
export async function httpRate(client: LabHost, ms: number, parallel: number): Promise<RateResult> {
  const p = nsSpawn(client.ns, process.execPath, [
    script('client'),
    'rate',
    HTTP_VIP,
    String(ms),
    '--parallel',
    String(parallel),
    '--timeout',
    '3000',
  ]);
  let out = '';
  let err = '';
  p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(p, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`client rate failed (${code}): ${err.trim()}`);
  return JSON.parse(out) as RateResult;
}

/** Ferry's side: the lab with ferryd and one VIP on port 80 over every backend. */
export async function startFerryHttp(): Promise<LbLab> {
  const lab = await LbLab.start({ backends: HTTP_BACKENDS, vips: [HTTP_VIP] });
  try {
    await lab.createVip({
      name: 'web',
      address: HTTP_VIP,
      port: 80,
      protocol: 'tcp',
      backends: lab.lab.backends.map((b) => ({ address: b.addr4 })),
    });
  } catch (err) {
    lab.stop();
    throw err;
  }
  return lab;
}

/** The iptables side: the lab's topology, servers on the backends, kube-proxy's rules on the load balancer. */
export class IptablesHttpLab {
  private constructor(readonly lab: Lab) {}

  static async start(): Promise<IptablesHttpLab> {
    const l = new IptablesHttpLab(new Lab({ backends: HTTP_BACKENDS }));
    try {
      await l.bringUp();
    } catch (err) {
      l.stop();
      throw err;
    }
    return l;
  }

  private async bringUp(): Promise<void> {
    const { lab } = this;
    lab.up();
    // The load balancer forwards back out of the interface the packet came in
    // on (one-armed): that is no reason to redirect the sender elsewhere.
    for (const k of ['all', 'eth0']) nsRun(lab.lb.ns, 'sysctl', ['-q', '-w', `net.ipv4.conf.${k}.send_redirects=0`]);
    nsRun(lab.lb.ns, 'iptables-restore', ['--noflush'], { input: kubeProxyRules(lab.backends.map((b) => b.addr4)) });
    mkdirSync(join(lab.dir, 'logs'), { recursive: true });
    await Promise.all(
      lab.backends.map(async (b) => {
        lab.addVipOnBackend(b, HTTP_VIP);
        // Replies to the client go through the load balancer, which un-NATs them.
        nsRun(b.ns, 'ip', ['route', 'add', `${lab.client.addr4}/32`, 'via', lab.lb.addr4]);
        await this.startServer(b);
      }),
    );
  }

  private async startServer(b: LabHost): Promise<void> {
    const log = join(this.lab.dir, 'logs', `server-${b.name}.log`);
    const fd = openSync(log, 'a');
    try {
      // A process in the backend's namespace: the lab's down() stops it.
      nsSpawn(b.ns, process.execPath, [script('server'), b.name, HTTP_VIP], { stdio: ['ignore', fd, fd] }).unref();
    } finally {
      closeSync(fd);
    }
    const deadline = Date.now() + 20_000;
    while (!readFileSync(log, 'utf8').includes('ready')) {
      if (Date.now() > deadline) throw new Error(`server on ${b.name} did not start: ${readFileSync(log, 'utf8').trim()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Packets each KUBE-SEP DNAT rule took (new connections per backend address). */
  dnatCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const line of nsRun(this.lab.lb.ns, 'iptables-save', ['-c', '-t', 'nat']).split('\n')) {
      const m = /^\[(\d+):\d+\] -A KUBE-SEP-\S+ .*--to-destination ([\d.]+):80$/.exec(line);
      if (m) out[m[2]!] = (out[m[2]!] ?? 0) + Number(m[1]);
    }
    return out;
  }

  stop(): void {
    this.lab.down();
  }
}
