/**
 * ferryctl: Ferry's command line, a client of ferryd's REST API.
 *
 * Exit codes: 0 done; 1 the API refused (the problem is printed); 2 bad
 * usage; 3 ferryd unreachable.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import type { BackendHealth, HealthCheckSpec, HealthEvent } from '../model/health.js';
import { FORWARDINGS, type BackendRecord, type Forwarding, type PolicyRecord, type VipRecord, type VipSpec } from '../model/types.js';
import type { StatsBody } from '../model/status.js';
import { ApiError, Client, ConnectError } from './client.js';
import { bgpCommands } from './bgp.js';
import { fleetCommands } from './fleet.js';
import { kubernetesCommands } from './kubernetes.js';
import { monitorCommands } from './monitor.js';
import { printTable, printJson } from './output.js';

const EXIT_API = 1;
const EXIT_USAGE = 2;
const EXIT_UNREACHABLE = 3;

interface Globals {
  socket: string;
  url?: string;
  token?: string;
  tokenFile?: string;
  json?: boolean;
}

const intArg =
  (name: string, min: number, max: number) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
const collect = (v: string, prev: string[] = []): string[] => [...prev, v];
/** --health-check: a JSON object, or null to remove the check. The API validates the rest. */
const healthCheckArg = (v: string): HealthCheckSpec | null => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch {
    throw new InvalidArgumentError('--health-check takes JSON, e.g. \'{"type":"http","path":"/healthz"}\', or null');
  }
  if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed)))
    throw new InvalidArgumentError('--health-check must be a JSON object or null');
  return parsed as HealthCheckSpec | null;
};
const HEALTH_CHECK_HELP = 'health check as JSON, e.g. \'{"type":"tcp","interval_ms":2000}\'; null removes it';
const seg = (s: string): string => encodeURIComponent(s);

function client(cmd: Command): { api: Client; g: Globals } {
  const g = cmd.optsWithGlobals<Globals>();
  return clientAt(cmd, g.url ?? g.socket, g.url !== undefined);
}

/** A client for the API at `where` (a URL, by default when it starts with http(s)://; else a unix socket path), with the global token for URLs. */
function clientAt(cmd: Command, where: string, url = /^https?:\/\//.test(where)): { api: Client; g: Globals } {
  const g = cmd.optsWithGlobals<Globals>();
  let token = g.token ?? process.env['FERRY_TOKEN'];
  if (g.tokenFile)
    token = readFileSync(g.tokenFile, 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l && !l.startsWith('#'));
  const api = new Client(url ? { url: where, ...(token ? { token } : {}) } : { socket: where });
  return { api, g };
}

interface VipOpts {
  address?: string;
  port?: number;
  protocol?: 'tcp' | 'udp';
  allow?: string[];
  deny?: string[];
  policy?: string[];
  rate?: number;
  burst?: number;
  maglevM?: number;
  sourceAffinity?: boolean;
  forwarding?: Forwarding;
  healthCheck?: HealthCheckSpec | null;
}

function vipOptions(c: Command): Command {
  return c
    .option('--address <ip>', 'VIP address (IPv4 or IPv6)')
    .option('--port <n>', 'port, 0 = all ports', intArg('port', 0, 65535))
    .addOption(new Option('--protocol <p>', 'protocol').choices(['tcp', 'udp']))
    .option('--allow <cidr>', 'allowed source CIDR (repeatable)', collect)
    .option('--deny <cidr>', 'denied source CIDR (repeatable)', collect)
    .option('--policy <name>', 'named policy to apply (repeatable)', collect)
    .option('--rate <n>', 'new flows per second (0 = no limit)', intArg('rate', 0, 10_000_000))
    .option('--burst <n>', 'new flows admitted at once above the rate', intArg('burst', 1, 1_000_000))
    .option('--maglev-m <m>', 'Maglev table size (a listed prime)', intArg('maglev-m', 1, 1 << 24))
    .option('--source-affinity', 'keep every connection of a client on one backend')
    .addOption(
      new Option('--forwarding <how>', 'dsr: backends answer clients directly; snat: source NAT, replies return through this host').choices(
        [...FORWARDINGS],
      ),
    )
    .option('--health-check <json>', `${HEALTH_CHECK_HELP} (the default of its backends)`, healthCheckArg);
}

/** Merges command-line options over a VIP spec. */
function applyVipOpts(base: VipSpec, o: VipOpts): VipSpec {
  const v: VipSpec = { ...base };
  if (o.address !== undefined) v.address = o.address;
  if (o.port !== undefined) v.port = o.port;
  if (o.protocol !== undefined) v.protocol = o.protocol;
  if (o.allow) v.allow = o.allow;
  if (o.deny) v.deny = o.deny;
  if (o.policy) v.policies = o.policy;
  if (o.rate !== undefined) v.rate_limit = o.rate === 0 ? null : { new_flows_per_sec: o.rate, burst: o.burst ?? Math.max(1, o.rate) };
  if (o.maglevM !== undefined) v.maglev_m = o.maglevM;
  if (o.sourceAffinity) v.source_affinity = true;
  if (o.forwarding !== undefined) v.forwarding = o.forwarding;
  if (o.healthCheck !== undefined) v.health_check = o.healthCheck;
  return v;
}

function specOf(r: VipRecord): VipSpec {
  return {
    name: r.name,
    address: r.address,
    port: r.port,
    protocol: r.protocol,
    encap: r.encap,
    allow: r.allow,
    deny: r.deny,
    policies: r.policies,
    rate_limit: r.rate_limit,
    maglev_m: r.maglev_m,
    source_affinity: r.source_affinity,
    ...(r.forwarding ? { forwarding: r.forwarding } : {}),
    // A PUT replaces the whole VIP: what `vip set` does not change must be sent back as it was.
    ...(r.health_check ? { health_check: r.health_check } : {}),
  };
}

const vipRow = (v: VipRecord) => ({
  name: v.name,
  address: v.address,
  port: v.port === 0 ? '*' : v.port,
  protocol: v.protocol,
  backends: v.backend_count,
  rules: v.allow.length + v.deny.length + v.policies.length,
  revision: v.updated_revision,
  owner: v.owner ?? '',
});

/** Unwraps `{revision, <key>: record}` or a bare record. */
function recordOf<T>(body: unknown, key: string): T {
  const b = body as Record<string, unknown>;
  return (b && typeof b === 'object' && key in b ? b[key] : b) as T;
}

function say(g: Globals, json: unknown, text: () => void): void {
  if (g.json) printJson(json);
  else text();
}

function vipCommands(root: Command): void {
  const vip = root.command('vip').description('virtual IPs');
  vip
    .command('list')
    .description('list VIPs')
    .action(async (_o, cmd: Command) => {
      const { api, g } = client(cmd);
      const items = await api.list<VipRecord>('/v1/vips');
      say(g, items, () => printTable(items.map(vipRow)));
    });
  vip
    .command('get <name>')
    .description('show one VIP')
    .action(async (name: string, _o, cmd: Command) => {
      const { api } = client(cmd);
      printJson(await api.get(`/v1/vips/${seg(name)}`));
    });
  vipOptions(vip.command('add <name>').description('create a VIP (--address, --port, --protocol required)')).action(
    async (name: string, o: VipOpts, cmd: Command) => {
      if (!o.address || o.port === undefined || !o.protocol)
        throw new InvalidArgumentError('vip add needs --address, --port and --protocol');
      const { api, g } = client(cmd);
      const spec = applyVipOpts({ name, address: o.address, port: o.port, protocol: o.protocol }, o);
      const r = await api.request('POST', '/v1/vips', { body: spec });
      say(g, r.body, () => console.log(`created vip ${name} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    },
  );
  vipOptions(vip.command('set <name>').description('change a VIP (only the options given)')).action(
    async (name: string, o: VipOpts, cmd: Command) => {
      const { api, g } = client(cmd);
      const cur = await api.request<unknown>('GET', `/v1/vips/${seg(name)}`);
      const spec = applyVipOpts(specOf(recordOf<VipRecord>(cur.body, 'vip')), o);
      const etag = cur.headers.etag;
      const r = await api.request('PUT', `/v1/vips/${seg(name)}`, { body: spec, headers: etag ? { 'if-match': etag } : {} });
      say(g, r.body, () => console.log(`updated vip ${name} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    },
  );
  vip
    .command('rm <name>')
    .description('delete a VIP and its backends')
    .action(async (name: string, _o, cmd: Command) => {
      const { api, g } = client(cmd);
      const r = await api.request('DELETE', `/v1/vips/${seg(name)}`);
      say(g, r.body ?? {}, () => console.log(`deleted vip ${name} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    });
}

interface BackendOpts {
  weight?: number;
  state?: 'active' | 'draining' | 'disabled';
  port?: number;
  host?: string;
  healthCheck?: HealthCheckSpec | null;
}

function backendOptions(c: Command): Command {
  return c
    .option('--weight <w>', 'weight 0..65535 (0 = no new flows)', intArg('weight', 0, 65535))
    .addOption(new Option('--state <s>', 'state').choices(['active', 'draining', 'disabled']))
    .option('--port <p>', "the port it listens on when not the VIP's (0 = the VIP's; needs --host)", intArg('port', 0, 65535))
    .option('--host <h>', '"local" (this host) or the address of its host, which translates; "none" = itself')
    .option('--health-check <json>', `${HEALTH_CHECK_HELP} (replaces the VIP's for this backend)`, healthCheckArg);
}

type BackendWithHealth = BackendRecord & { health?: BackendHealth };

/** "down 12s", "up 3h", "unknown", "-" (unchecked). */
function healthCell(h: BackendHealth | undefined): string {
  if (h === undefined || h.status === 'unchecked') return '-';
  if (h.since === null) return h.status;
  return `${h.status} ${ago(Date.parse(h.since))}`;
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

const backendRow = (b: BackendWithHealth) => ({
  address: b.address,
  weight: b.weight,
  state: b.state,
  port: b.port ?? '',
  host: b.host ?? '',
  health: healthCell(b.health),
  last_error: b.health?.last_error ?? '',
  revision: b.updated_revision,
});

function backendCommands(root: Command): void {
  const be = root.command('backend').description("a VIP's backends");
  const base = (vip: string) => `/v1/vips/${seg(vip)}/backends`;
  be.command('list <vip>')
    .description('list backends')
    .action(async (vip: string, _o, cmd: Command) => {
      const { api, g } = client(cmd);
      const items = await api.list<BackendWithHealth>(base(vip));
      say(g, items, () => printTable(items.map(backendRow)));
    });
  be.command('get <vip> <address>')
    .description('show one backend')
    .action(async (vip: string, addr: string, _o, cmd: Command) => {
      const { api } = client(cmd);
      printJson(await api.get(`${base(vip)}/${seg(addr)}`));
    });
  backendOptions(be.command('add <vip> <address>').description('add a backend')).action(
    async (vip: string, addr: string, o: BackendOpts, cmd: Command) => {
      const { api, g } = client(cmd);
      const { healthCheck, host, ...rest } = o;
      const body = {
        address: addr,
        ...rest,
        ...(host === undefined ? {} : { host: host === 'none' ? null : host }),
        ...(healthCheck === undefined ? {} : { health_check: healthCheck }),
      };
      const r = await api.request('POST', base(vip), { body });
      say(g, r.body, () => console.log(`added backend ${addr} to ${vip} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    },
  );
  backendOptions(be.command('set <vip> <address>').description('change weight, state, port, host or health check')).action(
    async (vip: string, addr: string, o: BackendOpts, cmd: Command) => {
      const { api, g } = client(cmd);
      const cur = await api.request<unknown>('GET', `${base(vip)}/${seg(addr)}`);
      const rec = recordOf<BackendRecord>(cur.body, 'backend');
      const check = o.healthCheck !== undefined ? o.healthCheck : (rec.health_check ?? null);
      const host = o.host === undefined ? (rec.host ?? null) : o.host === 'none' ? null : o.host;
      const body = {
        address: rec.address,
        weight: o.weight ?? rec.weight,
        state: o.state ?? rec.state,
        port: o.port ?? rec.port ?? 0,
        host,
        health_check: check,
      };
      const etag = cur.headers.etag;
      const r = await api.request('PUT', `${base(vip)}/${seg(addr)}`, { body, headers: etag ? { 'if-match': etag } : {} });
      say(g, r.body, () => console.log(`updated backend ${addr} of ${vip} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    },
  );
  be.command('rm <vip> <address>')
    .description('remove a backend (its flows drain)')
    .action(async (vip: string, addr: string, _o, cmd: Command) => {
      const { api, g } = client(cmd);
      const r = await api.request('DELETE', `${base(vip)}/${seg(addr)}`);
      say(g, r.body ?? {}, () => console.log(`removed backend ${addr} from ${vip} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    });
}

function policyCommands(root: Command): void {
  const p = root.command('policy').description('named allow/deny CIDR sets');
  const opts = (c: Command) =>
    c
      .option('--allow <cidr>', 'allowed source CIDR (repeatable)', collect)
      .option('--deny <cidr>', 'denied source CIDR (repeatable)', collect);
  p.command('list')
    .description('list policies')
    .action(async (_o, cmd: Command) => {
      const { api, g } = client(cmd);
      const items = await api.list<PolicyRecord>('/v1/policies');
      say(g, items, () =>
        printTable(items.map((x) => ({ name: x.name, allow: x.allow.join(' '), deny: x.deny.join(' '), revision: x.updated_revision }))),
      );
    });
  p.command('get <name>')
    .description('show one policy')
    .action(async (name: string, _o, cmd: Command) => {
      const { api } = client(cmd);
      printJson(await api.get(`/v1/policies/${seg(name)}`));
    });
  opts(p.command('add <name>').description('create a policy')).action(
    async (name: string, o: { allow?: string[]; deny?: string[] }, cmd: Command) => {
      const { api, g } = client(cmd);
      const r = await api.request('POST', '/v1/policies', { body: { name, allow: o.allow ?? [], deny: o.deny ?? [] } });
      say(g, r.body, () => console.log(`created policy ${name} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    },
  );
  opts(p.command('set <name>').description('replace the CIDRs given')).action(
    async (name: string, o: { allow?: string[]; deny?: string[] }, cmd: Command) => {
      const { api, g } = client(cmd);
      const cur = await api.request<unknown>('GET', `/v1/policies/${seg(name)}`);
      const rec = recordOf<PolicyRecord>(cur.body, 'policy');
      const body = { name, allow: o.allow ?? rec.allow, deny: o.deny ?? rec.deny };
      const etag = cur.headers.etag;
      const r = await api.request('PUT', `/v1/policies/${seg(name)}`, { body, headers: etag ? { 'if-match': etag } : {} });
      say(g, r.body, () => console.log(`updated policy ${name} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    },
  );
  p.command('rm <name>')
    .description('delete a policy')
    .action(async (name: string, _o, cmd: Command) => {
      const { api, g } = client(cmd);
      const r = await api.request('DELETE', `/v1/policies/${seg(name)}`);
      say(g, r.body ?? {}, () => console.log(`deleted policy ${name} (revision ${r.headers['x-ferry-revision'] ?? '?'})`));
    });
}

function printStats(s: StatsBody): void {
  printTable(
    s.vips.map((v) => ({
      vip: v.name,
      packets: v.packets,
      bytes: v.bytes,
      'pkt/s': v.rate_pps ?? '',
      new_flows: v.new_flows,
      ct_hits: v.ct_hits,
      drops: v.drops,
    })),
  );
  const rows = s.vips.flatMap((v) =>
    v.backends.map((b) => ({ vip: v.name, backend: b.address, packets: b.packets, bytes: b.bytes, new_flows: b.new_flows })),
  );
  if (rows.length) {
    console.log('');
    printTable(rows);
  }
  const drops = Object.entries(s.drops).filter(([, n]) => n > 0);
  console.log(`\ndrops: ${drops.length ? drops.map(([r, n]) => `${r}=${n}`).join(' ') : 'none'}`);
}

function eventCommands(root: Command): void {
  root
    .command('events')
    .description('health transitions of backends, newest first')
    .option('--vip <name>', 'only this VIP')
    .option('--backend <address>', 'only this backend address')
    .option('-n, --limit <n>', 'how many (default 50)', intArg('limit', 1, 1000))
    .action(async (o: { vip?: string; backend?: string; limit?: number }, cmd: Command) => {
      const { api, g } = client(cmd);
      const q = new URLSearchParams({ limit: String(o.limit ?? 50) });
      if (o.vip) q.set('vip', o.vip);
      if (o.backend) q.set('backend', o.backend);
      const page = await api.get<{ items: HealthEvent[] }>(`/v1/health/events?${q.toString()}`);
      say(g, page.items, () =>
        printTable(
          page.items.map((e) => ({
            time: e.time,
            vip: e.vip,
            backend: e.backend,
            change: `${e.from} -> ${e.to}`,
            reason: e.reason ?? '',
          })),
        ),
      );
    });
}

function otherCommands(root: Command): void {
  root
    .command('status')
    .description('daemon and datapath status')
    .action(async (_o, cmd: Command) => {
      const { api, g } = client(cmd);
      const s = await api.get<Record<string, unknown>>('/v1/status');
      say(g, s, () => {
        for (const [k, v] of Object.entries(s)) console.log(`${k.padEnd(17)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
      });
    });
  root
    .command('stats')
    .description('per-VIP and per-backend counters')
    .option('-w, --watch [seconds]', 'refresh every N seconds (default 2)')
    .action(async (o: { watch?: string | boolean }, cmd: Command) => {
      const { api, g } = client(cmd);
      const every = o.watch === undefined ? 0 : o.watch === true ? 2 : intArg('--watch', 1, 3600)(String(o.watch));
      for (;;) {
        const s = await api.get<StatsBody>('/v1/stats');
        if (every && !g.json) process.stdout.write('\x1b[2J\x1b[H');
        say(g, s, () => printStats(s));
        if (!every) return;
        await new Promise((r) => setTimeout(r, every * 1000));
      }
    });
  root
    .command('apply')
    .description('replace the whole desired state with a YAML or JSON file')
    .requiredOption('-f, --file <path>', 'state file (vips with backends, policies)')
    .option('--dry-run', 'show the changes without applying them')
    .action(async (o: { file: string; dryRun?: boolean }, cmd: Command) => {
      const { api, g } = client(cmd);
      let desired: unknown;
      try {
        desired = parseYaml(readFileSync(o.file, 'utf8'));
      } catch (err) {
        throw new InvalidArgumentError(`${o.file}: ${(err as Error).message}`);
      }
      const r = await api.request<{ revision: number; changes: Array<{ op: string; kind: string; name: string }> }>(
        'PUT',
        `/v1/state${o.dryRun ? '?dry_run=true' : ''}`,
        { body: desired },
      );
      say(g, r.body, () => {
        for (const c of r.body.changes) console.log(`${c.op.padEnd(7)} ${c.kind.padEnd(8)} ${c.name}`);
        console.log(
          o.dryRun
            ? `${r.body.changes.length} change(s) would be applied (dry run)`
            : `${r.body.changes.length} change(s), revision ${r.body.revision}`,
        );
      });
    });
  root
    .command('backup <file>')
    .description('write a consistent copy of the database')
    .action(async (file: string, _o, cmd: Command) => {
      const { api, g } = client(cmd);
      const r = await api.request<unknown>('GET', '/v1/backup', { headers: { accept: 'application/vnd.sqlite3' } });
      writeFileSync(file, r.raw);
      say(g, { file, bytes: r.raw.length, revision: Number(r.headers['x-ferry-revision']) }, () =>
        console.log(`wrote ${file} (${r.raw.length} bytes, revision ${r.headers['x-ferry-revision'] ?? '?'})`),
      );
    });
  root
    .command('restore <file>')
    .description('replace the desired state with a backup')
    .action(async (file: string, _o, cmd: Command) => {
      const { api, g } = client(cmd);
      const r = await api.request<{ revision: number; changes: unknown[] }>('POST', '/v1/restore', {
        raw: readFileSync(file),
        contentType: 'application/vnd.sqlite3',
      });
      say(g, r.body, () => console.log(`restored ${file}: ${r.body.changes.length} change(s), revision ${r.body.revision}`));
    });
}

export function buildCli(): Command {
  const root = new Command('ferryctl')
    .description("Ferry's command line: drives ferryd over its REST API")
    .option('-s, --socket <path>', 'ferryd unix socket', process.env['FERRY_SOCKET'] ?? '/run/ferry/ferry.sock')
    .option('--url <url>', 'ferryd TCP endpoint instead of the socket, e.g. https://lb1:8443')
    .option('--token <token>', 'bearer token for --url (or FERRY_TOKEN)')
    .option('--token-file <path>', 'file holding the bearer token')
    .option('--json', 'print JSON')
    .exitOverride()
    .showHelpAfterError();
  vipCommands(root);
  backendCommands(root);
  policyCommands(root);
  eventCommands(root);
  otherCommands(root);
  monitorCommands(root, client);
  kubernetesCommands(root, client);
  bgpCommands(root, client);
  fleetCommands(root, clientAt, client);
  for (const c of allCommands(root)) c.exitOverride();
  return root;
}

function allCommands(c: Command): Command[] {
  return c.commands.flatMap((s) => [s, ...allCommands(s)]);
}

async function main(): Promise<void> {
  try {
    await buildCli().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    if (err instanceof InvalidArgumentError) {
      console.error(`ferryctl: ${err.message}`);
      process.exit(EXIT_USAGE);
    }
    if (err instanceof ApiError) {
      console.error(`ferryctl: ${err.message}`);
      process.exit(EXIT_API);
    }
    if (err instanceof ConnectError) {
      console.error(`ferryctl: ${err.message}`);
      process.exit(EXIT_UNREACHABLE);
    }
    console.error(`ferryctl: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(EXIT_API);
  }
}

void main();
