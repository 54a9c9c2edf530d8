/**
 * The kernel's NAT for what the XDP datapath does not serve: NodePorts,
 * LoadBalancer IPs and externalIPs whose endpoints listen on another port
 * (the datapath keeps ports: direct server return), or all of them with
 * `kubernetes.external_path: nat`. ferryd owns one nftables table,
 * `inet ferry_k8s`:
 *
 *   prerouting, filter (before NAT): daddr . protocol . port looked up in a
 *     verdict map (ranges4 / ranges6) that jumps to the entry's own chain
 *     src_<id>: loadBalancerSourceRanges — other sources are dropped;
 *   prerouting, dstnat: the same lookup in nat4 / nat6 goes to svc_<id>,
 *     which DNATs to one of the endpoints (random, or a hash of the client's
 *     address with sessionAffinity ClientIP), to endpoint address . port;
 *     externalTrafficPolicy Cluster also sets a conntrack mark bit;
 *   postrouting, srcnat: that bit → masquerade, so the endpoint answers the
 *     node, which un-NATs the reply (Local keeps the client's address; its
 *     endpoints are on this node, so replies pass it anyway).
 *
 * One map lookup per packet finds its entry, however many there are, and
 * a change rewrites only the chains and map elements of the entries that
 * changed, in one nft transaction: a Service's change costs its own rules
 * (as kube-proxy's nftables mode does), not the table. The whole table is
 * written only the first time, after a failure, or when it went missing.
 *
 * Packets reach these rules because xdp_lb passes everything that is not
 * one of its VIPs. Nothing else of the host's netfilter state is touched.
 * nft runs as a child process, one run at a time, without blocking the
 * daemon; a list that arrives meanwhile replaces any older pending one.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { ipFamily } from '../net/addr.js';
import type { NatEntry } from './translate.js';

export const NAT_TABLE = 'ferry_k8s';
/** The conntrack mark bit of connections to masquerade (one bit: other users' bits are kept). */
export const NAT_MASQ_BIT = 0x10000000;
/** Seed of the affinity hash: fixed, so a restart keeps clients on their endpoints. */
const AFFINITY_SEED = 0x4652;

const T = `inet ${NAT_TABLE}`;
const hex = (n: number): string => `0x${n.toString(16)}`;
/** The statement that marks a connection for masquerade. */
const MARK_MASQ = `ct mark set ct mark | ${hex(NAT_MASQ_BIT)}`;
const fam = (e: NatEntry): 'ip' | 'ip6' => (ipFamily(e.address) === 6 ? 'ip6' : 'ip');
const suffix = (e: NatEntry): '4' | '6' => (ipFamily(e.address) === 6 ? '6' : '4');

/** What identifies an entry: its address, protocol and port. */
const keyOf = (e: NatEntry): string => `${e.address}|${e.protocol}|${e.port}`;

/** The map element that finds an entry: "198.18.0.2 . tcp . 30080". */
const element = (e: NatEntry): string => `${e.address} . ${e.protocol} . ${e.port}`;

/** An entry's chains are named after its key, so the same entry keeps its chains across runs. */
function chainId(e: NatEntry): string {
  return createHash('sha256').update(keyOf(e)).digest('hex').slice(0, 16);
}

/** The rule of src_<id>: drop sources outside the ranges; null when any source may come. */
function sourceRule(e: NatEntry): string | null {
  if (e.sourceRanges === null) return null;
  if (e.sourceRanges.length === 0) return 'drop';
  return `${fam(e)} saddr != { ${e.sourceRanges.join(', ')} } drop`;
}

/** Endpoints up to which an entry's DNAT is one rule per endpoint; more are looked up in a map (natRules). */
const RULES_UP_TO = 16;

/** An endpoint as a DNAT target: 10.0.0.1:80, [fd00::1]:80. */
const target = (b: { address: string; port: number }): string =>
  ipFamily(b.address) === 6 ? `[${b.address}]:${b.port}` : `${b.address}:${b.port}`;

/**
 * Hairpin of an externalTrafficPolicy Local entry: an endpoint reaching its
 * own Service through this node may be sent to itself; its source must then
 * become the node's, or the reply would never pass the node to be un-NATed.
 * (Cluster entries are masqueraded anyway.) A rule per endpoint address, as
 * natRules, up to RULES_UP_TO.
 */
function hairpinRules(e: NatEntry): string[] {
  if (e.masquerade || e.backends.length === 0) return [];
  const sources = [...new Set(e.backends.map((b) => b.address))];
  if (sources.length > RULES_UP_TO) return [`${fam(e)} saddr { ${sources.join(', ')} } ${MARK_MASQ}`];
  return sources.map((s) => `${fam(e)} saddr ${s} ${MARK_MASQ}`);
}

/**
 * The DNAT rules; none for an entry without endpoints (its packets pass
 * un-NATed). Up to RULES_UP_TO endpoints, one rule each: of n, endpoint i
 * takes 1 in n - i of the connections that reach its rule (1 in n overall),
 * or, with affinity, those whose client hashes to i. An anonymous map per
 * entry would say it in one rule, but the kernel names each one by scanning
 * the table's sets: ten thousand entries took ten seconds to load, and the
 * time grew with the square of the count. Rules cost none of that, and only
 * a connection's first packet walks them (conntrack NATs the rest). A larger
 * entry keeps the map: one lookup, not a long walk.
 */
function natRules(e: NatEntry): string[] {
  const n = e.backends.length;
  if (n === 0) return [];
  const out = e.masquerade ? [MARK_MASQ] : [];
  // nft takes an "address:port" DNAT target only after a transport protocol match.
  const dnat = `meta l4proto ${e.protocol} dnat ${fam(e)} to`;
  const hash = `jhash ${fam(e)} saddr mod ${n} seed ${hex(AFFINITY_SEED)}`;
  if (n > RULES_UP_TO) {
    const map = e.backends.map((b, i) => `${i} : ${b.address} . ${b.port}`).join(', ');
    out.push(`${dnat} ${e.affinity ? hash : `numgen random mod ${n}`} map { ${map} }`);
    return out;
  }
  e.backends.forEach((b, i) => {
    const pick = i === n - 1 ? '' : e.affinity ? `${hash} == ${i} ` : `numgen random mod ${n - i} == 0 `;
    out.push(`${pick}${dnat} ${target(b)}`);
  });
  return out;
}

/** What the table holds for one entry. */
interface Rendered {
  entry: NatEntry;
  id: string;
  nat: string[];
  source: string | null;
}

function render(e: NatEntry): Rendered {
  return {
    entry: e,
    id: chainId(e),
    nat: [...hairpinRules(e), ...natRules(e)],
    source: sourceRule(e),
  };
}

const sameRendering = (a: Rendered, b: Rendered): boolean =>
  a.source === b.source && a.nat.length === b.nat.length && a.nat.every((r, i) => r === b.nat[i]);

/** The commands that give an entry its chains and elements (over whatever it had). */
function putEntry(r: Rendered, had: Rendered | undefined): string[] {
  const e = r.entry;
  const out = [`add chain ${T} svc_${r.id}`, `flush chain ${T} svc_${r.id}`, ...r.nat.map((rule) => `add rule ${T} svc_${r.id} ${rule}`)];
  if (had === undefined) out.push(`add element ${T} nat${suffix(e)} { ${element(e)} : goto svc_${r.id} }`);
  if (r.source !== null) {
    out.push(`add chain ${T} src_${r.id}`, `flush chain ${T} src_${r.id}`, `add rule ${T} src_${r.id} ${r.source}`);
    if (had?.source == null) out.push(`add element ${T} ranges${suffix(e)} { ${element(e)} : goto src_${r.id} }`);
  } else if (had?.source != null) {
    out.push(`delete element ${T} ranges${suffix(e)} { ${element(e)} }`, `delete chain ${T} src_${r.id}`);
  }
  return out;
}

/** The commands that take an entry out of the table. */
function deleteEntry(r: Rendered): string[] {
  const e = r.entry;
  const out = [`delete element ${T} nat${suffix(e)} { ${element(e)} }`, `delete chain ${T} svc_${r.id}`];
  if (r.source !== null) out.push(`delete element ${T} ranges${suffix(e)} { ${element(e)} }`, `delete chain ${T} src_${r.id}`);
  return out;
}

/**
 * The whole table, declared in one block: its maps (with their elements),
 * the chains that look entries up, the masquerade, and every entry's chains.
 */
function wholeTable(entries: readonly Rendered[]): string[] {
  /** Map `name` (its last character the family) with the elements of the entries `pick` takes. */
  const map = (name: string, addr: string, chain: string, pick: (r: Rendered) => boolean) => {
    const els = entries
      .filter((r) => pick(r) && suffix(r.entry) === name.slice(-1))
      .map((r) => `${element(r.entry)} : goto ${chain}_${r.id}`);
    const body = els.length === 0 ? '' : ` elements = { ${els.join(', ')} };`;
    return `  map ${name} { type ${addr} . inet_proto . inet_service : verdict;${body} }`;
  };
  const chains: string[] = [];
  for (const r of entries) {
    chains.push(`  chain svc_${r.id} {`, ...r.nat.map((rule) => `    ${rule}`), '  }');
    if (r.source !== null) chains.push(`  chain src_${r.id} {`, `    ${r.source}`, '  }');
  }
  return [
    `table ${T} {`,
    map('nat4', 'ipv4_addr', 'svc', () => true),
    map('nat6', 'ipv6_addr', 'svc', () => true),
    map('ranges4', 'ipv4_addr', 'src', (r) => r.source !== null),
    map('ranges6', 'ipv6_addr', 'src', (r) => r.source !== null),
    ...chains,
    '  chain source_ranges {',
    '    type filter hook prerouting priority dstnat - 10; policy accept;',
    '    ip daddr . meta l4proto . th dport vmap @ranges4',
    '    ip6 daddr . meta l4proto . th dport vmap @ranges6',
    '  }',
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    '    ip daddr . meta l4proto . th dport vmap @nat4',
    '    ip6 daddr . meta l4proto . th dport vmap @nat6',
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ct mark & ${hex(NAT_MASQ_BIT)} == ${hex(NAT_MASQ_BIT)} masquerade`,
    '  }',
    '}',
  ];
}

/**
 * The nft script that makes the table hold exactly `entries`: it creates the
 * table if missing, deletes it and declares it anew, in one transaction.
 */
export function renderNat(entries: readonly NatEntry[]): string {
  return wholeScript(entries.map(render));
}

function wholeScript(entries: readonly Rendered[]): string {
  return `${[`table ${T}`, `delete table ${T}`, ...wholeTable(entries)].join('\n')}\n`;
}

/**
 * The nft script that turns the table holding `before` into one holding
 * `after` (keyed by entry), touching only the entries that differ; null
 * when nothing does.
 */
function renderChanges(before: ReadonlyMap<string, Rendered>, after: ReadonlyMap<string, Rendered>): string | null {
  const lines: string[] = [];
  for (const [key, r] of before) if (!after.has(key)) lines.push(...deleteEntry(r));
  for (const [key, r] of after) {
    const had = before.get(key);
    if (had !== r && (had === undefined || !sameRendering(had, r))) lines.push(...putEntry(r, had));
  }
  return lines.length === 0 ? null : `${lines.join('\n')}\n`;
}

/** Runs an nft script; rejects with nft's own message. */
export type NftRunner = (script: string) => Promise<void>;

/** Whether the table exists (`nft list tables inet`), in this network namespace or a named one. */
export function nftHasTable(netns?: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const list = ['nft', 'list', 'tables', 'inet'];
    const [cmd, args] = netns === undefined ? [list[0]!, list.slice(1)] : ['nsenter', [`--net=/run/netns/${netns}`, '--', ...list]];
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err !== null) return reject(new Error(`nft: ${stderr.trim() || err.message}`));
      resolve(stdout.split('\n').some((l) => l.trim() === `table inet ${NAT_TABLE}`));
    });
  });
}

/** nft in this process's network namespace, or in a named one (/run/netns/<ns>; tests). */
export function nftRunner(netns?: string): NftRunner {
  return (script) =>
    new Promise((resolve, reject) => {
      const [cmd, args] = netns === undefined ? ['nft', ['-f', '-']] : ['nsenter', [`--net=/run/netns/${netns}`, '--', 'nft', '-f', '-']];
      const child = execFile(cmd, args, { timeout: 120_000, maxBuffer: 1 << 20 }, (err, _stdout, stderr) => {
        if (err === null) return resolve();
        reject(new Error(`nft: ${stderr.trim() || err.message}`));
      });
      child.stdin?.end(script);
    });
}

/** Runs conntrack with these arguments; resolves however it exits (best effort: no match exits 1). */
export type ConntrackRunner = (args: readonly string[]) => Promise<void>;

export function conntrackRunner(netns?: string): ConntrackRunner {
  return (args) =>
    new Promise((resolve) => {
      const [cmd, argv] =
        netns === undefined ? ['conntrack', [...args]] : ['nsenter', [`--net=/run/netns/${netns}`, '--', 'conntrack', ...args]];
      execFile(cmd, argv, { timeout: 30_000 }, () => resolve());
    });
}

/**
 * The conntrack deletions a change of the list calls for (UDP only, as
 * kube-proxy: a UDP client keeps its flow as long as it keeps sending, so
 * a flow DNATed to an endpoint that left, or one that passed un-NATed while
 * the Service had no endpoint, would never end by itself).
 */
export function conntrackFlushes(before: readonly NatEntry[], after: readonly NatEntry[]): string[][] {
  const key = (e: NatEntry): string => `${e.address}|${e.port}`;
  const udp = (list: readonly NatEntry[]) => new Map(list.filter((e) => e.protocol === 'udp').map((e) => [key(e), e]));
  const old = udp(before);
  const next = udp(after);
  const out: string[][] = [];
  const base = (e: NatEntry): string[] => [
    '-D',
    ...(ipFamily(e.address) === 6 ? ['-f', 'ipv6'] : []),
    '-p',
    'udp',
    '--orig-dst',
    e.address,
    '--orig-port-dst',
    String(e.port),
  ];
  for (const [k, e] of next) {
    const was = old.get(k);
    if (e.backends.length > 0 && (was === undefined || was.backends.length === 0)) out.push(base(e));
    if (was === undefined) continue;
    const now = new Set(e.backends.map((b) => `${b.address}|${b.port}`));
    for (const b of was.backends)
      if (!now.has(`${b.address}|${b.port}`)) out.push([...base(e), '--reply-src', b.address, '--reply-port-src', String(b.port)]);
  }
  for (const [k, was] of old) {
    if (next.has(k)) continue;
    for (const b of was.backends) out.push([...base(was), '--reply-src', b.address, '--reply-port-src', String(b.port)]);
  }
  return out;
}

/** The entries of keys whose rendering is not the same object in both: `before`'s and `after`'s (conntrackFlushes' input). */
function changedEntries(before: ReadonlyMap<string, Rendered>, after: ReadonlyMap<string, Rendered>): [NatEntry[], NatEntry[]] {
  const was: NatEntry[] = [];
  const now: NatEntry[] = [];
  for (const [key, r] of after) {
    const had = before.get(key);
    if (had === r) continue;
    now.push(r.entry);
    if (had !== undefined) was.push(had.entry);
  }
  for (const [key, r] of before) if (!after.has(key)) was.push(r.entry);
  return [was, now];
}

/**
 * ferryd's NAT table. `apply` queues the list (only the latest pending one
 * is kept) and resolves once it, or a later list, is in the kernel; the last
 * error is kept for the API view and the retry. After the first full write,
 * each apply changes only the entries that differ from what the table holds.
 * An entry that is the same object as the one applied (the sync keeps an
 * unchanged Service's entries) is not rendered again, so a change costs its
 * own entries here too, not a pass that renders the whole list.
 */
export class NatTable {
  /** What the last successful nft run left in the table, by entry key (what conntrack flushes compare with). */
  private held = new Map<string, Rendered>();
  /** Whether the kernel's table is known to hold `held`; if not, the next apply writes the whole table. */
  private known = false;
  private running: Promise<void> | null = null;
  private pending: readonly NatEntry[] | null = null;
  lastError: string | null = null;
  entries = 0;
  /** nft runs: whole tables written, and changes of a few entries. */
  readonly stats = { full: 0, incremental: 0 };

  constructor(
    private readonly run: NftRunner = nftRunner(),
    private readonly conntrack: ConntrackRunner = conntrackRunner(),
  ) {}

  /**
   * Makes the table hold `entries`; an unchanged list costs nothing. Rejects with nft's error. An entry is not
   * changed once given: a changed entry is a new object (an unchanged one may be the same object again).
   */
  apply(entries: readonly NatEntry[]): Promise<void> {
    this.pending = entries;
    this.running ??= this.drain().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async drain(): Promise<void> {
    while (this.pending !== null) {
      const list = this.pending;
      this.pending = null;
      const want = this.renderAll(list);
      const script = this.known ? renderChanges(this.held, want) : wholeScript([...want.values()]);
      if (script === null) {
        // The table holds it (a refused script changed nothing): whatever failed since no longer matters. Entries
        // given as new objects rendered the same: held as they are now, they are not rendered again next time.
        this.held = want;
        this.lastError = null;
        continue;
      }
      try {
        await this.run(script);
      } catch (err) {
        // nft applies a script whole or not at all: the table holds what it held. Whether that is what
        // this process thinks (a table removed from outside fails every change) is no longer sure:
        // the next apply writes the whole table.
        this.known = false;
        this.lastError = (err as Error).message;
        if (this.pending === null) throw err;
        continue; // a newer list came meanwhile: try that one
      }
      if (this.known) this.stats.incremental++;
      else this.stats.full++;
      const flushes = conntrackFlushes(...changedEntries(this.held, want));
      this.held = want;
      this.known = true;
      this.entries = list.filter((e) => e.backends.length > 0).length;
      this.lastError = null;
      for (const args of flushes) await this.conntrack(args);
    }
  }

  /** `list` by key, rendered; an entry that is the same object as the one held keeps its rendering. */
  private renderAll(list: readonly NatEntry[]): Map<string, Rendered> {
    const want = new Map<string, Rendered>();
    for (const e of list) {
      const key = keyOf(e);
      const had = this.held.get(key);
      want.set(key, had !== undefined && had.entry === e ? had : render(e));
    }
    return want;
  }

  /** Whether the last apply failed (the caller retries with the current list). */
  get failed(): boolean {
    return this.lastError !== null;
  }

  /** Forgets what was applied: the next apply rewrites the table (a leftover of an earlier run, or one removed by hand). */
  invalidate(): void {
    this.known = false;
  }

  /**
   * Whether a table this process applied went missing (`nft flush ruleset`, an nftables service restart):
   * then it forgets it, and the caller applies the list again.
   */
  async lost(hasTable: () => Promise<boolean> = () => nftHasTable()): Promise<boolean> {
    if (!this.known || this.running !== null) return false;
    if (await hasTable()) return false;
    this.known = false;
    return true;
  }

  /** Removes the table (ferryd --detach, or NAT turned off); no table is not an error. */
  async remove(): Promise<void> {
    await this.run(`table ${T}\ndelete table ${T}\n`);
    this.held = new Map();
    this.known = false;
    this.entries = 0;
  }
}
