/**
 * Maglev table slots (src/datapath/maglevtables.ts) when they run short: a
 * write that finds no free slot waits for one grace period (the only time
 * a write waits), after which every replaced table's slots are free; a
 * table that cannot fit even then is refused with the limit named, and
 * the VIP keeps the table it had. Start-up takes over whatever the VIPs
 * point at as in use.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { LbDatapath } from '../../../src/datapath/lb.js';
import { MaglevSlotsFull } from '../../../src/datapath/maglevtables.js';
import { bpfUnavailable, ensureBpffs } from '../../lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping Maglev table tests: ${skip}`);

const SIZES = { ctSize: 1024, maxBackends: 64, maxVips: 8, maxVipAddrs: 8, maxPolicyRules: 8, maglevSlots: 1024 };

describe('Maglev table slots', { skip }, () => {
  const root = `/sys/fs/bpf/ferry-test-maglev-${process.pid}`;
  let dp: LbDatapath;

  before(() => {
    ensureBpffs();
    rmSync(root, { recursive: true, force: true });
    dp = LbDatapath.open({ pinRoot: root, sizes: SIZES });
  });
  after(() => {
    dp?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("waits for a grace period only when the slots run out, then reuses the replaced tables' slots", () => {
    const t = (m: number, id: number) => new Uint32Array(m).fill(id);
    dp.setMaglevTable(0, t(500, 1));
    dp.setMaglevTable(0, t(500, 2));
    assert.equal(dp.maglev.stats.syncFences, 0);
    dp.setMaglevTable(0, t(500, 3)); // 1 + 501 + 501 used: no room left without the first table's slots
    assert.equal(dp.maglev.stats.syncFences, 1);
    assert.deepEqual(dp.getMaglevTable(0), t(500, 3));
  });

  it('replaces several tables at once with room for one beside its old one: the rest go where the replaced were', () => {
    const t = (m: number, id: number) => new Uint32Array(m).fill(id);
    dp.setMaglevTable(4, t(200, 40));
    dp.setMaglevTable(5, t(100, 50));
    const fences = dp.maglev.stats.syncFences;
    // 1 + 501 (VIP 0) + 201 + 101 in use, 220 free: the first new table fits beside its old one, the
    // second only once the first is switched to and its old slots have waited out a grace period.
    dp.setMaglevTables([4, 5], [t(200, 41), t(100, 51)]);
    assert.deepEqual(dp.getMaglevTable(4), t(200, 41));
    assert.deepEqual(dp.getMaglevTable(5), t(100, 51));
    assert.ok(dp.maglev.stats.syncFences > fences, 'it waited for a grace period');
    dp.deleteMaglevTables([4, 5]);
  });

  it('refuses a table that cannot fit, naming the limit, and keeps the old one', () => {
    assert.throws(
      () => dp.setMaglevTable(1, new Uint32Array(2000)),
      (e: unknown) => {
        assert.ok(e instanceof MaglevSlotsFull);
        assert.match(e.message, /bpf\.maglev_slots/);
        return true;
      },
    );
    assert.equal(dp.getMaglevTable(1), undefined);
    assert.deepEqual(dp.getMaglevTable(0), new Uint32Array(500).fill(3));
  });

  it('a restarted daemon keeps the tables and treats their slots as taken', () => {
    dp.setMaglevTable(2, new Uint32Array(251).fill(7));
    const starts = [0, 2].map((id) => dp.maglev.startOf(id));
    dp.close();
    dp = LbDatapath.open({ pinRoot: root, sizes: SIZES });
    assert.deepEqual(
      [0, 2].map((id) => dp.maglev.startOf(id)),
      starts,
    );
    assert.deepEqual(dp.getMaglevTable(2), new Uint32Array(251).fill(7));
    dp.setMaglevTable(3, new Uint32Array(251).fill(8));
    const s3 = dp.maglev.startOf(3);
    const runs = [
      [starts[0]!, 501],
      [starts[1]!, 252],
    ] as const;
    for (const [s, len] of runs) assert.ok(s3 + 252 <= s || s3 >= s + len, `[${s3}, +252) overlaps [${s}, +${len})`);
  });
});
