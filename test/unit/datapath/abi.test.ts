/**
 * The TypeScript mirror of the datapath ABI is exact: struct sizes and field
 * offsets against the BTF clang wrote into the objects, and constants and
 * enum orders against the C headers.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as abi from '../../../src/datapath/abi.js';
import { loadNative } from '../../../src/datapath/native.js';
import { ctBucketCount } from '../../../src/datapath/conntrack.js';
import { assertStructsMatchBtf, bpfHeader, cDefine, cEnum } from '../../lib/abi-check.js';
import { bpfObjectPath } from '../../../src/paths.js';
import { u32, u32s } from '../../../src/datapath/maps.js';

const header = bpfHeader;

describe('datapath ABI', () => {
  const objects = ['xdp_lb', 'decap'].map(bpfObjectPath);

  it('every struct matches the BTF of the compiled object', () => {
    const obj = objects.find((o) => existsSync(o));
    assert.ok(obj, 'a compiled object exists');
    assertStructsMatchBtf(obj, abi.ALL_STRUCTS);
  });

  it('drop reasons and counters are in the C order', () => {
    const consts = header('consts.h');
    const lower = (prefix: string) => (e: string) => e.slice(prefix.length).toLowerCase();
    assert.deepEqual(
      cEnum(consts, 'ferry_drop_reason')
        .filter((e) => e !== 'DROP_MAX')
        .map(lower('DROP_')),
      [...abi.DROP_REASONS],
    );
    assert.deepEqual(
      cEnum(consts, 'ferry_counter')
        .filter((e) => e !== 'CNT_MAX')
        .map(lower('CNT_')),
      [...abi.COUNTERS],
    );
    assert.deepEqual(
      cEnum(consts, 'ferry_flow_reason')
        .filter((e) => e !== 'FLOW_REASON_MAX')
        .map(lower('FLOW_REASON_')),
      [...abi.FLOW_REASONS],
    );
    assert.deepEqual(
      cEnum(consts, 'ferry_decap_counter')
        .filter((e) => e !== 'DECAP_CNT_MAX')
        .map(lower('DECAP_CNT_')),
      [...abi.DECAP_COUNTERS],
    );
  });

  it('constants match consts.h', () => {
    const consts = header('consts.h');
    const pairs: Array<[string, number]> = [
      ['FERRY_BACKEND_NONE', abi.FERRY_BACKEND_NONE],
      ['FERRY_AF_INET', abi.FERRY_AF_INET],
      ['FERRY_AF_INET6', abi.FERRY_AF_INET6],
      ['FERRY_ENCAP_TTL', abi.FERRY_ENCAP_TTL],
      ['FERRY_INDEX_WAYS', abi.FERRY_INDEX_WAYS],
      ['FERRY_NEXTHOP_SLOTS', abi.FERRY_NEXTHOP_SLOTS],
      ['FERRY_CT_TOUCH_JIFFIES', abi.FERRY_CT_TOUCH_JIFFIES],
      ['FERRY_CT_WAYS', abi.FERRY_CT_WAYS],
      ['FERRY_CT_BUCKETS', ctBucketCount(abi.DEFAULT_SIZES.ctSize)],
      ['FERRY_MAX_VIPS', abi.DEFAULT_SIZES.maxVips],
      ['FERRY_MAX_VIP_ADDRS', abi.DEFAULT_SIZES.maxVipAddrs],
      ['FERRY_MAX_BACKENDS', abi.DEFAULT_SIZES.maxBackends],
      ['FERRY_CT_SIZE', abi.DEFAULT_SIZES.ctSize],
      ['FERRY_MAX_POLICY_RULES', abi.DEFAULT_SIZES.maxPolicyRules],
      ['FERRY_EVENTS_RING_BYTES', abi.DEFAULT_SIZES.eventRingBytes],
      ['FERRY_SNAT_ENTRIES', abi.DEFAULT_SIZES.snatEntries],
      ['FERRY_VIP_NONE', abi.FERRY_VIP_NONE],
      ['FERRY_EVENT_FLOW', abi.FERRY_EVENT_FLOW],
      ['FERRY_EVENT_DROP', abi.FERRY_EVENT_DROP],
      ['VIP_F_POLICY', abi.VIP_F_POLICY],
      ['VIP_F_ALLOWLIST', abi.VIP_F_ALLOWLIST],
      ['VIP_F_SRC_AFFINITY', abi.VIP_F_SRC_AFFINITY],
      ['VIP_F_SNAT', abi.VIP_F_SNAT],
      ['BACKEND_F_LOCAL', abi.BACKEND_F_LOCAL],
      ['VIP_ADDR_F_ECHO', abi.VIP_ADDR_F_ECHO],
      ['BACKEND_FREE', abi.BACKEND_FREE],
      ['BACKEND_ACTIVE', abi.BACKEND_ACTIVE],
      ['BACKEND_DRAINING', abi.BACKEND_DRAINING],
      ['BACKEND_DOWN', abi.BACKEND_DOWN],
      ['CFG_F_SKIP_FIB', abi.CFG_F_SKIP_FIB],
      ['POLICY_ALLOW', abi.POLICY_ALLOW],
      ['POLICY_DENY', abi.POLICY_DENY],
    ];
    for (const [name, value] of pairs) assert.equal(cDefine(consts, name), value, name);
  });

  it('map capacities of the object are the documented defaults', () => {
    const nat = loadNative();
    const obj = nat.openObject(bpfObjectPath('xdp_lb'));
    try {
      const byName = new Map(obj.maps().map((m) => [m.name, m]));
      assert.equal(byName.get('ferry_vips')?.maxEntries, abi.DEFAULT_SIZES.maxVips);
      assert.equal(byName.get('ferry_backends')?.maxEntries, abi.DEFAULT_SIZES.maxBackends);
      assert.equal(byName.get('ferry_ct')?.maxEntries, ctBucketCount(abi.DEFAULT_SIZES.ctSize));
      assert.equal(byName.get('ferry_vip_index')?.maxEntries, abi.DEFAULT_SIZES.maxVips);
      assert.equal(byName.get('ferry_addr_index')?.maxEntries, abi.DEFAULT_SIZES.maxVipAddrs);
      assert.equal(byName.get('ferry_nexthops')?.maxEntries, abi.FERRY_NEXTHOP_SLOTS);
      assert.equal(byName.get('ferry_drops')?.maxEntries, abi.DROP_REASONS.length);
      assert.equal(byName.get('ferry_counters')?.maxEntries, abi.COUNTERS.length);
      assert.equal(byName.get('ferry_events')?.maxEntries, abi.DEFAULT_SIZES.eventRingBytes);
      assert.equal(byName.get('ferry_snat_fwd')?.maxEntries, abi.DEFAULT_SIZES.snatEntries);
      assert.equal(byName.get('ferry_snat_rev')?.maxEntries, abi.DEFAULT_SIZES.snatEntries);
    } finally {
      obj.close();
    }
  });
});

it('u32 batch keys are the single keys side by side, as the kernel reads them', () => {
  const ids = [0, 1, 255, 256, 65_535, 2 ** 31, 2 ** 32 - 1];
  assert.deepEqual(u32s(ids), Buffer.concat(ids.map(u32)));
  assert.deepEqual([...u32(0x01020304)], [4, 3, 2, 1]);
  assert.equal(u32s([]).length, 0);
});
