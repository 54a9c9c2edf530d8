/**
 * What the maps hold, as the reconciler knows it: read entry by entry from
 * the maps (observe) when a Reconciler starts or after forget(), then kept
 * up to date by the reconciler's own writes. Maglev tables are known by the
 * digest of their inputs: a table read from the maps gets the desired
 * digest when it equals the table built from the desired inputs, and
 * TABLE_FOREIGN otherwise.
 */
import { Backend } from '../datapath/abi.js';
import type { LbDatapath } from '../datapath/lb.js';
import { u32 } from '../datapath/maps.js';
import type { Desired, VipEntry } from './desired.js';
import { normalizePolicyKey } from './desired.js';
import { buildTables, TABLE_BATCH } from './tables.js';

/** An installed table whose inputs are unknown (or do not match): it must be rewritten. */
export const TABLE_FOREIGN = '#foreign';

export interface HashEntry {
  key: Buffer;
  value: Buffer;
}

export interface Known {
  config: Buffer | undefined;
  /** Every ferry_backends entry that is not all zero, by id. */
  backends: Map<number, Buffer>;
  /** Installed tables by VIP id: digest of their inputs, or TABLE_FOREIGN. */
  tables: Map<number, string>;
  /** Why a table is foreign, for verify(). */
  tableNotes: Map<number, string>;
  /** The VIP index (ferry_vip_index and its overflow ferry_vips) by key (hex). */
  vips: Map<string, HashEntry>;
  /** The address index (ferry_addr_index, ferry_vip_addrs) by key (hex). */
  addrs: Map<string, HashEntry>;
  /** ferry_policy by key (hex, bits beyond the prefix cleared). */
  policy: Map<string, HashEntry>;
  /** The VIP name each id was last written for (unknown after a restart). */
  vipNames: Map<number, string>;
}

/** Reads every map the reconciler owns. Tables of desired VIPs are compared slot by slot. */
export function observe(dp: LbDatapath, desired: Desired): Known {
  const nat = dp.nat;
  const known: Known = {
    config: copy(nat.mapLookup(dp.config.fd, u32(0))),
    backends: new Map(),
    tables: new Map(),
    tableNotes: new Map(),
    vips: reload(dp.vipIndex),
    addrs: reload(dp.addrIndex),
    policy: dumpHash(dp, dp.policy.fd, normalizePolicyKey),
    vipNames: new Map(),
  };
  const { keys, values } = nat.mapDump(dp.backends.fd);
  const zero = Buffer.alloc(Backend.size);
  keys.forEach((k, i) => {
    const v = values[i]!;
    if (!v.equals(zero)) known.backends.set(k.readUInt32LE(0), Buffer.from(v));
  });
  observeTables(dp, desired, known);
  return known;
}

/** Every VIP id's installed table, if any, against the desired one (built in batches: buildTables). */
function observeTables(dp: LbDatapath, desired: Desired, known: Known): void {
  let batch: Array<{ id: number; installed: Uint32Array; want: VipEntry }> = [];
  const compare = (): void => {
    const built = buildTables(
      batch.map((b) => b.want),
      desired.seed,
    );
    batch.forEach(({ id, installed, want }, i) => {
      const note = tableMismatch(installed, built[i]!);
      known.tables.set(id, note === undefined ? want.digest : TABLE_FOREIGN);
      if (note !== undefined) known.tableNotes.set(id, note);
    });
    batch = [];
  };
  for (let id = 0; id < dp.sizes.maxVips; id++) {
    const installed = dp.getMaglevTable(id);
    if (!installed) continue;
    const want = desired.vipById.get(id);
    if (want === undefined) {
      known.tables.set(id, TABLE_FOREIGN);
      known.tableNotes.set(id, 'no VIP has this id');
      continue;
    }
    batch.push({ id, installed, want });
    if (batch.length === TABLE_BATCH) compare();
  }
  if (batch.length > 0) compare();
}

/** Undefined when equal, else what differs. */
function tableMismatch(have: Uint32Array, want: Uint32Array): string | undefined {
  if (have.length !== want.length) return `M is ${have.length}, want ${want.length}`;
  let diff = 0;
  let first = -1;
  for (let i = 0; i < want.length; i++) {
    if (have[i] !== want[i]) {
      diff++;
      if (first < 0) first = i;
    }
  }
  if (diff === 0) return undefined;
  return `${diff} of ${want.length} slots differ (first: slot ${first} holds ${have[first]}, want ${want[first]})`;
}

/** An index read afresh (repairing what an interrupted write left), as key hex → entry. */
function reload(index: { load(): void; known(): Map<string, HashEntry> }): Map<string, HashEntry> {
  index.load();
  return index.known();
}

/** A hash map (or the trie) as key hex → entry, keys optionally normalized. */
function dumpHash(dp: LbDatapath, fd: number, norm: (k: Buffer) => Buffer = (k) => Buffer.from(k)): Map<string, HashEntry> {
  const { keys, values } = dp.nat.mapDump(fd);
  const out = new Map<string, HashEntry>();
  keys.forEach((k, i) => {
    const key = norm(k);
    out.set(key.toString('hex'), { key, value: Buffer.from(values[i]!) });
  });
  return out;
}

function copy(b: Buffer | null): Buffer | undefined {
  return b ? Buffer.from(b) : undefined;
}
