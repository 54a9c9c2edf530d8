/**
 * A DpState in map terms: for every map, the exact key and value bytes it
 * should hold. Everything a write could trip over (ids out of range,
 * duplicates, bad addresses, bad table sizes, capacities) is checked here,
 * before the reconciler touches a single entry.
 */
import {
  Backend,
  BACKEND_ACTIVE,
  BACKEND_F_LOCAL,
  BACKEND_DOWN,
  BACKEND_DRAINING,
  FERRY_AF_INET,
  FERRY_BACKEND_NONE,
  LbConfig,
  PolicyKey,
  PolicyValue,
  POLICY_ALLOW,
  POLICY_DENY,
  VIP_ADDR_F_ECHO,
  VipAddrKey,
  VipAddrMeta,
  VipKey,
  VipMeta,
} from '../datapath/abi.js';
import { mappedBytes, dpAddr, dpCidr, type DpAddr, type DpCidr } from '../datapath/addr.js';
import { encodeConfig, protoNumber, type ConfigProgram } from '../datapath/program.js';
import { MAGLEV_MAX_WEIGHT, MAGLEV_PRIMES, validateMaglevM, type MaglevBackend } from '../maglev/index.js';
import {
  hasSlots,
  type DpBackend,
  type DpBackendState,
  type DpChanges,
  type DpState,
  type DpTombstone,
  type DpVip,
} from '../model/dpstate.js';
import { CapacityError } from '../model/errors.js';
import { LOCAL_HOST } from '../model/types.js';
import { clearHostBits, isCanonicalIpv4 } from '../net/addr.js';

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
  /** For messages (backendLabel): its address, and where it belongs ("VIP web"). */
  address: string;
  of: string;
}

/** "198.18.1.1 of VIP web": built only for a message, not kept per backend. */
export function backendLabel(e: BackendEntry): string {
  return `${e.address} of ${e.of}`;
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

/** The maps' desired contents (DesiredState keeps them; diff and observe read them). */
export interface Desired {
  config: Buffer;
  seed: number;
  /** Live backends and tombstones, by id. */
  backends: Map<number, BackendEntry>;
  /** By VIP key (hex). */
  vips: Map<string, VipEntry>;
  vipById: Map<number, VipEntry>;
  /** By address key (hex). */
  addrs: Map<string, KeyedEntry>;
  /** By policy key (hex). */
  policy: Map<string, KeyedEntry>;
}

/**
 * What an update changed: the keys of every map entry that may differ
 * from before, which are all diff has to look at. `full`: look at all.
 */
export interface Scope {
  full: boolean;
  backends: Set<number>;
  vipKeys: Set<string>;
  vipIds: Set<number>;
  addrs: Set<string>;
  policy: Set<string>;
}

/** Slots of the largest Maglev table (the largest M of MAGLEV_PRIMES, plus M itself). */
const MAGLEV_MAX_SLOTS = Math.max(...MAGLEV_PRIMES) + 1;

/** Thrown for a state the datapath cannot hold; nothing has been written. */
export class ReconcileError extends Error {
  override readonly name = 'ReconcileError';
}

const STATE_CODE: Record<DpBackendState, number> = {
  active: BACKEND_ACTIVE,
  draining: BACKEND_DRAINING,
  down: BACKEND_DOWN,
};

/**
 * Memo of parsed addresses: states repeat the same texts apply after apply.
 * Canonical IPv4 is not kept: written from its text (dpAddr) it costs less
 * than a lookup among a burst's hundred thousand pod addresses.
 */
export class AddrCache {
  private readonly map = new Map<string, DpAddr>();

  parse(text: string, what: string): DpAddr {
    const a = this.get(text);
    if (a === null) throw new ReconcileError(`${what}: not an IP address: ${JSON.stringify(text)}`);
    return a;
  }

  /** The address, or null when the text is not one. */
  get(text: string): DpAddr | null {
    if (isCanonicalIpv4(text)) return dpAddr(text);
    let a = this.map.get(text);
    if (a) return a;
    try {
      a = dpAddr(text);
    } catch {
      return null;
    }
    if (this.map.size >= 1 << 18) this.map.clear();
    this.map.set(text, a);
    return a;
  }
}

/** One VIP's share of the desired maps. */
interface VipParts {
  /** The DpVip these were made from: the same object again means the same parts. */
  dp: DpVip;
  /** The update() that last saw this VIP id. */
  seen: number;
  fingerprint: string;
  entry: VipEntry;
  backends: BackendEntry[];
  addrHex: string;
  addr: KeyedEntry;
  rules: Map<string, KeyedEntry>;
}

/**
 * The desired maps, kept from one apply to the next and updated by what
 * changed: a VIP whose DpVip is the same object as last time (the
 * incremental planner hands back unchanged VIPs as they were), or whose
 * inputs print the same, keeps its encoded entries and costs a lookup; a
 * changed one is re-encoded and its entries replaced. update() returns the
 * keys it touched, so diff and the writes cost what changed.
 */
export class DesiredState implements Desired {
  config: Buffer = Buffer.alloc(0);
  seed = -1;
  readonly backends = new Map<number, BackendEntry>();
  readonly vips = new Map<string, VipEntry>();
  readonly vipById = new Map<number, VipEntry>();
  readonly addrs = new Map<string, KeyedEntry>();
  readonly policy = new Map<string, KeyedEntry>();
  private readonly addrRefs = new Map<string, number>();
  private readonly parts = new Map<number, VipParts>();
  private tombstones: BackendEntry[] = [];
  /** Maglev slots the tables need (slot 0 is the empty table). */
  private slots = 1;
  private readonly addrCache = new AddrCache();
  private serial = 0;

  /**
   * Makes this the desired contents of `state`. Everything a write could
   * trip over is checked first; a state the maps cannot hold throws
   * ReconcileError and leaves this as it was.
   */
  update(state: DpState, config: ConfigProgram, cap: Capacity): Scope {
    const configBuf = LbConfig.encode(encodeConfig(config, cap));
    const seed = config.seed >>> 0;
    const full = seed !== this.seed;
    if (full) this.clear();
    // Every VIP of the state marks its parts as seen; what is left unmarked is gone. No allocation per
    // unchanged VIP: this loop runs over every VIP on every full apply.
    const serial = ++this.serial;
    const changed: VipParts[] = [];
    let matched = 0;
    for (const v of state.vips) {
      const old = this.parts.get(v.id);
      if (old !== undefined) {
        if (old.seen === serial) throw new ReconcileError(`VIP ${v.name}: id ${v.id} is also VIP ${this.nameOfId(state, v)}`);
        old.seen = serial;
        matched++;
      }
      const p = this.partsFor(v, old, seed, cap);
      if (p !== old) changed.push(p);
    }
    const removed: VipParts[] = [];
    if (this.parts.size > matched) for (const p of this.parts.values()) if (p.seen !== serial) removed.push(p);
    return this.commit(changed, removed, state.tombstones, configBuf, seed, cap, full);
  }

  /**
   * Like update(), from the changes since the plan this last took (DpState
   * changes): costs what changed. The caller makes sure this holds that
   * plan (the seed too: a new seed needs update()). `onEntry` is told of
   * each VIP entry made anew as soon as it is made (a table prefetch).
   */
  updateChanges(
    changes: DpChanges,
    tombstones: readonly DpTombstone[],
    config: ConfigProgram,
    cap: Capacity,
    onEntry?: (e: VipEntry) => void,
  ): Scope {
    const configBuf = LbConfig.encode(encodeConfig(config, cap));
    const seed = config.seed >>> 0;
    if (seed !== this.seed) throw new Error('DesiredState.updateChanges: the seed changed; update() in full');
    const changed: VipParts[] = [];
    const ids = new Set<number>();
    const removedIds = new Set(changes.removed);
    for (const v of changes.vips) {
      if (ids.has(v.id)) throw new ReconcileError(`VIP ${v.name}: id ${v.id} is also another changed VIP`);
      ids.add(v.id);
      const old = this.parts.get(v.id);
      // The id held by a VIP that neither changes nor goes: two VIPs would share it.
      if (old !== undefined && old.dp.name !== v.name && !removedIds.has(v.id) && !changes.vips.some((x) => x.name === old.dp.name)) {
        throw new ReconcileError(`VIP ${v.name}: id ${v.id} is also VIP ${old.dp.name}`);
      }
      const p = this.partsFor(v, old, seed, cap);
      if (p !== old) {
        changed.push(p);
        onEntry?.(p.entry);
      }
    }
    const removed: VipParts[] = [];
    for (const id of changes.removed) {
      const p = this.parts.get(id);
      if (p !== undefined && !ids.has(id)) removed.push(p);
    }
    return this.commit(changed, removed, tombstones, configBuf, seed, cap, false);
  }

  /** The parts of v: the old ones when v is the same object or prints the same, else new ones. */
  private partsFor(v: DpVip, old: VipParts | undefined, seed: number, cap: Capacity): VipParts {
    if (old?.dp === v) return old;
    const fingerprint = vipFingerprint(v, seed);
    if (old?.fingerprint === fingerprint) {
      old.dp = v;
      return old;
    }
    return vipParts(v, fingerprint, seed, cap, this.addrCache);
  }

  /** Replaces removed and changed VIPs' entries and the tombstones; undoes everything if a check fails. */
  private commit(
    changed: VipParts[],
    removed: VipParts[],
    tombstoneList: readonly DpTombstone[],
    configBuf: Buffer,
    seed: number,
    cap: Capacity,
    full: boolean,
  ): Scope {
    const scope: Scope = {
      full,
      backends: new Set(),
      vipKeys: new Set(),
      vipIds: new Set(),
      addrs: new Set(),
      policy: new Set(),
    };
    const tombstones = tombstoneList.map((t) =>
      backendEntry({ ...t, state: 'draining' }, t.vipId, cap, this.addrCache, `VIP id ${t.vipId} (tombstone)`),
    );
    const out: VipParts[] = [...removed, ...changed.map((p) => this.parts.get(p.entry.vip.id)).filter((p): p is VipParts => !!p)];
    const oldTombstones = this.tombstones;
    const added: VipParts[] = [];
    const addedTombstones: BackendEntry[] = [];
    try {
      for (const t of oldTombstones) this.backends.delete(t.id);
      for (const p of out) this.removeParts(p, scope);
      for (const p of changed) {
        this.addParts(p, scope);
        added.push(p);
      }
      for (const t of tombstones) {
        this.addBackendEntry(t);
        addedTombstones.push(t);
      }
      this.checkCapacity(cap);
    } catch (err) {
      for (const t of addedTombstones) this.backends.delete(t.id);
      for (const p of added) this.removeParts(p, scope);
      for (const p of out) this.addParts(p, scope);
      for (const t of oldTombstones) this.backends.set(t.id, t);
      throw err;
    }
    for (const t of [...oldTombstones, ...tombstones]) scope.backends.add(t.id);
    this.tombstones = tombstones;
    this.config = configBuf;
    this.seed = seed;
    return scope;
  }

  private nameOfId(state: DpState, v: DpVip): string {
    return state.vips.find((x) => x.id === v.id && x !== v)?.name ?? '?';
  }

  /** Empties everything; until an update succeeds, the next one starts afresh too (seed -1). */
  private clear(): void {
    this.seed = -1;
    this.backends.clear();
    this.vips.clear();
    this.vipById.clear();
    this.addrs.clear();
    this.addrRefs.clear();
    this.policy.clear();
    this.parts.clear();
    this.tombstones = [];
    this.slots = 1;
  }

  /** Adds one VIP's entries, refusing ids and keys another VIP already has. */
  private addParts(p: VipParts, scope: Scope): void {
    const { vip, keyHex } = p.entry;
    const where = `VIP ${vip.name}`;
    const sameId = this.vipById.get(vip.id);
    if (sameId) throw new ReconcileError(`${where}: id ${vip.id} is also VIP ${sameId.vip.name}`);
    const sameKey = this.vips.get(keyHex);
    if (sameKey) throw new ReconcileError(`${where}: ${vip.address}:${vip.port}/${vip.protocol} is also VIP ${sameKey.vip.name}`);
    const added: number[] = [];
    try {
      for (const b of p.backends) {
        this.addBackendEntry(b);
        added.push(b.id);
      }
    } catch (err) {
      for (const id of added) this.backends.delete(id);
      throw err;
    }
    this.vips.set(keyHex, p.entry);
    this.vipById.set(vip.id, p.entry);
    this.parts.set(vip.id, p);
    const refs = (this.addrRefs.get(p.addrHex) ?? 0) + 1;
    this.addrRefs.set(p.addrHex, refs);
    if (refs === 1) this.addrs.set(p.addrHex, p.addr);
    for (const [k, r] of p.rules) this.policy.set(k, r);
    this.slots += vip.m + 1;
    this.touch(p, scope);
  }

  private removeParts(p: VipParts, scope: Scope): void {
    const { vip, keyHex } = p.entry;
    if (this.parts.get(vip.id) !== p) return;
    this.parts.delete(vip.id);
    this.vips.delete(keyHex);
    this.vipById.delete(vip.id);
    for (const b of p.backends) this.backends.delete(b.id);
    const refs = (this.addrRefs.get(p.addrHex) ?? 1) - 1;
    if (refs <= 0) {
      this.addrRefs.delete(p.addrHex);
      this.addrs.delete(p.addrHex);
    } else {
      this.addrRefs.set(p.addrHex, refs);
    }
    for (const k of p.rules.keys()) this.policy.delete(k);
    this.slots -= vip.m + 1;
    this.touch(p, scope);
  }

  private touch(p: VipParts, scope: Scope): void {
    scope.vipKeys.add(p.entry.keyHex);
    scope.vipIds.add(p.entry.vip.id);
    scope.addrs.add(p.addrHex);
    for (const b of p.backends) scope.backends.add(b.id);
    for (const k of p.rules.keys()) scope.policy.add(k);
  }

  /** Adds a backend entry; ids are unique over every VIP and tombstone. */
  private addBackendEntry(e: BackendEntry): void {
    const other = this.backends.get(e.id);
    if (other) throw new ReconcileError(`backend ${backendLabel(e)}: id ${e.id} is also backend ${backendLabel(other)}`);
    this.backends.set(e.id, e);
  }

  /**
   * Entry counts against the maps' sizes, so a full map fails before any
   * write, as a CapacityError naming the setting to raise (507 in the API).
   * VIP addresses need no check: there are never more than VIPs, whose ids
   * the store already caps at bpf.max_vips.
   */
  private checkCapacity(cap: Capacity): void {
    if (this.policy.size > cap.maxPolicyRules) {
      throw new CapacityError(
        `the source rules of every VIP and policy need ${this.policy.size} datapath policy entries, more than ` +
          `ferry_policy holds (capacity bpf.max_policy_rules = ${cap.maxPolicyRules})`,
      );
    }
    // Replacing a table needs room for the new one beside the old until a grace period has passed:
    // keep room for the largest (counted only near the limit: it costs a pass over the VIPs).
    let need = this.slots;
    if (need + MAGLEV_MAX_SLOTS > cap.maglevSlots) {
      let largest = 0;
      for (const v of this.vips.values()) largest = Math.max(largest, v.vip.m + 1);
      need += largest;
    }
    if (need > cap.maglevSlots) {
      throw new CapacityError(
        `the Maglev tables of ${this.vips.size} VIPs need ${need} slots (the largest twice, to be replaced), ` +
          `more than ferry_maglev holds (capacity bpf.maglev_slots = ${cap.maglevSlots})`,
      );
    }
  }
}

/** The desired contents of a whole state, computed afresh (verify, tests). */
export function desire(state: DpState, config: ConfigProgram, cap: Capacity): Desired {
  const d = new DesiredState();
  d.update(state, config, cap);
  return d;
}

/** Everything a VIP's entries are computed from, as one string. */
function vipFingerprint(v: DpVip, seed: number): string {
  // Joined, not appended: one flat string instead of a chain of a few hundred string ropes per VIP, kept as long
  // as the VIP is.
  const parts = [
    `${seed}|${v.id}|${v.name}|${v.address}|${v.port}|${v.protocol}|${v.flags}|${v.m}|` +
      `${v.rlIntervalNs}|${v.rlToleranceNs}|${v.allow.join(',')}|${v.deny.join(',')}|`,
  ];
  for (const b of v.backends) parts.push(`${b.id},${b.gen},${b.address},${b.weight},${b.state};`);
  return parts.join('');
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
    vip_id: v.id,
    flags: v.flags >>> 0,
    rl_interval_ns: v.rlIntervalNs,
    rl_tolerance_ns: v.rlToleranceNs,
  });
  const backends = v.backends.map((b) => backendEntry(b, v.id, cap, addrs, where));
  const slotted = slottedBackends(v);
  const entry: VipEntry = {
    vip: v,
    key,
    keyHex: key.toString('hex'),
    value,
    slotted,
    digest: tableDigest(v.m, seed, slotted),
    label: `${where} (${v.address}:${v.port}/${v.protocol}, id ${v.id})`,
  };
  const addrKey = VipAddrKey.encode({ addr: a.bytes, family: a.family, pad: Buffer.alloc(3) });
  const addr = { key: addrKey, value: VipAddrMeta.encode({ flags: VIP_ADDR_F_ECHO }), label: `address ${v.address}` };
  return { dp: v, seen: 0, fingerprint, entry, backends, addrHex: addrKey.toString('hex'), addr, rules: vipRules(v) };
}

const NO_VIA: Buffer = Buffer.alloc(16);

/** Encodes and checks one backend of `of` ("VIP web"). */
function backendEntry(b: DpBackend, vipId: number, cap: Capacity, addrs: AddrCache, of: string): BackendEntry {
  // The label is built only for an error: this runs once per backend of every VIP planned.
  const fail = (problem: string): never => {
    throw new ReconcileError(`backend ${b.address} of ${of}${problem}`);
  };
  const badId = idProblem(b.id, cap.maxBackends);
  if (badId !== null) fail(`: id ${badId}`);
  if (!Number.isInteger(b.gen) || b.gen < 0 || b.gen > 0xffffffff) fail(`: gen must be a u32, got ${String(b.gen)}`);
  if (!Number.isInteger(b.weight) || b.weight < 0 || b.weight > MAGLEV_MAX_WEIGHT) {
    fail(`: weight must be an integer 0..${MAGLEV_MAX_WEIGHT}, got ${String(b.weight)}`);
  }
  const a = addrs.get(b.address) ?? fail(`: not an IP address: ${JSON.stringify(b.address)}`);
  const state = STATE_CODE[b.state] ?? fail(`: unknown state ${JSON.stringify(b.state)}`);
  const host = b.host ?? null;
  let via: Buffer = NO_VIA;
  if (host !== null && host !== LOCAL_HOST) {
    const h = addrs.get(host) ?? fail(`: host: not an IP address: ${JSON.stringify(host)}`);
    if (h.family !== a.family) fail(`: host ${host} is not of the backend's family`);
    via = h.bytes;
  }
  const value = Backend.encode({
    addr: a.bytes,
    family: a.family,
    state,
    flags: host === LOCAL_HOST ? BACKEND_F_LOCAL : 0,
    pad: 0,
    vip_id: vipId,
    gen: b.gen,
    via,
    port: b.port ?? 0,
    pad2: 0,
  });
  return { id: b.id, vipId, state, gen: b.gen, value, address: b.address, of };
}

/** The backends that get Maglev slots, sorted by id; their keys must be unique. */
function slottedBackends(v: DpVip): MaglevBackend[] {
  const out = v.backends
    .filter(hasSlots)
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
    c = dpCidr(cidr);
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
  const problem = idProblem(id, max);
  if (problem !== null) throw new ReconcileError(`${what} ${problem}`);
}

/** Why `id` is not a datapath id below `max`, or null. */
function idProblem(id: number, max: number): string | null {
  return !Number.isInteger(id) || id < 0 || id >= max || id === FERRY_BACKEND_NONE ? `${String(id)} out of range 0..${max - 1}` : null;
}
