/**
 * A fleet (src/lab/fleet.ts): three Ferry hosts, each with the real ferryd
 * and BIRD, behind a router whose BIRD merges their routes into one ECMP
 * route; a client behind the router; four backends answering it directly.
 * The hosts share their VIPs and Maglev seed through the fleet store (an
 * etcd in the router's namespace): each VIP is created through one host.
 * Packets in, packets out: streams are checked byte for byte by the echo
 * client, and the backend holding each one is read from its socket table.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { StatsBody } from '../../../src/model/status.js';
import { FleetLab, type FleetMember } from '../../../src/lab/fleet.js';
import type { LabStream } from '../../../src/lab/lblab.js';
import type { LabHost } from '../../../src/lab/topology.js';
import { bpfUnavailable } from '../../lib/harness.js';

const hasBird = spawnSync('bird', ['--version']).status === 0;
const skip = bpfUnavailable() ?? (hasBird ? undefined : 'bird (Debian bird2) is not installed');
if (skip) console.log(`# skipping fleet tests: ${skip}`);

const VIP = '198.19.0.10';
const VIP2 = '198.19.0.11';
const VIP6 = '2001:db8:f::10';
const STREAMS = 18;
/** Slow streams: the lab carries 18 of them on two shared cores. */
const RATE = 64_000;

interface Tracked {
  s: LabStream;
  /** The backend holding it. */
  owner: LabHost;
  /** The Ferry host carrying it before any host fails. */
  via: LabHost;
}

describe('fleet: Ferry hosts behind ECMP, announced by BGP through BIRD', { skip }, () => {
  let f: FleetLab;
  let tracked: Tracked[] = [];
  const member = (name: string): FleetMember => f.members.find((m) => m.host.name === name)!;

  before(async () => {
    f = await FleetLab.start({
      hosts: 3,
      backends: 4,
      vips: [VIP, VIP2, VIP6],
      bgp: ['med: 50', 'communities: ["65001:100", "65001:7:9"]'],
    });
    const backends = f.lab.backends.map((b) => ({ address: b.addr4 }));
    await f.createVip({ name: 'echo', address: VIP, port: 7, protocol: 'tcp', backends });
    await f.createVip({ name: 'other', address: VIP2, port: 7, protocol: 'tcp', backends: [{ address: f.lab.backends[0]!.addr4 }] });
    await f.createVip({
      name: 'web6',
      address: VIP6,
      port: 80,
      protocol: 'tcp',
      backends: f.lab.backends.map((b) => ({ address: b.addr6 })),
    });
  });
  after(() => f?.stop());

  /** Every tracked stream still flows, byte for byte, on the backend it started on. */
  async function allFlowOnTheirBackends(): Promise<void> {
    for (const t of tracked) {
      await t.s.flowing(8_000, 20_000);
      assert.equal(f.streamOwner(t.s).name, t.owner.name, `the stream from port ${t.s.localPort} moved backend`);
    }
  }

  it('every host announces the VIP with its attributes; the router spreads flows over all of them', async () => {
    await f.untilNexthops(VIP, f.lab.lbs);
    await f.untilNexthops(VIP2, f.lab.lbs);
    const route = f.routerBirdc(['show', 'route', 'all', `${VIP}/32`]);
    assert.match(route, /BGP\.med: 50/);
    assert.match(route, /BGP\.community: \(65001,100\)/);
    assert.match(route, /BGP\.large_community: \(65001, 7, 9\)/);
    for (let i = 0; i < STREAMS; i++) {
      const s = await f.stream(VIP, { rate: RATE });
      tracked.push({ s, owner: f.streamOwner(s), via: f.carrierOf(VIP, s) });
    }
    await allFlowOnTheirBackends();
    const viaHost = new Set(tracked.map((t) => t.via.name));
    assert.ok(viaHost.size >= 2, `all ${STREAMS} streams hashed to ${[...viaHost].join(', ')}`);
    // Each host's XDP balanced what the router sent it.
    let hosts = 0;
    for (const m of f.members) {
      const st = await m.api.get<StatsBody>('/v1/stats');
      if ((st.vips.find((v) => v.name === 'echo')?.new_flows ?? 0) > 0) hosts += 1;
    }
    assert.equal(hosts, viaHost.size, 'the hosts that saw new flows are those the router chose');
    const fleet = f.ferryctl(member('lb1'), ['fleet', 'status', ...f.members.flatMap((m) => ['--host', m.ferryd.socket])]);
    assert.equal(fleet.code, 0, fleet.out + fleet.err);
    assert.match(fleet.out, /every host holds the same tables/);
    const view = await f.bgp(member('lb1'));
    assert.equal(view.announced, 3);
    assert.deepEqual(
      view.neighbors.map((n) => n.established),
      [true, true],
    );
  });

  it('IPv6: announced over the IPv6 sessions, spread over the hosts, answered directly', async () => {
    await f.untilNexthops(VIP6, f.lab.lbs);
    const r = await f.client('http', VIP6, 60);
    assert.equal(r.errors, 0, JSON.stringify(r.error_kinds));
    assert.deepEqual(Object.keys(r.sources), [VIP6], 'every answer came from the VIP');
    let hosts = 0;
    for (const m of f.members) {
      const st = await m.api.get<StatsBody>('/v1/stats');
      if ((st.vips.find((v) => v.name === 'web6')?.new_flows ?? 0) > 0) hosts += 1;
    }
    assert.ok(hosts >= 2, `60 connections went through ${hosts} host(s)`);
  });

  it('a VIP without an active backend: one write through the fleet store, every host withdraws it, then announces it again', async () => {
    const m = member('lb1');
    const be = f.lab.backends[0]!.addr4;
    const set = async (weight: number) => {
      const cur = await m.api.request<{ address: string; weight: number }>('GET', `/v1/vips/other/backends/${be}`);
      await m.api.request('PUT', `/v1/vips/other/backends/${be}`, {
        body: { address: be, weight },
        headers: { 'if-match': String(cur.headers.etag) },
      });
    };
    await set(0);
    await f.untilNexthops(VIP2, []);
    for (const x of f.members) {
      const view = await f.bgp(x);
      assert.equal(view.prefixes.find((p) => p.prefix === `${VIP2}/32`)?.reason, 'no active backend', x.host.name);
    }
    // Every member mirrors the write: the fleet store's members agree (same revision, seed and tables).
    const status = await f.fleetStatus(member('lb3'), ['--json']);
    assert.equal(status.code, 0, status.out + status.err);
    const r = JSON.parse(status.out) as { members: Array<{ name: string; agrees: boolean }> };
    assert.deepEqual(
      r.members.map((x) => x.name),
      ['lb1', 'lb2', 'lb3'],
    );
    await set(1);
    await f.untilNexthops(VIP2, f.lab.lbs);
  });

  it('a host killed with SIGKILL: its flows go on through the others, on the same backends, none reset', async () => {
    const dead = member('lb1');
    const moved = tracked.filter((t) => t.via.name === dead.host.name);
    assert.ok(moved.length > 0, 'some stream went through the host that dies');
    await f.killMember(dead);
    await f.untilNexthops(VIP, [member('lb2').host, member('lb3').host]);
    // Hosts that never saw these flows take them mid-stream: no SYN, no conntrack entry, the same Maglev table.
    await allFlowOnTheirBackends();
    // Each moved flow is now in exactly one surviving host's conntrack, recorded from a packet without SYN.
    for (const t of moved) {
      const now = f.carriers(VIP, 7, t.s.localPort).filter((h) => h.name !== dead.host.name);
      assert.equal(now.length, 1, `the stream from port ${t.s.localPort} is carried by ${now.map((h) => h.name).join(', ') || 'no host'}`);
    }
    // Linux's ECMP is hash-threshold: dropping one next hop also moves flows between the others; those continue too.
    const between = tracked.filter(
      (t) => !moved.includes(t) && f.carriers(VIP, 7, t.s.localPort).some((h) => h.name !== t.via.name && h.name !== dead.host.name),
    );
    console.log(
      `# host failure (1 of 3): ${moved.length} streams moved off the killed host, ${between.length} between the others; 0 reset, 0 changed backend`,
    );
  });

  it('drain-host withdraws every VIP gracefully, stays drained across a restart, and undrain-host announces again', async () => {
    const m = member('lb2');
    const r = f.ferryctl(m, ['drain-host', '--reason', 'kernel upgrade']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /drained\s+since .* \(kernel upgrade\)/);
    await f.untilNexthops(VIP, [member('lb3').host]);
    await allFlowOnTheirBackends();
    const shown = f.ferryctl(m, ['bgp']);
    assert.match(shown.out, /198\.19\.0\.10\/32\s+no\s+1\s+1\s+host drained/);
    assert.match(shown.out, /2001:db8:f::10\/128\s+no\s+1\s+1\s+host drained/);
    const code = await m.ferryd.stop('SIGTERM');
    assert.equal(code, 0);
    await m.ferryd.start();
    const view = await f.bgp(m);
    assert.equal(view.drained?.reason, 'kernel upgrade');
    assert.equal(view.announced, 0);
    const metrics = (await m.api.request('GET', '/metrics')).raw.toString();
    assert.match(metrics, /^ferry_bgp_host_drained 1$/m);
    assert.match(metrics, /^ferry_bgp_announced_prefixes 0$/m);
    assert.deepEqual(f.nexthops(VIP), [member('lb3').host.addr4]);
    const u = f.ferryctl(m, ['undrain-host']);
    assert.equal(u.code, 0, u.err);
    await f.untilNexthops(VIP, [member('lb2').host, member('lb3').host]);
    await allFlowOnTheirBackends();
    for (const t of tracked) {
      const end = await t.s.stop();
      assert.equal(end.error, null);
      assert.equal(end.received, end.sent);
      assert.equal(end.first_mismatch, null);
    }
    tracked = [];
  });
});
