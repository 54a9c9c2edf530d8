/**
 * ferryctl kubernetes: the Kubernetes mode as ferryd sees it (GET
 * /v1/kubernetes): sync state, health-check node ports, and what is not
 * served and why. The VIPs themselves are listed by `ferryctl vip list`
 * (OWNER kubernetes:<namespace>/<name>).
 */
import type { Command } from 'commander';
import type { KubernetesView } from '../model/kubernetes.js';
import type { ClientOf } from './client.js';
import { printJson, printTable } from './output.js';

function printView(v: KubernetesView, only: 'all' | 'skipped' | 'ignored'): void {
  if (only === 'all') {
    const lb = v.sync.last_batch;
    const line = (k: string, text: string) => console.log(`${k.padEnd(13)} ${text}`);
    line('node', `${v.node_name}${v.proxy_name === null ? '' : ` (service-proxy-name ${v.proxy_name})`}`);
    line('api server', `${v.server} (${v.credentials})`);
    line('ready', v.ready ? 'yes' : v.synced ? 'no (first batch pending)' : 'no (listing)');
    line('services', `${v.services} in the cache, ${v.skipped.length} skipped part(s), ${v.ignored.length} ignored`);
    line(
      'sync',
      `${v.sync.events} events, ${v.sync.batches} batches, ${v.sync.transactions} transactions (${v.sync.failed_transactions} failed), ` +
        `${v.sync.services_written} Service writes`,
    );
    if (lb !== null)
      line(
        'last batch',
        `${lb.services} Services, ${lb.written} written, ${lb.ms} ms, revision ${lb.revision}${lb.refused ? `, ${lb.refused} refused` : ''}`,
      );
    line(
      'cluster IPs',
      `${v.cluster_ips.entries} ${v.cluster_ips.entries === 1 ? 'entry' : 'entries'}${v.cluster_ips.consumer === null ? ' (kept; no socket-LB programs them)' : ` programmed by ${v.cluster_ips.consumer}`}` +
        `${v.cluster_ips.last_error === null ? '' : `; last error: ${v.cluster_ips.last_error}`}`,
    );
    line(
      'kernel NAT',
      v.nat.enabled
        ? `${v.nat.entries} ${v.nat.entries === 1 ? 'entry' : 'entries'} (nftables inet ferry_k8s)${v.nat.last_error === null ? '' : `; last error: ${v.nat.last_error}`}`
        : 'off',
    );
    const ipam = v.lb_ipam;
    if (ipam !== null) {
      line(
        'LB-IPAM',
        `${ipam.leader ? 'leader' : `standing by (lease ${ipam.lease} held by ${ipam.holder === null ? '?' : ipam.holder === '' ? 'nobody' : ipam.holder})`}, ` +
          `${ipam.services} Services, ${ipam.pending.length} pending, ${ipam.writes} writes${ipam.last_error === null ? '' : `; last error: ${ipam.last_error}`}`,
      );
    }
    console.log('');
    printTable(
      (['services', 'endpoint_slices', 'nodes'] as const).map((k) => {
        const i = v.informers[k];
        return {
          informer: k,
          synced: i.synced ? 'yes' : 'no',
          objects: i.objects,
          lists: i.lists,
          watches: i.watches,
          events: i.events,
          gone: i.gone,
          errors: i.errors,
        };
      }),
    );
    const hc = v.health_check_node_ports.ports;
    if (hc.length > 0) {
      console.log('\nhealth-check node ports:');
      printTable(
        hc.map((p) => ({
          service: p.service,
          port: p.port,
          local_endpoints: p.local_endpoints,
          answer: p.local_endpoints > 0 ? 200 : 503,
          listening: p.conflict ?? p.listeners.map((l) => (l.listening ? l.address : `${l.address} (${l.error ?? 'binding'})`)).join(' '),
        })),
      );
    }
  }
  if (only === 'all' && v.lb_ipam !== null) {
    console.log('\nLoadBalancer address pools:');
    printTable(v.lb_ipam.pools.map((p) => ({ pool: p.name, allocated: p.allocated, addresses: p.addresses.join(' ') })));
    if (v.lb_ipam.pending.length > 0) {
      console.log('\nwaiting for an address:');
      printTable(v.lb_ipam.pending.map((p) => ({ service: p.service, reason: p.reason })));
    }
  }
  if (only !== 'ignored') {
    if (only === 'all') console.log('\nskipped (not served, and why):');
    printTable(v.skipped.map((s) => ({ service: s.service, reason: s.reason })));
  }
  if (only !== 'skipped') {
    if (only === 'all') console.log('\nignored Services:');
    printTable(v.ignored.map((s) => ({ service: s.service, reason: s.reason })));
  }
}

export function kubernetesCommands(root: Command, client: ClientOf): void {
  const k = root
    .command('kubernetes')
    .alias('k8s')
    .description('the Kubernetes mode: sync state, health-check node ports, skipped and ignored Services');
  const show =
    (only: 'all' | 'skipped' | 'ignored') =>
    async (_o: unknown, cmd: Command): Promise<void> => {
      const { api, g } = client(cmd);
      const v = await api.get<KubernetesView>('/v1/kubernetes');
      if (g.json) printJson(only === 'all' ? v : v[only]);
      else printView(v, only);
    };
  k.command('status', { isDefault: true }).description('everything (the default)').action(show('all'));
  k.command('skipped').description('parts of Services that are not served, and why').action(show('skipped'));
  k.command('ignored').description('Services that are not ours (headless, ExternalName, another proxy)').action(show('ignored'));
}
