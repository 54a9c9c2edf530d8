/**
 * `npm run demo`: a self-contained lab in network namespaces with real
 * traffic through xdp_lb.
 *
 * It builds the lab (client, load balancer, three backends), attaches xdp_lb
 * in native mode, programs an IPv4 and an IPv6 VIP with three backends each,
 * sends HTTP requests and UDP datagrams from the client, shows which backend
 * answered, shows that replies bypassed the load balancer, drains one backend,
 * and tears everything down (unless --keep).
 *
 *   npm run demo [-- --json] [-- --keep] [-- --requests N]
 *   npm run demo -- --down      remove labs left by --keep or a killed run
 */
import { BACKEND_DRAINING } from '../datapath/abi.js';
import type { VipProgram } from '../datapath/program.js';
import { LbLab, repliesBypassedLb } from '../lab/lblab.js';
import { Lab, leftoverLabs } from '../lab/topology.js';
import type { ClientResult } from '../lab/client.js';

const VIP4 = '198.19.0.10';
const VIP6 = '2001:db8:f::10';

interface DemoOptions {
  json: boolean;
  keep: boolean;
  requests: number;
}

function parseArgs(argv: string[]): DemoOptions | 'down' {
  const o: DemoOptions = { json: false, keep: false, requests: 300 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--keep') o.keep = true;
    else if (a === '--down') return 'down';
    else if (a === '--requests') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1 || n > 100000) throw new Error('--requests takes an integer from 1 to 100000');
      o.requests = n;
    } else throw new Error(`unknown option ${a} (options: --json --keep --down --requests N)`);
  }
  return o;
}

function vipsFor(lab: LbLab): VipProgram[] {
  const be = lab.lab.backends;
  const mk = (id: number, addr: string, proto: 'tcp' | 'udp', port: number, v6: boolean, base: number): VipProgram => ({
    id, addr, port, proto, m: 1021,
    backends: be.map((b, i) => ({ id: base + i, addr: v6 ? b.addr6 : b.addr4 })),
  });
  return [
    mk(0, VIP4, 'tcp', 80, false, 0),
    mk(1, VIP4, 'udp', 53, false, 10),
    mk(2, VIP6, 'tcp', 80, true, 20),
  ];
}

const merge = (a: ClientResult, b: ClientResult): ClientResult => {
  const per: Record<string, number> = { ...a.per_backend };
  for (const [k, v] of Object.entries(b.per_backend)) per[k] = (per[k] ?? 0) + v;
  return { requests: a.requests + b.requests, errors: a.errors + b.errors, per_backend: per };
};

async function demo(o: DemoOptions): Promise<void> {
  const say = (s: string) => {
    if (!o.json) console.log(s);
  };
  say('Building the lab: client, load balancer and three backends in network namespaces…');
  const lab = await LbLab.start({ backends: 3, vips: [VIP4, VIP6] });
  let kept = false;
  try {
    say(`  lab ${lab.lab.prefix}: xdp_lb attached in native mode to ${lab.lab.lb.ns}/eth0`);
    const vips = vipsFor(lab);
    for (const v of vips) {
      lab.programVip(v);
      say(`  VIP ${v.addr.includes(':') ? `[${v.addr}]` : v.addr}:${v.port}/${v.proto} → ${v.backends.map((b) => b.addr).join(', ')}`);
    }
    const lbBefore = lab.linkCounters(lab.lab.lb);
    const clientBefore = lab.linkCounters(lab.lab.client);
    say(`\nSending ${o.requests} HTTP requests to ${VIP4} and ${o.requests} to [${VIP6}], ${o.requests} UDP datagrams to ${VIP4}:53…`);
    const http4 = await lab.client('http', VIP4, o.requests);
    const http6 = await lab.client('http', VIP6, o.requests);
    const udp = await lab.client('udp', VIP4, o.requests);
    const lbAfter = lab.linkCounters(lab.lab.lb);
    const clientAfter = lab.linkCounters(lab.lab.client);
    const all = merge(merge(http4, http6), udp);
    const lbRx = lbAfter.rxPackets - lbBefore.rxPackets;
    const clientTx = clientAfter.txPackets - clientBefore.txPackets;
    const clientRx = clientAfter.rxPackets - clientBefore.rxPackets;
    const dsr = all.errors === 0 && repliesBypassedLb(lbRx, clientTx, clientRx);

    say('\nAnswers per backend:');
    for (const [name, r] of [['HTTP IPv4', http4], ['HTTP IPv6', http6], ['UDP IPv4', udp]] as const) {
      say(`  ${name.padEnd(10)} ${Object.entries(r.per_backend).sort().map(([b, n]) => `${b}=${n}`).join('  ')}  errors=${r.errors}`);
    }
    say(`\nDirect server return: the client sent ${clientTx} packets and received ${clientRx};`);
    say(`  the load balancer received ${lbRx} (replies never crossed it): ${dsr ? 'yes' : 'NO'}`);

    say('\nDraining be1 (no new flows; its existing flows would stay) and sending again…');
    const v0 = vips[0]!;
    v0.backends[0]!.state = BACKEND_DRAINING;
    lab.programVip(v0);
    const drained = await lab.client('http', VIP4, o.requests);
    say(`  HTTP IPv4  ${Object.entries(drained.per_backend).sort().map(([b, n]) => `${b}=${n}`).join('  ')}  errors=${drained.errors}`);

    const st = lab.dp.vipStats.sum(0);
    const drops = Object.entries(lab.dp.dropCounts()).filter(([, c]) => c.packets > 0n);
    say('\nxdp_lb counters for VIP 0 (HTTP IPv4):');
    say(`  packets=${st.packets} bytes=${st.bytes} new_flows=${st.new_flows} ct_hits=${st.ct_hits} ct_misses=${st.ct_misses} drops=${st.drops}`);
    say(`  drops by reason: ${drops.length ? drops.map(([r, c]) => `${r}=${c.packets}`).join(' ') : 'none'}`);

    const total = merge(all, drained);
    if (o.json) {
      console.log(JSON.stringify({ requests: total.requests, errors: total.errors, per_backend: total.per_backend, dsr }));
    }
    if (o.keep) {
      kept = true;
      lab.release();
      say(`\nLab kept. Enter a namespace with: nsenter --net=/run/netns/${lab.lab.client.ns} bash`);
      say('Remove it with: npm run demo -- --down');
    }
    if (total.errors > 0 || !dsr) process.exitCode = 1;
  } finally {
    if (!kept) lab.stop();
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and loads XDP programs: run it as root');
  const o = parseArgs(process.argv.slice(2));
  if (o === 'down') {
    const labs = leftoverLabs();
    for (const prefix of labs) new Lab({ backends: 0, prefix }).down();
    console.log(labs.length ? `removed ${labs.join(', ')}` : 'no lab to remove');
    return;
  }
  await demo(o);
}

main().catch((err: unknown) => {
  console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
