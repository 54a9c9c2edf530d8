/**
 * The DSR health-check path on the load balancer (bpf/hc.bpf.c): the ABI of
 * its maps, loading the object, its tc filters on Ferry's interfaces, and
 * the slots that tie a check socket's mark to a (VIP, backend) pair.
 * test/hc.test.ts checks the structs against the object's BTF.
 */
import { Counter } from './abi.js';
import { dpAddr } from './addr.js';
import { PerCpuArray, TypedMap } from './maps.js';
import { loadNative, type BpfObject, type NativeAddon, type TcOptions } from './native.js';
import { attachTcFilters, detachTcFilters } from './tc.js';
import { struct, u32, u8, u64, be16, bytes, type ValueOf } from './struct.js';
import { bpfObjectPath } from '../paths.js';

export const HC_MARK_BASE = 0x46520000;
export const HC_MARK_MASK = 0xffff0000;
export const HC_MAX_SLOTS = 65536;

/** enum hc_counter */
export const HC_COUNTERS = ['encap', 'reply', 'no_target', 'mismatch', 'unsupported', 'error'] as const;
export type HcCounterName = (typeof HC_COUNTERS)[number];

const addr = () => bytes(16, 4);

export const HcTarget = struct('hc_target', {
  vip: addr(),
  backend: addr(),
  family: u8(),
  pad: bytes(7),
  packets: u64(),
});

export const HcFlowKey = struct('hc_flow_key', {
  local: addr(),
  vip: addr(),
  local_port: be16(),
  vip_port: be16(),
  family: u8(),
  proto: u8(),
  pad: bytes(2),
});

export const HcFlow = struct('hc_flow', { backend: addr(), seen_ns: u64() });

export const U32Key = struct('__u32', { v: u32() });

export const HC_STRUCTS = [HcTarget, HcFlowKey, HcFlow] as const;

/**
 * The filters' place on an interface: a handle and priority of their own
 * ("FR"), not the defaults of `tc filter add ... bpf` (priority 49152,
 * handle 1) nor 1/1, so an operator's filter is never replaced. The programs
 * answer TC_ACT_UNSPEC for packets not theirs: later filters still run.
 */
export const HC_TC: Readonly<Required<TcOptions>> = Object.freeze({ handle: 0x4652, priority: 0x4652 });

export type HcTargetV = ValueOf<typeof HcTarget>;

/** What the API would call a pair: the slot holds it, the mark names the slot. */
export interface HcPair {
  vip: string;
  backend: string;
}

const pairKey = (p: HcPair): string => `${p.vip}|${p.backend}`;

export class HcDatapath {
  readonly targets: TypedMap<typeof U32Key, typeof HcTarget>;
  readonly counters: PerCpuArray<typeof Counter>;
  private readonly egressFd: number;
  private readonly ingressFd: number;
  private readonly slots = new Map<string, number>();
  private readonly free: number[] = [];
  private nextSlot = 0;

  private constructor(
    readonly nat: NativeAddon,
    private readonly obj: BpfObject,
  ) {
    this.egressFd = obj.programFd('tc_hc_egress');
    this.ingressFd = obj.programFd('tc_hc_ingress');
    this.targets = new TypedMap(nat, obj.mapFd('ferry_hc_targets'), 'ferry_hc_targets', U32Key, HcTarget);
    this.counters = new PerCpuArray(nat, obj.mapFd('ferry_hc_counters'), 'ferry_hc_counters', Counter, nat.numPossibleCpus());
  }

  /** Loads bpf/hc.bpf.o (its maps are private to this process: nothing is pinned). */
  static open(objectPath = bpfObjectPath('hc')): HcDatapath {
    const nat = loadNative();
    const obj = nat.openObject(objectPath);
    try {
      obj.load();
      return new HcDatapath(nat, obj);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** Puts the filters on an interface (replacing a previous daemon's). */
  attach(ifname: string): void {
    attachTcFilters(
      this.nat,
      ifname,
      [
        ['egress', this.egressFd],
        ['ingress', this.ingressFd],
      ],
      HC_TC,
    );
  }

  /** Takes the filters off; an interface that is gone or has none is not an error. */
  detach(ifname: string): void {
    detachTcFilters(this.nat, ifname, HC_TC);
  }

  /** The mark of a pair's check sockets, allocating and writing its slot on first use. */
  markFor(p: HcPair): number {
    return (HC_MARK_BASE | this.slotFor(p)) >>> 0;
  }

  /** Packets encapsulated for a pair so far (0 before its first). */
  sent(p: HcPair): bigint {
    const slot = this.slots.get(pairKey(p));
    if (slot === undefined) return 0n;
    return this.targets.get({ v: slot })?.packets ?? 0n;
  }

  /** Frees the slots of pairs no longer checked through the tunnel. */
  retain(pairs: Iterable<HcPair>): void {
    const keep = new Set<string>();
    for (const p of pairs) keep.add(pairKey(p));
    for (const [k, slot] of this.slots) {
      if (keep.has(k)) continue;
      this.slots.delete(k);
      this.targets.delete({ v: slot });
      this.free.push(slot);
    }
  }

  /** Counters by reason, summed over CPUs. */
  counts(): Record<HcCounterName, bigint> {
    const out = {} as Record<HcCounterName, bigint>;
    HC_COUNTERS.forEach((name, i) => {
      out[name] = this.counters.sum(i).packets;
    });
    return out;
  }

  get pairs(): number {
    return this.slots.size;
  }

  /** Releases the object. The filters stay attached until detach() or a replacement. */
  close(): void {
    this.obj.close();
  }

  private slotFor(p: HcPair): number {
    const k = pairKey(p);
    const have = this.slots.get(k);
    if (have !== undefined) return have;
    const vip = dpAddr(p.vip);
    const backend = dpAddr(p.backend);
    if (vip.family !== backend.family) {
      throw new RangeError(
        `backend ${p.backend} is IPv${backend.family} and VIP ${p.vip} IPv${vip.family}: a check cannot take the tunnel across families`,
      );
    }
    const slot = this.free.pop() ?? this.nextSlot;
    if (slot >= HC_MAX_SLOTS) throw new RangeError(`more than ${HC_MAX_SLOTS} backends checked through the tunnel`);
    if (slot === this.nextSlot) this.nextSlot++;
    this.targets.set({ v: slot }, { vip: vip.bytes, backend: backend.bytes, family: vip.family, pad: Buffer.alloc(7), packets: 0n });
    this.slots.set(k, slot);
    return slot;
  }
}
