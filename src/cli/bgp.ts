/**
 * ferryctl bgp / drain-host / undrain-host: the BGP announcement of this
 * host's VIPs (GET /v1/bgp) and the host drain (PUT/DELETE /v1/bgp/drain).
 */
import type { Command } from 'commander';
import type { BgpView } from '../model/bgp.js';
import type { ClientOf } from './client.js';
import { printJson, printTable } from './output.js';

function printView(v: BgpView): void {
  const line = (k: string, text: string) => console.log(`${k.padEnd(10)} ${text}`);
  line('router', `${v.router_id} AS ${v.local_as}`);
  line('drained', v.drained === null ? 'no' : `since ${v.drained.since}${v.drained.reason === null ? '' : ` (${v.drained.reason})`}`);
  line('announced', `${v.announced} of ${v.prefixes.length} VIP address(es)`);
  const b = v.bird;
  line(
    'bird',
    `${b.reachable ? 'reachable' : 'unreachable'} on ${b.socket}, ${b.in_sync ? 'holds the current config' : 'config not loaded yet'}` +
      ` (${b.reloads} reloads, ${b.failed_reloads} failed)${b.last_error === null ? '' : `; last error: ${b.last_error}`}`,
  );
  console.log('');
  printTable(
    v.neighbors.map((n) => ({
      neighbor: n.address,
      as: n.as,
      session: n.session ?? 'unknown',
      since: n.since ?? '',
      info: n.info ?? '',
    })),
  );
  console.log('');
  printTable(
    v.prefixes.map((p) => ({
      prefix: p.prefix,
      announced: p.announced ? 'yes' : 'no',
      vips: p.vips,
      serving: p.serving,
      reason: p.reason ?? '',
    })),
  );
}

export function bgpCommands(root: Command, client: ClientOf): void {
  const say = (g: { json?: boolean }, v: BgpView) => (g.json ? printJson(v) : printView(v));
  root
    .command('bgp')
    .description("BGP: announced VIP addresses (and why others are not), BIRD's sessions, the host drain")
    .action(async (_o, cmd: Command) => {
      const { api, g } = client(cmd);
      say(g, await api.get<BgpView>('/v1/bgp'));
    });
  root
    .command('drain-host')
    .description('withdraw every VIP of this host by BGP (kept across restarts; undo with undrain-host)')
    .option('--reason <text>', 'why (shown by ferryctl bgp)')
    .action(async (o: { reason?: string }, cmd: Command) => {
      const { api, g } = client(cmd);
      const r = await api.request<BgpView>('PUT', '/v1/bgp/drain', { body: o.reason === undefined ? {} : { reason: o.reason } });
      say(g, r.body);
    });
  root
    .command('undrain-host')
    .description("announce this host's serving VIPs again")
    .action(async (_o, cmd: Command) => {
      const { api, g } = client(cmd);
      say(g, (await api.request<BgpView>('DELETE', '/v1/bgp/drain')).body);
    });
}
