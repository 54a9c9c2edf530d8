/**
 * xdp_lb's next hop with a real fib: in a namespace of its own, a backend
 * reached through another interface is XDP_REDIRECTed there with the
 * neighbour's MAC, one on the ingress link goes out with XDP_TX, one behind
 * a host of its own (via) goes to that host's MAC, and an
 * encapsulated packet larger than the egress MTU is dropped as too_big.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../../src/paths.js';
import { XDP_DROP, XDP_REDIRECT, XDP_TX, bpfUnavailable, ensureBpffs } from '../../lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping fib tests: ${skip}`);

const NS = `ferrytest-fib-${process.pid}`;
const IN_PEER_MAC = '02fe000000a1';
const OUT_PEER_MAC = '02fe000000b1';
/** The in0 neighbour's MAC after it changes (the next-hop cache test). */
const NEW_IN_PEER_MAC = '02fe000000a2';

function sh(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
}
const inNs = (args: string[]) => sh(['nsenter', `--net=/run/netns/${NS}`, '--', ...args]);

describe('xdp_lb next hop through the kernel fib', { skip }, () => {
  let out: {
    in0: number;
    out0: number;
    tooBigDrops: number;
    redirect: { retval: number; dst: string; len: number };
    tooBig: { retval: number };
    tx: { retval: number; dst: string };
    via: { retval: number; dst: string; outerDst: string };
    counters: Record<string, number>;
    cache: { repeatLookups: number; rightAfter: string; later: string; uncachedLookups: number };
  };

  before(() => {
    ensureBpffs();
    sh(['ip', 'netns', 'add', NS]);
    inNs(['ip', 'link', 'set', 'lo', 'up']);
    inNs(['ip', 'link', 'add', 'in0', 'type', 'veth', 'peer', 'name', 'in1', 'address', `${IN_PEER_MAC.match(/../g)!.join(':')}`]);
    inNs([
      'ip',
      'link',
      'add',
      'out0',
      'mtu',
      '1450',
      'type',
      'veth',
      'peer',
      'name',
      'out1',
      'address',
      `${OUT_PEER_MAC.match(/../g)!.join(':')}`,
    ]);
    for (const i of ['in0', 'in1', 'out0', 'out1']) inNs(['ip', 'link', 'set', i, 'up']);
    inNs(['ip', 'addr', 'add', '198.18.1.1/24', 'dev', 'in0']);
    inNs(['ip', 'addr', 'add', '198.18.2.1/24', 'dev', 'out0']);
    inNs(['ip', 'neigh', 'replace', '198.18.2.2', 'lladdr', OUT_PEER_MAC.match(/../g)!.join(':'), 'dev', 'out0', 'nud', 'permanent']);
    inNs(['ip', 'neigh', 'replace', '198.18.1.2', 'lladdr', IN_PEER_MAC.match(/../g)!.join(':'), 'dev', 'in0', 'nud', 'permanent']);
    inNs(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    const child = join(packageRoot(), 'dist', 'test', 'lib', 'fib-child.js');
    const r = spawnSync('nsenter', [`--net=/run/netns/${NS}`, '--', process.execPath, child, `/sys/fs/bpf/${NS}`, NEW_IN_PEER_MAC], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    out = JSON.parse(r.stdout) as typeof out;
  });
  after(() => {
    if (existsSync(`/run/netns/${NS}`)) spawnSync('ip', ['netns', 'del', NS]);
    rmSync(`/sys/fs/bpf/${NS}`, { recursive: true, force: true });
  });

  it('redirects to the interface the route leaves by, with the neighbour MAC', () => {
    assert.equal(out.redirect.retval, XDP_REDIRECT);
    assert.equal(out.redirect.dst, OUT_PEER_MAC);
    assert.ok(out.counters['redirect']! >= 1);
  });

  it('sends with XDP_TX when the route leaves by the ingress interface', () => {
    assert.equal(out.tx.retval, XDP_TX);
    assert.equal(out.tx.dst, IN_PEER_MAC);
    assert.equal(out.counters['fib_fallback'], 0, 'no gateway fallback: the fib answered');
  });

  it("reuses a backend's next hop, sees a neighbour change within the cache's lifetime, asks every time without it", () => {
    assert.equal(out.cache.repeatLookups, 0, 'ten repeats: no fib lookup');
    assert.equal(out.cache.rightAfter, IN_PEER_MAC, 'the cached MAC right after the change');
    assert.equal(out.cache.later, NEW_IN_PEER_MAC, 'the new MAC once the entry expired');
    assert.equal(out.cache.uncachedLookups, 10, 'cache off: one lookup per packet');
  });

  it('reaches a backend behind its host through the host, the outer destination still the backend', () => {
    assert.equal(out.via.retval, XDP_REDIRECT);
    assert.equal(out.via.dst, OUT_PEER_MAC, "the host's MAC: the route and neighbour of via");
    assert.equal(out.via.outerDst, '10.244.7.7');
  });

  it('drops an encapsulated packet larger than the egress MTU, counted as too_big', () => {
    assert.equal(out.tooBig.retval, XDP_DROP);
    assert.equal(out.tooBigDrops, 1);
  });
});
