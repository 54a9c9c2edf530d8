/**
 * A loaded xdp_lb in a private pin directory, with helpers to declare VIPs
 * and backends and to push frames through BPF_PROG_TEST_RUN. Used by the
 * datapath tests and the datapath benchmark.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, existsSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { FERRY_AF_INET, FERRY_AF_INET6, CFG_F_SKIP_FIB, type FlowKeyV } from '../../src/datapath/abi.js';
import { hostMask, dpAddr, dpCidr } from '../../src/datapath/addr.js';
import { flowHash } from '../../src/datapath/hash.js';
import { LbDatapath, type LbSizes } from '../../src/datapath/lb.js';
import { BPF_F_TEST_XDP_LIVE_FRAMES, loadNative } from '../../src/datapath/native.js';
import { bpfObjectPath } from '../../src/paths.js';
import {
  programBackend,
  programConfig,
  programTable,
  programVip,
  type BackendProgram,
  type ConfigProgram,
  type VipProgram,
} from '../../src/datapath/program.js';

export const BPFFS = '/sys/fs/bpf';
export const XDP_ABORTED = 0;
export const XDP_DROP = 1;
export const XDP_PASS = 2;
export const XDP_TX = 3;
export const XDP_REDIRECT = 4;

export const SEED = 0x5eed1234;
export const SRC4 = '198.19.255.0/24';
export const SRC6 = '2001:db8:ff::/112';
export const GW_MAC = Buffer.from('02000000fe01', 'hex');

/** Why BPF tests cannot run here, or undefined when they can. */
export function bpfUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (BPF and bpffs)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'kernel has no BTF';
  return undefined;
}

let liveFramesProbe: { why: string | undefined } | undefined;

/**
 * Why BPF_PROG_TEST_RUN's live-frames mode cannot run here, or undefined when
 * it can. Some kernels refuse it (EPERM on 6.18 builds without it) while
 * every other test-run works; the answer is probed once, with the baseline
 * program passing one non-IP frame to lo's stack, which discards it.
 */
export function liveFramesUnavailable(): string | undefined {
  if (liveFramesProbe) return liveFramesProbe.why;
  const nat = loadNative();
  const obj = nat.openObject(bpfObjectPath('baseline'));
  try {
    obj.load();
    const frame = Buffer.alloc(64);
    frame.fill(0xff, 0, 6);
    frame.writeUInt16BE(0x88b5, 12); // a local experimental ethertype: no protocol takes it
    nat.progTestRun(obj.programFd('xdp_baseline'), { data: frame, flags: BPF_F_TEST_XDP_LIVE_FRAMES, repeat: 1 });
    liveFramesProbe = { why: undefined };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    liveFramesProbe = { why: `the kernel refuses BPF_PROG_TEST_RUN in live-frames mode (${code})` };
  } finally {
    obj.close();
  }
  return liveFramesProbe.why;
}

/** Mounts bpffs at /sys/fs/bpf when it is missing, as systemd would. */
export function ensureBpffs(): void {
  try {
    execFileSync('mountpoint', ['-q', BPFFS]);
  } catch {
    execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS]);
  }
}

/** A VIP as the tests declare it: M defaults to 251 to keep tables small. */
export type VipSpec = Omit<VipProgram, 'm'> & { m?: number };

export class LbHarness {
  readonly dp: LbDatapath;
  readonly tables = new Map<number, Uint32Array>();
  readonly vipSpecs = new Map<number, VipProgram>();

  constructor(
    readonly pinRoot: string,
    sizes: Partial<LbSizes> = {},
  ) {
    ensureBpffs();
    rmSync(pinRoot, { recursive: true, force: true });
    mkdirSync(pinRoot, { recursive: true });
    this.dp = LbDatapath.open({
      pinRoot,
      sizes: { ctSize: 4096, maxBackends: 1024, maxVips: 64, maxVipAddrs: 64, maxPolicyRules: 256, maglevSlots: 1 << 20, ...sizes },
    });
    this.setConfig({});
  }

  /** The global config; live events stay off unless eventsPerSecond is given. */
  setConfig(o: {
    flags?: number;
    gwMac?: Buffer;
    src4?: string | null;
    src6?: string | null;
    nexthopCache?: boolean;
    eventsFlowSample?: number;
    eventsPerSecond?: number;
    eventsCpus?: number;
    recordAfterHandshake?: boolean;
    snat?: ConfigProgram['snat'];
  }): void {
    programConfig(this.dp, {
      seed: SEED,
      src4: o.src4 === undefined ? SRC4 : o.src4,
      src6: o.src6 === undefined ? SRC6 : o.src6,
      gwMac: o.gwMac ?? GW_MAC,
      skipFib: (o.flags ?? CFG_F_SKIP_FIB) === CFG_F_SKIP_FIB,
      nexthopCache: o.nexthopCache ?? true,
      recordAfterHandshake: o.recordAfterHandshake ?? false,
      eventsFlowSample: o.eventsFlowSample ?? 0,
      eventsPerSecond: o.eventsPerSecond ?? 0,
      ...(o.eventsCpus === undefined ? {} : { eventsCpus: o.eventsCpus }),
      ...(o.snat ? { snat: o.snat } : {}),
    });
  }

  /** Declares a VIP, its backends and its Maglev table (M = 251 unless given). */
  vip(spec: VipSpec): void {
    spec.m ??= 251;
    const v = spec as VipProgram; // the same object: tests edit it, then rebuildTable()
    this.vipSpecs.set(spec.id, v);
    this.tables.set(spec.id, programVip(this.dp, v, SEED));
  }

  backend(vipId: number, b: BackendProgram): void {
    programBackend(this.dp, vipId, b);
  }

  /** Recomputes and installs a VIP's table from its active backends. */
  rebuildTable(vipId: number): Uint32Array {
    const table = programTable(this.dp, this.vipSpecs.get(vipId)!, SEED);
    this.tables.set(vipId, table);
    return table;
  }

  /** The backend id the TypeScript model expects for a new flow. */
  expectedBackend(vipId: number, flow: FlowKeyV, srcAffinity = false): number {
    const table = this.tables.get(vipId)!;
    return table[flowHash(flow, SEED, srcAffinity) % table.length]!;
  }

  run(data: Buffer): { retval: number; out: Buffer } {
    const r = this.dp.nat.progTestRun(this.dp.progFd, { data, dataOutSize: data.length + 256 });
    return { retval: r.retval, out: r.data };
  }

  close(): void {
    this.dp.close();
    rmSync(this.pinRoot, { recursive: true, force: true });
  }
}

/** The flow key xdp_lb builds for a packet (ports in host numbers). */
export function flowOf(src: string, dst: string, sport: number, dport: number, proto: number): FlowKeyV {
  const s = dpAddr(src);
  const d = dpAddr(dst);
  return {
    src: s.bytes,
    dst: d.bytes,
    sport,
    dport,
    proto,
    family: isIPv4(src) ? FERRY_AF_INET : FERRY_AF_INET6,
    pad: 0,
  };
}

/** The outer source xdp_lb derives for a flow hash: prefix | (hash & hostmask), word-wise in memory order. */
export function expectedOuterSource(family: number, hash: number): Buffer {
  if (family === FERRY_AF_INET) {
    const c = dpCidr(SRC4);
    const prefix = c.addr.bytes.readUInt32LE(0);
    const mask = hostMask(c.prefix, 32).readUInt32LE(0);
    const out = Buffer.alloc(4);
    out.writeUInt32LE((prefix | (hash & mask)) >>> 0, 0);
    return out;
  }
  const c = dpCidr(SRC6);
  const out = Buffer.from(c.addr.bytes);
  const mask = hostMask(Math.max(c.prefix - 96, 0), 32).readUInt32LE(0);
  out.writeUInt32LE((out.readUInt32LE(12) | (hash & mask)) >>> 0, 12);
  return out;
}
