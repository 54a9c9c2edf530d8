/**
 * The lab benchmark's BPF ends (bpf/bench.bpf.c): the traffic generator
 * xdp_gen and the backends' counting sink xdp_sink, with the TypeScript
 * mirror of their config and counters (test/unit/bench/bench-lab.test.ts checks the
 * mirror against BTF).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { bytes, struct, u16, u32, u64, type ValueOf } from '../src/datapath/struct.js';
import { loadNative, type BpfObject, type NativeAddon } from '../src/datapath/native.js';
import { bpfObjectPath } from '../src/paths.js';

/** The generator's frames are this long (GEN_FRAME_LEN). */
export const GEN_FRAME_LEN = 60;

/** Frames a generator behind schedule may send back to back to catch up (half a veth ring). */
export const MAX_CATCH_UP = 128;

export const GenConfig = struct('gen_config', {
  interval_ps: u64(),
  limit: u64(),
  max_lag_ps: u64(),
  src_base: u32(),
  src_count: u32(),
  port_count: u32(),
  port_base: u16(),
  ip_check: u16(),
  l4_check: u16(),
  group: u16(),
  pad: u32(),
  frame: bytes(GEN_FRAME_LEN),
  pad2: bytes(4),
});

export const GenState = struct('gen_state', {
  seq: u64(),
  next_ps: u64(),
  first_ns: u64(),
  last_ns: u64(),
  lagged_ns: u64(),
  in_group: u32(),
  lags: u32(),
});

export type GenConfigV = ValueOf<typeof GenConfig>;
export type GenStateV = ValueOf<typeof GenState>;

/** enum sink_counter */
export const SINK_TCP = 0;
export const SINK_UDP = 1;
export const SINK_IPIP = 2;
export const SINK_PASSED = 3;
export const SINK_MAX = 4;

export interface SinkCounts {
  tcp: number;
  udp: number;
  ipip: number;
  passed: number;
}

const key = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** Sum of a per-CPU u64 value. */
function perCpuSum(buf: Buffer | null): number {
  if (!buf) return 0;
  let s = 0n;
  for (let o = 0; o + 8 <= buf.length; o += 8) s += buf.readBigUInt64LE(o);
  return Number(s);
}

/**
 * One loaded copy of bench.bpf.o: its programs are pinned under `dir`
 * (prog_xdp_gen, prog_xdp_sink) so that a process in another namespace can
 * attach or run them; its maps stay this object's own (every backend loads
 * its own copy, so each has its own counters).
 */
export class BenchObject {
  readonly nat: NativeAddon;
  private readonly obj: BpfObject;
  private genConfig: GenConfigV | undefined;

  constructor(readonly dir: string) {
    this.nat = loadNative();
    mkdirSync(dir, { recursive: true });
    this.obj = this.nat.openObject(bpfObjectPath('bench'));
    try {
      this.obj.load();
      for (const p of ['xdp_gen', 'xdp_sink'] as const) this.nat.objPin(this.obj.programFd(p), this.progPin(p));
    } catch (err) {
      this.obj.close();
      throw err;
    }
  }

  progPin(name: 'xdp_gen' | 'xdp_sink'): string {
    return join(this.dir, `prog_${name}`);
  }

  /**
   * The generator's frames and flows: frame n of `template` comes from the
   * template's source address + n % srcCount and its source port +
   * (n / srcCount) % portCount (checksums follow). Emits nothing until armed.
   */
  setGen(template: Buffer, o: { srcCount: number; portCount: number }): void {
    if (template.length !== GEN_FRAME_LEN) throw new RangeError(`generator frames are ${GEN_FRAME_LEN} bytes, got ${template.length}`);
    const l4off = 14 + 20;
    const l4check = template[14 + 9] === 6 ? l4off + 16 : l4off + 6;
    this.genConfig = {
      interval_ps: 0n,
      limit: 0n,
      max_lag_ps: 0n,
      src_base: template.readUInt32BE(14 + 12),
      src_count: o.srcCount,
      port_count: o.portCount,
      port_base: template.readUInt16BE(l4off),
      // The checksums as 16-bit words in memory order, as the program reads them.
      ip_check: template.readUInt16LE(14 + 10),
      l4_check: template.readUInt16LE(l4check),
      group: 1,
      pad: 0,
      frame: template,
      pad2: Buffer.alloc(4),
    };
    this.writeGenConfig();
  }

  /**
   * Lets the generator emit `count` more frames at `rate` per second (0: as
   * fast as it can) in groups of `group`; returns the sequence number at
   * which it stops. Behind schedule, it catches up on at most
   * MAX_CATCH_UP frames at once.
   */
  armGen(rate: number, count: number, group: number): bigint {
    if (!this.genConfig) throw new Error('setGen first');
    const st = this.genState();
    const limit = st.seq + BigInt(count);
    this.nat.mapUpdate(
      this.obj.mapFd('bench_gen_state'),
      key(0),
      GenState.encode({ ...st, next_ps: 0n, first_ns: 0n, last_ns: 0n, lagged_ns: 0n, in_group: 0, lags: 0 }),
      0,
    );
    this.genConfig.interval_ps = rate > 0 ? BigInt(Math.round(1e12 / rate)) : 0n;
    this.genConfig.limit = limit;
    this.genConfig.group = Math.max(1, Math.min(group, 256));
    this.genConfig.max_lag_ps = this.genConfig.interval_ps * BigInt(Math.max(MAX_CATCH_UP - this.genConfig.group, 0));
    this.writeGenConfig();
    return limit;
  }

  genState(): GenStateV {
    return GenState.decode(this.nat.mapLookup(this.obj.mapFd('bench_gen_state'), key(0))!);
  }

  private writeGenConfig(): void {
    this.nat.mapUpdate(this.obj.mapFd('bench_gen_config'), key(0), GenConfig.encode(this.genConfig!), 0);
  }

  /** Destination ports the sink counts and drops. */
  setSinkPorts(tcp: number, udp: number): void {
    const fd = this.obj.mapFd('bench_sink_ports');
    for (const [i, port] of [tcp, udp].entries()) {
      const v = Buffer.alloc(2);
      v.writeUInt16LE(port);
      this.nat.mapUpdate(fd, key(i), v, 0);
    }
  }

  sinkCounts(): SinkCounts {
    const fd = this.obj.mapFd('bench_sink_counters');
    const at = (i: number) => perCpuSum(this.nat.mapLookup(fd, key(i)));
    return { tcp: at(SINK_TCP), udp: at(SINK_UDP), ipip: at(SINK_IPIP), passed: at(SINK_PASSED) };
  }

  close(): void {
    this.obj.close();
  }
}
