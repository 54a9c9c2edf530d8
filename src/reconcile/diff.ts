/**
 * Desired against known: the writes and deletes that make the maps equal to
 * the desired state, grouped by the phase they run in (see reconciler.ts
 * for the order), and their description for verify().
 */
import {
  Backend,
  BACKEND_ACTIVE,
  BACKEND_DOWN,
  BACKEND_DRAINING,
  BACKEND_FREE,
  FERRY_AF_INET,
  FERRY_AF_INET6,
  POLICY_ALLOW,
  POLICY_DENY,
  PolicyKey,
  PolicyValue,
  VipAddrKey,
  VipKey,
  VipMeta,
} from '../datapath/abi.js';
import { formatAddr } from '../datapath/addr.js';
import { backendLabel, type BackendEntry, type Desired, type KeyedEntry, type Scope, type VipEntry } from './desired.js';
import type { HashEntry, Known } from './known.js';

export interface BackendWrite {
  entry: BackendEntry;
  /** What the map holds now (undefined = all zero). */
  have: Buffer | undefined;
  /** The id changes hands (new generation or was free): zero its counters. */
  resetStats: boolean;
}

export interface VipWrite {
  entry: VipEntry;
  have: Buffer | undefined;
  /** The VIP id is new or changed VIPs: zero its counters. */
  resetStats: boolean;
  /** Zero the GCRA state: new id or new rate-limit parameters. */
  resetRate: boolean;
}

export interface KeyedWrite {
  keyHex: string;
  entry: KeyedEntry;
  have: Buffer | undefined;
}

export interface Removal {
  keyHex: string;
  entry: HashEntry;
}

export interface Ops {
  config: Buffer | undefined;
  /** Stale VIP entries leading to an id that another VIP is about to take: removed first. */
  vipEarlyDeletes: Removal[];
  /** Backends gaining use (new, reallocated, or to a more usable state): before the tables. */
  backendUps: BackendWrite[];
  tables: VipEntry[];
  policyPuts: KeyedWrite[];
  addrPuts: KeyedWrite[];
  vipPuts: VipWrite[];
  /** Backends losing use (active → draining/down, draining → down): after the tables stop naming them. */
  backendDowns: BackendWrite[];
  vipDeletes: Removal[];
  tableDeletes: number[];
  addrDeletes: Removal[];
  policyDeletes: Removal[];
  /** Ids referenced by no VIP or tombstone: zeroed (state FREE). */
  backendFrees: number[];
}

/** How usable a backend state is, for ordering writes. */
const RANK: Record<number, number> = {
  [BACKEND_FREE]: 0,
  [BACKEND_DOWN]: 1,
  [BACKEND_DRAINING]: 2,
  [BACKEND_ACTIVE]: 3,
};

/**
 * What differs between desired and known: everywhere, or (with a scope) only
 * among the keys the scope names, which are all that can have changed
 * since the last apply made the maps equal to the desired contents.
 */
export function diff(d: Desired, k: Known, scope?: Scope): Ops {
  const ops: Ops = {
    config: k.config?.equals(d.config) ? undefined : d.config,
    vipEarlyDeletes: [],
    backendUps: [],
    tables: [],
    policyPuts: [],
    addrPuts: [],
    vipPuts: [],
    backendDowns: [],
    vipDeletes: [],
    tableDeletes: [],
    addrDeletes: [],
    policyDeletes: [],
    backendFrees: [],
  };
  const backendIds = scope?.backends ?? union(d.backends.keys(), k.backends.keys());
  for (const id of backendIds) diffBackend(d.backends.get(id), k.backends.get(id), id, ops);
  diffVips(d, k, ops, scope);
  const vipIds = scope?.vipIds ?? union(d.vipById.keys(), k.tables.keys());
  for (const id of vipIds) {
    const v = d.vipById.get(id);
    if (v && k.tables.get(id) !== v.digest) ops.tables.push(v);
    else if (!v && k.tables.has(id)) ops.tableDeletes.push(id);
  }
  diffKeyed(d.addrs, k.addrs, scope?.addrs, ops.addrPuts, ops.addrDeletes);
  diffKeyed(d.policy, k.policy, scope?.policy, ops.policyPuts, ops.policyDeletes);
  return ops;
}

function union<T>(a: Iterable<T>, b: Iterable<T>): Set<T> {
  const out = new Set(a);
  for (const x of b) out.add(x);
  return out;
}

function diffBackend(e: BackendEntry | undefined, have: Buffer | undefined, id: number, ops: Ops): void {
  if (!e) {
    if (have) ops.backendFrees.push(id);
    return;
  }
  if (have?.equals(e.value)) return;
  const h = have ? Backend.decode(have) : undefined;
  const resetStats = !h || h.state === BACKEND_FREE || h.gen !== e.gen;
  const sameHolder = h !== undefined && !resetStats && h.vip_id === e.vipId && h.addr.equals(e.value.subarray(0, 16));
  const down = sameHolder && (RANK[e.state] ?? 0) < (RANK[h.state] ?? 0);
  (down ? ops.backendDowns : ops.backendUps).push({ entry: e, have, resetStats });
}

function diffVips(d: Desired, k: Known, ops: Ops, scope: Scope | undefined): void {
  // Without a scope, whether an id was in the maps at all; with one, the name it was last written for says it.
  let knownIds: Set<number> | undefined;
  if (!scope) {
    knownIds = new Set();
    for (const e of k.vips.values()) knownIds.add(vipIdOf(e.value));
  }
  const keys = scope?.vipKeys ?? union(d.vips.keys(), k.vips.keys());
  for (const keyHex of keys) {
    const v = d.vips.get(keyHex);
    if (!v) continue;
    const have = k.vips.get(keyHex)?.value;
    if (have?.equals(v.value)) continue;
    const name = k.vipNames.get(v.vip.id);
    const resetStats = knownIds ? !knownIds.has(v.vip.id) || (name !== undefined && name !== v.vip.name) : name !== v.vip.name;
    const rateChanged = !have || !have.subarray(8).equals(v.value.subarray(8));
    ops.vipPuts.push({ entry: v, have, resetStats, resetRate: resetStats || rateChanged });
  }
  for (const keyHex of keys) {
    const e = k.vips.get(keyHex);
    if (!e) continue;
    const want = d.vips.get(keyHex);
    const owner = d.vipById.get(vipIdOf(e.value));
    // This entry leads to an id whose table and backends another key is about to get.
    const misled = owner !== undefined && owner.keyHex !== keyHex;
    if (misled) ops.vipEarlyDeletes.push({ keyHex, entry: e });
    else if (!want) ops.vipDeletes.push({ keyHex, entry: e });
  }
}

/** vip_meta.vip_id (the first u32). */
const vipIdOf = (value: Buffer): number => value.readUInt32LE(0);

function diffKeyed(
  want: Map<string, KeyedEntry>,
  have: Map<string, HashEntry>,
  scope: Set<string> | undefined,
  puts: KeyedWrite[],
  dels: Removal[],
): void {
  for (const keyHex of scope ?? union(want.keys(), have.keys())) {
    const e = want.get(keyHex);
    const h = have.get(keyHex);
    if (e && !h?.value.equals(e.value)) puts.push({ keyHex, entry: e, have: h?.value });
    else if (!e && h) dels.push({ keyHex, entry: h });
  }
}

/** The number of writes and deletes in ops (stats resets not included). */
export function opCount(ops: Ops): number {
  return (
    (ops.config ? 1 : 0) +
    ops.vipEarlyDeletes.length +
    ops.backendUps.length +
    ops.tables.length +
    ops.policyPuts.length +
    ops.addrPuts.length +
    ops.vipPuts.length +
    ops.backendDowns.length +
    ops.vipDeletes.length +
    ops.tableDeletes.length +
    ops.addrDeletes.length +
    ops.policyDeletes.length +
    ops.backendFrees.length
  );
}

// ---- descriptions (verify) ---------------------------------------------------

const STATE_NAME: Record<number, string> = {
  [BACKEND_FREE]: 'free',
  [BACKEND_ACTIVE]: 'active',
  [BACKEND_DRAINING]: 'draining',
  [BACKEND_DOWN]: 'down',
};

/** One line per difference, in phase order. */
export function describe(ops: Ops, k: Known): string[] {
  const out: string[] = [];
  if (ops.config) out.push('config: differs');
  for (const r of [...ops.vipEarlyDeletes, ...ops.vipDeletes]) out.push(`ferry_vips: stale entry ${vipText(r.entry)}`);
  for (const w of [...ops.backendUps, ...ops.backendDowns]) {
    out.push(
      `backend ${w.entry.id} (${backendLabel(w.entry)}): ${w.have ? `have ${backendText(w.have)}` : 'missing'}, want ${backendText(w.entry.value)}`,
    );
  }
  for (const v of ops.tables) {
    const note = k.tables.has(v.vip.id) ? (k.tableNotes.get(v.vip.id) ?? 'inputs changed') : 'missing';
    out.push(`table of ${v.label}: ${note}`);
  }
  for (const id of ops.tableDeletes) out.push(`table of VIP id ${id}: stale (${k.tableNotes.get(id) ?? 'no VIP has this id'})`);
  for (const w of ops.vipPuts) {
    out.push(`${w.entry.label}: ${w.have ? `have ${vipMetaText(w.have)}` : 'missing'}, want ${vipMetaText(w.entry.value)}`);
  }
  for (const w of ops.addrPuts) out.push(`ferry_vip_addrs: ${w.entry.label} ${w.have ? 'has wrong flags' : 'missing'}`);
  for (const r of ops.addrDeletes) out.push(`ferry_vip_addrs: stale address ${addrText(r.entry)}`);
  for (const w of ops.policyPuts) out.push(`ferry_policy: ${w.entry.label} ${w.have ? 'has the wrong action' : 'missing'}`);
  for (const r of ops.policyDeletes) out.push(`ferry_policy: stale rule ${policyText(r.entry)}`);
  for (const id of ops.backendFrees) {
    const h = k.backends.get(id);
    out.push(`backend ${id}: referenced by nothing, holds ${h ? backendText(h) : '?'}`);
  }
  return out;
}

function backendText(b: Buffer): string {
  const v = Backend.decode(b);
  const addr = v.family === 0 ? '-' : formatAddr(v.family, v.addr);
  return `{${addr} ${STATE_NAME[v.state] ?? `state ${v.state}`} vip ${v.vip_id} gen ${v.gen}}`;
}

function vipText(e: HashEntry): string {
  const k = VipKey.decode(e.key);
  const addr = k.family === 0 ? e.key.toString('hex') : formatAddr(k.family, k.addr);
  return `${addr}:${k.port}/${k.proto} → ${vipMetaText(e.value)}`;
}

function vipMetaText(b: Buffer): string {
  const m = VipMeta.decode(b);
  return `{id ${m.vip_id} flags ${m.flags} rl ${m.rl_interval_ns}/${m.rl_tolerance_ns}}`;
}

function addrText(e: HashEntry): string {
  const k = VipAddrKey.decode(e.key);
  return k.family === 0 ? e.key.toString('hex') : formatAddr(k.family, k.addr);
}

/** A trie entry as "vip N deny 10.0.0.0/8" (IPv4 shown unmapped). */
function policyText(e: HashEntry): string {
  const k = PolicyKey.decode(e.key);
  const bits = k.prefixlen - 32;
  const mapped = k.addr.subarray(0, 12).equals(V4_MAPPED) && bits >= 96;
  const cidr = mapped ? `${formatAddr(FERRY_AF_INET, k.addr.subarray(12))}/${bits - 96}` : `${formatAddr(FERRY_AF_INET6, k.addr)}/${bits}`;
  const action = PolicyValue.decode(e.value).action;
  return `vip ${k.vip_id} ${action === POLICY_DENY ? 'deny' : action === POLICY_ALLOW ? 'allow' : `action ${action}`} ${cidr}`;
}

const V4_MAPPED = Buffer.from('00000000000000000000ffff', 'hex');
