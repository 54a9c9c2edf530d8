/**
 * The socket-LB's planning, pure (no maps, no clock), as src/reconcile/
 * plans for the XDP side: the ClusterIP list → the services the maps should
 * hold (parseServices), those against the services the maps hold → the
 * writes that get there (planServices), and whether the writes fit the
 * maps' capacity with what else stands in them (checkCapacity). ListPlanner
 * runs the first two on what changed since the last list written.
 * ./socket-lb.ts reads the maps into InstalledService and writes the plan.
 *
 * Nothing here knows about Kubernetes: `SocketLbService` is the shape of
 * src/k8s/translate.ts's ClusterIpEntry, which apply() takes as it is.
 */
import {
  SOCK_SVC_F_AFFINITY,
  SOCKLB_AF_INET,
  SOCKLB_AF_INET6,
  SockEndpoint,
  SockMemberKey,
  SockSlotKey,
  SockSvc,
  SockSvcKey,
  type SockFamily,
} from './socket-lb-abi.js';
import { parseIp, unmappedIpv4, writeCanonicalIpv4 } from '../net/addr.js';
import { formatAddr } from './addr.js';

export interface SocketLbBackend {
  address: string;
  port: number;
}

/**
 * One ClusterIP × port × protocol. src/k8s/translate.ts's ClusterIpEntry is
 * one of these (service and portName only name it in error messages).
 */
export interface SocketLbService {
  service?: string;
  portName?: string;
  ip: string;
  port: number;
  protocol: 'tcp' | 'udp';
  /** Empty: connect() and sendmsg() fail with ECONNREFUSED. Same family as ip. */
  backends: readonly SocketLbBackend[];
  /** sessionAffinity ClientIP: seconds a client stays on its backend (1 .. 86400). */
  affinityTimeoutSeconds?: number;
}

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
const MAX_AFFINITY_TIMEOUT_S = 86400;

/** A service as apply() wants it. */
export interface DesiredService {
  keyStr: string;
  key: Buffer;
  family: SockFamily;
  /** Encoded struct sock_endpoint, in the order given: views of `encoded`, which holds them side by side. */
  backends: Buffer[];
  encoded: Buffer;
  sig: string;
  timeout: number;
}

/** An entry, its key ("protocol ip port") and text (timeout and backends), and what it parsed into. */
export interface ParsedEntry {
  entry: SocketLbService;
  rawKey: string;
  text: string;
  d: DesiredService;
  /** The last plan whose list held this entry (ListPlanner's mark). */
  seen: number;
}

/** One apply()'s parsed entries: by the entry object given, and by key. */
export interface ParsedList {
  byEntry: Map<SocketLbService, ParsedEntry>;
  byKey: Map<string, ParsedEntry>;
}

const emptyParsedList = (): ParsedList => ({ byEntry: new Map(), byKey: new Map() });

/** A service as the maps hold it. */
export interface InstalledService {
  keyStr: string;
  key: Buffer;
  id: number;
  gen: number;
  timeout: number;
  /** The value's count: slots 0 .. count-1 of the live buffer are the set. */
  count: number;
  /** Live buffer, index order (the slots found: fewer than count when broken). */
  backends: Buffer[];
  sig: string;
  broken: boolean;
  /** Its id is another service's too: it moves to a new id. */
  reid: boolean;
  /** ferry_sock_members of this id: endpoint hex → encoded endpoint. */
  members: Map<string, Buffer>;
  /** The desired service it was planned from (none when read from the maps): given it again, nothing changes. */
  from?: DesiredService;
}

/** A backend set's identity: equal signatures, equal buffers. */
export const sigOf = (backends: readonly Buffer[]): string => backends.map((b) => b.toString('hex')).join(',');

/** A service key's text, e.g. "tcp [fd00::10]:80": the key of the desired and installed views, and of error messages. */
export function keyString(proto: number, family: number, addr: Buffer, port: number): string {
  const text = formatAddr(family, addr);
  return `${proto === IPPROTO_TCP ? 'tcp' : proto === IPPROTO_UDP ? 'udp' : `proto${proto}`} ${family === SOCKLB_AF_INET6 ? `[${text}]` : text}:${port}`;
}

/** An address in the socket-LB's form, as the program compares it: IPv4-mapped IPv6 becomes IPv4 (as the program normalises). */
function sockAddr(text: unknown, what: () => string): { family: SockFamily; addr: Buffer } {
  const addr = Buffer.alloc(16);
  // Canonical IPv4 text (what the Kubernetes translation gives) is read by hand; anything else is parsed.
  if (typeof text === 'string' && writeCanonicalIpv4(text, addr)) return { family: SOCKLB_AF_INET, addr };
  addr.fill(0, 0, 4);
  const parsed = parseIp(text);
  if (typeof parsed === 'string') throw new TypeError(`${what()}: not an IP address: ${JSON.stringify(text)}`);
  const ip = unmappedIpv4(parsed) ?? parsed;
  ip.bytes.copy(addr);
  return { family: ip.family === 4 ? SOCKLB_AF_INET : SOCKLB_AF_INET6, addr };
}

const validPort = (port: unknown): port is number => typeof port === 'number' && Number.isInteger(port) && port >= 1 && port <= 65535;

function checkPort(port: unknown, what: string): number {
  if (!validPort(port)) {
    throw new RangeError(`${what}: port must be an integer from 1 to 65535, got ${JSON.stringify(port)}`);
  }
  return port;
}

/**
 * Entries → desired services by key; throws naming the first bad entry.
 * Parsing addresses and encoding is the costly part at 10k services, so an
 * entry that is the same object as one of the last apply() (`previous`; an
 * entry is not changed once given, and the Kubernetes sync gives an
 * unchanged Service's entries again) reuses its result unchecked, and one
 * whose text equals that of the entry of its key then reuses its parse: a
 * change costs the entries it changed, plus a lookup for each of the others.
 */
export function parseServices(
  all: readonly SocketLbService[],
  previous: ParsedList,
): { desired: Map<string, DesiredService>; parsed: ParsedList } {
  if (!Array.isArray(all)) throw new TypeError('socket-LB apply: expected an array of services');
  const desired = new Map<string, DesiredService>();
  const parsed = emptyParsedList();
  all.forEach((e, i) => {
    const p = previous.byEntry.get(e) ?? checkEntry(e, () => describeEntry(e, i), previous.byKey);
    if (desired.has(p.d.keyStr)) throw new RangeError(`${describeEntry(e, i)}: ${p.d.keyStr} appears twice`);
    desired.set(p.d.keyStr, p.d);
    parsed.byEntry.set(e, p);
    parsed.byKey.set(p.rawKey, p);
  });
  return { desired, parsed };
}

/** How errors name entry `i` of the list. */
function describeEntry(e: SocketLbService | null | undefined, i: number): string {
  return `socket-LB service #${i}${e?.service ? ` (${e.service}${e.portName ? ` port ${e.portName}` : ''})` : ''}`;
}

/** An entry not given before: checked, and parsed unless the entry of its key had the same text. */
function checkEntry(e: SocketLbService, what: () => string, byKey: ReadonlyMap<string, ParsedEntry>): ParsedEntry {
  if (typeof e !== 'object' || e === null) throw new TypeError(`${what()}: not an object`);
  if (typeof e.ip !== 'string') throw new TypeError(`${what()}: ip must be a string, got ${JSON.stringify(e.ip)}`);
  const port = validPort(e.port) ? e.port : checkPort(e.port, what());
  const proto = e.protocol === 'tcp' ? IPPROTO_TCP : e.protocol === 'udp' ? IPPROTO_UDP : -1;
  if (proto < 0) throw new RangeError(`${what()}: protocol must be 'tcp' or 'udp', got ${JSON.stringify(e.protocol)}`);
  if (!Array.isArray(e.backends)) throw new TypeError(`${what()}: backends must be an array`);
  let timeout = 0;
  if (e.affinityTimeoutSeconds !== undefined && e.affinityTimeoutSeconds !== null) {
    timeout = e.affinityTimeoutSeconds;
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > MAX_AFFINITY_TIMEOUT_S) {
      throw new RangeError(
        `${what()}: affinityTimeoutSeconds must be an integer from 1 to ${MAX_AFFINITY_TIMEOUT_S}, got ${JSON.stringify(e.affinityTimeoutSeconds)}`,
      );
    }
  }
  let text = `${timeout}`;
  e.backends.forEach((b: SocketLbBackend, j: number) => {
    if (typeof b !== 'object' || b === null) throw new TypeError(`${what()} backend #${j}: not an object`);
    if (typeof b.address !== 'string') {
      throw new TypeError(`${what()} backend #${j}: address must be a string, got ${JSON.stringify(b.address)}`);
    }
    if (!validPort(b.port)) checkPort(b.port, `${what()} backend #${j}`);
    text += `|${b.address} ${b.port}`;
  });
  const rawKey = `${e.protocol} ${e.ip} ${port}`;
  const prev = byKey.get(rawKey);
  const d = prev !== undefined && prev.text === text ? prev.d : parseEntry(e, what, proto, port, timeout);
  return { entry: e, rawKey, text, d, seen: 0 };
}

/** The addresses of an entry whose types and numbers parseServices() has checked. */
function parseEntry(e: SocketLbService, what: () => string, proto: number, port: number, timeout: number): DesiredService {
  const { family, addr } = sockAddr(e.ip, () => `${what()} ip`);
  // One allocation for the service's endpoints, each a view of it.
  const size = SockEndpoint.size;
  const encoded = Buffer.alloc(e.backends.length * size);
  const backends = e.backends.map((b, j) => {
    const a = sockAddr(b.address, () => `${what()} backend #${j}`);
    if (a.family !== family) throw new RangeError(`${what()} backend #${j}: ${b.address} is not of the family of ${e.ip}`);
    SockEndpoint.encodeInto({ addr: a.addr, port: b.port, family: a.family, pad: 0 }, encoded, j * size);
    return encoded.subarray(j * size, (j + 1) * size);
  });
  return {
    keyStr: keyString(proto, family, addr, port),
    key: SockSvcKey.encode({ addr, port, proto, family }),
    family,
    backends,
    encoded,
    sig: sigOf(backends),
    timeout,
  };
}

/**
 * Service ids (a service's slots and members are keyed by it). Ids are
 * reused lowest first so that they stay dense; the writer gives an id back
 * only once no program can still read the buffers under it.
 */
export class ServiceIds {
  private readonly used = new Set<number>();
  private readonly free: number[] = [];
  private next = 0;

  /** The ids the maps hold: the gaps below the highest are free. */
  static of(used: Iterable<number>): ServiceIds {
    const ids = new ServiceIds();
    for (const id of used) {
      ids.used.add(id);
      if (id >= ids.next) ids.next = id + 1;
    }
    for (let id = ids.next - 1; id >= 0; id--) if (!ids.used.has(id)) ids.free.push(id);
    return ids;
  }

  has(id: number): boolean {
    return this.used.has(id);
  }

  alloc(): number {
    const id = this.free.pop() ?? this.next++;
    this.used.add(id);
    return id;
  }

  release(id: number): void {
    if (!this.used.delete(id)) return;
    this.free.push(id);
  }
}

/** How the services change; the writer adds what the writes cost. */
export interface SocketLbPlanCounts {
  added: number;
  /** Backend set changed (a buffer flip). */
  updated: number;
  /** Only the affinity timeout changed (the value rewritten, the buffer kept). */
  retimed: number;
  removed: number;
  unchanged: number;
}

/** The writes from what the maps hold to what is desired, and the state afterwards. */
export interface SocketLbPlan {
  counts: SocketLbPlanCounts;
  /** ferry_sock_slots of the new buffers: keys and their endpoints. */
  slots: SlotRuns;
  memberAdds: Buffer[];
  memberDels: Buffer[];
  /** ferry_sock_svcs values to write (after the buffers they name), and keys to delete. */
  svcKeys: Buffer[];
  svcValues: Buffer[];
  svcDels: Buffer[];
  /** Slots of the buffers the values no longer name: deleted after a grace period. */
  oldSlots: Buffer[];
  /** Services whose buffer flips. */
  flipped: number[];
  /** Ids of removed services: free again after a grace period. */
  freed: number[];
  /** Ids this plan took from the allocator: given back when the plan is not written. */
  allocated: number[];
  /** The services in the maps once the plan is written, by key. */
  next: Map<string, InstalledService>;
}

/** Map entries in runs: run k of `keys` and of `values` hold the same number of entries; `count` in all. */
export interface SlotRuns {
  keys: Buffer[];
  values: Buffer[];
  count: number;
}

/** The keys of slots 0 .. n-1 of a service's buffer, side by side. */
function slotKeys(svcId: number, buf: number, n: number): Buffer {
  const size = SockSlotKey.size;
  const out = Buffer.alloc(n * size);
  for (let i = 0; i < n; i++) SockSlotKey.encodeInto({ svc_id: svcId, buf, index: i }, out, i * size);
  return out;
}

/** Adds the slot keys of a service's live buffer to `out`. */
function pushLiveSlots(out: Buffer[], s: InstalledService): void {
  for (let i = 0; i < s.count; i++) out.push(SockSlotKey.encode({ svc_id: s.id, buf: s.gen & 1, index: i }));
}

/**
 * Desired against installed → the writes. Unchanged services cost nothing;
 * a changed backend set is one buffer flip (gen + 1: the other buffer);
 * only a changed affinity timeout rewrites the value alone. Pure apart from
 * the ids it takes from `ids` (listed in `allocated`).
 */
export function planServices(
  desired: ReadonlyMap<string, DesiredService>,
  installed: ReadonlyMap<string, InstalledService>,
  ids: ServiceIds,
): SocketLbPlan {
  const plan: SocketLbPlan = {
    counts: { added: 0, updated: 0, retimed: 0, removed: 0, unchanged: 0 },
    slots: { keys: [], values: [], count: 0 },
    memberAdds: [],
    memberDels: [],
    svcKeys: [],
    svcValues: [],
    svcDels: [],
    oldSlots: [],
    flipped: [],
    freed: [],
    allocated: [],
    next: new Map(),
  };
  const { counts } = plan;
  for (const [keyStr, d] of desired) {
    const cur = installed.get(keyStr);
    if (cur !== undefined && cur.from === d && !cur.broken && !cur.reid) {
      // Planned from this very service and whole: it stays as it is.
      counts.unchanged++;
      plan.next.set(keyStr, cur);
      continue;
    }
    const flags = d.timeout > 0 ? SOCK_SVC_F_AFFINITY : 0;
    const wantMembers = new Map<string, Buffer>();
    if (d.timeout > 0) for (const b of d.backends) wantMembers.set(b.toString('hex'), b);
    let id: number;
    let gen: number;
    if (cur === undefined || cur.reid) {
      id = ids.alloc();
      plan.allocated.push(id);
      gen = 0;
      if (cur === undefined) counts.added++;
    } else {
      id = cur.id;
      gen = cur.gen;
    }
    const setChanged = cur === undefined || cur.broken || cur.sig !== d.sig;
    if (cur !== undefined && setChanged) {
      if (!cur.reid) gen = (gen + 1) >>> 0;
      counts.updated++;
      plan.flipped.push(id);
      pushLiveSlots(plan.oldSlots, cur); // none when it moves to a new id (its count is 0)
    }
    if (setChanged && d.backends.length > 0) {
      plan.slots.keys.push(slotKeys(id, gen & 1, d.backends.length));
      plan.slots.values.push(d.encoded);
      plan.slots.count += d.backends.length;
    }
    const have = cur?.members ?? new Map<string, Buffer>();
    for (const [hex, b] of wantMembers) if (!have.has(hex)) plan.memberAdds.push(SockMemberKey.encode({ svc_id: id, backend: b }));
    for (const [hex, b] of have) if (!wantMembers.has(hex)) plan.memberDels.push(SockMemberKey.encode({ svc_id: id, backend: b }));
    if (setChanged || cur === undefined || cur.timeout !== d.timeout) {
      if (!setChanged) counts.retimed++;
      plan.svcKeys.push(d.key);
      plan.svcValues.push(SockSvc.encode({ id, count: d.backends.length, gen, affinity_timeout_s: d.timeout, flags }));
    } else {
      counts.unchanged++;
    }
    plan.next.set(keyStr, {
      keyStr,
      key: d.key,
      id,
      gen,
      timeout: d.timeout,
      count: d.backends.length,
      backends: d.backends,
      sig: d.sig,
      broken: false,
      reid: false,
      members: wantMembers,
      from: d,
    });
  }
  for (const [keyStr, cur] of installed) {
    if (desired.has(keyStr)) continue;
    counts.removed++;
    plan.svcDels.push(cur.key);
    pushLiveSlots(plan.oldSlots, cur);
    for (const b of cur.members.values()) plan.memberDels.push(SockMemberKey.encode({ svc_id: cur.id, backend: b }));
    if (!cur.reid) plan.freed.push(cur.id);
  }
  return plan;
}

/** How a list differs from the one before it: the entries (objects) that left it, and the new ones. */
export interface ListChanges {
  removed: readonly SocketLbService[];
  added: readonly SocketLbService[];
}

/** The new entries of a list (each with how an error names it) and the last list's entries that left it. */
interface Changed {
  fresh: Array<[SocketLbService, () => string]>;
  left: ReadonlySet<ParsedEntry>;
}

/** A list planned by ListPlanner. */
export interface ListPlan {
  plan: SocketLbPlan;
  /** Services in the list. */
  services: number;
  /** Records the list as written; returns the installed view after the plan (`installed` itself, updated, or a new map). */
  commit(installed: Map<string, InstalledService>): Map<string, InstalledService>;
  /** The live counts once the plan is written, from those before it. */
  liveAfter(before: LiveCounts): LiveCounts;
}

/**
 * Plans apply()s of whole ClusterIP lists at the cost of what changed since
 * the last list written: an entry that is the same object as one of that
 * list is not looked at again (entries are not changed once given); only
 * the entries new to the list, and the services of those that left it, are
 * checked, parsed and planned. The first plan, and the first after reset()
 * (the installed view was read back from the maps: at start, after a failed
 * write), compare every service.
 */
export class ListPlanner {
  /** The last written list's entries: by the object given, by "protocol ip port", by service key. */
  private byEntry = new Map<SocketLbService, ParsedEntry>();
  private byKey = new Map<string, ParsedEntry>();
  private byService = new Map<string, ParsedEntry>();
  /** Whether the installed view is what the last written plan left. */
  private incremental = false;
  private mark = 0;

  reset(): void {
    this.incremental = false;
  }

  /**
   * Plans `all` against `installed`; throws naming a bad entry (nothing
   * recorded then). `changes`, when given, says how `all` differs from the
   * last list written, which spares looking up every entry of it; it is
   * checked against that list and ignored when it does not agree.
   */
  plan(
    all: readonly SocketLbService[],
    installed: ReadonlyMap<string, InstalledService>,
    ids: ServiceIds,
    changes?: ListChanges,
  ): ListPlan {
    if (!Array.isArray(all)) throw new TypeError('socket-LB apply: expected an array of services');
    return this.incremental ? this.planChanges(all, installed, ids, changes) : this.planWhole(all, installed, ids);
  }

  private planWhole(all: readonly SocketLbService[], installed: ReadonlyMap<string, InstalledService>, ids: ServiceIds): ListPlan {
    const { desired, parsed } = parseServices(all, { byEntry: this.byEntry, byKey: this.byKey });
    const plan = planServices(desired, installed, ids);
    return {
      plan,
      services: desired.size,
      commit: () => {
        this.byEntry = parsed.byEntry;
        this.byKey = parsed.byKey;
        this.byService = new Map([...parsed.byEntry.values()].map((p) => [p.d.keyStr, p]));
        this.incremental = true;
        return plan.next;
      },
      liveAfter: () => liveCounts(plan.next.values()),
    };
  }

  /**
   * The new entries and those that left, found by looking up every entry of
   * `all` (marked as kept) and then every entry of the last list not marked.
   */
  private changesFound(all: readonly SocketLbService[]): Changed {
    const mark = ++this.mark;
    const fresh: Array<[SocketLbService, () => string]> = [];
    for (let i = 0; i < all.length; i++) {
      const e = all[i]!;
      const p = this.byEntry.get(e);
      if (p === undefined) fresh.push([e, () => describeEntry(e, i)]);
      else if (p.seen === mark) throw new RangeError(`${describeEntry(e, i)}: ${p.d.keyStr} appears twice`);
      else p.seen = mark;
    }
    const left = new Set<ParsedEntry>();
    if (all.length - fresh.length < this.byEntry.size) for (const p of this.byEntry.values()) if (p.seen !== mark) left.add(p);
    return { fresh, left };
  }

  /**
   * The new entries and those that left as the caller says, when that agrees
   * with the last list (every entry said to leave was in it, once; no new
   * one is said twice; the counts add up to `all`); undefined otherwise. An
   * entry said to leave and to be new is parsed again (the same text:
   * nothing changes).
   */
  private changesGiven(all: readonly SocketLbService[], changes: ListChanges): Changed | undefined {
    if (this.byEntry.size - changes.removed.length + changes.added.length !== all.length) return undefined;
    const left = new Set<ParsedEntry>();
    for (const e of changes.removed) {
      const p = this.byEntry.get(e);
      if (p === undefined || left.has(p)) return undefined;
      left.add(p);
    }
    if (new Set(changes.added).size !== changes.added.length) return undefined;
    // Where an entry is in the list is looked for only to name it in an error.
    const fresh = changes.added.map((e): [SocketLbService, () => string] => [e, () => describeEntry(e, all.indexOf(e))]);
    return { fresh, left };
  }

  private planChanges(
    all: readonly SocketLbService[],
    installed: ReadonlyMap<string, InstalledService>,
    ids: ServiceIds,
    changes: ListChanges | undefined,
  ): ListPlan {
    const { fresh, left } = (changes !== undefined ? this.changesGiven(all, changes) : undefined) ?? this.changesFound(all);
    const added = new Map<string, ParsedEntry>();
    const desired = new Map<string, DesiredService>();
    for (const [e, what] of fresh) {
      const p = checkEntry(e, what, this.byKey);
      const key = p.d.keyStr;
      const holder = this.byService.get(key);
      if (added.has(key) || (holder !== undefined && !left.has(holder))) throw new RangeError(`${what()}: ${key} appears twice`);
      added.set(key, p);
      desired.set(key, p.d);
    }
    // The services of the new entries and of those that left, as the maps hold them.
    const touched = new Map<string, InstalledService>();
    const touch = (key: string): void => {
      const cur = installed.get(key);
      if (cur !== undefined) touched.set(key, cur);
    };
    for (const key of added.keys()) touch(key);
    for (const p of left) touch(p.d.keyStr);
    const plan = planServices(desired, touched, ids);
    plan.counts.unchanged += all.length - fresh.length;
    const was = liveCounts(touched.values());
    const now = liveCounts(plan.next.values());
    return {
      plan,
      services: all.length,
      commit: (view) => {
        for (const p of left) {
          this.byEntry.delete(p.entry);
          if (this.byKey.get(p.rawKey) === p) this.byKey.delete(p.rawKey);
          if (this.byService.get(p.d.keyStr) === p) this.byService.delete(p.d.keyStr);
          if (!added.has(p.d.keyStr)) view.delete(p.d.keyStr);
        }
        for (const p of added.values()) {
          this.byEntry.set(p.entry, p);
          this.byKey.set(p.rawKey, p);
          this.byService.set(p.d.keyStr, p);
        }
        for (const [key, s] of plan.next) view.set(key, s);
        return view;
      },
      liveAfter: (before) => ({ slots: before.slots - was.slots + now.slots, members: before.members - was.members + now.members }),
    };
  }
}

/** The slots of the live buffers and the affinity members of the installed services. */
export interface LiveCounts {
  slots: number;
  members: number;
}

export function liveCounts(installed: Iterable<InstalledService>): LiveCounts {
  const live = { slots: 0, members: 0 };
  for (const s of installed) {
    live.slots += s.count;
    live.members += s.members.size;
  }
  return live;
}

/** What stands in the maps besides the live services while a plan is written. */
export interface SocketLbLeftovers {
  /** Slots and members found at start that no service names (a crash mid-apply). */
  staleSlots: number;
  staleMembers: number;
  /** Old buffers' slots awaiting a grace period. */
  retiredSlots: number;
  /** A flipped service's other buffer is one of them: the plan must wait for the grace period. */
  reusesRetired: boolean;
}

/**
 * Whether the plan fits, checked before anything is written: the peak is
 * every live buffer, the new buffers and the leftovers, all at once.
 * Retired buffers in the way are waited for (mustWait) rather than refused.
 */
export function checkCapacity(
  sizes: { maxServices: number; maxSlots: number },
  services: number,
  live: LiveCounts,
  plan: SocketLbPlan,
  l: SocketLbLeftovers,
): { problem: string | null; mustWait: boolean } {
  let peakSlots = live.slots + plan.slots.count + l.staleSlots + l.retiredSlots;
  const mustWait = l.reusesRetired || (peakSlots > sizes.maxSlots && l.retiredSlots > 0);
  if (mustWait) peakSlots -= l.retiredSlots;
  const peakMembers = live.members + plan.memberAdds.length + l.staleMembers;
  const problem =
    services > sizes.maxServices
      ? `${services} services exceed maxServices ${sizes.maxServices}`
      : peakSlots > sizes.maxSlots
        ? `${peakSlots} backend slots (both buffers during the update) exceed maxSlots ${sizes.maxSlots}`
        : peakMembers > sizes.maxSlots
          ? `${peakMembers} affinity members exceed maxSlots ${sizes.maxSlots}`
          : null;
  return { problem, mustWait };
}
