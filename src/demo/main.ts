/**
 * `npm run demo`: Ferry end to end in network namespaces, driven the way an
 * operator drives it.
 *
 * It builds the lab (client, load balancer, three backends), starts the real
 * ferryd in the load balancer's namespace (it attaches xdp_lb in native mode),
 * creates VIPs with three backends through the REST API while printing the
 * equivalent ferryctl commands, sends HTTP requests and UDP datagrams from
 * the client, shows which backend answered, shows from the counters that the
 * replies bypassed the load balancer, drains one backend through the API,
 * prints `ferryctl stats`, and tears everything down (unless --keep).
 *
 *   npm run demo [-- --json] [-- --keep] [-- --requests N]
 *   npm run demo -- --fleet [--json] [--keep]   three hosts behind ECMP with BGP (src/demo/fleet.ts)
 *   npm run demo -- --down [PREFIX]   remove labs left by --keep or by a killed run
 *
 * --json prints exactly one JSON object on stdout:
 *   {"requests":N,"errors":N,"per_backend":{...},"dsr":true|false}
 */
import type { StatsBody } from '../model/status.js';
import type { VipWithBackends } from '../model/types.js';
import { ferryctlScript } from '../lab/ferryd.js';
import { fleetDemo } from './fleet.js';
import { LbLab, repliesBypassedLb } from '../lab/lblab.js';
import { existingLabs, Lab, leftoverLabs } from '../lab/topology.js';
import type { ClientResult } from '../lab/client.js';

const VIP4 = '198.19.0.10';
const VIP6 = '2001:db8:f::10';

interface DemoOptions {
  json: boolean;
  keep: boolean;
  requests: number;
  /** Three hosts behind a router with ECMP and BGP instead of one (src/demo/fleet.ts). */
  fleet: boolean;
}

function parseArgs(argv: string[]): DemoOptions | { down: string | null } {
  const o: DemoOptions = { json: false, keep: false, requests: 300, fleet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--keep') o.keep = true;
    else if (a === '--fleet') o.fleet = true;
    else if (a === '--down') return { down: argv[i + 1] ?? null };
    else if (a === '--requests') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1 || n > 100000) throw new Error('--requests takes an integer from 1 to 100000');
      o.requests = n;
    } else throw new Error(`unknown option ${a} (options: --json --keep --fleet --down [PREFIX] --requests N)`);
  }
  return o;
}

/** The demo's VIPs: HTTP over IPv4 and IPv6, DNS-like UDP over IPv4; three backends each. */
function vipsFor(lab: LbLab): VipWithBackends[] {
  const be = lab.lab.backends;
  return [
    { name: 'web', address: VIP4, port: 80, protocol: 'tcp', backends: be.map((b) => ({ address: b.addr4 })) },
    { name: 'web6', address: VIP6, port: 80, protocol: 'tcp', backends: be.map((b) => ({ address: b.addr6 })) },
    { name: 'dns', address: VIP4, port: 53, protocol: 'udp', backends: be.map((b) => ({ address: b.addr4 })) },
  ];
}

/** The ferryctl commands that make the same VIP. */
function ferryctlFor(v: VipWithBackends): string[] {
  return [
    `ferryctl vip add ${v.name} --address ${v.address} --port ${v.port} --protocol ${v.protocol}`,
    ...(v.backends ?? []).map((b) => `ferryctl backend add ${v.name} ${b.address}`),
  ];
}

const merge = (...rs: ClientResult[]): ClientResult => {
  const out: ClientResult = { requests: 0, errors: 0, per_backend: {}, sources: {}, error_kinds: {}, peers: {} };
  for (const r of rs) {
    out.requests += r.requests;
    out.errors += r.errors;
    for (const [k, v] of Object.entries(r.per_backend)) out.per_backend[k] = (out.per_backend[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.sources)) out.sources[k] = (out.sources[k] ?? 0) + v;
  }
  return out;
};

const perBackend = (r: ClientResult): string =>
  `${Object.entries(r.per_backend)
    .sort()
    .map(([b, n]) => `${b}=${n}`)
    .join('  ')}  errors=${r.errors}`;

const vipPackets = (s: StatsBody): number => s.vips.reduce((n, v) => n + v.packets, 0);

async function demo(o: DemoOptions): Promise<boolean> {
  const say = (s = '') => {
    if (!o.json) console.log(s);
  };
  say('Building the lab: a client, a load balancer and three backends in network namespaces…');
  const lab = await LbLab.start({ backends: 3, vips: [VIP4, VIP6] });
  let kept = false;
  const interrupted = () => {
    lab.stop();
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const { client, lb, backends } = lab.lab;
    say(`  lab ${lab.lab.prefix}: ferryd (pid ${lab.ferryd.pid}) runs in ${lb.ns} and attached xdp_lb to eth0 in native mode`);
    say(`  backends: ${backends.map((b) => `${b.name} ${b.addr4} ${b.addr6}`).join(', ')}; client ${client.addr4}`);

    say(`\nCreating the VIPs through ferryd's REST API (unix socket ${lab.socket}).`);
    say(`With ferryctl the same would be (export FERRY_SOCKET=${lab.socket}; ferryctl is \`npm run ferryctl --\`):`);
    const vips = vipsFor(lab);
    for (const v of vips) {
      await lab.createVip(v);
      for (const line of ferryctlFor(v)) say(`  ${line}`);
    }

    const lbBefore = lab.linkCounters(lb);
    const clientBefore = lab.linkCounters(client);
    const statsBefore = await lab.stats();
    say(
      `\nSending ${o.requests} HTTP requests to ${VIP4}:80, ${o.requests} to [${VIP6}]:80 and ${o.requests} UDP datagrams to ${VIP4}:53,`,
    );
    say('each on a new connection / source port…');
    const http4 = await lab.client('http', VIP4, o.requests);
    const http6 = await lab.client('http', VIP6, o.requests);
    const udp = await lab.client('udp', VIP4, o.requests);
    const lbAfter = lab.linkCounters(lb);
    const clientAfter = lab.linkCounters(client);
    const statsAfter = await lab.stats();
    const first = merge(http4, http6, udp);
    const lbRx = lbAfter.rxPackets - lbBefore.rxPackets;
    const clientTx = clientAfter.txPackets - clientBefore.txPackets;
    const clientRx = clientAfter.rxPackets - clientBefore.rxPackets;
    const forwarded = vipPackets(statsAfter) - vipPackets(statsBefore);
    const fromVips = Object.keys(first.sources).every((a) => a === VIP4 || a === VIP6);
    const dsr = first.errors === 0 && fromVips && repliesBypassedLb(lbRx, clientTx, clientRx);

    say('\nAnswers per backend:');
    for (const [name, r] of [
      ['HTTP IPv4', http4],
      ['HTTP IPv6', http6],
      ['UDP IPv4', udp],
    ] as const)
      say(`  ${name.padEnd(10)} ${perBackend(r)}`);
    say(`  every reply came from the VIP address: ${fromVips ? 'yes' : `NO (${JSON.stringify(first.sources)})`}`);
    say('\nDirect server return, from the counters:');
    say(`  the client sent ${clientTx} packets and received ${clientRx};`);
    say(`  xdp_lb forwarded ${forwarded} packets to the VIPs (ferry stats); the load balancer's eth0 received ${lbRx} in all;`);
    say(`  so the ${clientRx} replies went from the backends straight to the client: ${dsr ? 'yes' : 'NO'}`);

    const drained = backends[0]!;
    say(`\nDraining ${drained.name} of VIP web through the API (ferryctl backend set web ${drained.addr4} --state draining):`);
    say('  its established flows may finish, it gets no new ones. Sending again…');
    await lab.setBackend('web', drained.addr4, { state: 'draining' });
    const after = await lab.client('http', VIP4, o.requests);
    const drainWorked = (after.per_backend[drained.name] ?? 0) === 0 && after.errors === 0;
    say(`  HTTP IPv4  ${perBackend(after)}  → ${drained.name} got ${after.per_backend[drained.name] ?? 0} new flows`);

    say('\n$ ferryctl stats');
    const st = lab.ferryctl(['stats']);
    say(
      st.out
        .trimEnd()
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
    if (st.code !== 0) say(`  (ferryctl failed: ${st.err.trim()})`);

    const total = merge(first, after);
    if (o.json) {
      console.log(JSON.stringify({ requests: total.requests, errors: total.errors, per_backend: total.per_backend, dsr }));
    }
    if (o.keep) {
      lab.release();
      kept = true;
      say(`\nThe lab keeps running (${lab.lab.prefix}). Try:`);
      say(`  nsenter --net=/run/netns/${client.ns} curl -s http://${VIP4}/`);
      say(`  nsenter --net=/run/netns/${client.ns} bash          # a shell in the client`);
      say(`  FERRY_SOCKET=${lab.socket} node ${ferryctlScript()} vip list`);
      say(`  ferryd's log: ${lab.ferryd.log}`);
      say('Remove it with: npm run demo -- --down');
    } else {
      say('\nRemoving the lab (run with --keep to leave it up).');
    }
    return total.errors === 0 && dsr && drainWorked && st.code === 0;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    if (!kept) lab.stop();
  }
}

function down(prefix: string | null): void {
  let labs: string[];
  if (prefix) {
    if (!existingLabs().includes(prefix)) throw new Error(`no lab ${prefix} (labs here: ${existingLabs().join(', ') || 'none'})`);
    labs = [prefix];
  } else {
    labs = leftoverLabs();
  }
  for (const p of labs) new Lab({ backends: 0, prefix: p }).down();
  const busy = existingLabs().filter((p) => !labs.includes(p));
  console.log(labs.length ? `removed ${labs.join(', ')}` : 'no lab to remove');
  if (busy.length) console.log(`left alone (in use by a running test or demo): ${busy.join(', ')}`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and loads XDP programs: run it as root');
  const o = parseArgs(process.argv.slice(2));
  if ('down' in o) return down(o.down);
  if (!(await (o.fleet ? fleetDemo(o) : demo(o)))) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
