/**
 * A DpState in map terms: for every map, the exact key and value bytes it
 * should hold. Everything a write could trip over (ids out of range,
 * duplicates, bad addresses, bad table sizes, capacities) is checked here,
 * before the reconciler touches a single entry.
 */
import {
  Backend, BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING, FERRY_AF_INET, FERRY_BACKEND_NONE, LbConfig, PolicyKey,
  PolicyValue, POLICY_ALLOW, POLICY_DENY, VIP_ADDR_F_ECHO, VipAddrKey, VipAddrMeta, VipKey, VipMeta,
} from '../datapath/abi.js';
import { mappedBytes, parseAddr, parseCidr, type DpAddr, type DpCidr } from '../datapath/addr.js';
import { encodeConfig, protoNumber, type ConfigProgram } from '../datapath/program.js';
import { MAGLEV_MAX_WEIGHT, validateMaglevM, type MaglevBackend } from '../maglev/index.js';
import type { DpBackend, DpBackendState, DpState, DpVip } from '../model/dpstate.js';
import { clearHostBits } from './plan.js';

/** Map capacities the desired state must fit in (LbDatapath.sizes). */
export interface Capacity {
  maxVips: number;
  maxVipAddrs: number;
  /** Conntrack entries: sizes ferry_ct, whose bucket mask the config carries. */
  ctSize: number;
  /** Slots of ferry_maglev, which holds every VIP's table (M + 1 slots each). */
  maglevSlots: number;
  maxBackends: number;
  maxPolicyRules: number;
}

/** One ferry_backends entry. */
export interface BackendEntry {
  id: number;
  vipId: number;
  state: number;
  gen: number;
  value: Buffer;
  /** For messages: "198.18.1.1 of VIP web". */
  label: string;
}

/** One VIP: its ferry_vips entry and its Maglev table inputs. */
export interface VipEntry {
  vip: DpVip;
  key: Buffer;
  keyHex: string;
  value: Buffer;
  /** Backends with slots (state active, weight > 0), sorted by id. */
  slotted: MaglevBackend[];
  /** Identifies the table: m, seed and the slotted backends. */
  digest: string;
  label: string;
}

/** An entry of a hash map or of the policy trie. */
export interface KeyedEntry {
  key: Buffer;
  value: Buffer;
  label: string;
}

export interface Desired {
  config: Buffer;
  seed: number;
  backends: Map<number, BackendEntry>;
  /** By VIP key (hex). */
  vips: Map<string, VipEntry>;
  vipById: Map<number, VipEntry>;
  /** By address key (hex). */
  addrs: Map<string, KeyedEntry>;
  /** By policy key (hex). */
  policy: Map<string, KeyedEntry>;
}

/** Thrown for a state the datapath cannot hold; nothing has been written. */
export class ReconcileError extends Error {
  override readonly name = 'ReconcileError';
}

const STATE_CODE: Record<DpBackendState, number> = {
  active: BACKEND_ACTIVE,
  draining: BACKEND_DRAINING,
  down: BACKEND_DOWN,
};

/** Memo of parsed addresses: states repeat the same texts apply after apply. */
export class AddrCache {
  private readonly map = new Map<string, DpAddr>();

  parse(text: string, what: string): DpAddr {
    let a = this.map.get(text);
    if (a) return a;
    try {
      a = parseAddr(text);
    } catch {
      throw new ReconcileError(`${what}: not an IP address: ${JSON.stringify(text)}`);
    }
    if (this.map.size >= 1 << 18) this.map.clear();
    this.map.set(text, a);
    return a;
  }
}

/** One VIP's share of the desired maps, memoised by the fingerprint of its inputs. */
interface VipParts {
  fingerprint: string;
  entry: VipEntry;
  backends: BackendEntry[];
  addrHex: string;
  addr: KeyedEntry;
  rules: Map<string, KeyedEntry>;
}

/**
 * What desire() can reuse from one apply to the next: parsed addresses and,
 * per VIP id, the encoded entries of a VIP whose inputs did not change (a
 * one-backend change then re-encodes one VIP, not all of them).
 */
export class DesireCache {
  readonly addrs = new AddrCache();
  vips = new Map<number, VipParts>();
}

/** Encodes and checks a whole state. */
export function desire(state: DpState, config: ConfigProgram, cap: Capacity, cache = new DesireCache()): Desired {
  const d: Desired = {
    config: LbConfig.encode(encodeConfig(config, cap)),
    seed: config.seed >>> 0,
    backends: new Map(),
    vips: new Map(),
    vipById: new Map(),
    addrs: new Map(),
    policy: new Map(),
  };
  const memo = new Map<number, VipParts>();
  for (const v of state.vips) {
    const fingerprint = vipFingerprint(v, d.seed);
    const old = cache.vips.get(v.id);
    const parts = old?.fingerprint === fingerprint ? old : vipParts(v, fingerprint, d.seed, cap, cache.addrs);
    addParts(d, parts);
    memo.set(v.id, parts);
  }
  for (const t of state.tombstones) {
    const label = `tombstone ${t.address} of VIP id ${t.vipId}`;
    addBackendEntry(d, backendEntry({ ...t, state: 'draining' }, t.vipId, cap, cache.addrs, label));
  }
  checkCapacity(d, cap);
  cache.vips = memo;
  return d;
}

/** Everything a VIP's entries are computed from, as one string. */
function vipFingerprint(v: DpVip, seed: number): string {
  let s = `${seed}|${v.id}|${v.name}|${v.address}|${v.port}|${v.protocol}|${v.flags}|${v.m}|` +
    `${v.rlIntervalNs}|${v.rlToleranceNs}|${v.allow.join(',')}|${v.deny.join(',')}|`;
  for (const b of v.backends) s += `${b.id},${b.gen},${b.address},${b.weight},${b.state};`;
  return s;
}

/** Encodes and checks one VIP on its own (checks across VIPs are in addParts). */
function vipParts(v: DpVip, fingerprint: string, seed: number, cap: Capacity, addrs: AddrCache): VipParts {
  const where = `VIP ${v.name}`;
  checkId(v.id, cap.maxVips, `${where}: id`);
  try {
    validateMaglevM(v.m);
  } catch (err) {
    throw new ReconcileError(`${where}: ${(err as Error).message}`);
  }
  const a = addrs.parse(v.address, `${where}: address`);
  const key = VipKey.encode({ addr: a.bytes, port: v.port, proto: protoNumber(v.protocol), family: a.family });
  const value = VipMeta.encode({
    vip_id: v.id, flags: v.flags >>> 0, rl_interval_ns: v.rlIntervalNs, rl_tolerance_ns: v.rlToleranceNs,
  });
  const backends = v.backends.map((b) => backendEntry(b, v.id, cap, addrs, `${b.address} of ${where}`));
  const slotted = slottedBackends(v);
  const entry: VipEntry = {
    vip: v, key, keyHex: key.toString('hex'), value, slotted, digest: tableDigest(v.m, seed, slotted),
    label: `${where} (${v.address}:${v.port}/${v.protocol}, id ${v.id})`,
  };
  const addrKey = VipAddrKey.encode({ addr: a.bytes, family: a.family, pad: Buffer.alloc(3) });
  const addr = { key: addrKey, value: VipAddrMeta.encode({ flags: VIP_ADDR_F_ECHO }), label: `address ${v.address}` };
  return { fingerprint, entry, backends, addrHex: addrKey.toString('hex'), addr, rules: vipRules(v) };
}

/** Adds one VIP's entries, refusing ids and keys another VIP already has. */
function addParts(d: Desired, p: VipParts): void {
  const { vip, keyHex } = p.entry;
  const where = `VIP ${vip.name}`;
  const sameId = d.vipById.get(vip.id);
  if (sameId) throw new ReconcileError(`${where}: id ${vip.id} is also VIP ${sameId.vip.name}`);
  const sameKey = d.vips.get(keyHex);
  if (sameKey) throw new ReconcileError(`${where}: ${vip.address}:${vip.port}/${vip.protocol} is also VIP ${sameKey.vip.name}`);
  d.vips.set(keyHex, p.entry);
  d.vipById.set(vip.id, p.entry);
  for (const b of p.backends) addBackendEntry(d, b);
  if (!d.addrs.has(p.addrHex)) d.addrs.set(p.addrHex, p.addr);
  for (const [k, r] of p.rules) d.policy.set(k, r);
}

/** Adds a backend entry; ids are unique over every VIP and tombstone. */
function addBackendEntry(d: Desired, e: BackendEntry): void {
  const other = d.backends.get(e.id);
  if (other) throw new ReconcileError(`backend ${e.label}: id ${e.id} is also backend ${other.label}`);
  d.backends.set(e.id, e);
}

/** Encodes and checks one backend. */
function backendEntry(b: DpBackend, vipId: number, cap: Capacity, addrs: AddrCache, label: string): BackendEntry {
  checkId(b.id, cap.maxBackends, `backend ${label}: id`);
  if (!Number.isInteger(b.gen) || b.gen < 0 || b.gen > 0xffffffff) {
    throw new ReconcileError(`backend ${label}: gen must be a u32, got ${String(b.gen)}`);
  }
  if (!Number.isInteger(b.weight) || b.weight < 0 || b.weight > MAGLEV_MAX_WEIGHT) {
    throw new ReconcileError(`backend ${label}: weight must be an integer 0..${MAGLEV_MAX_WEIGHT}, got ${String(b.weight)}`);
  }
  const a = addrs.parse(b.address, `backend ${label}`);
  const state = STATE_CODE[b.state];
  if (state === undefined) throw new ReconcileError(`backend ${label}: unknown state ${JSON.stringify(b.state)}`);
  const value = Backend.encode({ addr: a.bytes, family: a.family, state, pad: 0, vip_id: vipId, gen: b.gen });
  return { id: b.id, vipId, state, gen: b.gen, value, label };
}

/** The backends that get Maglev slots, sorted by id; their keys must be unique. */
function slottedBackends(v: DpVip): MaglevBackend[] {
  const out = v.backends
    .filter((b) => b.state === 'active' && b.weight > 0)
    .map((b) => ({ id: b.id, key: b.address, weight: b.weight }))
    .sort((x, y) => x.id - y.id);
  const keys = new Set<string>();
  for (const b of out) {
    if (keys.has(b.key)) throw new ReconcileError(`VIP ${v.name}: backend ${b.key} appears twice`);
    keys.add(b.key);
  }
  return out;
}

/** Everything a VIP's table is computed from; equal digests mean equal tables. */
export function tableDigest(m: number, seed: number, slotted: readonly MaglevBackend[]): string {
  return `${m}/${seed}/${slotted.map((b) => `${b.id},${b.key},${b.weight}`).join(';')}`;
}

/**
 * The VIP's policy trie entries. A CIDR both allowed and denied is denied:
 * the trie holds one action per prefix, and the stricter one is the safe one.
 */
function vipRules(v: DpVip): Map<string, KeyedEntry> {
  const out = new Map<string, KeyedEntry>();
  const rules: Array<[string, number]> = [
    ...v.allow.map((c): [string, number] => [c, POLICY_ALLOW]),
    ...v.deny.map((c): [string, number] => [c, POLICY_DENY]),
  ];
  for (const [cidr, action] of rules) {
    const key = policyKey(v.id, cidr, `VIP ${v.name}`);
    const label = `${action === POLICY_DENY ? 'deny' : 'allow'} ${cidr} of VIP ${v.name}`;
    out.set(key.toString('hex'), { key, value: PolicyValue.encode({ action }), label });
  }
  return out;
}

/** The trie key of a rule: (vip id, address as ::ffff:a.b.c.d for IPv4), host bits cleared. */
export function policyKey(vipId: number, cidr: string, where: string): Buffer {
  let c: DpCidr;
  try {
    c = parseCidr(cidr);
  } catch {
    throw new ReconcileError(`${where}: not a CIDR: ${JSON.stringify(cidr)}`);
  }
  const bits = c.addr.family === FERRY_AF_INET ? 96 + c.prefix : c.prefix;
  const addr = mappedBytes(c.addr);
  clearHostBits(addr, bits, 128);
  return PolicyKey.encode({ prefixlen: 32 + bits, vip_id: vipId, addr });
}

/** Clears the bits of a policy key beyond its prefix length (what the trie compares). */
export function normalizePolicyKey(key: Buffer): Buffer {
  const out = Buffer.from(key);
  const prefixlen = Math.min(out.readUInt32LE(0), 160);
  clearHostBits(out.subarray(4), prefixlen, 160);
  return out;
}

function checkId(id: number, max: number, what: string): void {
  if (!Number.isInteger(id) || id < 0 || id >= max || id === FERRY_BACKEND_NONE) {
    throw new ReconcileError(`${what} ${String(id)} out of range 0..${max - 1}`);
  }
}

/** Entry counts against the maps' sizes, so a full map fails before any write. */
function checkCapacity(d: Desired, cap: Capacity): void {
  if (d.addrs.size > cap.maxVipAddrs) {
    throw new ReconcileError(`${d.addrs.size} VIP addresses exceed ferry_vip_addrs (${cap.maxVipAddrs})`);
  }
  if (d.policy.size > cap.maxPolicyRules) {
    throw new ReconcileError(`${d.policy.size} policy rules exceed ferry_policy (${cap.maxPolicyRules})`);
  }
  let slots = 1; // slot 0 is the empty table
  for (const v of d.vips.values()) slots += v.vip.m + 1;
  if (slots > cap.maglevSlots) {
    throw new ReconcileError(
      `the Maglev tables of ${d.vips.size} VIPs need ${slots} slots, more than ferry_maglev holds (bpf.maglev_slots: ${cap.maglevSlots})`,
    );
  }
}
