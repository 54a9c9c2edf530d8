/**
 * Addresses and CIDRs (src/net/addr.ts): the one parser every layer uses.
 */
import assert from 'node:assert/strict';
import { describe, it, test } from 'node:test';
import { dpAddr } from '../../../src/datapath/addr.js';
import {
  canonicalCidr,
  canonicalIp,
  clearHostBits,
  formatIp,
  parseCidr,
  parseIp,
  unmappedIpv4,
  writeCanonicalIpv4,
} from '../../../src/net/addr.js';
import { mulberry32 } from '../../lib/rng.js';

describe('net/addr', () => {
  it('parses IPv4 only as four decimal octets and IPv6 without a zone', () => {
    for (const bad of ['010.0.0.1', '10.1', '10.0.0.256', '0x0a.0.0.1', '1.2.3.4 ', '', 'fe80::1%eth0', '1::2::3', '::g']) {
      assert.equal(typeof parseIp(bad), 'string', bad);
      assert.equal(canonicalIp(bad), null, bad);
    }
    assert.match(parseIp('fe80::1%eth0') as string, /zone index \("%eth0"\)/);
    assert.match(parseIp('10.1') as string, /four decimal octets/);
    assert.equal(parseIp(42), 'must be a string');
  });

  it('gives the canonical text, bytes and range of an address', () => {
    assert.equal(canonicalIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
    assert.equal(canonicalIp('192.0.2.10'), '192.0.2.10');
    const v6 = parseIp('2001:db8::1');
    assert.ok(typeof v6 !== 'string');
    assert.equal(v6.family, 6);
    assert.equal(v6.bytes.toString('hex'), '20010db8000000000000000000000001');
    const v4 = parseIp('127.0.0.1');
    assert.ok(typeof v4 !== 'string');
    assert.deepEqual([v4.family, [...v4.bytes], v4.range], [4, [127, 0, 0, 1], 'loopback']);
    assert.equal(formatIp(4, Buffer.from([192, 0, 2, 1, 9, 9])), '192.0.2.1');
    assert.equal(formatIp(6, v6.bytes), '2001:db8::1');
  });

  it('answers a repeated spelling from the cache with the same frozen record', () => {
    const a = parseIp('2001:db8::42');
    assert.equal(parseIp('2001:db8::42'), a);
    assert.ok(Object.isFrozen(a));
    const long = `${'1'.repeat(100)}.0.0.1`;
    assert.match(parseIp(long) as string, /not an IP address/);
  });

  it('finds the IPv4 address inside an IPv4-mapped one', () => {
    const m = parseIp('::ffff:192.0.2.7');
    assert.ok(typeof m !== 'string');
    assert.equal(unmappedIpv4(m)?.text, '192.0.2.7');
    const plain = parseIp('2001:db8::7');
    assert.ok(typeof plain !== 'string');
    assert.equal(unmappedIpv4(plain), null);
  });

  it('refuses host bits naming the network meant, or clears them when asked', () => {
    assert.equal(parseCidr('10.0.0.1/8'), 'has host bits set; did you mean 10.0.0.0/8?');
    const c = parseCidr('10.0.0.1/8', 'clear');
    assert.ok(typeof c !== 'string');
    assert.deepEqual([c.text, c.prefix, c.family, [...c.network]], ['10.0.0.0/8', 8, 4, [10, 0, 0, 0]]);
    assert.equal(canonicalCidr('2001:DB8::1'), '2001:db8::1/128');
    assert.equal(canonicalCidr('0.0.0.0/0'), '0.0.0.0/0');
    for (const bad of ['10.0.0.0/08', '10.0.0.0/33', '::/129', '10.0.0.0/', 'banana/8', '10.0.0.0/8/8']) {
      assert.match(parseCidr(bad) as string, /not a CIDR/, bad);
    }
    assert.throws(() => canonicalCidr('banana'), TypeError);
  });

  it('clears host bits across byte boundaries', () => {
    const b = Buffer.from('ffffffff', 'hex');
    clearHostBits(b, 13, 32);
    assert.equal(b.toString('hex'), 'fff80000');
  });
});

test('canonicalIp agrees with parseIp on IPv4-like text, canonical or not', () => {
  const rnd = mulberry32(20261207);
  const pieces = ['0', '1', '9', '10', '99', '100', '199', '255', '256', '300', '999', '1000', '01', '00', '001', '', '-1', ' 1', 'a'];
  for (let k = 0; k < 50_000; k++) {
    const octets = Array.from({ length: 2 + rnd(4) }, () => pieces[rnd(pieces.length)]!);
    const text = octets.join(rnd(20) === 0 ? ':' : '.') + (rnd(30) === 0 ? '.' : '');
    const parsed = parseIp(text);
    assert.equal(canonicalIp(text), typeof parsed === 'string' ? null : parsed.text, JSON.stringify(text));
    // The datapath's bytes, written from the text without a parse, are the parsed ones.
    const out = Buffer.alloc(6, 0xee);
    const wrote = writeCanonicalIpv4(text, out, 1);
    assert.equal(wrote, typeof parsed !== 'string' && parsed.family === 4, JSON.stringify(text));
    if (wrote) {
      assert.deepEqual([...out], [0xee, ...(parsed as { bytes: Buffer }).bytes, 0xee], JSON.stringify(text));
      assert.deepEqual(dpAddr(text).bytes, Buffer.concat([(parsed as { bytes: Buffer }).bytes, Buffer.alloc(12)]), JSON.stringify(text));
    }
  }
});
