/**
 * The node programs (bpf/node.bpf.c): port translation where an endpoint
 * lives. The ABI of their maps, loading the object into the load
 * balancer's pin root, their tc filters on Ferry's interfaces, and the
 * (frontend, local endpoint) pairs they translate, written as a difference.
 * test/root/datapath/node.test.ts checks the structs against the object's BTF.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Counter } from './abi.js';
import { formatAddr, dpAddr } from './addr.js';
import { PerCpuArray, TypedMap } from './maps.js';
import { loadNative, type BpfObject, type NativeAddon, type TcOptions } from './native.js';
import { protoNumber } from './program.js';
import { attachTcFilters, detachTcFilters } from './tc.js';
import { struct, u8, u16, be16, bytes, type ValueOf } from './struct.js';
import { bpfObjectPath } from '../paths.js';
import type { Protocol } from '../model/types.js';

/** enum ferry_node_counter */
export const NODE_COUNTERS = ['dnat', 'not_ours', 'rev_nat', 'error'] as const;
export type NodeCounterName = (typeof NODE_COUNTERS)[number];

const addr = () => bytes(16, 4);

export const NodeEpKey = struct('node_ep_key', {
  vip: addr(),
  backend: addr(),
  vip_port: be16(),
  proto: u8(),
  family: u8(),
});

export const NodeEp = struct('node_ep', { port: be16(), pad: u16() });

export const NatRevKey = struct('nat_rev_key', {
  backend: addr(),
  client: addr(),
  backend_port: be16(),
  client_port: be16(),
  proto: u8(),
  family: u8(),
  pad: u16(),
});

export const NatRev = struct('nat_rev', { vip: addr(), vip_port: be16(), pad: u16() });

export const NODE_STRUCTS = [NodeEpKey, NodeEp, NatRevKey, NatRev] as const;

/** Their place on an interface: after the health-check filters ("FR" + 1), see HC_TC. */
export const NODE_TC: Readonly<Required<TcOptions>> = Object.freeze({ handle: 0x4653, priority: 0x4653 });

/** A frontend and one endpoint of it on this host, with the port the endpoint listens on. */
export interface NodeEndpoint {
  /** What the client addresses (a VIP, a node address with a NodePort). */
  vip: string;
  /** 0: every port (the endpoint keeps the client's). */
  vipPort: number;
  protocol: Protocol;
  /** The endpoint's address: the outer destination of its tunnel packets. */
  backend: string;
  /** The port it listens on; 0 with vipPort 0. */
  port: number;
}

export interface NodeSizes {
  maxEndpoints: number;
  revNatEntries: number;
}

export const DEFAULT_NODE_SIZES: Readonly<NodeSizes> = Object.freeze({ maxEndpoints: 65_536, revNatEntries: 262_144 });

/** What names a pair (its port is the value). */
export const endpointKey = (e: NodeEndpoint): string => `${e.vip}|${e.vipPort}|${e.protocol}|${e.backend}`;

export class NodeDatapath {
  readonly endpoints: TypedMap<typeof NodeEpKey, typeof NodeEp>;
  readonly revNat: TypedMap<typeof NatRevKey, typeof NatRev>;
  readonly counters: PerCpuArray<typeof Counter>;
  private readonly inFd: number;
  private readonly outFd: number;
  /** What the map holds, by endpointKey: the port. */
  private readonly known = new Map<string, number>();

  private constructor(
    readonly nat: NativeAddon,
    private readonly obj: BpfObject,
    readonly sizes: NodeSizes,
  ) {
    this.inFd = obj.programFd('tc_node_in');
    this.outFd = obj.programFd('tc_node_out');
    this.endpoints = new TypedMap(nat, obj.mapFd('ferry_node_endpoints'), 'ferry_node_endpoints', NodeEpKey, NodeEp);
    this.revNat = new TypedMap(nat, obj.mapFd('ferry_nat_rev'), 'ferry_nat_rev', NatRevKey, NatRev);
    this.counters = new PerCpuArray(nat, obj.mapFd('ferry_node_counters'), 'ferry_node_counters', Counter, nat.numPossibleCpus());
    this.reread();
  }

  /** Learns what the map holds (at open, and before repairing drift). */
  reread(): void {
    this.known.clear();
    for (const [k, v] of this.endpoints.entries()) this.known.set(endpointKey(decodeKey(k)), v.port);
  }

  /**
   * Loads bpf/node.bpf.o with its maps pinned under pinRoot (reused when
   * already there: a restarted daemon keeps the translated connections).
   */
  static open(opts: { pinRoot: string; sizes?: Partial<NodeSizes>; objectPath?: string }): NodeDatapath {
    const sizes = { ...DEFAULT_NODE_SIZES, ...opts.sizes };
    const nat = loadNative();
    mkdirSync(opts.pinRoot, { recursive: true });
    const obj = nat.openObject(opts.objectPath ?? bpfObjectPath('node'), {
      pinRoot: opts.pinRoot,
      maxEntries: { ferry_node_endpoints: sizes.maxEndpoints, ferry_nat_rev: sizes.revNatEntries },
    });
    try {
      obj.load();
      return new NodeDatapath(nat, obj, sizes);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  programFd(name: 'tc_node_in' | 'tc_node_out'): number {
    return name === 'tc_node_in' ? this.inFd : this.outFd;
  }

  /** Puts the filters on an interface (replacing a previous daemon's). */
  attach(ifname: string): void {
    attachTcFilters(
      this.nat,
      ifname,
      [
        ['ingress', this.inFd],
        ['egress', this.outFd],
      ],
      NODE_TC,
    );
  }

  /** Takes the filters off; an interface that is gone or has none is not an error. */
  detach(ifname: string): void {
    detachTcFilters(this.nat, ifname, NODE_TC);
  }

  /**
   * Makes the map hold exactly `list`, writing only the difference. Every
   * entry is checked first: a bad one throws (TypeError for an address,
   * RangeError otherwise) and nothing is written. Returns how many entries were written and removed.
   */
  setEndpoints(list: readonly NodeEndpoint[]): { written: number; removed: number } {
    const want = new Map<string, { e: NodeEndpoint; key: ValueOf<typeof NodeEpKey> }>();
    for (const e of list) {
      const key = encodeKey(e);
      const k = endpointKey(e);
      const have = want.get(k);
      if (have !== undefined && have.e.port !== e.port) {
        throw new RangeError(`${e.vip}:${e.vipPort}/${e.protocol} → ${e.backend}: two ports (${have.e.port}, ${e.port})`);
      }
      want.set(k, { e, key });
    }
    const adds = [...want].filter(([k, { e }]) => this.known.get(k) !== e.port);
    const dels = [...this.known.keys()].filter((k) => !want.has(k));
    if (this.known.size + adds.length - dels.length > this.sizes.maxEndpoints) {
      throw new RangeError(`more than ${this.sizes.maxEndpoints} node endpoints (kubernetes.node_endpoints)`);
    }
    for (const k of dels) {
      this.endpoints.delete(rawKey(parseEndpointKey(k)));
      this.known.delete(k);
    }
    for (const [k, { e, key }] of adds) {
      this.endpoints.set(key, { port: e.port, pad: 0 });
      this.known.set(k, e.port);
    }
    return { written: adds.length, removed: dels.length };
  }

  get endpointCount(): number {
    return this.known.size;
  }

  /** Counters by name, summed over CPUs. */
  counts(): Record<NodeCounterName, bigint> {
    const out = {} as Record<NodeCounterName, bigint>;
    NODE_COUNTERS.forEach((name, i) => {
      out[name] = this.counters.sum(i).packets;
    });
    return out;
  }

  /** Releases the object. Filters and pinned maps stay until detach() or a replacement. */
  close(): void {
    this.obj.close();
  }
}

/** A pair's key, the pair checked first. */
function encodeKey(e: NodeEndpoint): ValueOf<typeof NodeEpKey> {
  const where = `${e.vip}:${e.vipPort}/${e.protocol} → ${e.backend}:${e.port}`;
  for (const [name, p] of [
    ['port', e.vipPort],
    ['endpoint port', e.port],
  ] as const) {
    if (!Number.isInteger(p) || p < 0 || p > 65535) throw new RangeError(`${where}: ${name} must be 0..65535`);
  }
  if ((e.vipPort === 0) !== (e.port === 0)) throw new RangeError(`${where}: only a frontend of every port (0) keeps the client's port (0)`);
  const key = rawKey(e);
  if (dpAddr(e.vip).family !== dpAddr(e.backend).family)
    throw new RangeError(`${where}: the frontend and the endpoint must be of one family`);
  return key;
}

function rawKey(e: NodeEndpoint): ValueOf<typeof NodeEpKey> {
  const vip = dpAddr(e.vip);
  return { vip: vip.bytes, backend: dpAddr(e.backend).bytes, vip_port: e.vipPort, proto: protoNumber(e.protocol), family: vip.family };
}

function decodeKey(k: ValueOf<typeof NodeEpKey>): NodeEndpoint {
  const text = (b: Buffer) => formatAddr(k.family, b);
  return { vip: text(k.vip), vipPort: k.vip_port, protocol: k.proto === 6 ? 'tcp' : 'udp', backend: text(k.backend), port: 0 };
}

function parseEndpointKey(k: string): NodeEndpoint {
  const [vip, vipPort, protocol, backend] = k.split('|') as [string, string, Protocol, string];
  return { vip, vipPort: Number(vipPort), protocol, backend, port: 0 };
}

/**
 * The node programs as ferryd uses them: loaded and attached to its
 * interfaces when the first pair needs them (a load balancer without local
 * backends pays nothing on its interfaces), or at once when an earlier run
 * left pinned pairs, so that those are brought up to date.
 */
export class NodePrograms {
  private dp: NodeDatapath | undefined;
  private readonly ifnames = new Set<string>();

  constructor(private readonly opts: { pinRoot: string; sizes?: Partial<NodeSizes> }) {
    if (existsSync(join(opts.pinRoot, 'ferry_node_endpoints'))) this.load();
  }

  setEndpoints(list: readonly NodeEndpoint[]): void {
    if (this.dp === undefined && list.length === 0) return;
    this.load().setEndpoints(list);
  }

  forget(): void {
    this.dp?.reread();
  }

  /** The node programs' counters, summed over CPUs; empty while they are not loaded (no local endpoint yet). */
  counts(): Partial<Record<NodeCounterName, bigint>> {
    return this.dp?.counts() ?? {};
  }

  /** Ferry's interfaces: the filters go on each once the programs are loaded. */
  attach(ifname: string): void {
    this.ifnames.add(ifname);
    this.dp?.attach(ifname);
  }

  detach(ifname: string): void {
    this.ifnames.delete(ifname);
    this.dp?.detach(ifname);
  }

  close(): void {
    this.dp?.close();
    this.dp = undefined;
  }

  private load(): NodeDatapath {
    if (this.dp !== undefined) return this.dp;
    const dp = NodeDatapath.open(this.opts);
    try {
      for (const i of this.ifnames) dp.attach(i);
    } catch (err) {
      dp.close();
      throw err;
    }
    this.dp = dp;
    return dp;
  }
}
