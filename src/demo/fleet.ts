/**
 * `npm run demo -- --fleet`: three Ferry hosts behind a router with ECMP,
 * each announcing the VIPs by BGP through its own BIRD (src/lab/fleet.ts),
 * sharing their VIPs and Maglev seed through the fleet store (etcd). It
 * creates the VIPs through one host, shows the router's multipath route, spreads requests over the hosts,
 * then kills one host with SIGKILL and drains another with `ferryctl
 * drain-host` while long-lived streams run: they continue on the same
 * backends through the remaining host, byte for byte.
 *
 * --json prints one object: {"hosts":3,"requests":N,"errors":N,"per_host":{...},
 * "streams":N,"moved":N,"broken":N}
 */
import type { StatsBody } from '../model/status.js';
import { FleetLab } from '../lab/fleet.js';
import type { LabStream } from '../lab/lblab.js';
import type { LabHost } from '../lab/topology.js';
import type { VipWithBackends } from '../model/types.js';

const VIP = '198.19.0.10';
const STREAMS = 12;

export interface FleetDemoOptions {
  json: boolean;
  keep: boolean;
  requests: number;
}

export async function fleetDemo(o: FleetDemoOptions): Promise<boolean> {
  const say = (s = '') => {
    if (!o.json) console.log(s);
  };
  say('Building a fleet: a client behind a router (BIRD, ECMP), an etcd, three Ferry hosts (ferryd + BIRD each), three backends…');
  const f = await FleetLab.start({ hosts: 3, backends: 3, vips: [VIP] });
  let kept = false;
  const interrupted = () => {
    f.stop();
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const { lbs, backends } = f.lab;
    say(
      `  lab ${f.lab.prefix}: hosts ${lbs.map((h) => `${h.name} ${h.addr4}`).join(', ')}; backends ${backends.map((b) => b.addr4).join(', ')}`,
    );
    say(
      '  every host runs ferryd with bgp.enabled and fleet.etcd (one etcd prefix: the VIPs and the Maglev seed); its BIRD peers with the router',
    );
    const specs: VipWithBackends[] = [80, 7].map((port) => ({
      name: port === 80 ? 'web' : 'echo',
      address: VIP,
      port,
      protocol: 'tcp',
      backends: backends.map((b) => ({ address: b.addr4 })),
    }));
    say(`\nCreating the VIPs through ${lbs[0]!.name} only: the write goes to etcd first, every host mirrors it…`);
    for (const v of specs) await f.createVip(v);
    const status = await f.fleetStatus(f.members[0]!);
    say(
      status.out
        .trimEnd()
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
    await f.untilNexthops(VIP, lbs);
    say(`\nThe router learned ${VIP}/32 from every host and installed one multipath route:`);
    say(`  next hops ${f.nexthops(VIP).join(', ')}`);

    const before = await newFlowsPerHost(f);
    say(`\nSending ${o.requests} HTTP requests to ${VIP}:80, each on a new connection…`);
    const http = await f.client('http', VIP, o.requests);
    const after = await newFlowsPerHost(f);
    const perHost = Object.fromEntries(lbs.map((h) => [h.name, (after[h.name] ?? 0) - (before[h.name] ?? 0)]));
    say(
      `  answers per backend: ${Object.entries(http.per_backend)
        .sort()
        .map(([b, n]) => `${b}=${n}`)
        .join('  ')}  errors=${http.errors}`,
    );
    say(
      `  new flows per Ferry host (the router's ECMP hash): ${Object.entries(perHost)
        .map(([h, n]) => `${h}=${n}`)
        .join('  ')}`,
    );

    say(`\nOpening ${STREAMS} long-lived streams to ${VIP}:7 (every echoed byte checked)…`);
    const streams: Array<{ s: LabStream; owner: LabHost; via: LabHost }> = [];
    for (let i = 0; i < STREAMS; i++) {
      const s = await f.stream(VIP, { rate: 64_000 });
      streams.push({ s, owner: f.streamOwner(s), via: f.carrierOf(VIP, s) });
    }
    const dead = f.members[0]!;
    const moved = streams.filter((t) => t.via.name === dead.host.name).length;
    say(`\nKilling ${dead.host.name} (ferryd and BIRD, SIGKILL; its link down): ${moved} of the streams went through it.`);
    await f.killMember(dead);
    await f.untilNexthops(VIP, lbs.slice(1));
    say(`  the router withdrew it at once: next hops ${f.nexthops(VIP).join(', ')}`);
    let broken = await brokenStreams(f, streams);
    say(`  streams still flowing on the backend they started on: ${STREAMS - broken} of ${STREAMS}`);

    const drained = f.members[1]!;
    say(`\n$ ferryctl drain-host --reason demo   (on ${drained.host.name})`);
    const d = f.ferryctl(drained, ['drain-host', '--reason', 'demo']);
    say(
      d.out
        .trimEnd()
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
    await f.untilNexthops(VIP, lbs.slice(2));
    say(`  next hops now ${f.nexthops(VIP).join(', ')}: every stream runs through ${lbs[2]!.name}`);
    broken = Math.max(broken, await brokenStreams(f, streams));
    say(`  streams still flowing on the backend they started on: ${STREAMS - broken} of ${STREAMS}`);
    const u = f.ferryctl(drained, ['undrain-host']);
    await f.untilNexthops(VIP, lbs.slice(1));
    say(`$ ferryctl undrain-host   → next hops ${f.nexthops(VIP).join(', ')}`);
    for (const t of streams) {
      const end = await t.s.stop();
      if (end.error !== null || end.first_mismatch !== null || end.received !== end.sent) broken += 1;
    }

    if (o.json) {
      console.log(
        JSON.stringify({
          hosts: lbs.length,
          requests: http.requests,
          errors: http.errors,
          per_host: perHost,
          streams: STREAMS,
          moved,
          broken,
        }),
      );
    }
    if (o.keep) {
      f.release();
      kept = true;
      say(`\nThe fleet keeps running (${f.lab.prefix}); remove it with: npm run demo -- --down`);
    } else {
      say('\nRemoving the lab (run with --keep to leave it up).');
    }
    return http.errors === 0 && broken === 0 && d.code === 0 && u.code === 0 && Object.values(perHost).filter((n) => n > 0).length >= 2;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    if (!kept) f.stop();
  }
}

/** New flows each live host's XDP balanced so far (VIP web). */
async function newFlowsPerHost(f: FleetLab): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of f.members) {
    if (!m.ferryd.running) continue;
    const st = await m.api.get<StatsBody>('/v1/stats');
    out[m.host.name] = st.vips.find((v) => v.name === 'web')?.new_flows ?? 0;
  }
  return out;
}

/** How many streams stopped flowing or moved to another backend. */
async function brokenStreams(f: FleetLab, streams: ReadonlyArray<{ s: LabStream; owner: LabHost }>): Promise<number> {
  let broken = 0;
  for (const t of streams) if (!(await f.intact(t.s, t.owner, 8_000, 20_000))) broken += 1;
  return broken;
}
