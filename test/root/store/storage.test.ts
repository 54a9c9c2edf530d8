/**
 * A state directory that cannot be written: a real ferryd whose state
 * directory is a small tmpfs filled to the last byte, and a store whose
 * files become immutable (as a filesystem remounted read-only after errors
 * would be). Writes answer 503 storage-unavailable and change nothing;
 * reads and the datapath keep working; writes succeed again, without a
 * restart, once the filesystem does.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiError, Client } from '../../../src/cli/client.js';
import { StorageError } from '../../../src/model/errors.js';
import { openStore } from '../../../src/store/store.js';
import { XDP_TX, bpfUnavailable } from '../../lib/harness.js';
import {
  destroyFerrydEnv,
  mapVips,
  makeFerrydEnv,
  openDaemonDatapath,
  startFerryd,
  stopFerryd,
  type Ferryd,
  type FerrydEnv,
} from '../../lib/ferryd.js';
import { frame, parseEth, parseIp } from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping storage tests: ${skip}`);

/** Fills a filesystem: one large file, then small appends until ENOSPC. */
function fill(path: string): void {
  try {
    writeFileSync(path, Buffer.alloc(64 << 20));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  for (let size = 4096; size >= 1; size = Math.floor(size / 2)) {
    try {
      for (;;) writeFileSync(path, Buffer.alloc(size), { flag: 'a' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    }
  }
}

const problemOf = (err: unknown) => {
  assert.ok(err instanceof ApiError, String(err));
  return err.problem;
};

describe('full state directory (ferryd on a small tmpfs)', { skip }, () => {
  let e: FerrydEnv;
  let d: Ferryd | undefined;
  let state: string;
  let api: Client;

  before(async () => {
    e = makeFerrydEnv('disk');
    state = join(e.dir, 'state');
    mkdirSync(state);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'ferrytest-disk', state], { encoding: 'utf8' });
    assert.equal(m.status, 0, m.stderr);
    d = await startFerryd(e);
    api = new Client({ socket: e.socket });
  });
  after(async () => {
    if (d) await stopFerryd(d);
    spawnSync('umount', ['-l', state]);
    destroyFerrydEnv(e);
  });

  it('answers writes 503 storage-unavailable, keeps reads and the datapath, and recovers when space returns', async () => {
    await api.request('POST', '/v1/vips', { body: { name: 'web', address: '198.18.0.10', port: 80, protocol: 'tcp' } });
    await api.request('POST', '/v1/vips/web/backends', { body: { address: '198.18.1.1' } });
    const rev0 = Number((await api.request<{ revision: number }>('GET', '/v1/status')).body.revision);

    fill(join(state, 'filler'));
    // SQLite may still find room in pages it already holds; a few more writes use it up.
    let refused: ApiError | undefined;
    let i = 2;
    for (; i < 300 && refused === undefined; i++) {
      try {
        await api.request('POST', '/v1/vips/web/backends', { body: { address: `198.18.1.${i}` } });
      } catch (err) {
        refused = err as ApiError;
      }
    }
    const p = problemOf(refused);
    assert.equal(p.status, 503);
    assert.match(p.type ?? '', /storage-unavailable$/);
    assert.match(p.detail ?? '', /full.*nothing was changed/);
    const refusedAddress = `198.18.1.${i - 1}`;

    // Nothing of the refused write anywhere; reads answer; the maps hold the committed state.
    const status = (await api.request<{ revision: number }>('GET', '/v1/status')).body;
    const backends = (await api.request<{ items: Array<{ address: string }> }>('GET', '/v1/vips/web/backends')).body.items;
    assert.equal(backends.length, status.revision - rev0 + 1);
    assert.ok(!backends.some((b) => b.address === refusedAddress));
    assert.deepEqual(mapVips(e), ['198.18.0.10:80']);
    const dp = openDaemonDatapath(e);
    try {
      const out = dp.nat.progTestRun(dp.progFd, {
        data: frame({ src: '198.51.100.1', dst: '198.18.0.10', proto: 'tcp', sport: 40000, dport: 80 }),
        dataOutSize: 512,
      });
      assert.equal(out.retval, XDP_TX, 'the datapath still balances');
      const outer = parseIp(parseEth(out.data).l3);
      assert.ok(
        backends.some((b) => b.address === [...outer.dst].join('.')),
        'to a committed backend',
      );
    } finally {
      dp.close();
    }

    // Space returns: the very next write succeeds, no restart.
    rmSync(join(state, 'filler'));
    const created = await api.request('POST', '/v1/vips/web/backends', { body: { address: refusedAddress } });
    assert.equal(created.status, 201);
    const after = (await api.request<{ items: Array<{ address: string }> }>('GET', '/v1/vips/web/backends')).body.items;
    assert.ok(after.some((b) => b.address === refusedAddress));
    assert.equal(d?.proc.exitCode, null, 'ferryd kept running');
  });
});

describe('store files that turn read-only under a running store', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-ro-'));
  const chattr = (flag: string, ...files: string[]) => spawnSync('chattr', [flag, ...files], { encoding: 'utf8' });
  const probe = (() => {
    if (process.getuid?.() !== 0) return 'needs root (chattr +i)';
    const f = join(dir, 'probe');
    writeFileSync(f, 'x');
    const r = chattr('+i', f);
    chattr('-i', f);
    rmSync(f);
    return r.status === 0 ? undefined : `the filesystem of ${dir} has no immutable flag: ${r.stderr.trim()}`;
  })();
  if (probe) console.log(`# skipping read-only store test: ${probe}`);
  after(() => {
    chattr('-i', join(dir, 'ferry.db'), join(dir, 'ferry.db-wal'));
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses writes with StorageError, keeps reads, and writes again once the files are writable', { skip: probe }, () => {
    const store = openStore(join(dir, 'ferry.db'), { maxVips: 16, maxBackends: 16 });
    try {
      const vip = (name: string, port: number) => ({ name, address: '198.18.0.10', port, protocol: 'tcp' as const });
      store.write('t', 'create', (tx) => tx.createVip(vip('a', 80)));
      const files = [join(dir, 'ferry.db'), join(dir, 'ferry.db-wal')];
      assert.equal(chattr('+i', ...files).status, 0);
      const err = (() => {
        try {
          store.write('t', 'create', (tx) => tx.createVip(vip('b', 81)));
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      assert.ok(err instanceof StorageError, String(err));
      assert.equal(err.status, 503);
      assert.match(err.message, /SQLITE_(IOERR|READONLY)/);
      assert.deepEqual(
        store.read((tx) => tx.snapshot().vips.map((v) => v.name)),
        ['a'],
      );
      assert.equal(chattr('-i', ...files).status, 0);
      store.write('t', 'create', (tx) => tx.createVip(vip('b', 81)));
      assert.deepEqual(
        store.read((tx) => tx.snapshot().vips.map((v) => v.name)),
        ['a', 'b'],
      );
    } finally {
      store.close();
    }
  });
});

describe('a state directory that is read-only from the start', () => {
  const root = process.getuid?.() === 0 ? undefined : 'needs root (mount)';
  if (root) console.log(`# skipping read-only start test: ${root}`);

  it('refuses to open, naming the read-only filesystem', { skip: root }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-rostart-'));
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'ferrytest-ro', dir], { encoding: 'utf8' });
    assert.equal(m.status, 0, m.stderr);
    try {
      assert.throws(
        () => openStore(join(dir, 'ferry.db'), { maxVips: 16, maxBackends: 16 }),
        new RegExp(`cannot open: .*\\(the state directory ${dir} is on a read-only filesystem\\)`),
      );
    } finally {
      spawnSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
