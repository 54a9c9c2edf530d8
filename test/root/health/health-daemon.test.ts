/**
 * Health checks in a real ferryd: in its own namespace (ferrytest-health-PID)
 * with real maps, checking TCP servers that run in the same namespace on
 * addresses of its veth1. A server that stops takes its backend out of the
 * pinned Maglev table; ferryctl shows the health and the events; a daemon
 * restart keeps every backend in the table.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { BACKEND_ACTIVE, BACKEND_DOWN } from '../../../src/datapath/abi.js';
import { formatAddr } from '../../../src/datapath/addr.js';
import type { BackendHealth, HealthEvent } from '../../../src/model/health.js';
import {
  destroyFerrydEnv,
  ferryctl,
  getText,
  makeFerrydEnv,
  openDaemonDatapath,
  startFerryd,
  stopFerryd,
  type Ferryd,
  type FerrydEnv,
} from '../../lib/ferryd.js';
import { bpfUnavailable } from '../../lib/harness.js';
import { waitFor } from '../../lib/health-servers.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping ferryd health tests: ${skip}`);

const PORT = 8080;
const BACKENDS = ['198.19.9.1', '198.19.9.2'];

/** A TCP server inside the namespace; resolves once it listens. */
async function serveInNs(ns: string, address: string): Promise<ChildProcess> {
  // The checker closes with a RST (no TIME_WAIT per check): a server sees ECONNRESET and must not die of it.
  const code = `require('net').createServer((c) => { c.on('error', () => {}); c.end(); }).listen(${PORT}, '${address}', () => console.log('ready'))`;
  const proc = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(createInterface({ input: proc.stdout! }), 'line')) as [string];
  assert.equal(line, 'ready');
  return proc;
}

async function kill(p: ChildProcess | undefined): Promise<void> {
  if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
  p.kill('SIGKILL');
  await once(p, 'exit');
}

/** What the pinned maps say of each backend address: its state and whether VIP 0's table holds it. */
function datapathView(e: FerrydEnv): Map<string, { state: number; inTable: boolean }> {
  const dp = openDaemonDatapath(e);
  try {
    const table = new Set(dp.getMaglevTable(0) ?? []);
    const out = new Map<string, { state: number; inTable: boolean }>();
    for (let id = 0; id < 8; id++) {
      const b = dp.backends.get(id);
      if (b.state === 0) continue;
      out.set(formatAddr(b.family, b.addr), { state: b.state, inTable: table.has(id) });
    }
    return out;
  } finally {
    dp.close();
  }
}

function ok(e: FerrydEnv, args: string[]): string {
  const r = ferryctl(e, args);
  assert.equal(r.code, 0, `ferryctl ${args.join(' ')}: ${r.err}`);
  return r.out;
}

const healthOf = (e: FerrydEnv): Record<string, string | undefined> =>
  Object.fromEntries(
    (JSON.parse(ok(e, ['backend', 'list', 'web', '--json'])) as Array<{ address: string; health?: BackendHealth }>).map((b) => [
      b.address,
      b.health?.status,
    ]),
  );

describe('ferryd health checks', { skip }, () => {
  let e: FerrydEnv;
  let d: Ferryd;
  const servers = new Map<string, ChildProcess>();

  before(async () => {
    e = makeFerrydEnv('health');
    for (const a of BACKENDS) {
      const r = spawnSync('nsenter', [`--net=/run/netns/${e.ns}`, '--', 'ip', 'addr', 'add', `${a}/24`, 'dev', 'veth1'], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, r.stderr);
      servers.set(a, await serveInNs(e.ns, a));
    }
    d = await startFerryd(e);
  });
  after(async () => {
    for (const p of servers.values()) await kill(p);
    if (d) await stopFerryd(d, 'SIGKILL');
    if (e) destroyFerrydEnv(e);
  });

  it('ferryctl configures a check; both backends come up and stay in the table', async () => {
    const check = JSON.stringify({ type: 'tcp', port: PORT, interval_ms: 100, timeout_ms: 50, rise: 2, fall: 2 });
    ok(e, ['vip', 'add', 'web', '--address', '198.18.0.10', '--port', '80', '--protocol', 'tcp', '--health-check', check]);
    for (const a of BACKENDS) ok(e, ['backend', 'add', 'web', a]);
    await waitFor('both up', () => Object.values(healthOf(e)).every((s) => s === 'up'), 5000, 50);
    const dp = datapathView(e);
    assert.deepEqual(
      BACKENDS.map((a) => dp.get(a)),
      [
        { state: BACKEND_ACTIVE, inTable: true },
        { state: BACKEND_ACTIVE, inTable: true },
      ],
    );
    assert.match(ok(e, ['backend', 'list', 'web']), /^198\.19\.9\.1\s+100\s+active\s+up \d+s/m);
    // `vip set` keeps the check it does not mention.
    ok(e, ['vip', 'set', 'web', '--port', '81']);
    assert.equal((JSON.parse(ok(e, ['vip', 'get', 'web'])) as { health_check?: { port: number } }).health_check?.port, PORT);
  });

  it('a stopped server takes its backend out of the pinned Maglev table; a restarted one returns', async () => {
    await kill(servers.get(BACKENDS[0]!));
    const downMs = await waitFor(
      'out of the table',
      () => {
        const v = datapathView(e).get(BACKENDS[0]!);
        return v?.state === BACKEND_DOWN && !v.inTable;
      },
      5000,
      20,
    );
    console.log(`# ferryd: backend out of the pinned table ${downMs} ms after its server was killed (interval 100 ms, fall 2)`);
    assert.equal(datapathView(e).get(BACKENDS[1]!)?.inTable, true);
    const list = JSON.parse(ok(e, ['backend', 'list', 'web', '--json'])) as Array<{ address: string; health: BackendHealth }>;
    assert.equal(list[0]?.health.status, 'down');
    assert.equal(list[0]?.health.last_error, 'connection refused');
    assert.match(await getText(e.socket, '/metrics'), /ferry_backend_up\{vip="web",backend="198\.19\.9\.1"\} 0/);
    servers.set(BACKENDS[0]!, await serveInNs(e.ns, BACKENDS[0]!));
    await waitFor('back in the table', () => datapathView(e).get(BACKENDS[0]!)?.inTable === true, 5000, 20);
    const events = JSON.parse(ok(e, ['events', '--vip', 'web', '--json'])) as HealthEvent[];
    assert.deepEqual(
      events.map((x) => `${x.backend} ${x.from}>${x.to}`),
      ['198.19.9.1 down>up', '198.19.9.1 up>down'],
    );
    assert.match(ok(e, ['events']), /198\.19\.9\.1\s+up -> down\s+2 consecutive checks failed: connection refused/);
  });

  it('a daemon restart keeps every backend in the table and the events', async () => {
    await stopFerryd(d, 'SIGTERM');
    d = await startFerryd(e);
    const dp = datapathView(e);
    assert.deepEqual(
      BACKENDS.map((a) => dp.get(a)?.inTable),
      [true, true],
      'nothing left the table at start',
    );
    assert.ok(Object.values(healthOf(e)).every((s) => s === 'unknown' || s === 'up'));
    await waitFor('both up again', () => Object.values(healthOf(e)).every((s) => s === 'up'), 5000, 50);
    assert.equal((JSON.parse(ok(e, ['events', '--json'])) as HealthEvent[]).length, 2, 'events survive the restart');
  });
});
