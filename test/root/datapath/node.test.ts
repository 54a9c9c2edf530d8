/**
 * Port translation where the endpoint lives: xdp_lb hands a local
 * backend's packet up the stack encapsulated, tc_node_in takes the outer
 * header off and translates the frontend to the endpoint and its port,
 * tc_node_out gives the endpoint's reply the frontend back. Packets in,
 * packets out, checksums verified; the map writer writes differences.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BACKEND_F_LOCAL, COUNTERS } from '../../../src/datapath/abi.js';
import { formatAddr, dpAddr } from '../../../src/datapath/addr.js';
import { NODE_COUNTERS, NODE_STRUCTS, NodeDatapath, type NodeCounterName, type NodeEndpoint } from '../../../src/datapath/node.js';
import { bpfObjectPath } from '../../../src/paths.js';
import { LbHarness, XDP_PASS, bpfUnavailable } from '../../lib/harness.js';
import { assertStructsMatchBtf, bpfHeader, cEnum } from '../../lib/abi-check.js';
import {
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  ethFrame,
  frame,
  ipPacket,
  l4ChecksumOk,
  parseEth,
  parseIp,
} from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping node program tests: ${skip}`);

const TC_ACT_OK = 0;
const TC_ACT_UNSPEC = -1;

const V4 = { vip: '198.18.0.10', vipPort: 30080, pod: '10.244.1.5', port: 8080, client: '203.0.113.7' };
const V6 = { vip: '2001:db8::10', vipPort: 30053, pod: 'fd00:244::5', port: 53, client: '2001:db8:100::7' };
const ALL = { vip: '198.18.0.20', pod: '10.244.1.6' };

describe('node programs', { skip }, () => {
  const pinRoot = `/sys/fs/bpf/ferry-test-node-${process.pid}`;
  let h: LbHarness;
  let node: NodeDatapath;

  before(() => {
    h = new LbHarness(pinRoot);
    h.vip({ id: 0, addr: V4.vip, port: V4.vipPort, proto: 'tcp', backends: [{ id: 1, addr: V4.pod, flags: BACKEND_F_LOCAL }] });
    h.vip({ id: 1, addr: V6.vip, port: V6.vipPort, proto: 'udp', backends: [{ id: 2, addr: V6.pod, flags: BACKEND_F_LOCAL }] });
    h.vip({ id: 2, addr: ALL.vip, port: 0, proto: 'tcp', backends: [{ id: 3, addr: ALL.pod, flags: BACKEND_F_LOCAL }] });
    h.vip({ id: 3, addr: '198.18.0.30', port: 80, proto: 'tcp', backends: [{ id: 4, addr: '10.244.2.9' }] });
    node = NodeDatapath.open({ pinRoot });
    node.setEndpoints([
      { vip: V4.vip, vipPort: V4.vipPort, protocol: 'tcp', backend: V4.pod, port: V4.port },
      { vip: V6.vip, vipPort: V6.vipPort, protocol: 'udp', backend: V6.pod, port: V6.port },
      { vip: ALL.vip, vipPort: 0, protocol: 'tcp', backend: ALL.pod, port: 0 },
    ]);
  });
  after(() => {
    node?.close();
    h?.close();
  });

  const lbCount = (c: (typeof COUNTERS)[number]) => h.dp.counters.sum(COUNTERS.indexOf(c)).packets;
  const count = (c: NodeCounterName) => node.counters.sum(NODE_COUNTERS.indexOf(c)).packets;
  const runTc = (prog: 'tc_node_in' | 'tc_node_out', data: Buffer) => {
    const r = node.nat.progTestRun(node.programFd(prog), { data, dataOutSize: data.length + 64 });
    return { retval: r.retval | 0, out: r.data };
  };
  const l4Ports = (ip: ReturnType<typeof parseIp>) => ({ sport: ip.payload.readUInt16BE(0), dport: ip.payload.readUInt16BE(2) });
  const text = (b: Buffer) => formatAddr(b.length === 4 ? 4 : 6, Buffer.concat([b, Buffer.alloc(16 - b.length)]));

  it('the structs match node.bpf.o and the counters the C order', () => {
    assertStructsMatchBtf(bpfObjectPath('node'), NODE_STRUCTS);
    const lower = (e: string) => e.slice('NODE_CNT_'.length).toLowerCase();
    assert.deepEqual(
      cEnum(bpfHeader('consts.h'), 'ferry_node_counter')
        .filter((e) => e !== 'NODE_CNT_MAX')
        .map(lower),
      [...NODE_COUNTERS],
    );
  });

  for (const [name, c, proto] of [
    ['TCP over IPv4', V4, 'tcp'],
    ['UDP over IPv6', V6, 'udp'],
  ] as const) {
    it(`${name}: up the stack encapsulated, translated to the endpoint's port, the reply given the frontend back`, () => {
      const local0 = lbCount('local');
      const original = frame({ src: c.client, dst: c.vip, proto, sport: 41000, dport: c.vipPort, payload: Buffer.from('hello') });
      const lb = h.run(original);
      assert.equal(lb.retval, XDP_PASS, 'a local backend goes up the stack');
      assert.equal(lbCount('local') - local0, 1n);
      const outer = parseIp(parseEth(lb.out).l3);
      assert.equal(text(outer.dst), c.pod, 'the outer destination is the endpoint');

      const dnat0 = count('dnat');
      const r = runTc('tc_node_in', lb.out);
      assert.equal(r.retval, TC_ACT_OK);
      assert.equal(count('dnat') - dnat0, 1n);
      const eth = parseEth(r.out);
      assert.equal(eth.ethertype, proto === 'tcp' ? ETH_P_IP : ETH_P_IPV6);
      const inner = parseIp(eth.l3);
      assert.equal(text(inner.src), c.client);
      assert.equal(text(inner.dst), c.pod);
      assert.deepEqual(l4Ports(inner), { sport: 41000, dport: c.port });
      assert.equal(inner.proto, proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP);
      if (inner.version === 4) assert.ok(inner.checksumOk, 'IPv4 header checksum');
      assert.ok(l4ChecksumOk(inner), 'L4 checksum after the translation');
      assert.equal(inner.payload.subarray(proto === 'tcp' ? 20 : 8).toString(), 'hello');

      const rev = node.revNat.get({
        backend: dpAddr(c.pod).bytes,
        client: dpAddr(c.client).bytes,
        backend_port: c.port,
        client_port: 41000,
        proto: inner.proto,
        family: dpAddr(c.pod).family,
        pad: 0,
      });
      assert.ok(rev, 'the connection is remembered');
      assert.equal(formatAddr(dpAddr(c.vip).family, rev.vip), c.vip);
      assert.equal(rev.vip_port, c.vipPort);

      const reply = ethFrame(
        ipPacket({ src: c.pod, dst: c.client, proto, sport: c.port, dport: 41000, tcpFlags: TCP_ACK, payload: Buffer.from('world') }),
        proto === 'tcp' ? ETH_P_IP : ETH_P_IPV6,
      );
      const rev0 = count('rev_nat');
      const back = runTc('tc_node_out', reply);
      assert.equal(back.retval, TC_ACT_OK);
      assert.equal(count('rev_nat') - rev0, 1n);
      const out = parseIp(parseEth(back.out).l3);
      assert.equal(text(out.src), c.vip, 'the reply comes from the frontend');
      assert.equal(text(out.dst), c.client);
      assert.deepEqual(l4Ports(out), { sport: c.vipPort, dport: 41000 });
      if (out.version === 4) assert.ok(out.checksumOk);
      assert.ok(l4ChecksumOk(out), 'L4 checksum after the reverse translation');
    });
  }

  it("a frontend of every port keeps the client's port", () => {
    const lb = h.run(frame({ src: V4.client, dst: ALL.vip, proto: 'tcp', sport: 41001, dport: 8443 }));
    assert.equal(lb.retval, XDP_PASS);
    const r = runTc('tc_node_in', lb.out);
    assert.equal(r.retval, TC_ACT_OK);
    const inner = parseIp(parseEth(r.out).l3);
    assert.equal(text(inner.dst), ALL.pod);
    assert.deepEqual(l4Ports(inner), { sport: 41001, dport: 8443 });
    assert.ok(l4ChecksumOk(inner));
  });

  it('leaves alone what no entry names: other tunnel packets, plain packets, unknown replies', () => {
    // Encapsulated by xdp_lb to a backend that is not an endpoint of this node.
    const lb = h.run(frame({ src: V4.client, dst: '198.18.0.30', proto: 'tcp', dport: 80 }));
    const n0 = count('not_ours');
    const foreign = runTc('tc_node_in', lb.out);
    assert.equal(foreign.retval, TC_ACT_UNSPEC);
    assert.deepEqual(foreign.out, lb.out);
    assert.equal(count('not_ours') - n0, 1n);
    const plain = frame({ src: V4.client, dst: V4.pod, proto: 'tcp', dport: V4.port });
    assert.equal(runTc('tc_node_in', plain).retval, TC_ACT_UNSPEC);
    const reply = ethFrame(ipPacket({ src: V4.pod, dst: V4.client, proto: 'tcp', sport: V4.port, dport: 999 }), ETH_P_IP);
    const r = runTc('tc_node_out', reply);
    assert.equal(r.retval, TC_ACT_UNSPEC);
    assert.deepEqual(r.out, reply);
  });

  it('writes differences, survives a reopen, and refuses a bad list whole', () => {
    const list: NodeEndpoint[] = [
      { vip: V4.vip, vipPort: V4.vipPort, protocol: 'tcp', backend: V4.pod, port: V4.port },
      { vip: V6.vip, vipPort: V6.vipPort, protocol: 'udp', backend: V6.pod, port: V6.port },
      { vip: ALL.vip, vipPort: 0, protocol: 'tcp', backend: ALL.pod, port: 0 },
    ];
    assert.deepEqual(node.setEndpoints(list), { written: 0, removed: 0 });
    const again = NodeDatapath.open({ pinRoot });
    try {
      assert.equal(again.endpointCount, 3, 'a restarted daemon sees the pinned entries');
      assert.deepEqual(again.setEndpoints(list), { written: 0, removed: 0 });
    } finally {
      again.close();
    }
    const changed = [{ ...list[0]!, port: 9090 }, list[1]!];
    assert.deepEqual(node.setEndpoints(changed), { written: 1, removed: 1 });
    assert.equal(node.endpoints.entries().length, 2);
    assert.throws(
      () => node.setEndpoints([...changed, { vip: V4.vip, vipPort: 80, protocol: 'tcp', backend: V6.pod, port: 80 }]),
      /one family/,
    );
    assert.throws(() => node.setEndpoints([{ ...list[0]!, port: 70000 }]), /0\.\.65535/);
    assert.throws(() => node.setEndpoints([list[0]!, { ...list[0]!, port: 1 }]), /two ports/);
    assert.equal(node.endpoints.entries().length, 2, 'a refused list changes nothing');
    assert.deepEqual(node.setEndpoints([list[2]!]), { written: 1, removed: 2 });
    assert.equal(node.endpoints.entries().length, 1);
    node.setEndpoints(list);
  });
});
