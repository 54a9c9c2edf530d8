/**
 * Health checker benchmark on loopback: checks per second and the event
 * loop's delay (perf_hooks.monitorEventLoopDelay, p50/p99/max) while the
 * real checker checks 1,000 and 5,000 backends every second:
 *   - tcp-refused: nothing listens (the kernel answers RST at once);
 *   - tcp-open: connections accepted (and closed with a RST by the checker);
 *   - http-200: a GET answered 200.
 * The servers run in a child process, so only the checker's own work is in
 * this event loop. The baseline is the same loop idle, measured in the same
 * run.
 *
 *   node dist/bench/health.js [--json] [--seconds N] [--backends 1000,5000]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { HealthChecker } from '../src/health/checker.js';
import { targetOf, type Target } from '../src/health/targets.js';
import { normHealthCheck, type HealthCheckSpec } from '../src/model/health.js';
import type { StoredVip } from '../src/store/types.js';
import { argValue } from './args.js';

const SERVER_ADDRS = 50;
const INTERVAL_MS = 1000;
const r2 = (x: number): number => Math.round(x * 100) / 100;

interface Case {
  name: string;
  backends: number;
  interval_ms: number;
  offered_per_s: number;
  checks_per_s: number;
  failed: number;
  /** CPU time of this process (user + system) per second of wall time, %. */
  cpu_pct: number;
  /** CPU time per check, µs. */
  cpu_us_per_check: number;
  el_p50_ms: number;
  el_p99_ms: number;
  el_max_ms: number;
}

function vip(name: string, check: HealthCheckSpec): StoredVip {
  return {
    name,
    address: '198.18.0.1',
    port: 80,
    protocol: 'tcp',
    encap: 'ipip',
    allow: [],
    deny: [],
    policies: [],
    rate_limit: null,
    maglev_m: null,
    source_affinity: false,
    health_check: normHealthCheck(check, 'vip'),
    backend_count: 1,
    owner: null,
    created_revision: 1,
    updated_revision: 1,
    dp_id: 0,
  };
}

/** n targets spread over the servers' addresses (refused ones over 127.76.0.0/16, where nothing listens). */
function targets(n: number, type: 'tcp' | 'http', port: number, refused: boolean): Target[] {
  const out: Target[] = [];
  for (let i = 0; i < n; i++) {
    const address = refused ? `127.76.${i >> 8}.${(i & 255) + 1}` : `127.75.0.${(i % SERVER_ADDRS) + 1}`;
    const t = targetOf(vip(`v${i}`, { type, port, interval_ms: INTERVAL_MS, timeout_ms: 500 }), address, undefined);
    if (t !== null) out.push(t);
  }
  return out;
}

/** Event-loop delay over `seconds` while fn's work runs; returns the figures in ms. */
async function measure(seconds: number, fn?: () => () => Promise<void>): Promise<{ p50: number; p99: number; max: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const stop = fn?.();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  await stop?.();
  h.disable();
  return { p50: r2(h.percentile(50) / 1e6), p99: r2(h.percentile(99) / 1e6), max: r2(h.max / 1e6) };
}

async function runCase(name: string, list: Target[], seconds: number): Promise<Case> {
  const c = new HealthChecker();
  // Let the first, randomly spread round start before measuring, so the figure is the steady state.
  c.setTargets(list);
  c.start();
  await new Promise((r) => setTimeout(r, INTERVAL_MS));
  const before = c.stats;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let checks = 0;
  let failed = 0;
  const el = await measure(seconds, () => async () => {
    const s = c.stats;
    checks = s.checks - before.checks;
    failed = s.failures - before.failures;
  });
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuUs = cpu.user + cpu.system;
  await c.stop();
  return {
    name,
    backends: list.length,
    interval_ms: INTERVAL_MS,
    offered_per_s: Math.round(list.length / (INTERVAL_MS / 1000)),
    checks_per_s: Math.round(checks / elapsed),
    failed,
    cpu_pct: r2(cpuUs / 1e4 / elapsed),
    cpu_us_per_check: checks > 0 ? Math.round(cpuUs / checks) : 0,
    el_p50_ms: el.p50,
    el_p99_ms: el.p99,
    el_max_ms: el.max,
  };
}

async function startServers(): Promise<{ proc: ChildProcess; tcp: number; http: number }> {
  const script = join(fileURLToPath(new URL('.', import.meta.url)), 'health-servers.js');
  const proc = spawn(process.execPath, [script, String(SERVER_ADDRS)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout! });
  const [line] = (await once(lines, 'line')) as [string];
  const [tcp, http] = line.split(' ').map(Number);
  return { proc, tcp: tcp!, http: http! };
}

async function main(): Promise<void> {
  const seconds = argValue('--seconds', 5);
  const i = process.argv.indexOf('--backends');
  const sizes = i < 0 ? [1000, 5000] : (process.argv[i + 1] ?? '').split(',').map(Number);
  const servers = await startServers();
  try {
    const baseline = await measure(Math.min(seconds, 3));
    const cases: Case[] = [];
    for (const n of sizes) {
      cases.push(await runCase('tcp-refused', targets(n, 'tcp', servers.tcp, true), seconds));
      cases.push(await runCase('tcp-open', targets(n, 'tcp', servers.tcp, false), seconds));
      cases.push(await runCase('http-200', targets(n, 'http', servers.http, false), seconds));
    }
    report({ baseline: { el_p50_ms: baseline.p50, el_p99_ms: baseline.p99, el_max_ms: baseline.max }, cases });
  } finally {
    servers.proc.stdin?.end();
    servers.proc.kill();
  }
}

function report(r: { baseline: { el_p50_ms: number; el_p99_ms: number; el_max_ms: number }; cases: Case[] }): void {
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(r));
    return;
  }
  console.log(`Health checks on loopback, interval ${INTERVAL_MS} ms, at most 64 in flight; event-loop delay in ms`);
  console.log(`baseline (idle loop): p50 ${r.baseline.el_p50_ms}, p99 ${r.baseline.el_p99_ms}, max ${r.baseline.el_max_ms}`);
  const cols: Array<[string, (c: Case) => string | number]> = [
    ['case', (c) => c.name],
    ['backends', (c) => c.backends],
    ['offered/s', (c) => c.offered_per_s],
    ['checks/s', (c) => c.checks_per_s],
    ['failed', (c) => c.failed],
    ['cpu %', (c) => c.cpu_pct],
    ['cpu µs/check', (c) => c.cpu_us_per_check],
    ['p50', (c) => c.el_p50_ms],
    ['p99', (c) => c.el_p99_ms],
    ['max', (c) => c.el_max_ms],
  ];
  const rows = [cols.map(([h]) => h), ...r.cases.map((c) => cols.map(([, f]) => String(f(c))))];
  const width = cols.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(width[i]!) : cell.padStart(width[i]!))).join('  '));
}

await main();
