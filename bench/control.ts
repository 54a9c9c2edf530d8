/**
 * Control-plane benchmark against a real ferryd (real SQLite, real maps;
 * no interface attached, so no namespace is needed):
 *   - API writes per second and p50/p99 latency for a single backend change,
 *     acknowledged = committed in SQLite and applied to the maps, next to a
 *     read (GET /v1/status) over the same socket as the baseline;
 *   - time to apply a 1,000-VIP × 10-backend desired state from empty, and a
 *     one-backend change within it, next to re-applying the same state (all
 *     the parsing, validation and diffing, no change) as the baseline;
 *   - ferryd's RSS at that size.
 *
 *   npm run bench:control [-- --json] [-- --writes N] [-- --vips N]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Client } from '../src/cli/client.js';
import { packageRoot } from '../src/paths.js';
import { argValue } from './args.js';

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
const r2 = (x: number): number => Math.round(x * 100) / 100;

interface Daemon {
  api: Client;
  pid: number;
  stop(): Promise<void>;
}

async function startDaemon(dir: string, vips: number): Promise<Daemon> {
  const socket = join(dir, 'ferry.sock');
  const pinRoot = `/sys/fs/bpf/ferry-bench-control-${process.pid}`;
  const config = join(dir, 'ferry.yaml');
  writeFileSync(
    config,
    [
      `state_dir: ${dir}/state`,
      'bpf:',
      `  pin_root: ${pinRoot}`,
      `  max_vips: ${Math.max(1024, vips)}`,
      `  max_backends: ${Math.max(16384, vips * 11)}`,
      '  conntrack_entries: 65536',
      '  max_policy_rules: 1024',
      'datapath:',
      '  encap_source_v4: 198.19.255.0/24',
      '  encap_source_v6: 2001:db8:ff::/112',
      '  reconcile_interval_seconds: 3600',
      'api:',
      `  socket: ${socket}`,
      '  body_limit: 67108864',
      'log:',
      '  level: warn',
    ].join('\n'),
  );
  const proc = spawn(process.execPath, [join(packageRoot(), 'dist/src/daemon/ferryd.js'), '--config', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const api = new Client({ socket });
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`ferryd exited: ${err}`);
    try {
      await api.get('/readyz');
      break;
    } catch {
      if (i > 400) throw new Error(`ferryd not ready: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    api,
    pid: proc.pid!,
    stop: async () => {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
      rmSync(pinRoot, { recursive: true, force: true });
    },
  };
}

/** Latencies in ms of n sequential calls. */
async function timeCalls(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out.sort((a, b) => a - b);
}

function bigState(vips: number) {
  return {
    vips: Array.from({ length: vips }, (_, i) => ({
      name: `vip-${i}`,
      address: `198.18.${i >> 8}.${i & 255}`,
      port: 80,
      protocol: 'tcp',
      backends: Array.from({ length: 10 }, (_, j) => ({ address: `10.${(i >> 8) & 255}.${i & 255}.${j + 1}` })),
    })),
  };
}

export interface ControlBench {
  writes: { count: number; per_second: number; p50_ms: number; p99_ms: number; baseline_read_p50_ms: number; ratio_p50: number };
  apply: {
    vips: number;
    backends: number;
    from_empty_ms: number;
    one_backend_change_ms: number;
    noop_reapply_ms: number;
    ratio_from_empty_vs_noop: number;
  };
  rss_mib: number;
}

export async function benchControl(writes: number, vips: number): Promise<ControlBench> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-control-'));
  const d = await startDaemon(dir, vips);
  try {
    const { api } = d;
    await api.request('POST', '/v1/vips', { body: { name: 'w', address: '198.51.100.1', port: 80, protocol: 'tcp' } });
    await api.request('POST', '/v1/vips/w/backends', { body: { address: '10.255.0.1' } });
    for (let i = 0; i < 20; i++) await api.get('/v1/status');
    const reads = await timeCalls(writes, () => api.get('/v1/status'));
    const t0 = performance.now();
    const lat = await timeCalls(writes, (i) =>
      api.request('PUT', '/v1/vips/w/backends/10.255.0.1', { body: { address: '10.255.0.1', weight: 100 + (i % 2) } }),
    );
    const total = performance.now() - t0;

    const state = bigState(vips);
    let t = performance.now();
    await api.request('PUT', '/v1/state', { body: state });
    const fromEmpty = performance.now() - t;
    t = performance.now();
    await api.request('PUT', '/v1/state', { body: state });
    const noop = performance.now() - t;
    t = performance.now();
    await api.request('PUT', '/v1/vips/vip-7/backends/10.0.7.3', { body: { address: '10.0.7.3', weight: 50 } });
    const oneChange = performance.now() - t;
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${d.pid}/status`, 'utf8'));

    return {
      writes: {
        count: writes,
        per_second: Math.round(writes / (total / 1000)),
        p50_ms: r2(pct(lat, 50)),
        p99_ms: r2(pct(lat, 99)),
        baseline_read_p50_ms: r2(pct(reads, 50)),
        ratio_p50: r2(pct(lat, 50) / pct(reads, 50)),
      },
      apply: {
        vips,
        backends: vips * 10,
        from_empty_ms: Math.round(fromEmpty),
        one_backend_change_ms: r2(oneChange),
        noop_reapply_ms: Math.round(noop),
        ratio_from_empty_vs_noop: r2(fromEmpty / noop),
      },
      rss_mib: rss ? Math.round(Number(rss[1]) / 1024) : -1,
    };
  } finally {
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:control runs ferryd, which loads BPF: run as root');
  const r = await benchControl(argValue('--writes', 2000), argValue('--vips', 1000));
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(r));
    return;
  }
  const w = r.writes;
  console.log(`API writes (one backend change, committed and applied), ${w.count} sequential over the unix socket:`);
  console.log(
    `  ${w.per_second} writes/s, p50 ${w.p50_ms} ms, p99 ${w.p99_ms} ms; baseline read p50 ${w.baseline_read_p50_ms} ms (ratio ${w.ratio_p50})`,
  );
  const a = r.apply;
  console.log(`Declarative apply, ${a.vips} VIPs × 10 backends (${a.backends} backends):`);
  console.log(
    `  from empty ${a.from_empty_ms} ms; same state again (baseline) ${a.noop_reapply_ms} ms (ratio ${a.ratio_from_empty_vs_noop}); one-backend change within it ${a.one_backend_change_ms} ms`,
  );
  console.log(`ferryd RSS at that size: ${r.rss_mib} MiB`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    console.error(`bench:control: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
