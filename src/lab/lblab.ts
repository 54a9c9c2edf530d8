/**
 * A running lab: the topology, xdp_lb attached to the load balancer's veth
 * in native mode, tc_decap and real servers on every backend, and a handle
 * on the load balancer's pinned maps for programming VIPs.
 */
import { once } from 'node:events';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { LbDatapath, type XdpMode } from '../datapath/lb.js';
import { programConfig, programVip, type VipProgram } from '../datapath/program.js';
import { packageRoot } from '../paths.js';
import { nsRun, nsSpawn } from './exec.js';
import { ENCAP_SRC4, ENCAP_SRC6, Lab, type LabHost } from './topology.js';
import type { ClientResult } from './client.js';

export interface LbLabOptions {
  backends: number;
  /** VIP addresses every backend holds on lo and decapsulates for. */
  vips: string[];
  mode?: XdpMode;
}

/** Sizes of the lab's maps (the agent and this handle must agree). */
const LAB_SIZES = { ctSize: 65536 } as const;

const script = (name: string) => join(packageRoot(), 'dist', 'src', 'lab', `${name}.js`);

/**
 * Direct server return, from interface counters over a traffic run: the load
 * balancer receives what the client sends (plus a little ARP/ND) but not the
 * replies; were they to cross it, it would receive about clientTx + clientRx.
 */
export function repliesBypassedLb(lbRx: number, clientTx: number, clientRx: number): boolean {
  return clientRx > 0 && lbRx < clientTx + clientRx / 2;
}

export class LbLab {
  readonly seed = randomInt(0, 2 ** 31);
  private servers: ChildProcess[] = [];
  private dpHandle: LbDatapath | undefined;

  private constructor(readonly lab: Lab) {}

  get dp(): LbDatapath {
    if (!this.dpHandle) throw new Error('lab is not running');
    return this.dpHandle;
  }

  static async start(opts: LbLabOptions): Promise<LbLab> {
    const l = new LbLab(new Lab({ backends: opts.backends }));
    try {
      await l.bringUp(opts);
    } catch (err) {
      l.stop();
      throw err;
    }
    return l;
  }

  private agent(host: string, args: string[]): void {
    nsRun(host, process.execPath, [script('agent'), ...args]);
  }

  private async bringUp(opts: LbLabOptions): Promise<void> {
    const { lab } = this;
    lab.up();
    // veth hands XDP_TX frames on only to a peer running XDP itself.
    this.agent(lab.sw, ['pass', join(lab.bpfRoot, 'sw', `xdp_${lab.lb.port}`), lab.lb.port]);
    const lbPins = join(lab.bpfRoot, 'lb');
    this.agent(lab.lb.ns, ['lb', lbPins, 'eth0', opts.mode ?? 'native']);
    this.dpHandle = LbDatapath.open({ pinRoot: lbPins, sizes: LAB_SIZES });
    programConfig(this.dp, { seed: this.seed, src4: ENCAP_SRC4, src6: ENCAP_SRC6 });
    for (const b of lab.backends) {
      for (const v of opts.vips) lab.addVipOnBackend(b, v);
      this.agent(b.ns, ['decap', join(lab.bpfRoot, b.name), 'eth0', opts.vips.join(',')]);
      // The load balancer's fib lookups need its neighbours resolved.
      nsRun(lab.lb.ns, 'ip', ['neigh', 'replace', b.addr4, 'lladdr', b.mac, 'dev', 'eth0', 'nud', 'permanent']);
      nsRun(lab.lb.ns, 'ip', ['-6', 'neigh', 'replace', b.addr6, 'lladdr', b.mac, 'dev', 'eth0', 'nud', 'permanent']);
    }
    await Promise.all(lab.backends.map((b) => this.startServer(b, opts.vips)));
  }

  private async startServer(b: LabHost, vips: string[]): Promise<void> {
    const p = nsSpawn(b.ns, process.execPath, [script('server'), b.name, vips.join(',')]);
    this.servers.push(p);
    let err = '';
    p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const ready = new Promise<void>((resolve, reject) => {
      p.stdout?.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) resolve();
      });
      p.on('exit', (code) => reject(new Error(`server on ${b.name} exited (${code}): ${err.trim()}`)));
    });
    await ready;
  }

  /** Writes a VIP into the load balancer's maps; returns its Maglev table. */
  programVip(v: VipProgram): Uint32Array {
    return programVip(this.dp, v, this.seed);
  }

  /** Runs the traffic client in the client namespace. */
  async client(kind: 'http' | 'udp', vip: string, count: number): Promise<ClientResult> {
    const p = nsSpawn(this.lab.client.ns, process.execPath, [script('client'), kind, vip, String(count)]);
    let out = '';
    let err = '';
    p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = (await once(p, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`client ${kind} ${vip} failed (${code}): ${err.trim()}`);
    return JSON.parse(out) as ClientResult;
  }

  /** Packet counters of a host's eth0, from the kernel. */
  linkCounters(host: LabHost): { rxPackets: number; txPackets: number } {
    const j = JSON.parse(nsRun(host.ns, 'ip', ['-s', '-j', 'link', 'show', 'eth0'])) as Array<{
      stats64: { rx: { packets: number }; tx: { packets: number } };
    }>;
    const s = j[0]!.stats64;
    return { rxPackets: s.rx.packets, txPackets: s.tx.packets };
  }

  /** Leaves the lab running after this process exits (demo --keep). */
  release(): void {
    for (const p of this.servers) {
      p.stdout?.destroy();
      p.stderr?.destroy();
      p.unref();
    }
    this.servers = [];
    this.dpHandle?.close();
    this.dpHandle = undefined;
  }

  /** Stops servers, closes the map handle and removes the lab. */
  stop(): void {
    for (const p of this.servers) p.kill('SIGKILL');
    this.servers = [];
    this.dpHandle?.close();
    this.dpHandle = undefined;
    this.lab.down();
  }
}
