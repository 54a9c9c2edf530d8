/**
 * The kernel's NAT for what the XDP datapath cannot serve: NodePorts,
 * LoadBalancer IPs and externalIPs whose endpoints listen on another port
 * (the datapath keeps ports: direct server return). ferryd owns one
 * nftables table, `inet ferry_k8s`, and replaces it as a whole in one nft
 * transaction whenever the list changes:
 *
 *   prerouting (dstnat): daddr + port → numgen random over the endpoints,
 *     DNAT to endpoint address . endpoint port; externalTrafficPolicy
 *     Cluster also sets a conntrack mark,
 *   postrouting (srcnat): that mark → masquerade, so the endpoint answers
 *     the node, which un-NATs the reply (Local keeps the client's address;
 *     its endpoints are on this node, so replies pass it anyway).
 *
 * Packets reach these rules because xdp_lb passes everything that is not
 * one of its VIPs. Nothing else of the host's netfilter state is touched.
 */
import { execFileSync } from 'node:child_process';
import { isIPv6 } from 'node:net';
import type { NatEntry } from './translate.js';

export const NAT_TABLE = 'ferry_k8s';
/** The conntrack mark of connections to masquerade ("FR"). */
export const NAT_MASQ_MARK = 0x4652;

const endpoint = (address: string, port: number): string => `${address} . ${port}`;

/** One prerouting rule; null for an entry without endpoints (nothing to send it to). */
function rule(e: NatEntry): string | null {
  if (e.backends.length === 0) return null;
  const v6 = isIPv6(e.address);
  const fam = v6 ? 'ip6' : 'ip';
  const map = e.backends.map((b, i) => `${i} : ${endpoint(b.address, b.port)}`).join(', ');
  const mark = e.masquerade ? `ct mark set 0x${NAT_MASQ_MARK.toString(16)} ` : '';
  return `${fam} daddr ${e.address} ${e.protocol} dport ${e.port} ${mark}dnat ${fam} to numgen random mod ${e.backends.length} map { ${map} }`;
}

/**
 * The nft script that makes the table hold exactly `entries`: it creates the
 * table if missing, deletes it and declares it anew, in one transaction.
 */
export function renderNat(entries: readonly NatEntry[]): string {
  const rules = entries.map(rule).filter((r): r is string => r !== null);
  return [
    `table inet ${NAT_TABLE}`,
    `delete table inet ${NAT_TABLE}`,
    `table inet ${NAT_TABLE} {`,
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    ...rules.map((r) => `    ${r}`),
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ct mark 0x${NAT_MASQ_MARK.toString(16)} masquerade`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Runs an nft script; throws with nft's own message. */
export type NftRunner = (script: string) => void;

/** nft in this process's network namespace, or in a named one (/run/netns/<ns>; tests). */
export function nftRunner(netns?: string): NftRunner {
  return (script) => {
    const [cmd, args] = netns === undefined ? ['nft', ['-f', '-']] : ['nsenter', [`--net=/run/netns/${netns}`, '--', 'nft', '-f', '-']];
    try {
      execFileSync(cmd, args, { input: script, stdio: ['pipe', 'ignore', 'pipe'], timeout: 30_000 });
    } catch (err) {
      const e = err as { stderr?: Buffer; message: string };
      const detail = e.stderr?.toString().trim() || e.message;
      throw new Error(`nft: ${detail}`);
    }
  };
}

/** ferryd's NAT table: applied when the list changes; the last error is kept for the API view. */
export class NatTable {
  private applied: string | null = null;
  lastError: string | null = null;
  entries = 0;

  constructor(private readonly run: NftRunner = nftRunner()) {}

  /** Makes the table hold `entries`; a list equal to the applied one costs nothing. Throws nft's error. */
  apply(entries: readonly NatEntry[]): void {
    const script = renderNat(entries);
    if (script === this.applied) {
      // The table holds it (a refused script changed nothing): whatever failed since no longer matters.
      this.lastError = null;
      return;
    }
    try {
      this.run(script);
    } catch (err) {
      this.lastError = (err as Error).message;
      throw err;
    }
    this.applied = script;
    this.entries = entries.filter((e) => e.backends.length > 0).length;
    this.lastError = null;
  }

  /** Whether the last apply failed (the caller retries with the current list). */
  get failed(): boolean {
    return this.lastError !== null;
  }

  /** Removes the table (ferryd --detach). */
  remove(): void {
    this.run(`table inet ${NAT_TABLE}\ndelete table inet ${NAT_TABLE}\n`);
    this.applied = null;
    this.entries = 0;
  }
}
