/**
 * Conntrack as the daemon reads it (bpf/lib/conntrack.h): a flow's entry is
 * found the way xdp_lb finds it, by conntrack's hash of the 5-tuple (the
 * bucket) and its fingerprint. Only the datapath writes entries.
 */
import { CtBucket, CtEntry, FERRY_CT_WAYS, type FlowKeyV } from './abi.js';
import { ctHash } from './hash.js';
import { ceilPow2 } from './maps.js';
import type { NativeAddon } from './native.js';

/** Buckets for at least `entries` entries: a power of 2 (each bucket holds FERRY_CT_WAYS). */
export function ctBucketCount(entries: number): number {
  return ceilPow2(Math.ceil(entries / FERRY_CT_WAYS));
}

export interface CtFlowEntry {
  backend_id: number;
  backend_gen: number;
  /** Jiffies (low 32 bits) when the flow was last seen, to FERRY_CT_TOUCH_JIFFIES. */
  last_seen: number;
}

const EMPTY = 0n;
const BUSY = 1n;

export class Conntrack {
  private readonly key = Buffer.alloc(4);

  constructor(
    private readonly nat: NativeAddon,
    readonly fd: number,
    readonly buckets: number,
  ) {}

  /** The flow's entry, read from the map now, or undefined. */
  get(flow: FlowKeyV): CtFlowEntry | undefined {
    const { bucketHash, fingerprint } = ctHash(flow);
    this.key.writeUInt32LE((bucketHash & (this.buckets - 1)) >>> 0, 0);
    const raw = this.nat.mapLookup(this.fd, this.key);
    if (!raw) return undefined;
    for (let way = 0; way < FERRY_CT_WAYS; way++) {
      const e = CtEntry.decode(raw, way * CtEntry.size);
      if (e.fp !== fingerprint) continue;
      return { backend_id: e.backend_id, backend_gen: e.backend_gen, last_seen: lastSeen(raw, way) };
    }
    return undefined;
  }

  /** Entries in use, counted over the whole table. */
  count(): number {
    let n = 0;
    const { values } = this.nat.mapDump(this.fd);
    for (const raw of values) {
      for (let way = 0; way < FERRY_CT_WAYS; way++) {
        const fp = raw.readBigUInt64LE(way * CtEntry.size);
        if (fp !== EMPTY && fp !== BUSY) n++;
      }
    }
    return n;
  }
}

const LAST_SEEN_AT = CtBucket.layout.find((f) => f.name === 'last_seen')!.offset;

function lastSeen(raw: Buffer, way: number): number {
  return raw.readUInt32LE(LAST_SEEN_AT + 4 * way);
}
