/**
 * ferryctl fleet status: the hosts of a fleet side by side.
 *
 * Without --host: the members of the fleet store (GET /v1/fleet on the host
 * ferryctl talks to): each member's mirrored etcd revision, hash seed and
 * a digest of its tables; where digests differ, the members' own
 * GET /v1/maglev (at their api_url) names the VIPs. With --host A --host B:
 * GET /v1/maglev on each (hosts without a fleet store). Same seed, same
 * tables: a flow the router moves between hosts keeps its backend.
 * Exit code 1 when the hosts disagree or one cannot be reached.
 */
import type { Command } from 'commander';
import type { FleetMember, FleetView } from '../model/fleet.js';
import type { MaglevTablesView } from '../model/maglev.js';
import type { Client, ClientOf } from './client.js';
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

/** The fleet store's members compared: they agree when every one mirrors the same revision with the same seed and tables. */
export interface MembersReport {
  revision: number;
  members: Array<FleetMember & { agrees: boolean }>;
  /** Where digests differ: the VIPs that differ, from the members' own tables (those with an api_url). */
  tables: FleetReport | null;
  same: boolean;
}

export function compareMembers(view: FleetView): Omit<MembersReport, 'tables'> {
  const top = Math.max(view.revision, ...view.members.map((m) => m.revision));
  // The most common (seed, digest) is the fleet's; the others disagree.
  const counts = new Map<string, number>();
  for (const m of view.members) counts.set(`${m.hash_seed}/${m.tables}`, (counts.get(`${m.hash_seed}/${m.tables}`) ?? 0) + 1);
  const common = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
  const members = view.members.map((m) => ({ ...m, agrees: m.revision === top && `${m.hash_seed}/${m.tables}` === common }));
  return { revision: top, members, same: members.length > 0 && members.every((m) => m.agrees) };
}

export function fleetCommands(root: Command, clientAt: ClientAt, here: ClientOf): void {
  const fleet = root.command('fleet').description('several Ferry hosts behind one router');
  fleet
    .command('status')
    .description(
      "compare the members' revisions, hash seeds and Maglev tables (the fleet store's members, or GET /v1/maglev on each --host)",
    )
    .option(
      '--host <socket-or-url...>',
      "compare these hosts' APIs instead (a unix socket path or an http(s) URL; repeat, or list several)",
    )
    .action(async (o: { host?: string[] }, cmd: Command) => {
      if (o.host === undefined) return membersStatus(here(cmd), clientAt, cmd);
      const r = await tablesOf(o.host.map((where) => ({ host: where, at: () => clientAt(cmd, where).api })));
      if (here(cmd).g.json ?? false) printJson(r);
      else printReport(r);
      if (!r.same) process.exitCode = 1;
    });
}

/** Each host's GET /v1/maglev, compared. */
async function tablesOf(hosts: Array<{ host: string; at: () => Client }>): Promise<FleetReport> {
  const out: FleetReport['hosts'] = [];
  for (const h of hosts) {
    try {
      out.push({ host: h.host, tables: await h.at().get<MaglevTablesView>('/v1/maglev'), error: null });
    } catch (err) {
      out.push({ host: h.host, tables: null, error: (err as Error).message });
    }
  }
  return compareTables(out);
}

async function membersStatus(c: { api: Client; g: { json?: boolean } }, clientAt: ClientAt, cmd: Command): Promise<void> {
  const view = await c.api.get<FleetView>('/v1/fleet');
  const base = compareMembers(view);
  const reachable = base.members.filter((m) => m.api_url !== null);
  const tables =
    base.same || reachable.length < 2
      ? null
      : await tablesOf(reachable.map((m) => ({ host: m.name, at: () => clientAt(cmd, m.api_url!).api })));
  const r: MembersReport = { ...base, tables };
  if (c.g.json ?? false) printJson(r);
  else {
    if (!view.connected) console.log(`this host does not reach the fleet store now: ${view.last_error ?? 'connecting'}\n`);
    printTable(
      r.members.map((m) => ({
        member: m.name,
        revision: m.revision,
        'store revision': m.store_revision,
        applied: m.applied_revision,
        seed: m.hash_seed,
        vips: m.vips,
        tables: m.tables,
        agrees: m.agrees ? 'yes' : 'NO',
        api: m.api_url ?? '-',
      })),
    );
    if (r.tables !== null && r.tables.differ.length > 0) {
      console.log('\nVIPs whose Maglev table differs (checksum per member; - = no such VIP):');
      printTable(
        r.tables.differ.map((d) => ({ vip: d.vip, ...Object.fromEntries(Object.entries(d.checksums).map(([h, x]) => [h, x ?? '-'])) })),
      );
    } else if (!r.same && reachable.length < 2) {
      console.log('\nset fleet.api_url on the members to have the differing VIPs named');
    }
    console.log(
      `\n${r.same ? `${r.members.length} members hold the same tables at revision ${r.revision}` : 'the members do not agree: a flow moved between them may change backend'}`,
    );
  }
  if (!r.same) process.exitCode = 1;
}

function printReport(r: FleetReport): void {
  printTable(
    r.hosts.map((h) => {
      const t = h.tables;
      if (t === null)
        return { host: h.host, version: '', revision: '', applied: '', seed: '', vips: '', tables: `unreachable: ${h.error}` };
      const bad = r.differ.filter((d) => d.checksums[h.host] !== undefined).length;
      return {
        host: h.host,
        version: t.version,
        revision: t.revision,
        applied: t.applied_revision,
        seed: t.hash_seed,
        vips: t.vips.length,
        tables: bad === 0 && r.seeds_match ? 'same' : `${bad} differ`,
      };
    }),
  );
  if (!r.seeds_match) console.log('\nhash seeds differ: set the same datapath.hash_seed on every host');
  if (r.differ.length > 0) {
    console.log('\nVIPs whose Maglev table differs (checksum per host; - = no such VIP):');
    printTable(r.differ.map((d) => ({ vip: d.vip, ...Object.fromEntries(Object.entries(d.checksums).map(([h, c]) => [h, c ?? '-'])) })));
  }
  console.log(`\n${r.same ? 'every host holds the same tables' : 'the hosts do not agree: a flow moved between them may change backend'}`);
}
