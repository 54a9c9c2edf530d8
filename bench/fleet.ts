/**
 * What one host's failure costs a fleet: Ferry hosts behind a router with
 * ECMP (src/lab/fleet.ts), long-lived TCP streams spread over them, one
 * host killed with SIGKILL. The router moves that host's flows to the
 * others, which have never seen them (no conntrack entry, no SYN).
 *
 * Two fleets in the same run: one as Ferry is meant to run (one
 * datapath.hash_seed for all hosts, the same VIPs and backends: the same
 * Maglev tables) and one whose hosts keep their own random seeds, as hosts
 * without a shared seed would. The Maglev paper (Eisenbud et al., NSDI 2016,
 * sections 3.3-3.4) expects no moved connection to break when only the set
 * of balancers changes and the tables are the same on every one; with
 * unrelated tables a moved flow lands on the backend it had with chance
 * 1/B, so about (B-1)/B of them break (the new backend answers with a reset).
 *
 * Also: how long the router takes to stop sending to a killed host (BIRD's
 * session closes with the process) and to a drained one (ferryctl
 * drain-host: ferryd rewrites BIRD's config and reloads it).
 *
 *   node dist/bench/fleet.js [--json] [--streams N] [--hosts H] [--backends B]
 */
import { pathToFileURL } from 'node:url';
import { FleetLab } from '../src/lab/fleet.js';
import type { LabStream } from '../src/lab/lblab.js';
import type { LabHost } from '../src/lab/topology.js';
import { argValue } from './args.js';

const VIP = '198.19.0.10';

export interface FleetRun {
  seed: 'shared' | 'own';
  hosts: number;
  backends: number;
  streams: number;
  /** Streams the router moved off the killed host. */
  moved_from_killed: number;
  /**
   * Streams the router moved between the surviving hosts: Linux's ECMP is
   * hash-threshold, so removing one next hop shifts the others' ranges too.
   */
  moved_between_others: number;
  /** Of all moved streams, those broken (reset, stalled) or now on another backend. */
  moved_broken: number;
  /** Streams that stayed on their host but broke anyway (should be 0). */
  unmoved_broken: number;
  /** The paper's expectation for moved_broken: 0 with shared tables, moved × (B-1)/B without. */
  expected_moved_broken: number;
  /** From SIGKILL to the router's route without the host. */
  kill_withdrawn_ms: number;
  /** From `ferryctl drain-host` returning to the router's route without the drained host (shared seed run only). */
  drain_withdrawn_ms: number | null;
}

async function untilChanged(f: FleetLab, from: string): Promise<number> {
  const t0 = performance.now();
  while (f.nexthops(VIP).join(',') === from) {
    if (performance.now() - t0 > 30_000) throw new Error('the router kept its route for 30 s');
    await new Promise((r) => setTimeout(r, 5));
  }
  return performance.now() - t0;
}

export async function fleetRun(
  seed: 'shared' | 'own',
  o: { hosts: number; backends: number; streams: number; log: (s: string) => void },
): Promise<FleetRun> {
  const f = await FleetLab.start({
    hosts: o.hosts,
    backends: o.backends,
    vips: [VIP],
    ...(seed === 'own' ? { hashSeed: 'own' as const, store: 'none' as const } : {}),
  });
  try {
    await f.createVip({
      name: 'echo',
      address: VIP,
      port: 7,
      protocol: 'tcp',
      backends: f.lab.backends.map((b) => ({ address: b.addr4 })),
    });
    await f.untilNexthops(VIP, f.lab.lbs);
    const streams: Array<{ s: LabStream; owner: LabHost; via: LabHost }> = [];
    for (let i = 0; i < o.streams; i++) {
      const s = await f.stream(VIP, { rate: 32_000 });
      streams.push({ s, owner: f.streamOwner(s), via: f.carrierOf(VIP, s) });
    }
    for (const t of streams) await t.s.flowing(4_000, 10_000);
    const dead = f.members[0]!;
    const before = f.nexthops(VIP).join(',');
    const killed = f.killMember(dead);
    const killWithdrawn = await untilChanged(f, before);
    await killed;
    let movedBroken = 0;
    let unmovedBroken = 0;
    let fromKilled = 0;
    let between = 0;
    for (const t of streams) {
      const bad = !(await f.intact(t.s, t.owner));
      // A host that took the flow over recorded it in its conntrack (from a packet without SYN).
      const moved =
        t.via.name === dead.host.name || f.carriers(VIP, 7, t.s.localPort).some((h) => h.name !== t.via.name && h.name !== dead.host.name);
      if (t.via.name === dead.host.name) fromKilled += 1;
      else if (moved) between += 1;
      if (bad && moved) movedBroken += 1;
      else if (bad) unmovedBroken += 1;
    }
    const moved = fromKilled + between;
    let drainWithdrawn: number | null = null;
    if (seed === 'shared' && f.members.length > 2) {
      const from = f.nexthops(VIP).join(',');
      const r = f.ferryctl(f.members[1]!, ['drain-host']);
      if (r.code !== 0) throw new Error(`drain-host failed: ${r.err}`);
      drainWithdrawn = await untilChanged(f, from);
    }
    const run: FleetRun = {
      seed,
      hosts: o.hosts,
      backends: o.backends,
      streams: o.streams,
      moved_from_killed: fromKilled,
      moved_between_others: between,
      moved_broken: movedBroken,
      unmoved_broken: unmovedBroken,
      expected_moved_broken: seed === 'shared' ? 0 : Math.round(((moved * (o.backends - 1)) / o.backends) * 10) / 10,
      kill_withdrawn_ms: Math.round(killWithdrawn),
      drain_withdrawn_ms: drainWithdrawn === null ? null : Math.round(drainWithdrawn),
    };
    o.log(
      `  seed ${seed}: ${moved} of ${o.streams} streams moved host (${fromKilled} off the killed one, ${between} between the others), ` +
        `${movedBroken} of them broke (expected ${run.expected_moved_broken}), ${unmovedBroken} unmoved broke; ` +
        `route withdrawn ${run.kill_withdrawn_ms} ms after the kill` +
        `${drainWithdrawn === null ? '' : `, ${run.drain_withdrawn_ms} ms after drain-host`}`,
    );
    return run;
  } finally {
    f.stop();
  }
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const log = (s: string) => (json ? console.error(s) : console.log(s));
  const o = { hosts: argValue('--hosts', 3), backends: argValue('--backends', 4), streams: argValue('--streams', 40), log };
  if (o.hosts < 3) throw new Error('--hosts must be at least 3 (one is killed, one drained)');
  log(`fleet: ${o.hosts} Ferry hosts behind ECMP, ${o.backends} backends, ${o.streams} streams; one host killed`);
  const runs = [await fleetRun('shared', o), await fleetRun('own', o)];
  if (json) console.log(JSON.stringify({ runs }));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    console.error(`bench:fleet: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
