/**
 * Source NAT in xdp_lb (bpf/lib/snat.h): a VIP with VIP_F_SNAT sends the
 * client's packet on to the backend's address and port from this host's
 * address and a port of the configured range; the backend's reply to that
 * port gets the VIP and the client back. Packets in, packets out,
 * checksums verified; ports are unique per backend and a full range is a
 * counted drop.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { COUNTERS, DROP_REASONS, VIP_F_SNAT, type CounterName, type DropReason } from '../../../src/datapath/abi.js';
import { formatAddr } from '../../../src/datapath/addr.js';
import { LbHarness, XDP_DROP, XDP_PASS, XDP_TX, bpfUnavailable } from '../../lib/harness.js';
import { TCP_ACK, frame, l4ChecksumOk, parseEth, parseIp } from '../../lib/packet.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping source NAT tests: ${skip}`);

const HOST4 = '198.18.0.2';
const HOST6 = '2001:db8::2';
const PORTS = { portMin: 61000, portMax: 61003 };
const V4 = { vip: '198.19.0.10', vipPort: 80, backend: '10.244.1.5', port: 8080, via: '198.18.0.12', client: '203.0.113.7', host: HOST4 };
const V6 = {
  vip: '2001:db8:f::10',
  vipPort: 53,
  backend: 'fd00:244::5',
  port: 5353,
  via: '2001:db8::12',
  client: '2001:db8:100::7',
  host: HOST6,
};

describe('source NAT in xdp_lb', { skip }, () => {
  const pinRoot = `/sys/fs/bpf/ferry-test-snat-${process.pid}`;
  let h: LbHarness;

  before(() => {
    h = new LbHarness(pinRoot);
    h.setConfig({ snat: { src4: HOST4, src6: HOST6, ...PORTS } });
    h.vip({
      id: 0,
      addr: V4.vip,
      port: V4.vipPort,
      proto: 'tcp',
      flags: VIP_F_SNAT,
      backends: [{ id: 1, addr: V4.backend, port: V4.port, via: V4.via }],
    });
    h.vip({
      id: 1,
      addr: V6.vip,
      port: V6.vipPort,
      proto: 'udp',
      flags: VIP_F_SNAT,
      backends: [{ id: 2, addr: V6.backend, port: V6.port, via: V6.via }],
    });
    // A VIP of every port: the backend keeps the client's destination port.
    h.vip({ id: 2, addr: '198.19.0.11', port: 0, proto: 'tcp', flags: VIP_F_SNAT, backends: [{ id: 3, addr: '10.244.1.6', via: V4.via }] });
  });
  after(() => h?.close());

  const count = (c: CounterName) => h.dp.counters.sum(COUNTERS.indexOf(c)).packets;
  const drops = (r: DropReason) => h.dp.drops.sum(DROP_REASONS.indexOf(r)).packets;
  const text = (b: Buffer) => formatAddr(b.length === 4 ? 4 : 6, Buffer.concat([b, Buffer.alloc(16 - b.length)]));
  const ports = (ip: ReturnType<typeof parseIp>) => ({ sport: ip.payload.readUInt16BE(0), dport: ip.payload.readUInt16BE(2) });
  const send = (o: Parameters<typeof frame>[0]) => {
    const r = h.run(frame(o));
    return { retval: r.retval, ip: parseIp(parseEth(r.out).l3), out: r.out };
  };

  for (const [name, c, proto] of [
    ['TCP over IPv4', V4, 'tcp'],
    ['UDP over IPv6', V6, 'udp'],
  ] as const) {
    it(`${name}: to the backend's port from this host, the reply back to the client from the VIP`, () => {
      const s0 = count('snat');
      const fwd = send({ src: c.client, dst: c.vip, proto, sport: 41000, dport: c.vipPort, payload: Buffer.from('hello') });
      assert.equal(fwd.retval, XDP_TX);
      assert.equal(count('snat') - s0, 1n);
      assert.equal(text(fwd.ip.src), c.host, 'from this host');
      assert.equal(text(fwd.ip.dst), c.backend, 'to the backend itself (no tunnel)');
      const { sport, dport } = ports(fwd.ip);
      assert.equal(dport, c.port, "the backend's own port");
      assert.ok(sport >= PORTS.portMin && sport <= PORTS.portMax, `a port of the range: ${sport}`);
      assert.ok(fwd.ip.checksumOk, 'IPv4 header checksum');
      assert.ok(l4ChecksumOk(fwd.ip), 'L4 checksum after the translation');
      assert.equal(fwd.ip.payload.subarray(proto === 'tcp' ? 20 : 8).toString(), 'hello');

      const again = send({ src: c.client, dst: c.vip, proto, sport: 41000, dport: c.vipPort, tcpFlags: TCP_ACK });
      assert.equal(ports(again.ip).sport, sport, 'the flow keeps its port');

      const r0 = count('snat_reply');
      const back = send({
        src: c.backend,
        dst: c.host,
        proto,
        sport: c.port,
        dport: sport,
        tcpFlags: TCP_ACK,
        payload: Buffer.from('world'),
      });
      assert.equal(back.retval, XDP_TX);
      assert.equal(count('snat_reply') - r0, 1n);
      assert.equal(text(back.ip.src), c.vip, 'the reply comes from the VIP');
      assert.equal(text(back.ip.dst), c.client);
      assert.deepEqual(ports(back.ip), { sport: c.vipPort, dport: 41000 });
      assert.ok(back.ip.checksumOk);
      assert.ok(l4ChecksumOk(back.ip), 'L4 checksum after the reverse translation');
      assert.equal(back.ip.payload.subarray(proto === 'tcp' ? 20 : 8).toString(), 'world');
    });
  }

  it('a VIP of every port keeps the destination port', () => {
    const fwd = send({ src: V4.client, dst: '198.19.0.11', proto: 'tcp', sport: 42000, dport: 8443 });
    assert.equal(fwd.retval, XDP_TX);
    assert.equal(text(fwd.ip.dst), '10.244.1.6');
    assert.equal(ports(fwd.ip).dport, 8443);
    assert.ok(l4ChecksumOk(fwd.ip));
  });

  it('leaves alone what it did not translate: no such connection, a port outside the range, another address', () => {
    for (const o of [
      { src: V4.backend, dst: HOST4, sport: 9999, dport: PORTS.portMin },
      { src: V4.backend, dst: HOST4, sport: V4.port, dport: 22 },
      { src: '10.244.9.9', dst: '198.18.0.3', sport: V4.port, dport: PORTS.portMin },
    ]) {
      const data = frame({ ...o, proto: 'tcp', tcpFlags: TCP_ACK });
      const r = h.run(data);
      assert.equal(r.retval, XDP_PASS, JSON.stringify(o));
      assert.deepEqual(r.out, data, JSON.stringify(o));
    }
  });

  it('ports are unique per backend; a full range drops new flows, counted, and the others keep working', () => {
    const taken = new Set<number>();
    const d0 = drops('no_snat_port');
    const results: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = send({ src: V4.client, dst: V4.vip, proto: 'tcp', sport: 43000 + i, dport: V4.vipPort });
      results.push(r.retval);
      if (r.retval === XDP_TX) taken.add(ports(r.ip).sport);
    }
    // The first test's flow holds one of the four ports already.
    assert.equal(taken.size, 3, `three more ports: ${[...taken].join(',')}`);
    assert.deepEqual(results.filter((x) => x === XDP_DROP).length, 3);
    assert.equal(drops('no_snat_port') - d0, 3n);
    const old = send({ src: V4.client, dst: V4.vip, proto: 'tcp', sport: 43000, dport: V4.vipPort, tcpFlags: TCP_ACK });
    assert.equal(old.retval, XDP_TX, 'a flow with a port keeps it');
  });

  it('without an address of the family nothing is translated: counted drop', () => {
    h.setConfig({ snat: { src4: null, src6: HOST6, ...PORTS } });
    try {
      const d0 = drops('no_snat_source');
      const r = send({ src: V4.client, dst: V4.vip, proto: 'tcp', sport: 44000, dport: V4.vipPort });
      assert.equal(r.retval, XDP_DROP);
      assert.equal(drops('no_snat_source') - d0, 1n);
    } finally {
      h.setConfig({ snat: { src4: HOST4, src6: HOST6, ...PORTS } });
    }
  });
});
