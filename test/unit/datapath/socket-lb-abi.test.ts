/**
 * The socket-LB's TypeScript mirror is exact: struct sizes and field offsets
 * against the BTF of build/bpf/sock_lb.bpf.o, constants and the counter enum
 * against bpf/lib/socklb_types.h, map capacities and programs against the
 * object itself.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as abi from '../../../src/datapath/socket-lb-abi.js';
import { SOCKET_LB_HOOKS } from '../../../src/datapath/socket-lb.js';
import { BPF_PROG_TYPE_CGROUP_SOCK, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, loadNative } from '../../../src/datapath/native.js';
import { bpfObjectPath } from '../../../src/paths.js';
import { assertStructsMatchBtf, bpfHeader, cDefine, cEnum } from '../../lib/abi-check.js';

const header = bpfHeader('socklb_types.h');
const object = bpfObjectPath('sock_lb');

describe('socket-LB ABI', () => {
  it('every struct matches the BTF of sock_lb.bpf.o', () => {
    assertStructsMatchBtf(object, abi.SOCKLB_STRUCTS);
  });

  it('counters are in the C order and constants match socklb_types.h', () => {
    assert.deepEqual(
      cEnum(header, 'sock_counter_id')
        .filter((e) => e !== 'SOCK_CNT_MAX')
        .map((e) => e.slice('SOCK_CNT_'.length).toLowerCase()),
      [...abi.SOCK_COUNTERS],
    );
    const pairs: Array<[string, number]> = [
      ['SOCKLB_AF_INET', abi.SOCKLB_AF_INET],
      ['SOCKLB_AF_INET6', abi.SOCKLB_AF_INET6],
      ['SOCK_SVC_F_AFFINITY', abi.SOCK_SVC_F_AFFINITY],
      ['SOCKLB_AFFINITY_TOUCH_NS', abi.SOCKLB_AFFINITY_TOUCH_NS],
      ['SOCKLB_MAX_SERVICES', abi.SOCKLB_DEFAULT_SIZES.maxServices],
      ['SOCKLB_MAX_SLOTS', abi.SOCKLB_DEFAULT_SIZES.maxSlots],
      ['SOCKLB_REVNAT_SIZE', abi.SOCKLB_DEFAULT_SIZES.revnatSize],
      ['SOCKLB_AFFINITY_SIZE', abi.SOCKLB_DEFAULT_SIZES.affinitySize],
    ];
    for (const [name, value] of pairs) assert.equal(cDefine(header, name), value, name);
  });

  it('the object has the documented capacities and one program per hook', () => {
    const nat = loadNative();
    const obj = nat.openObject(object);
    try {
      const maps = new Map(obj.maps().map((m) => [m.name, m]));
      assert.equal(maps.get('ferry_sock_svcs')?.maxEntries, abi.SOCKLB_DEFAULT_SIZES.maxServices);
      assert.equal(maps.get('ferry_sock_slots')?.maxEntries, abi.SOCKLB_DEFAULT_SIZES.maxSlots);
      assert.equal(maps.get('ferry_sock_members')?.maxEntries, abi.SOCKLB_DEFAULT_SIZES.maxSlots);
      assert.equal(maps.get('ferry_sock_revnat')?.maxEntries, abi.SOCKLB_DEFAULT_SIZES.revnatSize);
      assert.equal(maps.get('ferry_sock_affinity')?.maxEntries, abi.SOCKLB_DEFAULT_SIZES.affinitySize);
      assert.equal(maps.get('ferry_sock_counters')?.maxEntries, abi.SOCK_COUNTERS.length);
      assert.deepEqual(
        obj.programs().map((p) => [p.name, p.section, p.type]),
        SOCKET_LB_HOOKS.map((h) => [
          h.program,
          `cgroup/${h.hook}`,
          h.hook === 'sock_release' ? BPF_PROG_TYPE_CGROUP_SOCK : BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        ]),
      );
    } finally {
      obj.close();
    }
  });
});
