/**
 * The VIP index as the daemon keeps it (src/datapath/vipindex.ts): what one
 * instance writes another reads back; what an interrupted write leaves
 * behind is repaired at load; keys an older version kept only in the hash
 * map move into buckets and keep a shadow copy the older program can still
 * read, updated and removed with the key. Packets prove the datapath side
 * (test/root/datapath/datapath.test.ts); here the maps are read directly.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { FERRY_INDEX_WAYS, VipBucket, VipKey, VipMeta, VipSlot, type VipMetaV } from '../../../src/datapath/abi.js';
import { dpAddr } from '../../../src/datapath/addr.js';
import { LbDatapath } from '../../../src/datapath/lb.js';
import { indexBucketsOf } from '../../../src/datapath/vipindex.js';
import { u32 } from '../../../src/datapath/maps.js';
import { bpfUnavailable, ensureBpffs } from '../../lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping VIP index tests: ${skip}`);

const SIZES = { ctSize: 1024, maxBackends: 64, maxVips: 16, maxVipAddrs: 16, maxPolicyRules: 16 };
const key = (addr: string, port = 80) => VipKey.encode({ addr: dpAddr(addr).bytes, port, proto: 6, family: 4 });
const meta = (id: number, flags = 0): Buffer => VipMeta.encode({ vip_id: id, flags, rl_interval_ns: 0n, rl_tolerance_ns: 0n });
const idOf = (v: Buffer | undefined) => (v ? (VipMeta.decode(v) as VipMetaV).vip_id : undefined);

describe('VIP index', { skip }, () => {
  const root = `/sys/fs/bpf/ferry-test-vipindex-${process.pid}`;
  let dp: LbDatapath;
  const reopen = () => {
    dp?.close();
    dp = LbDatapath.open({ pinRoot: root, sizes: SIZES });
  };

  before(() => {
    ensureBpffs();
    rmSync(root, { recursive: true, force: true });
    reopen();
  });
  after(() => {
    dp?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('reads back what another instance wrote, changes values in place and removes keys', () => {
    const puts = Array.from({ length: 12 }, (_, i) => ({ key: key(`198.18.0.${i}`), value: meta(i) }));
    dp.vipIndex.write(puts, []);
    reopen();
    const read = dp.vipIndex.read();
    assert.equal(read.size, 12);
    for (const p of puts) assert.equal(idOf(read.get(p.key.toString('hex'))?.value), idOf(p.value));
    assert.deepEqual(dp.vipIndex.known(), read, 'load() sees the same');
    dp.vipIndex.write([{ key: puts[0]!.key, value: meta(0, 7) }], [puts[1]!.key, key('198.18.9.9')]);
    const after = dp.vipIndex.read();
    assert.equal(after.size, 11);
    assert.equal(VipMeta.decode(after.get(puts[0]!.key.toString('hex'))!.value).flags, 7);
    assert.equal(after.has(puts[1]!.key.toString('hex')), false);
    dp.vipIndex.write(
      [],
      puts.map((p) => p.key),
    );
    assert.equal(dp.vipIndex.read().size, 0);
  });

  it('load() clears unpublished and misplaced slots and corrects overflow counts', () => {
    const good = key('198.18.1.1');
    dp.vipIndex.write([{ key: good, value: meta(1) }], []);
    const [b1] = indexBucketsOf(good, dp.vipIndex.mask);
    // Into another bucket: a key that does not belong there, a key left unpublished
    // (family 0) by an interrupted write, and an overflow count no key backs.
    const other = (b1 + 1) % dp.vipIndex.count;
    const misplaced = [...Array(1000).keys()]
      .map((i) => key(`198.18.2.${i % 250}`, 1000 + i))
      .find((k) => !indexBucketsOf(k, dp.vipIndex.mask).includes(other))!;
    const bucket = Buffer.alloc(VipBucket.size);
    misplaced.copy(bucket, 0);
    meta(2).copy(bucket, VipSlot.layout.find((f) => f.name === 'meta')!.offset);
    const unpublished = key('198.18.3.3');
    unpublished[VipKey.layout.find((f) => f.name === 'family')!.offset] = 0;
    unpublished.copy(bucket, VipSlot.size);
    bucket.writeUInt32LE(5, FERRY_INDEX_WAYS * VipSlot.size);
    dp.nat.mapUpdate(dp.vipIndex.indexFd, u32(other), bucket, 0);
    reopen();
    assert.deepEqual([...dp.vipIndex.known().keys()], [good.toString('hex')]);
    assert.deepEqual(dp.nat.mapLookup(dp.vipIndex.indexFd, u32(other)), Buffer.alloc(VipBucket.size), 'the bucket is clean again');
    dp.vipIndex.write([], [good]);
  });

  it('moves keys an older version kept in the hash map into buckets, keeping a shadow copy in step', () => {
    const keys = [key('198.18.4.1'), key('198.18.4.2')];
    for (const [i, k] of keys.entries()) dp.nat.mapUpdate(dp.vipIndex.overflowFd, k, meta(10 + i), 0);
    reopen();
    const known = dp.vipIndex.known();
    assert.equal(known.size, 2);
    assert.equal(dp.vipIndex.overflowed, 0, 'both moved into buckets');
    const inBuckets = dp.nat.mapDump(dp.vipIndex.indexFd).values.some((b) => b.includes(keys[0]!));
    assert.ok(inBuckets, 'the key is in a bucket');
    // The shadow copies stay, and follow changes of the key.
    dp.vipIndex.write([{ key: keys[0]!, value: meta(10, 3) }], [keys[1]!]);
    assert.equal(VipMeta.decode(dp.nat.mapLookup(dp.vipIndex.overflowFd, keys[0]!)!).flags, 3);
    assert.equal(dp.nat.mapLookup(dp.vipIndex.overflowFd, keys[1]!), null);
    dp.vipIndex.write([], [keys[0]!]);
    assert.deepEqual(dp.nat.mapDump(dp.vipIndex.overflowFd).keys, []);
  });
});
