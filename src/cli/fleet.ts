/**
 * ferryctl fleet status --host A --host B ...: the hosts of a fleet side by
 * side (GET /v1/maglev on each): version, revisions, the hash seed, and
 * whether every VIP's Maglev table is the same on all of them (same seed,
 * same tables: a flow the router moves between hosts keeps its backend).
 * Exit code 1 when tables differ or a host cannot be reached.
 */
import type { Command } from 'commander';
import type { MaglevTablesView } from '../model/maglev.js';
import type { Client } from './client.js';
import { printJson, printTable } from './output.js';

/** A client for one host: a unix socket path, or an http(s) URL (with the global token). */
type ClientAt = (cmd: Command, where: string) => { api: Client; g: { json?: boolean } };

export interface FleetReport {
  hosts: Array<{ host: string; tables: MaglevTablesView | null; error: string | null }>;
  /** VIPs whose table differs between hosts (or which some host lacks), with each host's checksum (null: missing). */
  differ: Array<{ vip: string; checksums: Record<string, string | null> }>;
  seeds_match: boolean;
  same: boolean;
}

export function compareTables(hosts: FleetReport['hosts']): FleetReport {
  const up = hosts.filter((h) => h.tables !== null);
  const names = new Set(up.flatMap((h) => h.tables!.vips.map((v) => v.name)));
  const differ: FleetReport['differ'] = [];
  for (const vip of [...names].sort()) {
    const checksums = Object.fromEntries(up.map((h) => [h.host, h.tables!.vips.find((v) => v.name === vip)?.checksum ?? null]));
    if (new Set(Object.values(checksums)).size > 1) differ.push({ vip, checksums });
  }
  const seedsMatch = new Set(up.map((h) => h.tables!.hash_seed)).size <= 1;
  return { hosts, differ, seeds_match: seedsMatch, same: up.length === hosts.length && differ.length === 0 && seedsMatch };
}

export function fleetCommands(root: Command, clientAt: ClientAt): void {
  const fleet = root.command('fleet').description('several Ferry hosts behind one router');
  fleet.command('status').description('compare the hosts\' revisions, hash seeds and Maglev tables (GET /v1/maglev on each)')
    .requiredOption('--host <socket-or-url...>', 'a host\'s API: a unix socket path or an http(s) URL (repeat, or list several)')
    .action(async (o: { host: string[] }, cmd: Command) => {
      const hosts: FleetReport['hosts'] = [];
      let json = false;
      for (const where of o.host) {
        const { api, g } = clientAt(cmd, where);
        json = g.json ?? false;
        try {
          hosts.push({ host: where, tables: await api.get<MaglevTablesView>('/v1/maglev'), error: null });
        } catch (err) {
          hosts.push({ host: where, tables: null, error: (err as Error).message });
        }
      }
      const r = compareTables(hosts);
      if (json) printJson(r);
      else printReport(r);
      if (!r.same) process.exitCode = 1;
    });
}

function printReport(r: FleetReport): void {
  printTable(r.hosts.map((h) => {
    const t = h.tables;
    if (t === null) return { host: h.host, version: '', revision: '', applied: '', seed: '', vips: '', tables: `unreachable: ${h.error}` };
    const bad = r.differ.filter((d) => d.checksums[h.host] !== undefined).length;
    return {
      host: h.host, version: t.version, revision: t.revision, applied: t.applied_revision, seed: t.hash_seed, vips: t.vips.length,
      tables: bad === 0 && r.seeds_match ? 'same' : `${bad} differ`,
    };
  }));
  if (!r.seeds_match) console.log('\nhash seeds differ: set the same datapath.hash_seed on every host');
  if (r.differ.length > 0) {
    console.log('\nVIPs whose Maglev table differs (checksum per host; - = no such VIP):');
    printTable(r.differ.map((d) => ({ vip: d.vip, ...Object.fromEntries(Object.entries(d.checksums).map(([h, c]) => [h, c ?? '-'])) })));
  }
  console.log(`\n${r.same ? 'every host holds the same tables' : 'the hosts do not agree: a flow moved between them may change backend'}`);
}
