/**
 * The lab: network namespaces with a unique prefix, joined by a Linux bridge
 * in a switch namespace, none connected to the host's own network.
 *
 *   <p>-client ─┐
 *   <p>-lb     ─┼── bridge in <p>-sw
 *   <p>-be1..N ─┘
 *
 * LAN 198.18.0.0/24 and 2001:db8::/64; VIPs live in 198.19.0.0/24 and
 * 2001:db8:f::/64 and are routed by the client via the load balancer.
 * Backends hold the VIPs on lo (arp_ignore=1, arp_announce=2, rp_filter=0)
 * and decapsulate with Ferry's tc_decap. Every link carrying encapsulated
 * frames has MTU 1600 (1500 + the outer header).
 *
 * Each lab owns: the namespaces <p>-*, the bpffs folder /sys/fs/bpf/<p> and
 * the folder $TMPDIR/<p> (daemon config, state, socket, logs, and an owner
 * record so that `demo --down` removes kept labs and those of killed runs,
 * never one a running test or demo is using).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, nsRun } from './exec.js';

export const LAB_MTU = 1600;
export const LAN4 = '198.18.0';
export const LAN6 = '2001:db8::';
export const VIP_NET4 = '198.19.0.0/24';
export const VIP_NET6 = '2001:db8:f::/64';
/** Outer source prefixes the load balancer encapsulates from. */
export const ENCAP_SRC4 = '198.19.255.0/24';
export const ENCAP_SRC6 = '2001:db8:ff::/112';
/**
 * A "router" on the client's link: the source of ICMP errors the lab crafts
 * (frag-needed / packet-too-big as a router on the path would send them).
 */
export const ROUTER4 = `${LAN4}.254`;
export const ROUTER6 = `${LAN6}fe`;

export interface LabHost {
  /** Role name: client, lb, be1, be2, ... */
  name: string;
  /** Network namespace name. */
  ns: string;
  /** The interface inside the namespace. */
  ifname: 'eth0';
  /** Bridge port name in the switch namespace. */
  port: string;
  addr4: string;
  addr6: string;
  mac: string;
}

export interface LabOptions {
  backends: number;
  /** Namespace prefix; a random one when omitted. */
  prefix?: string;
  /** Load balancer hosts (default 1: `lb`; more: `lb1`..`lbN`, a fleet behind the router). */
  lbs?: number;
  /**
   * The client sits behind a router instead of on the bridge (a fleet):
   * `router` joins the bridge and has a link of its own to the client; the
   * VIPs' routes on it are whatever its BGP speaker learns; backends return
   * to the client through it.
   */
  routed?: boolean;
}

/** The client's network behind the router (routed labs). */
export const CLIENT_NET4 = '198.18.20';
export const CLIENT_NET6 = '2001:db8:20::';

/** Every lab prefix starts with this, so leftovers can be found and removed. */
export const LAB_PREFIX_ROOT = 'ferrylab';

export class Lab {
  readonly prefix: string;
  readonly sw: string;
  readonly client: LabHost;
  /** The first load balancer host; `lbs` holds them all. */
  readonly lb: LabHost;
  readonly lbs: LabHost[];
  readonly backends: LabHost[];
  /** The router in front of the load balancers (routed labs only). */
  readonly router: LabHost | undefined;

  constructor(opts: LabOptions) {
    this.prefix = opts.prefix ?? `${LAB_PREFIX_ROOT}${randomBytes(3).toString('hex')}`;
    if (!/^[a-z0-9]{1,16}$/.test(this.prefix)) throw new Error(`bad lab prefix ${this.prefix}`);
    this.sw = `${this.prefix}-sw`;
    const host = (name: string, octet: number): LabHost => ({
      name,
      ns: `${this.prefix}-${name}`,
      ifname: 'eth0',
      port: `p-${name}`,
      addr4: `${LAN4}.${octet}`,
      addr6: `${LAN6}${octet.toString(16)}`,
      mac: `02:fe:00:00:00:${octet.toString(16).padStart(2, '0')}`,
    });
    const lbs = opts.lbs ?? 1;
    if (!(lbs >= 1 && lbs <= 8)) throw new Error(`lbs must be 1..8, not ${lbs}`);
    this.client = host('client', 1);
    if (opts.routed) {
      this.router = host('router', 250);
      this.client = { ...this.client, port: '', addr4: `${CLIENT_NET4}.2`, addr6: `${CLIENT_NET6}2` };
    }
    this.lbs = Array.from({ length: lbs }, (_, i) => host(lbs === 1 ? 'lb' : `lb${i + 1}`, 2 + i));
    this.lb = this.lbs[0]!;
    this.backends = Array.from({ length: opts.backends }, (_, i) => host(`be${i + 1}`, 11 + i));
  }

  /** Every host on the bridge (the client too unless it is routed). */
  get hosts(): LabHost[] {
    return [...(this.router ? [this.router] : [this.client]), ...this.lbs, ...this.backends];
  }

  /** The bpffs folder for this lab's pinned objects. */
  get bpfRoot(): string {
    return `/sys/fs/bpf/${this.prefix}`;
  }

  /** The lab's own folder: daemon config, state, socket, logs, owner record. */
  get dir(): string {
    return labDir(this.prefix);
  }

  /** Creates namespaces, the bridge and the links; addresses and routes. */
  up(): void {
    try {
      this.claim();
      run('ip', ['netns', 'add', this.sw]);
      nsRun(this.sw, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
      nsRun(this.sw, 'ip', ['link', 'set', 'br0', 'mtu', String(LAB_MTU), 'up']);
      for (const h of this.hosts) this.addHost(h);
      if (this.router) this.configureRouter(this.router);
      else this.configureClient();
      for (const lb of this.lbs) this.configureLb(lb);
      for (const b of this.backends) this.configureBackend(b);
    } catch (err) {
      this.down();
      throw err;
    }
  }

  /**
   * Creates the lab's folder with the owner record (this process), so that
   * `demo --down` leaves the lab alone while this process lives and removes
   * it after a kill. up() calls it; other topologies under this prefix too.
   */
  claim(): void {
    mkdirSync(this.dir, { recursive: true });
    writeFileSync(join(this.dir, OWNER_FILE), `${process.pid} ${processStart(process.pid)}\n`);
  }

  private addHost(h: LabHost): void {
    run('ip', ['netns', 'add', h.ns]);
    run('ip', ['link', 'add', 'eth0', 'netns', h.ns, 'address', h.mac, 'type', 'veth', 'peer', 'name', h.port, 'netns', this.sw]);
    nsRun(this.sw, 'ip', ['link', 'set', h.port, 'master', 'br0', 'mtu', String(LAB_MTU), 'up']);
    nsRun(h.ns, 'ip', ['link', 'set', 'lo', 'up']);
    nsRun(h.ns, 'ip', ['link', 'set', 'eth0', 'mtu', String(h.name === 'client' ? 1500 : LAB_MTU), 'up']);
    nsRun(h.ns, 'ip', ['addr', 'add', `${h.addr4}/24`, 'dev', 'eth0']);
    nsRun(h.ns, 'ip', ['-6', 'addr', 'add', `${h.addr6}/64`, 'dev', 'eth0', 'nodad']);
    // Frames leaving a veth stack carry partial checksums that nobody completes once
    // they become XDP frames: hand the load balancer full checksums, as a NIC would.
    nsRun(this.sw, 'ethtool', ['-K', h.port, 'tx', 'off']);
    nsRun(h.ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  }

  private configureClient(): void {
    nsRun(this.client.ns, 'ip', ['route', 'add', VIP_NET4, 'via', this.lb.addr4]);
    nsRun(this.client.ns, 'ip', ['-6', 'route', 'add', VIP_NET6, 'via', this.lb.addr6]);
    this.addClientAddress(ROUTER4);
    this.addClientAddress(ROUTER6);
  }

  /**
   * One more source address on the client's link (policy tests use several
   * clients). Only used when bound to explicitly: an IPv4 secondary is never
   * the default source, and an IPv6 one is added deprecated (preferred_lft 0).
   */
  addClientAddress(addr: string): void {
    const v6 = addr.includes(':');
    nsRun(this.client.ns, 'ip', [
      ...(v6 ? ['-6'] : []),
      'addr',
      'replace',
      `${addr}/${v6 ? 64 : 24}`,
      'dev',
      'eth0',
      ...(v6 ? ['nodad', 'preferred_lft', '0'] : []),
    ]);
  }

  /**
   * The router: forwards, spreads flows over equal-cost next hops by their
   * ports too (fib_multipath_hash_policy 1: a fleet's ECMP), and links the
   * client; backends answer the client through it (direct return).
   */
  private configureRouter(r: LabHost): void {
    const c = this.client;
    run('ip', ['netns', 'add', c.ns]);
    run('ip', ['link', 'add', 'eth0', 'netns', c.ns, 'address', c.mac, 'type', 'veth', 'peer', 'name', 'eth1', 'netns', r.ns]);
    for (const [ns, dev, a4, a6] of [
      [c.ns, 'eth0', c.addr4, c.addr6],
      [r.ns, 'eth1', `${CLIENT_NET4}.1`, `${CLIENT_NET6}1`],
    ] as const) {
      nsRun(ns, 'ip', ['link', 'set', 'lo', 'up']);
      nsRun(ns, 'ip', ['link', 'set', dev, 'up']);
      nsRun(ns, 'ip', ['addr', 'add', `${a4}/24`, 'dev', dev]);
      nsRun(ns, 'ip', ['-6', 'addr', 'add', `${a6}/64`, 'dev', dev, 'nodad']);
    }
    nsRun(c.ns, 'ip', ['route', 'add', 'default', 'via', `${CLIENT_NET4}.1`]);
    nsRun(c.ns, 'ip', ['-6', 'route', 'add', 'default', 'via', `${CLIENT_NET6}1`]);
    for (const key of [
      'net.ipv4.ip_forward=1',
      'net.ipv6.conf.all.forwarding=1',
      'net.ipv4.fib_multipath_hash_policy=1',
      'net.ipv6.fib_multipath_hash_policy=1',
    ]) {
      nsRun(r.ns, 'sysctl', ['-q', '-w', key]);
    }
    // Frames the router forwards to a load balancer become XDP frames there: full checksums, as from a NIC.
    nsRun(r.ns, 'ethtool', ['-K', 'eth1', 'tx', 'off']);
    nsRun(c.ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  }

  /** bpf_fib_lookup answers with forwarding semantics: the LB forwards. */
  private configureLb(lb: LabHost): void {
    nsRun(lb.ns, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    nsRun(lb.ns, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.forwarding=1']);
  }

  private configureBackend(b: LabHost): void {
    for (const [key, value] of [
      ['net.ipv4.conf.all.arp_ignore', '1'],
      ['net.ipv4.conf.all.arp_announce', '2'],
      ['net.ipv4.conf.all.rp_filter', '0'],
      ['net.ipv4.conf.default.rp_filter', '0'],
      ['net.ipv4.conf.eth0.rp_filter', '0'],
      ['net.ipv4.conf.lo.rp_filter', '0'],
    ])
      nsRun(b.ns, 'sysctl', ['-q', '-w', `${key}=${value}`]);
    if (this.router) {
      nsRun(b.ns, 'ip', ['route', 'add', `${CLIENT_NET4}.0/24`, 'via', this.router.addr4]);
      nsRun(b.ns, 'ip', ['-6', 'route', 'add', `${CLIENT_NET6}/64`, 'via', this.router.addr6]);
    }
  }

  /** Resolves a backend's addresses on a load balancer for good: its fib lookups need the neighbour known. */
  pinNeighbour(lb: LabHost, b: LabHost): void {
    nsRun(lb.ns, 'ip', ['neigh', 'replace', b.addr4, 'lladdr', b.mac, 'dev', 'eth0', 'nud', 'permanent']);
    nsRun(lb.ns, 'ip', ['-6', 'neigh', 'replace', b.addr6, 'lladdr', b.mac, 'dev', 'eth0', 'nud', 'permanent']);
  }

  /** Puts VIP addresses on a backend's lo so it accepts and answers for them. */
  addVipOnBackend(b: LabHost, vip: string): void {
    const v6 = vip.includes(':');
    nsRun(b.ns, 'ip', [...(v6 ? ['-6'] : []), 'addr', 'replace', `${vip}/${v6 ? 128 : 32}`, 'dev', 'lo', ...(v6 ? ['nodad'] : [])]);
  }

  /**
   * An ordinary pod behind a host (its node): a namespace of its own on a
   * veth, `addr4` in `${net}.0/24` where the node's side is `${net}.1` and
   * its default route. Nothing of Ferry runs in it. down() removes it with
   * the rest (its namespace has the lab's prefix).
   */
  addPod(node: LabHost, name: string, net: string, host: number): LabHost {
    const pod: LabHost = {
      name,
      ns: `${this.prefix}-${name}`,
      ifname: 'eth0',
      port: `v-${name}`,
      addr4: `${net}.${host}`,
      addr6: '',
      mac: '',
    };
    run('ip', ['netns', 'add', pod.ns]);
    run('ip', ['link', 'add', 'eth0', 'netns', pod.ns, 'type', 'veth', 'peer', 'name', pod.port, 'netns', node.ns]);
    nsRun(pod.ns, 'ip', ['link', 'set', 'lo', 'up']);
    nsRun(pod.ns, 'ip', ['link', 'set', 'eth0', 'up']);
    nsRun(pod.ns, 'ip', ['addr', 'add', `${pod.addr4}/24`, 'dev', 'eth0']);
    nsRun(pod.ns, 'ip', ['route', 'add', 'default', 'via', `${net}.1`]);
    nsRun(node.ns, 'ip', ['link', 'set', pod.port, 'up']);
    nsRun(node.ns, 'ip', ['addr', 'replace', `${net}.1/24`, 'dev', pod.port]);
    nsRun(node.ns, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    return pod;
  }

  /** Marks the lab as left running on purpose (demo --keep): `--down` may remove it. */
  markKept(): void {
    writeFileSync(join(this.dir, KEPT_FILE), `${new Date().toISOString()}\n`);
  }

  /**
   * Removes exactly this lab: stops every process inside its namespaces (the
   * daemon, servers, clients: they were all started by the lab, and a
   * namespace lives on while a process is in it), deletes the namespaces
   * (every <prefix>-*), its pinned objects and its folder. Idempotent.
   */
  down(): void {
    const mine = existsSync('/run/netns') ? readdirSync('/run/netns').filter((ns) => ns.startsWith(`${this.prefix}-`)) : [];
    killAll(mine.flatMap(nsPids));
    for (const ns of mine) {
      try {
        run('ip', ['netns', 'del', ns]);
      } catch {
        // Already gone: a concurrent down.
      }
    }
    rmSync(this.bpfRoot, { recursive: true, force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const OWNER_FILE = 'owner';
const KEPT_FILE = 'kept';

/** The folder of the lab with this prefix. */
export function labDir(prefix: string): string {
  return join(tmpdir(), prefix);
}

/** A process's start time (clock ticks since boot), to tell a live owner from a reused pid. */
function processStart(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

/** Pids of the processes in a named network namespace. */
function nsPids(ns: string): number[] {
  try {
    return run('ip', ['netns', 'pids', ns])
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [];
  }
}

/** SIGKILLs these pids and waits (up to 5 s) until they are gone. */
function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already exited.
    }
  }
  const deadline = Date.now() + 5000;
  for (const pid of pids) {
    while (existsSync(`/proc/${pid}`) && Date.now() < deadline) {
      // A killed process leaves /proc once reaped; ours are reaped by their parent or init.
      const state = processState(pid);
      if (state === 'Z' || state === '') break;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

function processState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return '';
  }
}

/** Every lab prefix with namespaces, pinned objects or a folder on this machine. */
export function existingLabs(): string[] {
  const re = new RegExp(`^(${LAB_PREFIX_ROOT}[0-9a-f]+)(-|$)`);
  const prefixes = new Set<string>();
  for (const dir of ['/run/netns', '/sys/fs/bpf', tmpdir()]) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      const m = re.exec(name);
      if (m) prefixes.add(m[1]!);
    }
  }
  return [...prefixes].sort();
}

/**
 * Whether `--down` may remove a lab: it was kept on purpose (demo --keep), or
 * the process that built it is gone (a killed run). A lab another running
 * test or demo is using is left alone.
 */
export function isRemovable(prefix: string): boolean {
  const dir = labDir(prefix);
  if (existsSync(join(dir, KEPT_FILE))) return true;
  let owner: string;
  try {
    owner = readFileSync(join(dir, OWNER_FILE), 'utf8').trim();
  } catch {
    return true;
  }
  const [pid, start] = owner.split(' ');
  const alive = pid && existsSync(`/proc/${pid}`) && processStart(Number(pid)) === start && processState(Number(pid)) !== 'Z';
  return !alive;
}

/** Prefixes of the labs this process built (its owner record), e.g. to remove them all on an early exit. */
export function labsOfThisProcess(): string[] {
  return existingLabs().filter((prefix) => {
    try {
      return readFileSync(join(labDir(prefix), OWNER_FILE), 'utf8').split(' ')[0] === String(process.pid);
    } catch {
      return false;
    }
  });
}

/** Prefixes of labs `--down` may remove (kept, or left by a killed run). */
export function leftoverLabs(): string[] {
  return existingLabs().filter(isRemovable);
}
