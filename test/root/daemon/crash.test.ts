/**
 * The crash matrix: ferryd is killed with SIGKILL at random points while it
 * applies single writes, whole states, backups and restores, while it starts
 * (adopting the pinned maps, reconciling) and while it migrates an older
 * database; then it is started again. After every kill:
 *  - SQLite's integrity and foreign-key checks pass;
 *  - every acknowledged revision is in the audit log, the revision is the
 *    last acknowledged one or the one write that was in flight (plus any
 *    ferryd wrote itself: a drain that ended, audited as ferryd), and at the
 *    last acknowledged revision the state is exactly what was acknowledged;
 *  - the maps equal what the store plans (read back from the pinned maps),
 *    and nothing a killed backup or restore staged is left behind;
 *  - a verified long-lived TCP stream through the lab never stalls, never
 *    resets and stays on its backend (the datapath runs on without ferryd).
 * TEST_CRASH_ITERATIONS and TEST_CRASH_SEED change the run (`npm run soak`
 * runs more).
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ApiError, type Response } from '../../../src/cli/client.js';
import { loadConfig } from '../../../src/config/index.js';
import { datapathConfig } from '../../../src/daemon/daemon.js';
import { LbDatapath } from '../../../src/datapath/lb.js';
import { LAB_SIZES } from '../../../src/lab/ferryd.js';
import { LbLab, type LabStream } from '../../../src/lab/lblab.js';
import { existingLabs, type LabHost } from '../../../src/lab/topology.js';
import type { DesiredState, VipWithBackends } from '../../../src/model/types.js';
import { plan } from '../../../src/reconcile/plan.js';
import { Reconciler } from '../../../src/reconcile/reconciler.js';
import { latestVersion, migrate, MIGRATIONS } from '../../../src/store/migrations.js';
import { openStore } from '../../../src/store/store.js';
import { bpfUnavailable } from '../../lib/harness.js';
import { mulberry32 } from '../../lib/rng.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping the crash matrix: ${skip}`);

export const CRASH_ITERATIONS = Number(process.env.TEST_CRASH_ITERATIONS ?? 50);
const SEED = Number(process.env.TEST_CRASH_SEED ?? 20261206);
const STREAM4 = '198.19.0.30';
/** Churn VIPs: 198.19.0.100 + i (no traffic is sent to them). */
const CHURN_VIPS = 24;

const KINDS = ['writes', 'writes', 'writes', 'state', 'state', 'backup', 'restore', 'startup', 'migration'] as const;
type Kind = (typeof KINDS)[number];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Rewrites a (closed) database as schema version 1 holding the same rows, as
 * an older release would have left it: the columns later versions added are
 * left out (nothing here uses them), their tables and indexes are not there.
 */
function rewriteAsVersion1(file: string): void {
  const src = new Database(file);
  src.pragma('wal_checkpoint(TRUNCATE)');
  src.close();
  const tmp = `${file}.v1`;
  rmSync(tmp, { force: true });
  const db = new Database(tmp);
  try {
    migrate(
      db,
      tmp,
      MIGRATIONS.filter((m) => m.version === 1),
    );
    db.exec(`ATTACH DATABASE '${file.replaceAll("'", "''")}' AS src`);
    db.exec('DELETE FROM main.meta');
    const tables = db
      .prepare<[], string>("SELECT name FROM main.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
      .pluck()
      .all();
    // Parents before children: ids, policies and VIPs before what refers to them.
    const order = ['meta', 'vip_ids', 'backend_ids', 'policies', 'vips', 'vip_policies', 'backends', 'tombstones', 'audit'];
    for (const t of [...order.filter((x) => tables.includes(x)), ...tables.filter((x) => !order.includes(x))]) {
      const cols = (table: string, schema: string) =>
        db.prepare<[], string>(`SELECT name FROM pragma_table_info('${table}', '${schema}')`).pluck().all();
      const have = new Set(cols(t, 'src'));
      const common = cols(t, 'main')
        .filter((c) => have.has(c))
        .map((c) => `"${c}"`)
        .join(', ');
      db.exec(`INSERT INTO main."${t}" (${common}) SELECT ${common} FROM src."${t}"`);
    }
    db.exec('DETACH DATABASE src');
  } finally {
    db.close();
  }
  for (const suffix of ['-wal', '-shm']) rmSync(`${file}${suffix}`, { force: true });
  renameSync(tmp, file);
}

describe('crash matrix: SIGKILL at random points, then a restart', { skip }, () => {
  let lab: LbLab;
  let stream: LabStream;
  let owner: LabHost;
  let dp: LbDatapath;
  let dbPath: string;
  /** A backup of the first state (the stream VIP alone), for restores. */
  let firstBackup: Buffer;
  let streamVip: VipWithBackends;
  const acked: number[] = [];
  /** The state the API showed right after an acknowledged write, by its revision. */
  const stateAt = new Map<number, DesiredState>();
  const tally: Record<string, number> = {};
  const count = (what: string) => (tally[what] = (tally[what] ?? 0) + 1);

  before(async () => {
    lab = await LbLab.start({ backends: 3, vips: [STREAM4], drainSeconds: 3600 });
    const be = lab.lab.backends;
    await lab.createVip({ name: 'stream', address: STREAM4, port: 0, protocol: 'tcp', backends: be.map((b) => ({ address: b.addr4 })) });
    stream = await lab.stream(STREAM4);
    owner = lab.streamOwner(stream);
    await stream.flowing();
    streamVip = (await lab.state()).vips.find((v) => v.name === 'stream')!;
    firstBackup = (await lab.api.request<Buffer>('GET', '/v1/backup')).raw;
    dbPath = join(lab.lab.dir, 'state', 'ferry.db');
    dp = LbDatapath.open({ pinRoot: join(lab.lab.bpfRoot, 'lb'), sizes: LAB_SIZES });
  });

  after(async () => {
    stream?.kill();
    dp?.close();
    const prefix = lab?.lab.prefix;
    lab?.stop();
    if (prefix) assert.ok(!existingLabs().includes(prefix), `lab ${prefix} left something behind`);
  });

  /** Records an acknowledged write and, while ferryd still answers, the state it left. */
  async function acknowledge(res: Response<unknown>): Promise<void> {
    const rev = Number(res.headers['x-ferry-revision']);
    if (!Number.isInteger(rev) || acked.includes(rev)) return; // a no-op keeps the revision
    acked.push(rev);
    try {
      stateAt.set(rev, await lab.state());
    } catch {
      /* killed in between: the state at rev stays unknown */
    }
  }

  /** One API write; refusals (4xx) are fine, a dead daemon ends the workload. */
  async function write(method: string, path: string, body?: unknown, raw?: Buffer): Promise<void> {
    try {
      const res = await lab.api.request(method, path, raw ? { raw, contentType: 'application/vnd.sqlite3' } : { body });
      await acknowledge(res);
    } catch (err) {
      if (!(err instanceof ApiError) || err.problem.status >= 500) throw err;
    }
  }

  function churnState(rnd: (n: number) => number): DesiredState {
    const vips: VipWithBackends[] = [streamVip];
    for (let i = 0, n = rnd(CHURN_VIPS); i < n; i++) {
      vips.push({
        name: `c${i}`,
        address: `198.19.0.${100 + i}`,
        port: 80,
        protocol: 'tcp',
        backends: Array.from({ length: rnd(16) }, (_, j) => ({ address: `198.51.100.${j + 1}`, weight: 1 + rnd(200) })),
      });
    }
    return { vips, policies: [] };
  }

  /** One random single-object write. */
  function randomWrite(rnd: (n: number) => number): Promise<void> {
    const c = `c${rnd(CHURN_VIPS)}`;
    const be = `198.51.100.${1 + rnd(16)}`;
    switch (rnd(5)) {
      case 0:
        return write('PUT', `/v1/vips/${c}`, { address: `198.19.0.${100 + Number(c.slice(1))}`, port: 80, protocol: 'tcp' });
      case 1:
        return write('DELETE', `/v1/vips/${c}`);
      case 2:
        return write('PUT', `/v1/vips/${c}/backends/${be}`, { weight: 1 + rnd(200) });
      case 3:
        return write('DELETE', `/v1/vips/${c}/backends/${be}`);
      default: {
        // The stream's VIP gets new weights (a new Maglev table); the stream keeps its backend through conntrack.
        const other = lab.lab.backends.filter((b) => b !== owner)[rnd(2)]!;
        return write('PUT', `/v1/vips/stream/backends/${other.addr4}`, { weight: 1 + rnd(300) });
      }
    }
  }

  /** Runs `step` until ferryd dies; the kill comes after `killAfterMs`. */
  async function underLoad(killAfterMs: number, step: () => Promise<void>): Promise<void> {
    let dead = false;
    const load = (async () => {
      while (!dead) {
        try {
          await step();
        } catch (err) {
          if (dead) return;
          throw err;
        }
      }
    })();
    await sleep(killAfterMs);
    dead = true;
    await lab.killDaemon();
    await load;
  }

  /** Starts ferryd and kills it `killAfterMs` later, whatever it was doing (booting, migrating, reconciling, attaching). */
  async function killWhileStarting(killAfterMs: number): Promise<void> {
    const starting = lab.startDaemon().then(
      () => 'ready',
      () => 'killed before ready',
    );
    await sleep(killAfterMs);
    await lab.killDaemon();
    count(`startup: ${await starting}`);
  }

  async function crash(kind: Kind, rnd: (n: number) => number): Promise<void> {
    const killAfter = 20 + rnd(400);
    switch (kind) {
      case 'writes':
        return underLoad(killAfter, () => randomWrite(rnd));
      case 'state':
        return underLoad(killAfter, () => write('PUT', '/v1/state', churnState(rnd)));
      case 'backup':
        return underLoad(killAfter, async () => {
          await lab.api.request('GET', '/v1/backup');
        });
      case 'restore':
        return underLoad(killAfter, async () => {
          await write('POST', '/v1/restore', undefined, firstBackup);
          await randomWrite(rnd);
        });
      case 'startup':
        await lab.killDaemon();
        return killWhileStarting(rnd(1500));
      case 'migration': {
        await lab.killDaemon();
        rewriteAsVersion1(dbPath);
        const v = new Database(dbPath, { readonly: true });
        assert.equal(v.pragma('user_version', { simple: true }), 1);
        v.close();
        return killWhileStarting(rnd(1500));
      }
    }
  }

  /** Everything that must hold after a kill and a restart. */
  async function check(what: string, inFlight: number): Promise<void> {
    const db = new Database(dbPath, { readonly: true });
    let revision: number;
    /** Revisions past the last acknowledged one that ferryd wrote itself (a drain that ended). */
    let own = 0;
    try {
      assert.deepEqual(db.pragma('integrity_check', { simple: true }), 'ok', `${what}: integrity_check`);
      assert.deepEqual(db.pragma('foreign_key_check'), [], `${what}: foreign_key_check`);
      assert.equal(db.pragma('user_version', { simple: true }), latestVersion(), `${what}: schema version`);
      revision = db.prepare<[], number>('SELECT revision FROM meta').pluck().get()!;
      const audited = new Set(db.prepare<[], number>('SELECT revision FROM audit').pluck().all());
      const lost = acked.filter((r) => !audited.has(r));
      assert.deepEqual(lost, [], `${what}: acknowledged revisions missing from the audit log`);
      const since = acked.length > 0 ? Math.max(...acked) : 0;
      own = db
        .prepare<[number], number>("SELECT COUNT(DISTINCT revision) FROM audit WHERE revision > ? AND actor = 'ferryd'")
        .pluck()
        .get(since)!;
    } finally {
      db.close();
    }
    const last = acked.length > 0 ? Math.max(...acked) : 0;
    assert.ok(
      revision >= last && revision <= last + inFlight + own,
      `${what}: revision ${revision}, last acknowledged ${last}, ${own} of ferryd's own since`,
    );
    const known = stateAt.get(revision);
    if (revision === last && known !== undefined) assert.deepEqual(await lab.state(), known, `${what}: the acknowledged state`);
    const status = await lab.status();
    assert.equal(status.applied_revision, status.revision, `${what}: applied`);
    assert.deepEqual(readdirSync(join(lab.lab.dir, 'state', 'scratch')), [], `${what}: staged backups or restores kept`);
    const store = openStore(dbPath, { maxVips: LAB_SIZES.maxVips, maxBackends: LAB_SIZES.maxBackends });
    try {
      const snap = store.read((tx) => tx.snapshot());
      const rec = new Reconciler(dp, datapathConfig(loadConfig(lab.ferryd.config), snap.hash_seed));
      assert.deepEqual(rec.verify(plan(snap)), [], `${what}: the maps differ from the store`);
    } finally {
      store.close();
    }
    await stream.flowing(64 * 1024);
    assert.equal(lab.streamOwner(stream).name, owner.name, `${what}: the stream moved`);
  }

  it(`${CRASH_ITERATIONS} kills lose no acknowledged write, leave the maps equal to the store and reset no flow`, async (t) => {
    const rnd = mulberry32(SEED);
    for (let i = 0; i < CRASH_ITERATIONS; i++) {
      const kind = KINDS[rnd(KINDS.length)]!;
      count(kind);
      await crash(kind, rnd);
      assert.ok(existsSync(dbPath));
      const scratch = join(lab.lab.dir, 'state', 'scratch');
      if (existsSync(scratch) && readdirSync(scratch).length > 0) count('kills that left staged files');
      await lab.startDaemon();
      // At most one write was in flight when the kill came (restores are followed by one more write).
      await check(`iteration ${i} (${kind}, seed ${SEED})`, 1);
    }
    const fin = await stream.report();
    assert.equal(fin.error, null, JSON.stringify(fin));
    assert.equal(fin.closed_by_peer, false, JSON.stringify(fin));
    assert.equal(fin.first_mismatch, null, JSON.stringify(fin));
    t.diagnostic(
      `crash matrix ${JSON.stringify({ seed: SEED, kills: CRASH_ITERATIONS, acknowledged_writes: acked.length, kinds: tally })}`,
    );
  });
});
