/**
 * xdp_decap and tc_decap restore the inner packet byte for byte, for every
 * family pair xdp_lb produces, and leave everything else alone.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DECAP_COUNTERS, VipAddrKey, VipAddrMeta, Counter, type DecapCounterName } from '../../../src/datapath/abi.js';
import { dpAddr } from '../../../src/datapath/addr.js';
import { PerCpuArray } from '../../../src/datapath/maps.js';
import { loadNative, type BpfObject } from '../../../src/datapath/native.js';
import { bpfObjectPath } from '../../../src/paths.js';
import { LbHarness, XDP_PASS, XDP_TX, bpfUnavailable } from '../../lib/harness.js';
import { ETH_P_IP, ETH_P_IPV6, TCP_SYN, frame, parseEth } from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping decap tests: ${skip}`);

const TC_ACT_OK = 0;
const VIPS = { v4: '198.18.0.10', v6: '2001:db8::10' };

describe('decap programs', { skip }, () => {
  let h: LbHarness;
  let obj: BpfObject;
  let counters: PerCpuArray<typeof Counter>;
  const nat = loadNative();

  before(() => {
    h = new LbHarness(`/sys/fs/bpf/ferry-test-decap-${process.pid}`);
    h.vip({ id: 0, addr: VIPS.v4, port: 80, proto: 'tcp', backends: [{ id: 1, addr: '198.18.1.1' }] });
    h.vip({ id: 1, addr: VIPS.v6, port: 80, proto: 'tcp', backends: [{ id: 2, addr: '2001:db8:1::1' }] });
    h.vip({ id: 2, addr: '198.18.0.11', port: 80, proto: 'tcp', backends: [{ id: 3, addr: '2001:db8:1::3' }] });
    h.vip({ id: 3, addr: '2001:db8::11', port: 80, proto: 'tcp', backends: [{ id: 4, addr: '198.18.1.4' }] });
    obj = nat.openObject(bpfObjectPath('decap'));
    obj.load();
    const addrs = obj.mapFd('ferry_decap_addrs');
    for (const v of [VIPS.v4, VIPS.v6, '198.18.0.11', '2001:db8::11']) {
      const a = dpAddr(v);
      nat.mapUpdate(
        addrs,
        VipAddrKey.encode({ addr: a.bytes, family: a.family, pad: Buffer.alloc(3) }),
        VipAddrMeta.encode({ flags: 0 }),
        0,
      );
    }
    counters = new PerCpuArray(nat, obj.mapFd('ferry_decap_counters'), 'ferry_decap_counters', Counter, nat.numPossibleCpus());
  });
  after(() => {
    obj?.close();
    h?.close();
  });

  const count = (c: DecapCounterName) => counters.sum(DECAP_COUNTERS.indexOf(c)).packets;
  const runProg = (prog: string, data: Buffer) => nat.progTestRun(obj.programFd(prog), { data, dataOutSize: data.length + 64 });

  /** What a backend should see after decap: the encapsulated frame's Ethernet header, the original L3 packet. */
  function expectedInner(original: Buffer, encapsulated: Buffer): Buffer {
    const o = parseEth(original);
    const e = parseEth(encapsulated);
    const l2 = Buffer.from(encapsulated.subarray(0, encapsulated.length - e.l3.length));
    l2.writeUInt16BE(o.ethertype, l2.length - 2);
    return Buffer.concat([l2, o.l3]);
  }

  for (const [name, client, vip] of [
    ['IPv4 in IPv4', '198.18.100.1', VIPS.v4],
    ['IPv6 in IPv6', '2001:db8:100::1', VIPS.v6],
    ['IPv4 in IPv6', '198.18.100.1', '198.18.0.11'],
    ['IPv6 in IPv4', '2001:db8:100::1', '2001:db8::11'],
  ] as const) {
    for (const prog of ['xdp_decap', 'tc_decap']) {
      it(`${prog} restores ${name} byte for byte`, () => {
        const original = frame({
          src: client,
          dst: vip,
          proto: 'tcp',
          sport: 5555,
          dport: 80,
          tcpFlags: TCP_SYN,
          payload: Buffer.from('payload bytes'),
        });
        const lb = h.run(original);
        assert.equal(lb.retval, XDP_TX);
        const done0 = count('done');
        const r = runProg(prog, lb.out);
        assert.equal(r.retval, prog === 'xdp_decap' ? XDP_PASS : TC_ACT_OK);
        assert.deepEqual(r.data, expectedInner(original, lb.out));
        assert.equal(parseEth(r.data).ethertype, vip.includes(':') ? ETH_P_IPV6 : ETH_P_IP);
        assert.equal(count('done') - done0, 1n);
      });
    }
  }

  it('xdp_decap keeps a VLAN tag', () => {
    const original = frame({ src: '198.18.100.1', dst: VIPS.v4, proto: 'tcp', dport: 80, vlan: 9 });
    const lb = h.run(original);
    const r = runProg('xdp_decap', lb.out);
    assert.equal(r.retval, XDP_PASS);
    assert.deepEqual(r.data, expectedInner(original, lb.out));
    assert.equal(parseEth(r.data).vlan, 9);
  });

  it('passes tunnel packets for other addresses and plain packets untouched', () => {
    for (const prog of ['xdp_decap', 'tc_decap']) {
      const plain = frame({ src: '198.18.100.1', dst: VIPS.v4, proto: 'udp', dport: 53 });
      const pass0 = count('pass');
      const p = runProg(prog, plain);
      assert.equal(p.retval, prog === 'xdp_decap' ? XDP_PASS : TC_ACT_OK);
      assert.deepEqual(p.data, plain);
      assert.equal(count('pass') - pass0, 1n);
      // A tunnel packet whose inner destination is not a local VIP.
      const lb = h.run(frame({ src: '198.18.100.1', dst: VIPS.v4, proto: 'tcp', dport: 80 }));
      const foreign = Buffer.from(lb.out);
      const innerDst = 14 + 20 + 16;
      foreign[innerDst + 3] = 99;
      const n0 = count('not_ours');
      const f = runProg(prog, foreign);
      assert.equal(f.retval, prog === 'xdp_decap' ? XDP_PASS : TC_ACT_OK);
      assert.deepEqual(f.data, foreign);
      assert.equal(count('not_ours') - n0, 1n);
    }
  });

  it('drops a tunnel packet whose inner header is cut, counted as an error', () => {
    const lb = h.run(frame({ src: '198.18.100.1', dst: VIPS.v4, proto: 'tcp', dport: 80 }));
    const cut = Buffer.from(lb.out.subarray(0, 14 + 20 + 12));
    cut.writeUInt16BE(20 + 12, 14 + 2);
    // The outer checksum is left stale on purpose: decap does not verify it.
    const e0 = count('error');
    const r = runProg('xdp_decap', cut);
    assert.notEqual(r.retval, XDP_PASS);
    assert.equal(count('error') - e0, 1n);
  });
});
