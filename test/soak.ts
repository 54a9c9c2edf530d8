/**
 * The soak: the CI fuzzing suites with many more cases.
 *
 *   npm run soak -- [--packets N] [--api N] [--crashes N] [--seed S] [--json]
 *     --packets  fuzzed frames through xdp_lb (default 10,000,000; test/lib/packet-fuzz.ts)
 *     --api      generated API requests (default 100,000; test/lib/api-fuzz.ts)
 *     --crashes  SIGKILLs of ferryd in the lab (default 500; test/root/daemon/crash.test.ts)
 *     --seed     fast-check seed (default: the time, printed so a failure can be replayed)
 *     --json     one object on stdout: {seed, packets: {...tally, seconds, per_second}, api: {...}, crashes: {...}}
 *
 * Progress goes to stderr. Exits 1 on the first broken invariant, with
 * fast-check's report (seed and path replay it); 2 when BPF is unusable.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fuzzApi, seedApi, type ApiTally } from './lib/api-fuzz.js';
import { makeApi } from './lib/api-fixture.js';
import { LbHarness, bpfUnavailable } from './lib/harness.js';
import { fuzzPackets, programFuzzWorld, type FuzzTally } from './lib/packet-fuzz.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) {
    console.error(`soak: ${name} takes a non-negative integer, got ${JSON.stringify(process.argv[i + 1] ?? null)}`);
    process.exit(2);
  }
  return v;
}

interface SoakReport {
  seed: number;
  packets: FuzzTally & { seconds: number; per_second: number };
  api: ApiTally & { seconds: number };
  crashes: CrashReport | null;
}

interface CrashReport {
  kills: number;
  acknowledged_writes: number;
  kinds: Record<string, number>;
  seconds: number;
}

/** The crash matrix (test/root/daemon/crash.test.ts) with more kills; its own report line, parsed. */
function soakCrashes(kills: number, seed: number): CrashReport | null {
  if (kills === 0) return null;
  console.error(`soak: ${kills} kills of ferryd in the lab`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', '--test-timeout=0', join(import.meta.dirname, 'crash.test.js')], {
    encoding: 'utf8',
    env: { ...process.env, TEST_CRASH_ITERATIONS: String(kills), TEST_CRASH_SEED: String(seed) },
    maxBuffer: 1 << 26,
  });
  const line = /crash matrix (\{.*\})/.exec(r.stdout);
  if (r.status !== 0 || !line) throw new Error(`the crash matrix failed (seed ${seed}):\n${r.stdout.slice(-4000)}${r.stderr.slice(-2000)}`);
  const report = JSON.parse(line[1]!) as Omit<CrashReport, 'seconds'>;
  return { ...report, seconds: Math.round((performance.now() - t0) / 100) / 10 };
}

async function soakApi(runs: number, seed: number): Promise<SoakReport['api']> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-soak-api-'));
  const dbPath = join(dir, 'ferry.db');
  const api = await makeApi({ dbPath });
  try {
    await seedApi(api);
    const t0 = performance.now();
    const total: ApiTally = { requests: 0, byStatus: {} };
    for (let done = 0; done < runs;) {
      const n = Math.min(5000, runs - done);
      const t = await fuzzApi(api.app, dbPath, { seed: seed + done, runs: n });
      total.requests += t.requests;
      for (const [s, c] of Object.entries(t.byStatus)) total.byStatus[s] = (total.byStatus[s] ?? 0) + c;
      api.applier.states.length = 0; // the fake datapath keeps every state it was given
      done += n;
      console.error(`soak: api ${done}/${runs} (${JSON.stringify(total.byStatus)})`);
    }
    return { ...total, seconds: Math.round((performance.now() - t0) / 100) / 10 };
  } finally {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function soakPackets(runs: number, seed: number): SoakReport['packets'] {
  const h = new LbHarness(`/sys/fs/bpf/ferry-test-soak-${process.pid}`);
  try {
    programFuzzWorld(h);
    const t0 = performance.now();
    let next = 0;
    const tally = fuzzPackets(h, {
      seed,
      runs,
      batch: 100_000,
      onProgress: (t) => {
        if (t.cases < next) return;
        next = t.cases + 1_000_000;
        console.error(`soak: packets ${t.cases}/${runs} (pass ${t.pass}, drop ${t.drop}, tx ${t.tx})`);
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    return { ...tally, seconds: Math.round(seconds * 10) / 10, per_second: Math.round(tally.cases / seconds) };
  } finally {
    h.close();
  }
}

async function main(): Promise<void> {
  const why = bpfUnavailable();
  if (why !== undefined) {
    console.error(`soak: cannot run: ${why}`);
    process.exit(2);
  }
  const seed = arg('--seed', Date.now() % 2 ** 31);
  const runs = arg('--packets', 10_000_000);
  const apiRuns = arg('--api', 100_000);
  const kills = arg('--crashes', 500);
  console.error(`soak: seed ${seed}`);
  const report: SoakReport = {
    seed,
    packets: soakPackets(runs, seed),
    api: await soakApi(apiRuns, seed),
    crashes: soakCrashes(kills, seed),
  };
  if (process.argv.includes('--json')) console.log(JSON.stringify(report));
  else {
    console.log(
      `packets: ${report.packets.cases} frames in ${report.packets.seconds} s, every invariant held: ${JSON.stringify(report.packets)}`,
    );
    console.log(
      `api: ${report.api.requests} requests in ${report.api.seconds} s, no 5xx, refusals changed nothing: ${JSON.stringify(report.api.byStatus)}`,
    );
    if (report.crashes) {
      console.log(
        `crashes: ${report.crashes.kills} kills in ${report.crashes.seconds} s, ${report.crashes.acknowledged_writes} acknowledged writes, none lost: ${JSON.stringify(report.crashes.kinds)}`,
      );
    }
  }
}

main().catch((err: unknown) => {
  console.error(`soak: FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
