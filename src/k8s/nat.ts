/**
 * The kernel's NAT for what the XDP datapath does not serve: NodePorts,
 * LoadBalancer IPs and externalIPs whose endpoints listen on another port
 * (the datapath keeps ports: direct server return), or all of them with
 * `kubernetes.external_path: nat`. ferryd owns one nftables table,
 * `inet ferry_k8s`, and replaces it as a whole in one nft transaction
 * whenever the list changes:
 *
 *   prerouting, filter (before NAT): loadBalancerSourceRanges — sources
 *     outside a LoadBalancer IP's ranges are dropped;
 *   prerouting, dstnat: daddr + port → one of the endpoints (random, or a
 *     hash of the client's address with sessionAffinity ClientIP), DNAT to
 *     endpoint address . port; externalTrafficPolicy Cluster also sets a
 *     conntrack mark bit;
 *   postrouting, srcnat: that bit → masquerade, so the endpoint answers the
 *     node, which un-NATs the reply (Local keeps the client's address; its
 *     endpoints are on this node, so replies pass it anyway).
 *
 * Packets reach these rules because xdp_lb passes everything that is not
 * one of its VIPs. Nothing else of the host's netfilter state is touched.
 * nft runs as a child process, one run at a time, without blocking the
 * daemon; a list that arrives meanwhile replaces any older pending one.
 */
import { execFile } from 'node:child_process';
import { isIPv6 } from 'node:net';
import type { NatEntry } from './translate.js';

export const NAT_TABLE = 'ferry_k8s';
/** The conntrack mark bit of connections to masquerade (one bit: other users' bits are kept). */
export const NAT_MASQ_BIT = 0x10000000;
/** Seed of the affinity hash: fixed, so a restart keeps clients on their endpoints. */
const AFFINITY_SEED = 0x4652;

const hex = (n: number): string => `0x${n.toString(16)}`;

/** "ip daddr 198.18.0.2 tcp dport 30080": what one entry matches. */
function match(e: NatEntry): string {
  const fam = isIPv6(e.address) ? 'ip6' : 'ip';
  return `${fam} daddr ${e.address} ${e.protocol} dport ${e.port}`;
}

/** The source-range rule of an entry, or null when any source may come. */
function filterRule(e: NatEntry): string | null {
  if (e.sourceRanges === null) return null;
  const fam = isIPv6(e.address) ? 'ip6' : 'ip';
  if (e.sourceRanges.length === 0) return `${match(e)} drop`;
  return `${match(e)} ${fam} saddr != { ${e.sourceRanges.join(', ')} } drop`;
}

/**
 * Hairpin of an externalTrafficPolicy Local entry: an endpoint reaching its
 * own Service through this node may be sent to itself; its source must then
 * become the node's, or the reply would never pass the node to be un-NATed.
 * (Cluster entries are masqueraded anyway.)
 */
function hairpinRule(e: NatEntry): string | null {
  if (e.masquerade || e.backends.length === 0) return null;
  const fam = isIPv6(e.address) ? 'ip6' : 'ip';
  const sources = [...new Set(e.backends.map((b) => b.address))].join(', ');
  return `${match(e)} ${fam} saddr { ${sources} } ct mark set ct mark | ${hex(NAT_MASQ_BIT)}`;
}

/** One DNAT rule; null for an entry without endpoints (nothing to send it to). */
function natRule(e: NatEntry): string | null {
  if (e.backends.length === 0) return null;
  const fam = isIPv6(e.address) ? 'ip6' : 'ip';
  const map = e.backends.map((b, i) => `${i} : ${b.address} . ${b.port}`).join(', ');
  const pick = e.affinity
    ? `jhash ${fam} saddr mod ${e.backends.length} seed ${hex(AFFINITY_SEED)}`
    : `numgen random mod ${e.backends.length}`;
  const mark = e.masquerade ? `ct mark set ct mark | ${hex(NAT_MASQ_BIT)} ` : '';
  return `${match(e)} ${mark}dnat ${fam} to ${pick} map { ${map} }`;
}

/**
 * The nft script that makes the table hold exactly `entries`: it creates the
 * table if missing, deletes it and declares it anew, in one transaction.
 */
export function renderNat(entries: readonly NatEntry[]): string {
  const filters = entries.map(filterRule).filter((r): r is string => r !== null);
  const rules = entries.flatMap((e) => [hairpinRule(e), natRule(e)]).filter((r): r is string => r !== null);
  return [
    `table inet ${NAT_TABLE}`,
    `delete table inet ${NAT_TABLE}`,
    `table inet ${NAT_TABLE} {`,
    '  chain source_ranges {',
    '    type filter hook prerouting priority dstnat - 10; policy accept;',
    ...filters.map((r) => `    ${r}`),
    '  }',
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    ...rules.map((r) => `    ${r}`),
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ct mark & ${hex(NAT_MASQ_BIT)} == ${hex(NAT_MASQ_BIT)} masquerade`,
    '  }',
    '}',
    '',
  ].join('\n');
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
  return (script) => new Promise((resolve, reject) => {
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
  return (args) => new Promise((resolve) => {
    const [cmd, argv] = netns === undefined ? ['conntrack', [...args]] : ['nsenter', [`--net=/run/netns/${netns}`, '--', 'conntrack', ...args]];
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
  const base = (e: NatEntry): string[] => ['-D', ...(isIPv6(e.address) ? ['-f', 'ipv6'] : []), '-p', 'udp', '--orig-dst', e.address, '--orig-port-dst', String(e.port)];
  for (const [k, e] of next) {
    const was = old.get(k);
    if (e.backends.length > 0 && (was === undefined || was.backends.length === 0)) out.push(base(e));
    if (was === undefined) continue;
    const now = new Set(e.backends.map((b) => `${b.address}|${b.port}`));
    for (const b of was.backends) if (!now.has(`${b.address}|${b.port}`)) out.push([...base(e), '--reply-src', b.address, '--reply-port-src', String(b.port)]);
  }
  for (const [k, was] of old) {
    if (next.has(k)) continue;
    for (const b of was.backends) out.push([...base(was), '--reply-src', b.address, '--reply-port-src', String(b.port)]);
  }
  return out;
}

/**
 * ferryd's NAT table. `apply` queues the list (only the latest pending one
 * is kept) and resolves once it, or a later list, is in the kernel; the last
 * error is kept for the API view and the retry.
 */
export class NatTable {
  private applied: string | null = null;
  private running: Promise<void> | null = null;
  private pending: string | null = null;
  lastError: string | null = null;
  entries = 0;
  private pendingList: readonly NatEntry[] = [];
  /** The list the table holds (what conntrack flushes compare with). */
  private appliedList: readonly NatEntry[] = [];

  constructor(private readonly run: NftRunner = nftRunner(), private readonly conntrack: ConntrackRunner = conntrackRunner()) {}

  /** Makes the table hold `entries`; an unchanged list costs nothing. Rejects with nft's error. */
  apply(entries: readonly NatEntry[]): Promise<void> {
    this.pending = renderNat(entries);
    this.pendingList = entries;
    this.running ??= this.drain().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async drain(): Promise<void> {
    while (this.pending !== null) {
      const script = this.pending;
      const list = this.pendingList;
      this.pending = null;
      if (script === this.applied) {
        // The table holds it (a refused script changed nothing): whatever failed since no longer matters.
        this.lastError = null;
        continue;
      }
      try {
        await this.run(script);
      } catch (err) {
        this.lastError = (err as Error).message;
        if (this.pending === null) throw err;
        continue; // a newer list came meanwhile: try that one
      }
      this.applied = script;
      this.entries = list.filter((e) => e.backends.length > 0).length;
      this.lastError = null;
      const flushes = conntrackFlushes(this.appliedList, list);
      this.appliedList = list;
      for (const args of flushes) await this.conntrack(args);
    }
  }

  /** Whether the last apply failed (the caller retries with the current list). */
  get failed(): boolean {
    return this.lastError !== null;
  }

  /** Forgets what was applied: the next apply rewrites the table (a leftover of an earlier run, or one removed by hand). */
  invalidate(): void {
    this.applied = null;
  }

  /**
   * Whether a table this process applied went missing (`nft flush ruleset`, an nftables service restart):
   * then it forgets it, and the caller applies the list again.
   */
  async lost(hasTable: () => Promise<boolean> = () => nftHasTable()): Promise<boolean> {
    if (this.applied === null || this.running !== null) return false;
    if (await hasTable()) return false;
    this.applied = null;
    return true;
  }

  /** Removes the table (ferryd --detach, or NAT turned off); no table is not an error. */
  async remove(): Promise<void> {
    await this.run(`table inet ${NAT_TABLE}\ndelete table inet ${NAT_TABLE}\n`);
    this.applied = null;
    this.appliedList = [];
    this.entries = 0;
  }
}
