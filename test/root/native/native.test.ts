/**
 * The native addon against the real kernel: objects, pinning, every map
 * operation, map-in-map swaps, BPF_PROG_TEST_RUN (live frames included),
 * XDP links and tc filters on a veth pair in a private network namespace,
 * BTF layouts, and the error paths. Builds its own small BPF object
 * (native/test/*.bpf.c) so it does not depend on the datapath.
 *
 * Needs root and clang. Everything it creates (a private bpffs mount, a
 * network namespace "ferrytest-native-<pid>", temp files) is removed in
 * after() hooks even when a test fails.
 */
import { after, before, describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { setImmediate as tick } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Session } from 'node:inspector/promises';
import * as N from '../../../src/datapath/native.js';
import { bpfObjectPath } from '../../../src/paths.js';
import { liveFramesUnavailable } from '../../lib/harness.js';
import { cgroup2Unavailable, createCgroup, inCgroup, removeCgroup, removeStaleCgroups } from '../../../src/lab/cgroup.js';
import {
  BPF_ANY,
  BPF_EXIST,
  BPF_F_INNER_MAP,
  BPF_F_TEST_XDP_LIVE_FRAMES,
  BPF_MAP_TYPE_ARRAY,
  BPF_MAP_TYPE_HASH,
  BPF_NOEXIST,
  XDP_DROP,
  XDP_TX,
  isNativeError,
  loadNative,
  type BpfObject,
  type NativeAddon,
  type NativeError,
} from '../../../src/datapath/native.js';

// ---- environment -------------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));

function findRoot(): string {
  let dir = here;
  while (!(existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native')))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package root above ${here}`);
    dir = up;
  }
  return dir;
}
const root = findRoot();
const nativeJs = new URL('../../../src/datapath/native.js', import.meta.url).href;

function addonProblem(): string | undefined {
  try {
    loadNative();
    return undefined;
  } catch (e) {
    return `native addon not loadable: ${(e as Error).message}`;
  }
}

function kernelProblem(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (BPF syscalls, bpffs mount, network namespaces)';
  if (spawnSync('clang', ['--version']).status !== 0) return 'clang is not installed (needed for the test BPF object)';
  return addonProblem();
}

const noAddon = addonProblem();
const noKernel = kernelProblem();
if (noAddon) console.log(`# native addon tests skipped: ${noAddon}`);
else if (noKernel) console.log(`# kernel tests of the native addon skipped: ${noKernel}`);
const noLive = noKernel ?? liveFramesUnavailable();
if (!noKernel && noLive) console.log(`# live-frames tests of the native addon skipped: ${noLive}`);

// ---- helpers -----------------------------------------------------------------

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
const u64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

/** Asserts fn throws an addon error with this code (and errno), optionally matching the message. */
function throwsCode(fn: () => unknown, code: string, message?: RegExp): NativeError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected an error with code ${code}, nothing was thrown`);
  assert.ok(isNativeError(caught), `expected an addon error, got ${String(caught)}`);
  assert.equal(caught.code, code, `code of: ${caught.message}`);
  assert.ok(Number.isInteger(caught.errno) && caught.errno > 0, `errno of: ${caught.message}`);
  if (message) assert.match(caught.message, message);
  return caught;
}

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Sums a per-CPU u32/u64 counter buffer (8 bytes per CPU). */
function perCpuSum(buf: Buffer): bigint {
  let s = 0n;
  for (let o = 0; o + 8 <= buf.length; o += 8) s += buf.readBigUInt64LE(o);
  return s;
}

/** BPF fds this process holds. */
function bpfFdCount(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('anon_inode:bpf')) n++;
    } catch {
      // raced with a close
    }
  }
  return n;
}

function xdpMd(fields: { dataEnd: number; ingressIfindex: number }): Buffer {
  const b = Buffer.alloc(24); // struct xdp_md: six u32
  b.writeUInt32LE(0, 0); // data
  b.writeUInt32LE(fields.dataEnd, 4); // data_end
  b.writeUInt32LE(0, 8); // data_meta
  b.writeUInt32LE(fields.ingressIfindex, 12); // ingress_ifindex
  b.writeUInt32LE(0, 16); // rx_queue_index
  b.writeUInt32LE(0, 20); // egress_ifindex
  return b;
}

/** A 64-byte Ethernet frame of the local experimental EtherType 0x88b5. */
function frame(): Buffer {
  const b = Buffer.alloc(64, 0x11);
  b.fill(0xff, 0, 6);
  b.writeUInt16BE(0x88b5, 12);
  return b;
}

// ---- argument validation (addon only, no kernel objects needed) --------------

describe('native addon: loading and argument validation', { skip: noAddon }, () => {
  test('loads once, reports libbpf and CPUs', () => {
    const nat = loadNative();
    assert.equal(loadNative(), nat, 'cached');
    assert.match(nat.libbpfVersion(), /^v?1\.\d+/);
    assert.ok(Number.isInteger(nat.numPossibleCpus()) && nat.numPossibleCpus() >= 1);
  });

  test('TypeScript constants agree with the C headers the addon was built with', () => {
    const nat = loadNative();
    const exported = N as unknown as Record<string, unknown>;
    const names = Object.keys(nat.constants);
    assert.ok(names.length >= 20);
    for (const name of names) assert.equal(exported[name], nat.constants[name], name);
  });

  test('bad argument types and ranges throw EINVAL TypeError/RangeError', () => {
    const nat = loadNative() as unknown as Record<string, (...a: unknown[]) => unknown>;
    const call =
      (name: string, ...args: unknown[]) =>
      () =>
        nat[name]!(...args);
    const typeErr = (fn: () => unknown) => assert.ok(throwsCode(fn, 'EINVAL') instanceof TypeError);
    const rangeErr = (fn: () => unknown) => assert.ok(throwsCode(fn, 'EINVAL') instanceof RangeError);
    typeErr(call('mapLookup'));
    typeErr(call('mapLookup', '3', Buffer.alloc(4)));
    typeErr(call('mapLookup', 1.5, Buffer.alloc(4)));
    typeErr(call('mapLookup', Number.NaN, Buffer.alloc(4)));
    typeErr(call('mapLookup', 3n, Buffer.alloc(4)));
    rangeErr(call('mapLookup', -1, Buffer.alloc(4)));
    rangeErr(call('mapLookup', 2 ** 31, Buffer.alloc(4)));
    typeErr(call('mapUpdate', 3, 'key', Buffer.alloc(4)));
    typeErr(call('mapUpdate', 3, [1, 2, 3, 4], Buffer.alloc(4)));
    typeErr(call('openObject', 42));
    typeErr(call('openObject', '/x.o', 'opts'));
    rangeErr(call('openObject', '/x.o', { maxEntries: { m: -1 } }));
    typeErr(call('openObject', '/x.o', { pinRoot: 5 }));
    rangeErr(call('openObject', ''));
    rangeErr(call('openObject', 'a\0b'));
    typeErr(call('progTestRun', 3, {}));
    typeErr(call('progTestRun', 3));
    rangeErr(call('progTestRun', 3, { data: Buffer.alloc(64), dataOutSize: 1e12 }));
    rangeErr(call('progTestRun', 3, { data: Buffer.alloc(64), repeat: -1 }));
    rangeErr(call('xdpAttach', 3, 1, 'turbo'));
    rangeErr(call('xdpAttach', 3, 0, 'native'));
    rangeErr(call('xdpQuery', 0));
    rangeErr(call('tcAttach', 3, 1, 'sideways'));
    rangeErr(call('tcDetach', 1, 'ingress', { priority: 70000 }));
    typeErr(call('mapCreate', { type: 2, name: 'x', keySize: 4, valueSize: 4 }));
    rangeErr(call('mapCreate', { type: 2, name: 'a_name_too_long_for_bpf', keySize: 4, valueSize: 4, maxEntries: 1 }));
    typeErr(call('mapCreate', null));
    rangeErr(call('mapUpdateBatch', 3, Buffer.alloc(4), Buffer.alloc(4), -1));
    typeErr(call('btfStructLayout', '/x.o'));
    typeErr(call('closeFd', 'x'));
    rangeErr(call('ifNameToIndex', 'x'.repeat(40)));
    typeErr(call('cgroupQuery', 5, 10));
    typeErr(call('cgroupQuery', '/sys/fs/cgroup', '10'));
    rangeErr(call('cgroupQuery', '/sys/fs/cgroup', -1));
    rangeErr(call('cgroupQuery', '/sys/fs/cgroup', 100_000));
    rangeErr(call('cgroupQuery', '', 10));
  });

  test('bad fds and missing things throw errno errors', () => {
    const nat = loadNative();
    throwsCode(() => nat.mapLookup(999_999, Buffer.alloc(4)), 'EBADF');
    throwsCode(() => nat.mapInfo(999_999), 'EBADF');
    throwsCode(() => nat.closeFd(999_999), 'EBADF');
    // stdout is open but not a BPF object: closeFd refuses to touch it.
    throwsCode(() => nat.closeFd(1), 'EBADF', /not a BPF object/);
    throwsCode(() => nat.mapInfo(1), 'EINVAL', /expected a BPF map/);
    throwsCode(() => nat.objGet('/nonexistent/ferry/pin'), 'ENOENT', /bpf_obj_get/);
    throwsCode(() => nat.openObject('/nonexistent/ferry.bpf.o'), 'ENOENT', /bpf_object__open_file.*\n.*libbpf/s);
    throwsCode(() => nat.btfStructLayout('/nonexistent/ferry.bpf.o', 'x'), 'ENOENT');
    throwsCode(() => nat.ifNameToIndex('ferrynope0'), 'ENODEV');
    // Not an ELF file.
    const err = throwsCode(() => nat.openObject(join(root, 'package.json')), 'ELIBBPF');
    assert.match(err.message, /libbpf/);
  });
});

// ---- the kernel ------------------------------------------------------------------

describe('native addon against the kernel', { skip: noKernel ?? noAddon }, () => {
  let nat: NativeAddon;
  let tmp = '';
  let bpffs = '';
  let progObj = '';
  let badObj = '';
  let pinSeq = 0;
  const opened: BpfObject[] = [];
  const mountedBpffs: string[] = [];

  /** A fresh pin root inside the private bpffs. */
  const pinRoot = (): string => {
    const d = join(bpffs, `pins${++pinSeq}`);
    mkdirSync(d);
    return d;
  };
  const open = (opts?: N.OpenObjectOptions): BpfObject => {
    const o = nat.openObject(progObj, opts);
    opened.push(o);
    return o;
  };
  const loaded = (opts?: N.OpenObjectOptions): BpfObject => {
    const o = open(opts);
    o.load();
    return o;
  };

  before(() => {
    nat = loadNative();
    tmp = mkdtempSync(join(tmpdir(), 'ferry-native-'));
    for (const name of ['prog', 'bad', 'cgroup']) {
      const out = join(tmp, `${name}.bpf.o`);
      sh('clang', [
        '-O2',
        '-g',
        '-target',
        'bpf',
        '-Wall',
        `-I/usr/include/${sh('uname', ['-m']).trim()}-linux-gnu`,
        '-c',
        join(root, 'native', 'test', `${name}.bpf.c`),
        '-o',
        out,
      ]);
    }
    progObj = join(tmp, 'prog.bpf.o');
    badObj = join(tmp, 'bad.bpf.o');
    bpffs = join(tmp, 'bpffs');
    mkdirSync(bpffs);
    sh('mount', ['-t', 'bpf', 'bpf', bpffs]);
    mountedBpffs.push(bpffs);
  });

  after(() => {
    for (const o of opened) o.close();
    for (const m of mountedBpffs) spawnSync('umount', [m]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('open, inspect and load an object with a pin root', () => {
    const pins = pinRoot();
    const obj = open({ pinRoot: pins });
    assert.equal(obj.loaded, false);
    assert.equal(obj.path, progObj);
    const before = obj.maps();
    assert.ok(before.every((m) => m.fd === -1 && m.id === 0));
    assert.equal(before.find((m) => m.name === 'test_hash')?.pinPath, join(pins, 'test_hash'));
    assert.equal(before.find((m) => m.name === 'test_percpu')?.pinPath, null);
    throwsCode(() => obj.mapFd('test_hash'), 'EINVAL', /load the object first/);
    throwsCode(() => obj.programFd('xdp_test'), 'EINVAL', /not loaded/);

    obj.load();
    assert.equal(obj.loaded, true);
    const maps = obj.maps();
    const hash = maps.find((m) => m.name === 'test_hash');
    assert.ok(hash);
    assert.deepEqual(
      { type: hash.type, keySize: hash.keySize, valueSize: hash.valueSize, maxEntries: hash.maxEntries },
      { type: BPF_MAP_TYPE_HASH, keySize: 4, valueSize: 16, maxEntries: 1024 },
    );
    assert.ok(hash.fd >= 0 && hash.id > 0);
    assert.equal(obj.mapFd('test_hash'), hash.fd);
    assert.deepEqual(nat.mapInfo(hash.fd), {
      id: hash.id,
      name: 'test_hash',
      type: BPF_MAP_TYPE_HASH,
      keySize: 4,
      valueSize: 16,
      maxEntries: 1024,
      flags: 0,
    });
    assert.ok(existsSync(join(pins, 'test_hash')) && existsSync(join(pins, 'test_array')));
    assert.ok(!existsSync(join(pins, 'test_percpu')));

    const progs = obj.programs();
    assert.deepEqual(
      progs.map((p) => [p.name, p.section, p.type]),
      [
        ['xdp_test', 'xdp', N.BPF_PROG_TYPE_XDP],
        ['xdp_pass', 'xdp', N.BPF_PROG_TYPE_XDP],
        ['tc_test', 'tc', N.BPF_PROG_TYPE_SCHED_CLS],
      ],
    );
    const fd = obj.programFd('xdp_test');
    assert.equal(progs[0]?.fd, fd);
    const pi = nat.progInfo(fd);
    assert.equal(pi.name, 'xdp_test');
    assert.equal(pi.type, N.BPF_PROG_TYPE_XDP);
    assert.ok(pi.id > 0);
    // The same program by id; run-time statistics count its runs only while enableStats' fd is open.
    const byId = nat.progFdById(pi.id);
    const stats = nat.enableStats();
    try {
      const before = nat.progInfo(byId);
      assert.equal(before.id, pi.id);
      nat.progTestRun(byId, { data: Buffer.alloc(64), repeat: 3 });
      const after = nat.progInfo(byId);
      assert.equal(after.runCount - before.runCount, 3, 'three runs counted');
      assert.ok(after.runTimeNs > before.runTimeNs, 'their time counted');
    } finally {
      nat.closeFd(stats);
      nat.closeFd(byId);
    }
    throwsCode(() => nat.progFdById(0x7ffffff0), 'ENOENT', /bpf_prog_get_fd_by_id/);

    throwsCode(() => obj.mapFd('no_such_map'), 'ENOENT', /no map 'no_such_map'/);
    throwsCode(() => obj.programFd('no_such_prog'), 'ENOENT');
    throwsCode(() => obj.load(), 'EALREADY');
    throwsCode(() => nat.mapInfo(fd), 'EINVAL', /is a BPF program, expected a BPF map/);
    throwsCode(() => nat.progInfo(hash.fd), 'EINVAL', /is a BPF map, expected a BPF program/);
    throwsCode(() => nat.linkInfo(hash.fd), 'EINVAL');
    // Map operations on something else: the kernel refuses, the error says why.
    throwsCode(() => nat.mapLookup(fd, u32(0)), 'EINVAL', /is a BPF program, expected a BPF map/);
    throwsCode(() => nat.mapUpdate(1, u32(0), u32(0)), 'EINVAL', /not a BPF object, expected a BPF map/);
    throwsCode(() => nat.mapDump(fd), 'EINVAL', /expected a BPF map/);
  });

  test('pinned maps are reused by a second object', () => {
    const pins = pinRoot();
    const a = loaded({ pinRoot: pins });
    nat.mapUpdate(a.mapFd('test_hash'), u32(7), Buffer.concat([u64(11), u64(22)]));
    nat.mapUpdate(a.mapFd('test_array'), u32(3), u32(33));

    const b = loaded({ pinRoot: pins });
    assert.equal(nat.mapInfo(b.mapFd('test_hash')).id, nat.mapInfo(a.mapFd('test_hash')).id);
    assert.notEqual(nat.mapInfo(b.mapFd('test_percpu')).id, nat.mapInfo(a.mapFd('test_percpu')).id);
    assert.deepEqual(nat.mapLookup(b.mapFd('test_hash'), u32(7)), Buffer.concat([u64(11), u64(22)]));
    assert.deepEqual(nat.mapLookup(b.mapFd('test_array'), u32(3)), u32(33));

    // Pins outlive both objects and can be opened directly.
    const id = nat.mapInfo(a.mapFd('test_hash')).id;
    a.close();
    b.close();
    const fd = nat.objGet(join(pins, 'test_hash'));
    try {
      assert.equal(nat.mapInfo(fd).id, id);
      assert.deepEqual(nat.mapLookup(fd, u32(7)), Buffer.concat([u64(11), u64(22)]));
    } finally {
      nat.closeFd(fd);
    }

    // A pinned map whose definition changed is refused, with libbpf's reason.
    const c = open({ pinRoot: pins, maxEntries: { test_hash: 2048 } });
    const err = throwsCode(() => c.load(), 'EINVAL', /bpf_object__load/);
    assert.match(err.message, /libbpf: .*(pinned map|reuse)/);
    assert.equal(typeof err.libbpfLog, 'string');
  });

  test('maxEntries overrides sizes before load; unknown names are refused', () => {
    const o = loaded({ maxEntries: { test_lru: 256, test_hash: 16 } });
    assert.equal(nat.mapInfo(o.mapFd('test_lru')).maxEntries, 256);
    assert.equal(nat.mapInfo(o.mapFd('test_hash')).maxEntries, 16);
    throwsCode(() => nat.openObject(progObj, { maxEntries: { nope: 4 } }), 'ENOENT', /nope/);
  });

  test('a verifier rejection carries the verifier log', () => {
    const bad = nat.openObject(badObj);
    try {
      const err = throwsCode(() => bad.load(), 'EACCES');
      assert.match(err.message, /invalid access to packet/);
      assert.match(err.message, /BEGIN PROG LOAD LOG/);
      assert.match(err.libbpfLog ?? '', /xdp_bad/);
    } finally {
      bad.close();
    }
  });

  test('a large program loads while its thread is signalled every 50 µs (a sampling profiler)', async () => {
    // The verifier gives up (EAGAIN) when a signal is pending for the thread; the addon holds them during a load.
    const session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 50 });
    await session.post('Profiler.start');
    const big = nat.openObject(bpfObjectPath('xdp_lb'), { pinRoot: pinRoot() });
    try {
      big.load();
      assert.ok(big.programFd('xdp_lb') >= 0);
    } finally {
      big.close();
      await session.post('Profiler.stop');
      session.disconnect();
    }
  });

  test('close is idempotent and later calls throw EBADF', () => {
    const o = loaded();
    const fd = o.mapFd('test_hash');
    o.close();
    o.close();
    assert.equal(o.closed, true);
    throwsCode(() => o.mapFd('test_hash'), 'EBADF', /closed/);
    throwsCode(() => o.maps(), 'EBADF');
    throwsCode(() => o.load(), 'EBADF');
    // The object's fds are gone with it (unless reused by a later open).
    if (!existsSync(`/proc/self/fd/${fd}`)) throwsCode(() => nat.mapInfo(fd), 'EBADF');
    const Ctor = (Object.getPrototypeOf(o) as { constructor: new (...a: unknown[]) => unknown }).constructor;
    assert.throws(
      () => new Ctor('x'),
      (e: unknown) => isNativeError(e) && e instanceof TypeError && /openObject/.test(e.message),
    );
  });

  test('the garbage collector closes a forgotten object', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    gc();
    await tick();
    const base = bpfFdCount();
    (() => {
      const o = nat.openObject(progObj);
      o.load();
      assert.ok(bpfFdCount() > base);
    })();
    for (let i = 0; i < 20 && bpfFdCount() > base; i++) {
      gc();
      await tick();
    }
    assert.equal(bpfFdCount(), base);
  });

  test('hash map: lookup, update flags, delete, next key, sizes', () => {
    const o = loaded();
    const fd = o.mapFd('test_hash');
    const val = (a: number, b: number) => Buffer.concat([u64(a), u64(b)]);
    assert.equal(nat.mapLookup(fd, u32(1)), null);
    nat.mapUpdate(fd, u32(1), val(1, 2));
    assert.deepEqual(nat.mapLookup(fd, u32(1)), val(1, 2));
    throwsCode(() => nat.mapUpdate(fd, u32(1), val(3, 4), BPF_NOEXIST), 'EEXIST', /test_hash/);
    throwsCode(() => nat.mapUpdate(fd, u32(2), val(3, 4), BPF_EXIST), 'ENOENT');
    nat.mapUpdate(fd, u32(1), val(5, 6), BPF_EXIST);
    nat.mapUpdate(fd, u32(2), val(7, 8), BPF_ANY);
    nat.mapUpdate(fd, u32(3), val(9, 10), BPF_NOEXIST);
    assert.deepEqual(nat.mapLookup(fd, u32(1)), val(5, 6));

    const keys: number[] = [];
    for (let k = nat.mapNextKey(fd, null); k; k = nat.mapNextKey(fd, k)) keys.push(k.readUInt32LE(0));
    assert.deepEqual(keys.sort(), [1, 2, 3]);

    assert.equal(nat.mapDelete(fd, u32(2)), true);
    assert.equal(nat.mapDelete(fd, u32(2)), false);
    assert.equal(nat.mapLookup(fd, u32(2)), null);

    throwsCode(() => nat.mapLookup(fd, Buffer.alloc(3)), 'EINVAL', /key must be 4 bytes .*got 3/);
    throwsCode(() => nat.mapUpdate(fd, u32(1), Buffer.alloc(15)), 'EINVAL', /value must be 16 bytes/);
    throwsCode(() => nat.mapDelete(fd, Buffer.alloc(8)), 'EINVAL');
    throwsCode(() => nat.mapNextKey(fd, Buffer.alloc(2)), 'EINVAL');
    throwsCode(() => nat.mapUpdate(fd, u32(1), val(1, 1), 99), 'EINVAL');
    // A Uint8Array is as good as a Buffer; views with an offset are honoured.
    assert.deepEqual(nat.mapLookup(fd, new Uint8Array(u32(1)) as Buffer), val(5, 6));
    assert.deepEqual(nat.mapLookup(fd, Buffer.concat([u32(9), u32(1), u32(9)]).subarray(4, 8)), val(5, 6));
    assert.deepEqual(nat.mapLookup(fd, Buffer.from([1, 0, 0, 0])), val(5, 6)); // pooled
    // Other views would make lengths ambiguous.
    throwsCode(() => nat.mapLookup(fd, new Uint16Array(2) as unknown as Buffer), 'EINVAL', /Buffer or Uint8Array/);
    throwsCode(() => nat.mapLookup(fd, new DataView(new ArrayBuffer(4)) as unknown as Buffer), 'EINVAL');
  });

  test('array map: fixed entries, out-of-range index, delete refused', () => {
    const o = loaded();
    const fd = o.mapFd('test_array');
    assert.deepEqual(nat.mapLookup(fd, u32(15)), u32(0));
    assert.equal(nat.mapLookup(fd, u32(16)), null);
    throwsCode(() => nat.mapUpdate(fd, u32(16), u32(1)), 'E2BIG', /test_array/);
    throwsCode(() => nat.mapDelete(fd, u32(1)), 'EINVAL');
    nat.mapUpdate(fd, u32(4), u32(44));
    const d = nat.mapDump(fd);
    assert.equal(d.keys.length, 16);
    assert.deepEqual(d.values[4], u32(44));
    assert.deepEqual(nat.mapNextKey(fd, u32(15)), null);
  });

  test('per-CPU maps take and return one 8-byte-aligned slot per possible CPU', () => {
    const o = loaded();
    const cpus = nat.numPossibleCpus();
    const fd = o.mapFd('test_percpu');
    const v = nat.mapLookup(fd, u32(1));
    assert.ok(v);
    assert.equal(v.length, cpus * 8);
    const w = Buffer.alloc(cpus * 8);
    for (let c = 0; c < cpus; c++) w.writeUInt32LE(100 + c, c * 8);
    nat.mapUpdate(fd, u32(1), w);
    assert.deepEqual(nat.mapLookup(fd, u32(1)), w);
    throwsCode(() => nat.mapUpdate(fd, u32(1), Buffer.alloc(4)), 'EINVAL', new RegExp(`value must be ${cpus * 8} bytes`));
    throwsCode(() => nat.mapUpdate(fd, u32(1), Buffer.alloc(cpus * 4)), 'EINVAL');

    const hfd = o.mapFd('test_percpu_hash');
    const hv = Buffer.alloc(cpus * 8);
    for (let c = 0; c < cpus; c++) hv.writeBigUInt64LE(BigInt(c + 1) << 32n, c * 8);
    nat.mapUpdate(hfd, u64(5), hv);
    assert.deepEqual(nat.mapLookup(hfd, u64(5)), hv);
    const d = nat.mapDump(hfd);
    assert.equal(d.keys.length, 1);
    assert.equal(d.values[0]?.length, cpus * 8);
  });

  test('batch update, dump and delete on every map kind, with and without batch support', () => {
    const o = loaded();
    const cpus = nat.numPossibleCpus();
    const check = (name: string, keys: Buffer[], values: Buffer[], ordered = false) => {
      const fd = o.mapFd(name);
      nat.mapUpdateBatch(fd, Buffer.concat(keys), Buffer.concat(values), keys.length);
      const want = new Map(keys.map((k, i) => [k.toString('hex'), values[i]!.toString('hex')]));
      for (const batch of [true, false]) {
        const d = nat.mapDump(fd, { batch });
        assert.equal(d.keys.length, d.values.length);
        const got = new Map(d.keys.map((k, i) => [k.toString('hex'), d.values[i]!.toString('hex')]));
        for (const [k, v] of want) assert.equal(got.get(k), v, `${name} (batch ${batch}) key ${k}`);
        if (!ordered) assert.equal(got.size, want.size, `${name} (batch ${batch}) size`);
        assert.ok(d.keys.every((k) => Buffer.isBuffer(k)));
      }
      return fd;
    };

    // hash: 100 entries, then delete half plus keys that are not there.
    const hk = Array.from({ length: 100 }, (_, i) => u32(i * 7 + 1));
    const hv = hk.map((_, i) => Buffer.concat([u64(i), u64(i * 2)]));
    const hfd = check('test_hash', hk, hv);
    const del = [...hk.slice(0, 50), u32(999_999), u32(888_888)];
    assert.equal(nat.mapDeleteBatch(hfd, Buffer.concat(del), del.length), 50);
    assert.equal(nat.mapDump(hfd).keys.length, 50);
    assert.equal(nat.mapDeleteBatch(hfd, Buffer.alloc(0), 0), 0);
    throwsCode(() => nat.mapDeleteBatch(hfd, Buffer.alloc(7), 2), 'EINVAL', /keys must be 8 bytes/);
    throwsCode(() => nat.mapUpdateBatch(hfd, Buffer.alloc(8), Buffer.alloc(16), 2), 'EINVAL', /values must be 32 bytes/);
    throwsCode(() => nat.mapUpdateBatch(hfd, u32(1), Buffer.alloc(16), 1, BPF_EXIST), 'ENOENT', /element 0/);

    // array: all 16 slots always exist; deleting is not a thing.
    const ak = Array.from({ length: 16 }, (_, i) => u32(i));
    const afd = check(
      'test_array',
      ak,
      ak.map((_, i) => u32(i * 3)),
      true,
    );
    assert.equal(nat.mapDump(afd).keys.length, 16);
    throwsCode(() => nat.mapDeleteBatch(afd, u32(1), 1), 'EINVAL', /element 0/);
    throwsCode(() => nat.mapDelete(afd, u32(1)), 'EINVAL');

    // per-CPU hash with full per-CPU values.
    const pk = Array.from({ length: 10 }, (_, i) => u64(i + 100));
    const pv = pk.map((_, i) => {
      const b = Buffer.alloc(cpus * 8);
      for (let c = 0; c < cpus; c++) b.writeBigUInt64LE(BigInt(i * 1000 + c), c * 8);
      return b;
    });
    check('test_percpu_hash', pk, pv);

    // LRU hash with a 56-byte struct key, LPM trie.
    const lk = Array.from({ length: 20 }, (_, i) => Buffer.alloc(56, i + 1));
    check(
      'test_lru',
      lk,
      lk.map((_, i) => u32(i)),
    );
    const lpm = (len: number, a: number, b: number) => Buffer.concat([u32(len), Buffer.from([10, a, b, 0])]);
    const tk = [lpm(24, 1, 2), lpm(16, 3, 0), lpm(32, 4, 5)];
    const tfd = check(
      'test_lpm',
      tk,
      tk.map((_, i) => u32(i + 1)),
    );
    assert.equal(nat.mapDeleteBatch(tfd, Buffer.concat(tk), 3), 3);
    assert.equal(nat.mapDump(tfd).keys.length, 0);

    // Values large enough that a dump takes several batch calls.
    const big = nat.mapCreate({ type: BPF_MAP_TYPE_HASH, name: 'ferry_t_big', keySize: 4, valueSize: 4096, maxEntries: 1000 });
    try {
      const bk = Array.from({ length: 1000 }, (_, i) => u32(i));
      const bv = bk.map((_, i) => Buffer.alloc(4096, i & 0xff));
      nat.mapUpdateBatch(big, Buffer.concat(bk), Buffer.concat(bv), 1000);
      const d = nat.mapDump(big);
      assert.equal(d.keys.length, 1000);
      for (let i = 0; i < d.keys.length; i++) assert.equal(d.values[i]?.[0], d.keys[i]!.readUInt32LE(0) & 0xff);
      assert.equal(nat.mapDeleteBatch(big, Buffer.concat(bk), 1000), 1000);
      assert.equal(nat.mapDump(big).keys.length, 0);
    } finally {
      nat.closeFd(big);
    }
  });

  test('map-in-map: inner tables made with mapCreate swap atomically', () => {
    const o = loaded();
    const outer = o.mapFd('test_outer');
    const prog = o.programFd('xdp_test');
    const slot1 = () => nat.progTestRun(prog, { data: frame() }).data[1];
    const mkInner = (name: string, entries: number, v: number): number => {
      const fd = nat.mapCreate({ type: BPF_MAP_TYPE_ARRAY, name, keySize: 4, valueSize: 4, maxEntries: entries, flags: BPF_F_INNER_MAP });
      nat.mapUpdate(fd, u32(0), u32(v));
      return fd;
    };
    assert.equal(slot1(), 0xff, 'no table yet');
    assert.equal(nat.mapLookupFd(outer, u32(0)), null);
    const a = mkInner('ferry_t_a', 1, 7);
    const b = mkInner('ferry_t_b', 8, 9); // a different size: allowed by BPF_F_INNER_MAP
    try {
      nat.mapUpdate(outer, u32(0), u32(a));
      assert.equal(slot1(), 7);
      const idA = nat.mapInfo(a).id;
      assert.equal(nat.mapLookup(outer, u32(0))?.readUInt32LE(0), idA, 'lookup returns the inner id');
      nat.mapUpdate(outer, u32(0), u32(b));
      assert.equal(slot1(), 9);
      const got = nat.mapLookupFd(outer, u32(0));
      assert.ok(got !== null);
      try {
        assert.equal(nat.mapInfo(got).id, nat.mapInfo(b).id);
        assert.equal(nat.mapInfo(got).maxEntries, 8);
      } finally {
        nat.closeFd(got);
      }
      const d = nat.mapDump(outer);
      assert.deepEqual(
        d.keys.map((k) => k.readUInt32LE(0)),
        [0],
      );
      // Hash of maps, and an inner map of the wrong shape.
      const oh = o.mapFd('test_outer_hash');
      nat.mapUpdate(oh, u32(42), u32(a));
      const h = nat.mapLookupFd(oh, u32(42));
      assert.ok(h !== null);
      nat.closeFd(h);
      const wrong = nat.mapCreate({ type: BPF_MAP_TYPE_HASH, name: 'ferry_t_w', keySize: 4, valueSize: 4, maxEntries: 1 });
      try {
        throwsCode(() => nat.mapUpdate(outer, u32(1), u32(wrong)), 'EINVAL');
      } finally {
        nat.closeFd(wrong);
      }
      assert.equal(nat.mapDelete(outer, u32(0)), true);
      assert.equal(slot1(), 0xff);
      throwsCode(() => nat.mapLookupFd(o.mapFd('test_hash'), u32(0)), 'EINVAL', /not a map-in-map/);
    } finally {
      nat.closeFd(a);
      nat.closeFd(b);
    }
    throwsCode(() => nat.mapCreate({ type: 9999, name: 'x', keySize: 4, valueSize: 4, maxEntries: 1 }), 'EINVAL', /bpf_map_create/);
  });

  test('progTestRun: data in and out, retval, repeat, duration, errors', () => {
    const o = loaded();
    const prog = o.programFd('xdp_test');
    const stats = o.mapFd('test_percpu');
    const runs = (verdict: number) => perCpuSum(nat.mapLookup(stats, u32(verdict)) ?? Buffer.alloc(0));

    const input = frame();
    const r = nat.progTestRun(prog, { data: input });
    assert.equal(r.retval, XDP_TX);
    assert.equal(r.data.length, 64);
    assert.equal(r.data[0], 0xfe);
    assert.deepEqual(r.data.subarray(2), input.subarray(2));
    assert.equal(input[0], 0xff, 'input untouched');
    assert.ok(Number.isInteger(r.durationNs) && r.durationNs >= 0);
    assert.equal(r.ctxOut, undefined);

    const before = runs(XDP_TX);
    const rr = nat.progTestRun(prog, { data: input, repeat: 50 });
    assert.equal(rr.retval, XDP_TX);
    assert.equal(runs(XDP_TX) - before, 50n);

    nat.mapUpdate(o.mapFd('test_array'), u32(0), u32(XDP_DROP));
    assert.equal(nat.progTestRun(prog, { data: input }).retval, XDP_DROP);

    const ctx = nat.progTestRun(prog, { data: input, ctxIn: xdpMd({ dataEnd: 64, ingressIfindex: 0 }) });
    assert.equal(ctx.ctxOut?.length, 24);
    assert.equal(ctx.ctxOut?.readUInt32LE(4), 64);

    throwsCode(() => nat.progTestRun(prog, { data: input, dataOutSize: 10 }), 'ENOSPC', /dataOutSize/);
    throwsCode(() => nat.progTestRun(prog, { data: Buffer.alloc(4) }), 'EINVAL', /bpf_prog_test_run_opts.*14 bytes/);
    throwsCode(() => nat.progTestRun(o.mapFd('test_hash'), { data: input }), 'EINVAL', /expected a BPF program/);
  });

  test('live frames on lo: the program runs repeat times and drops every frame', { skip: noLive }, () => {
    const o = loaded();
    const prog = o.programFd('xdp_test');
    const stats = o.mapFd('test_percpu');
    // XDP_DROP: the frames never leave the program.
    nat.mapUpdate(o.mapFd('test_array'), u32(0), u32(XDP_DROP));
    const before = perCpuSum(nat.mapLookup(stats, u32(XDP_DROP)) ?? Buffer.alloc(0));
    const lo = nat.ifNameToIndex('lo');
    const r = nat.progTestRun(prog, {
      data: frame(),
      ctxIn: xdpMd({ dataEnd: 64, ingressIfindex: lo }),
      flags: BPF_F_TEST_XDP_LIVE_FRAMES,
      repeat: 1000,
      batchSize: 64,
    });
    assert.equal(r.data.length, 0);
    assert.equal(r.ctxOut, undefined);
    const after = perCpuSum(nat.mapLookup(stats, u32(XDP_DROP)) ?? Buffer.alloc(0));
    assert.equal(after - before, 1000n);
    // Without ctxIn the kernel (6.18) uses lo of the current namespace too.
    nat.progTestRun(prog, { data: frame(), flags: BPF_F_TEST_XDP_LIVE_FRAMES, repeat: 10 });
    assert.equal(perCpuSum(nat.mapLookup(stats, u32(XDP_DROP)) ?? Buffer.alloc(0)) - after, 10n);
    // A context must describe the frame, and name an existing device.
    throwsCode(() => nat.progTestRun(prog, { data: frame(), flags: BPF_F_TEST_XDP_LIVE_FRAMES, ctxIn: Buffer.alloc(24) }), 'EINVAL');
    throwsCode(
      () =>
        nat.progTestRun(prog, { data: frame(), flags: BPF_F_TEST_XDP_LIVE_FRAMES, ctxIn: xdpMd({ dataEnd: 64, ingressIfindex: 999_999 }) }),
      'ENODEV',
    );
  });

  test('btfStructLayout reads offsets and sizes from BTF', () => {
    const l = nat.btfStructLayout(progObj, 'layout_probe');
    assert.equal(l.size, 56);
    assert.deepEqual(l.members, [
      { name: 'a', offset: 0, size: 4 },
      { name: 'b', offset: 4, size: 1 },
      { name: 'c', offset: 6, size: 2 },
      { name: 'd', offset: 8, size: 8 },
      { name: 'addr', offset: 16, size: 16 },
      { name: 'v4', offset: 32, size: 4 },
      { name: 'v6', offset: 32, size: 16 },
      { name: 'nested', offset: 48, size: 4 },
      { name: 'flag', offset: 52, size: 1, bitOffset: 416, bitSize: 3 },
      { name: 'rest', offset: 52, size: 4, bitOffset: 419, bitSize: 29 },
    ]);
    assert.equal(nat.btfStructLayout(progObj, 'hash_value').size, 16);
    throwsCode(() => nat.btfStructLayout(progObj, 'no_such_struct'), 'ENOENT', /no_such_struct/);
    throwsCode(() => nat.btfStructLayout(progObj, 'xdp_test'), 'ENOENT');
  });

  test('the addon works in a worker thread', async () => {
    const code = `
      import { parentPort } from 'node:worker_threads';
      const { loadNative } = await import(${JSON.stringify(nativeJs)});
      const nat = loadNative();
      const o = nat.openObject(${JSON.stringify(progObj)});
      o.load();
      const n = o.maps().length;
      o.close();
      parentPort.postMessage({ cpus: nat.numPossibleCpus(), maps: n });
    `;
    const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`));
    const msg = await new Promise<unknown>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate();
    assert.deepEqual(msg, { cpus: nat.numPossibleCpus(), maps: 9 });
  });

  // ---- attach: a veth pair in a private network namespace ------------------------

  describe('XDP links and tc filters in a network namespace', () => {
    const ns = `ferrytest-native-${process.pid}`;
    let nsMade = false;
    let child: ChildReport | undefined;

    before(() => {
      // Namespaces left by earlier runs of this test whose process is gone.
      for (const line of sh('ip', ['netns', 'list']).split('\n')) {
        const m = /^(ferrytest-native-(\d+))\b/.exec(line);
        if (m && !existsSync(`/proc/${m[2]}`)) spawnSync('ip', ['netns', 'del', m[1]!]);
      }
      sh('ip', ['netns', 'add', ns]);
      nsMade = true;
      sh('ip', ['-n', ns, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1']);
      for (const dev of ['lo', 'veth0', 'veth1']) sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);

      const o = loaded({ pinRoot: pinRoot() });
      const progs = join(bpffs, 'progs');
      mkdirSync(progs);
      for (const p of ['xdp_test', 'xdp_pass', 'tc_test']) nat.objPin(o.programFd(p), join(progs, p));
      nat.objPin(o.mapFd('test_array'), join(progs, 'test_array'));
      nat.objPin(o.mapFd('test_percpu'), join(progs, 'test_percpu'));
      nat.mapUpdate(o.mapFd('test_array'), u32(0), u32(XDP_TX));

      const script = join(tmp, 'netns-child.mjs');
      writeFileSync(script, CHILD_SCRIPT.replace('__NATIVE_JS__', JSON.stringify(nativeJs)));
      const cfg = { progs, linkPin: join(bpffs, 'xdp_link'), live: !noLive };
      const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, process.execPath, script, JSON.stringify(cfg)], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (r.status !== 0) throw new Error(`netns child failed (${r.status ?? r.signal}): ${r.stderr}\n${r.stdout}`);
      child = JSON.parse(r.stdout) as ChildReport;
    });

    after(() => {
      if (nsMade) spawnSync('ip', ['netns', 'del', ns]);
    });

    const report = (): ChildReport => {
      assert.ok(child, 'child ran');
      assert.equal(child.error, undefined, child.error);
      return child;
    };

    test('xdpAttach (native) + xdpQuery + linkInfo', () => {
      const c = report();
      assert.deepEqual(c.attached, {
        progId: c.ids.xdpTest,
        mode: 'native',
        driverProgId: c.ids.xdpTest,
        genericProgId: 0,
        offloadProgId: 0,
      });
      assert.equal(c.linkInfo.progId, c.ids.xdpTest);
      assert.equal(c.linkInfo.ifindex, c.ifindex.veth0);
      assert.equal(c.linkInfo.type, N.BPF_LINK_TYPE_XDP);
      assert.equal(c.secondAttach, 'EBUSY');
    });

    test('linkUpdate replaces the program atomically, with compare-and-swap', () => {
      const c = report();
      assert.equal(c.afterUpdate.progId, c.ids.xdpPass);
      assert.equal(c.casMismatch, 'EPERM');
      assert.equal(c.afterCas.progId, c.ids.xdpTest);
    });

    test('a pinned link outlives its fd, reopens with objGet, and detaches', () => {
      const c = report();
      assert.equal(c.afterClose.progId, c.ids.xdpTest);
      assert.equal(c.reopened.id, c.linkInfo.id);
      assert.equal(c.afterDetach.mode, 'none');
      assert.equal(c.afterDetach.progId, 0);
    });

    test('generic mode', () => {
      const c = report();
      assert.equal(c.generic.mode, 'generic');
      assert.equal(c.generic.progId, c.ids.xdpPass);
      assert.equal(c.afterGenericDetach.mode, 'none');
    });

    test('live frames with XDP_TX reach the veth peer', { skip: noLive }, () => {
      const c = report();
      assert.ok(c.live, 'the child ran live frames');
      assert.equal(c.live.runs, 2000);
      assert.ok(c.live.peerRx >= 2000, `peer received ${c.live.peerRx} of 2000`);
    });

    test('tcAttach / tcQuery / tcDetach', () => {
      const c = report();
      assert.deepEqual(c.tc.first, { progId: c.ids.tc });
      assert.deepEqual(c.tc.custom, { progId: c.ids.tc });
      assert.deepEqual(c.tc.egress, { progId: c.ids.tc });
      assert.equal(c.tc.afterDetach, null);
      assert.equal(c.tc.detachAgain, 'ENOENT');
      assert.equal(c.tc.customAfter, null);
    });
  });

  // ---- cgroup links: a cgroup v2 directory of our own ------------------------------

  describe('cgroup links', () => {
    const noCgroup = cgroup2Unavailable();
    let cg = '';
    let cgObj = '';

    before(() => {
      if (noCgroup) return;
      removeStaleCgroups('ferrytest-native-');
      cg = createCgroup(`ferrytest-native-${process.pid}`);
      cgObj = join(tmp, 'cgroup.bpf.o');
    });

    after(() => {
      if (cg) removeCgroup(cg);
    });

    /** A UDP connect() to loopback (no packet is sent), from a process inside the cgroup or outside it. */
    const udpConnect = (inside: boolean): void => {
      const py = ['-c', 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.1", 9))'];
      const [cmd, args] = inside ? inCgroup(cg, 'python3', py) : ['python3', py];
      const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
      assert.equal(r.status, 0, `python3 failed: ${r.stderr}`);
    };

    test('attachCgroup: a link effective for the cgroup only, pinnable, updatable, detachable', { skip: noCgroup }, () => {
      const o = nat.openObject(cgObj);
      opened.push(o);
      o.load();
      const counter = o.mapFd('cg_connects');
      const connects = (slot = 0): number => Number(nat.mapLookup(counter, u32(slot))!.readBigUInt64LE(0));
      const progId = nat.progInfo(o.programFd('cg_connect4')).id;

      const link = o.attachCgroup('cg_connect4', cg);
      const li = nat.linkInfo(link);
      assert.equal(li.type, N.BPF_LINK_TYPE_CGROUP);
      assert.equal(li.progId, progId);
      assert.equal(li.cgroupId, statSync(cg).ino, 'the cgroup id is the directory inode');
      assert.equal(li.attachType, N.BPF_CGROUP_INET4_CONNECT);
      assert.equal(li.ifindex, 0);
      assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET4_CONNECT).progIds, [progId]);
      assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET6_CONNECT).progIds, []);

      const c0 = connects();
      udpConnect(false);
      assert.equal(connects(), c0, 'a process outside the cgroup is not seen');
      udpConnect(true);
      assert.equal(connects(), c0 + 1, 'a process inside the cgroup is seen');

      // Pinned, the link outlives its fd; reopened, it detaches.
      const pin = join(bpffs, 'cg_link');
      nat.objPin(link, pin);
      nat.closeFd(link);
      assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET4_CONNECT).progIds, [progId]);
      udpConnect(true);
      assert.equal(connects(), c0 + 2);
      const again = nat.objGet(pin);
      assert.equal(nat.linkInfo(again).cgroupId, li.cgroupId);
      // linkUpdate swaps the program in place (what a restarted daemon does).
      const progB = o.programFd('cg_connect4_b');
      nat.linkUpdate(again, progB);
      assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET4_CONNECT).progIds, [nat.progInfo(progB).id]);
      const b0 = connects(1);
      udpConnect(true);
      assert.deepEqual([connects(), connects(1)], [c0 + 2, b0 + 1], 'the replacement runs instead');
      nat.linkUpdate(again, o.programFd('cg_connect4'), progB);
      nat.linkDetach(again);
      nat.closeFd(again);
      rmSync(pin);
      assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET4_CONNECT).progIds, []);
      udpConnect(true);
      assert.equal(connects(), c0 + 2, 'detached: no longer seen');

      // A second program type of the same object, and links that stack.
      const rel = o.attachCgroup('cg_release', cg);
      const rel2 = o.attachCgroup('cg_release', cg);
      try {
        assert.equal(nat.linkInfo(rel).attachType, N.BPF_CGROUP_INET_SOCK_RELEASE);
        const relId = nat.progInfo(o.programFd('cg_release')).id;
        assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET_SOCK_RELEASE).progIds, [relId, relId]);
      } finally {
        for (const fd of [rel, rel2]) {
          nat.linkDetach(fd);
          nat.closeFd(fd);
        }
      }
      assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET_SOCK_RELEASE).progIds, []);
    });

    test('attachCgroup and cgroupQuery refuse bad arguments with errno errors', { skip: noCgroup }, () => {
      const o = nat.openObject(cgObj);
      opened.push(o);
      throwsCode(() => o.attachCgroup('cg_connect4', cg), 'EINVAL', /not loaded/);
      o.load();
      throwsCode(() => o.attachCgroup('no_such_prog', cg), 'ENOENT', /no program 'no_such_prog'/);
      throwsCode(() => o.attachCgroup('cg_connect4', '/nonexistent/ferry-cgroup'), 'ENOENT', /open/);
      throwsCode(() => o.attachCgroup('cg_connect4', join(cg, 'cgroup.procs')), 'ENOTDIR');
      throwsCode(() => o.attachCgroup('cg_connect4', tmp), 'EINVAL', /not a cgroup v2 directory/);
      if (existsSync('/sys/fs/cgroup/cpu')) {
        throwsCode(() => o.attachCgroup('cg_connect4', '/sys/fs/cgroup/cpu'), 'EINVAL', /not a cgroup v2 directory/);
      }
      const xdp = loaded();
      throwsCode(() => xdp.attachCgroup('xdp_test', cg), 'EINVAL', /is not a cgroup program/);
      const untyped = o as unknown as { attachCgroup: (...a: unknown[]) => unknown };
      assert.ok(throwsCode(() => untyped.attachCgroup(5, cg), 'EINVAL') instanceof TypeError);
      assert.ok(throwsCode(() => untyped.attachCgroup('cg_connect4'), 'EINVAL') instanceof TypeError);
      assert.ok(throwsCode(() => untyped.attachCgroup('cg_connect4', ''), 'EINVAL') instanceof RangeError);
      assert.ok(throwsCode(() => untyped.attachCgroup('cg_connect4', { path: cg }), 'EINVAL') instanceof TypeError);
      throwsCode(() => nat.cgroupQuery('/nonexistent/ferry-cgroup', N.BPF_CGROUP_INET4_CONNECT), 'ENOENT');
      throwsCode(() => nat.cgroupQuery(tmp, N.BPF_CGROUP_INET4_CONNECT), 'EINVAL', /not a cgroup v2 directory/);
      // Nothing was attached by any of the failures.
      assert.deepEqual(nat.cgroupQuery(cg, N.BPF_CGROUP_INET4_CONNECT).progIds, []);
      o.close();
      throwsCode(() => o.attachCgroup('cg_connect4', cg), 'EBADF');
    });
  });
});

interface XdpQ {
  progId: number;
  mode: string;
  driverProgId: number;
  genericProgId: number;
  offloadProgId: number;
}
interface ChildReport {
  error?: string;
  ids: { xdpTest: number; xdpPass: number; tc: number };
  ifindex: { veth0: number; veth1: number };
  attached: XdpQ;
  linkInfo: { id: number; progId: number; type: number; ifindex: number };
  secondAttach: string;
  afterUpdate: XdpQ;
  casMismatch: string;
  afterCas: XdpQ;
  afterClose: XdpQ;
  reopened: { id: number };
  afterDetach: XdpQ;
  generic: XdpQ;
  afterGenericDetach: XdpQ;
  live?: { runs: number; peerRx: number };
  tc: {
    first: unknown;
    custom: unknown;
    egress: unknown;
    afterDetach: unknown;
    detachAgain: string;
    customAfter: unknown;
  };
}

/**
 * Runs inside the test namespace (nsenter --net: same mounts, so the private
 * bpffs is visible). Gets the programs through their pins, reports what it
 * observed as JSON on stdout; the parent asserts.
 */
const CHILD_SCRIPT = `
import { execFileSync } from 'node:child_process';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
const { loadNative, BPF_F_TEST_XDP_LIVE_FRAMES, XDP_TX } = await import(__NATIVE_JS__);
const nat = loadNative();
const cfg = JSON.parse(process.argv[2]);
const out = {};
const codeOf = (fn) => { try { fn(); return 'no error'; } catch (e) { return e.code ?? String(e); } };
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
try {
  const pin = (n) => nat.objGet(join(cfg.progs, n));
  const xdpTest = pin('xdp_test'), xdpPass = pin('xdp_pass'), tc = pin('tc_test');
  out.ids = { xdpTest: nat.progInfo(xdpTest).id, xdpPass: nat.progInfo(xdpPass).id, tc: nat.progInfo(tc).id };
  const if0 = nat.ifNameToIndex('veth0'), if1 = nat.ifNameToIndex('veth1');
  out.ifindex = { veth0: if0, veth1: if1 };

  const link = nat.xdpAttach(xdpTest, if0, 'native');
  out.attached = nat.xdpQuery(if0);
  out.linkInfo = nat.linkInfo(link);
  out.secondAttach = codeOf(() => nat.xdpAttach(xdpPass, if0, 'native'));
  nat.linkUpdate(link, xdpPass);
  out.afterUpdate = nat.xdpQuery(if0);
  out.casMismatch = codeOf(() => nat.linkUpdate(link, xdpTest, xdpTest));
  nat.linkUpdate(link, xdpTest, xdpPass);
  out.afterCas = nat.xdpQuery(if0);
  nat.objPin(link, cfg.linkPin);
  nat.closeFd(link);
  out.afterClose = nat.xdpQuery(if0);
  const link2 = nat.objGet(cfg.linkPin);
  out.reopened = nat.linkInfo(link2);
  nat.linkDetach(link2);
  out.afterDetach = nat.xdpQuery(if0);
  nat.closeFd(link2);
  unlinkSync(cfg.linkPin);

  const g = nat.xdpAttach(xdpPass, if1, 'generic');
  out.generic = nat.xdpQuery(if1);
  nat.linkDetach(g);
  nat.closeFd(g);
  out.afterGenericDetach = nat.xdpQuery(if1);

  // Live frames: xdp_test runs as if on veth0 and transmits each frame, which
  // arrives at veth1 (which needs an XDP program to take XDP frames).
  if (cfg.live) {
    const peer = nat.xdpAttach(xdpPass, if1, 'native');
    const rx = () => JSON.parse(execFileSync('ip', ['-j', '-s', 'link', 'show', 'veth1'], { encoding: 'utf8' }))[0].stats64.rx.packets;
    const stats = nat.objGet(join(cfg.progs, 'test_percpu'));
    const runsTx = () => { const b = nat.mapLookup(stats, u32(XDP_TX)); let s = 0n; for (let o = 0; o < b.length; o += 8) s += b.readBigUInt64LE(o); return Number(s); };
    const rx0 = rx(), runs0 = runsTx();
    const ctx = Buffer.alloc(24); ctx.writeUInt32LE(64, 4); ctx.writeUInt32LE(if0, 12);
    const frame = Buffer.alloc(64, 0x11); frame.fill(0xff, 0, 6); frame.writeUInt16BE(0x88b5, 12);
    nat.progTestRun(xdpTest, { data: frame, ctxIn: ctx, flags: BPF_F_TEST_XDP_LIVE_FRAMES, repeat: 2000 });
    let peerRx = 0;
    for (let i = 0; i < 50 && peerRx < 2000; i++) { peerRx = rx() - rx0; if (peerRx < 2000) await new Promise((r) => setTimeout(r, 20)); }
    out.live = { runs: runsTx() - runs0, peerRx };
    nat.linkDetach(peer);
    nat.closeFd(peer);
    nat.closeFd(stats);
  }

  out.tc = {};
  nat.tcAttach(tc, if1, 'ingress');
  nat.tcAttach(tc, if1, 'ingress'); // replaces
  out.tc.first = nat.tcQuery(if1, 'ingress');
  nat.tcAttach(tc, if1, 'ingress', { handle: 2, priority: 5 });
  out.tc.custom = nat.tcQuery(if1, 'ingress', { handle: 2, priority: 5 });
  nat.tcAttach(tc, if1, 'egress');
  out.tc.egress = nat.tcQuery(if1, 'egress');
  nat.tcDetach(if1, 'ingress');
  out.tc.afterDetach = nat.tcQuery(if1, 'ingress');
  out.tc.detachAgain = codeOf(() => nat.tcDetach(if1, 'ingress'));
  nat.tcDetach(if1, 'ingress', { handle: 2, priority: 5 });
  out.tc.customAfter = nat.tcQuery(if1, 'ingress', { handle: 2, priority: 5 });
  nat.tcDetach(if1, 'egress');
  for (const fd of [xdpTest, xdpPass, tc]) nat.closeFd(fd);
} catch (e) {
  out.error = e && e.stack ? e.stack : String(e);
}
process.stdout.write(JSON.stringify(out));
`;

describe('sdNotify', () => {
  it('returns false without NOTIFY_SOCKET and delivers the state to it with', async () => {
    const nat = loadNative();
    const saved = process.env['NOTIFY_SOCKET'];
    delete process.env['NOTIFY_SOCKET'];
    try {
      assert.equal(nat.sdNotify('READY=1'), false);
      const dir = mkdtempSync(join(tmpdir(), 'ferry-notify-'));
      const sock = join(dir, 'notify');
      // Node has no unix datagram sockets; python3 plays systemd's part.
      const py = spawn('python3', [
        '-c',
        [
          'import socket,sys',
          's=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
          `s.bind(${JSON.stringify(sock)})`,
          'print("bound", flush=True)',
          'print(s.recv(4096).decode(), flush=True)',
        ].join('\n'),
      ]);
      let out = '';
      py.stdout.on('data', (d: Buffer) => (out += d.toString()));
      while (!out.includes('bound')) await new Promise((r) => setTimeout(r, 10));
      process.env['NOTIFY_SOCKET'] = sock;
      assert.equal(nat.sdNotify('READY=1\nSTATUS=serving'), true);
      await once(py, 'exit');
      assert.match(out, /READY=1\nSTATUS=serving/);
      rmSync(dir, { recursive: true, force: true });
      process.env['NOTIFY_SOCKET'] = '/nonexistent/ferry-notify';
      assert.throws(() => nat.sdNotify('READY=1'), { code: 'ENOENT' });
    } finally {
      if (saved === undefined) delete process.env['NOTIFY_SOCKET'];
      else process.env['NOTIFY_SOCKET'] = saved;
    }
  });
});

describe('marked sockets', () => {
  it('socketOpen makes a socket net.Socket adopts, carrying the mark; bad arguments throw EINVAL', async () => {
    const nat = loadNative();
    const srv = net.createServer(() => {}).listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const port = (srv.address() as net.AddressInfo).port;
    const sock = new net.Socket({ fd: nat.socketOpen(4, 'tcp', 0x46520007) }).connect(port, '127.0.0.1');
    try {
      await once(sock, 'connect');
      const ss = execFileSync('ss', ['-tnHe', 'state', 'established', 'dst', `127.0.0.1:${port}`]).toString();
      assert.match(ss, /fwmark:0x46520007/);
    } finally {
      sock.destroy();
      srv.close();
    }
    for (const args of [
      [5, 'tcp', 1],
      [4, 'sctp', 1],
      [4, 'tcp', -1],
      ['4', 'tcp', 1],
    ] as const) {
      assert.throws(() => nat.socketOpen(...(args as unknown as [4, 'tcp', number])), { code: 'EINVAL' }, JSON.stringify(args));
    }
    assert.throws(() => nat.socketSetMark(-1, 1), { code: 'EINVAL' });
  });
});
