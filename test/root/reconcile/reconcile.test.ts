/**
 * The planner (pure) and the reconciler against real maps: states are
 * applied into a private xdp_lb pin directory, then the maps are read back
 * and packets pushed through BPF_PROG_TEST_RUN.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  Backend,
  BACKEND_ACTIVE,
  BACKEND_DOWN,
  BACKEND_DRAINING,
  FERRY_AF_INET,
  FERRY_AF_INET6,
  FERRY_BACKEND_NONE,
  LbConfig,
  POLICY_ALLOW,
  POLICY_DENY,
  VIP_ADDR_F_ECHO,
  VIP_F_ALLOWLIST,
  VIP_F_POLICY,
  VIP_F_SRC_AFFINITY,
  type FlowKeyV,
} from '../../../src/datapath/abi.js';
import { formatAddr, mappedBytes, dpAddr, dpCidr } from '../../../src/datapath/addr.js';
import { flowHash } from '../../../src/datapath/hash.js';
import { LbDatapath, type LbSizes } from '../../../src/datapath/lb.js';
import type { NativeAddon } from '../../../src/datapath/native.js';
import { encodeConfig, type ConfigProgram } from '../../../src/datapath/program.js';
import { buildMaglevTable, chooseMaglevM } from '../../../src/maglev/index.js';
import type { DpState, DpVip } from '../../../src/model/dpstate.js';
import { ReconcileError } from '../../../src/reconcile/desired.js';
import { plan } from '../../../src/reconcile/plan.js';
import { Reconciler, type ApplyReport } from '../../../src/reconcile/reconciler.js';
import type { StoreSnapshot, StoredBackend, StoredVip } from '../../../src/store/types.js';
import { GW_MAC, SEED, SRC4, SRC6, XDP_DROP, XDP_TX, bpfUnavailable, ensureBpffs, flowOf } from '../../lib/harness.js';
import { TCP_ACK, TCP_SYN, frame, parseEth, parseIp } from '../../lib/packet.js';
import { beRec, policyRec, snapshot, tombstone, vipRec } from '../../lib/snapshot.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping reconciler kernel tests: ${skip}`);

const CONFIG: ConfigProgram = { seed: SEED, src4: SRC4, src6: SRC6, gwMac: GW_MAC, skipFib: true };
const CLIENT4 = '198.18.100.1';
const CLIENT6 = '2001:db8:100::1';

// ---- plan() ------------------------------------------------------------------

describe('plan', () => {
  const vipOf = (s: DpState, name: string): DpVip => {
    const v = s.vips.find((x) => x.name === name);
    assert.ok(v, `VIP ${name} planned`);
    return v;
  };

  it('maps ids, addresses, ports and protocols, sorted by id', () => {
    const s = plan(
      snapshot({
        vips: [vipRec('b', 7, '2001:DB8::0:10', { port: 443 }), vipRec('a', 2, '198.18.0.1', { port: 0, protocol: 'udp' })],
        backends: [beRec('a', '198.18.1.2', 9, { dp_gen: 4 }), beRec('a', '198.18.1.1', 3), beRec('b', '2001:DB8:1::1', 5)],
      }),
    );
    assert.deepEqual(
      s.vips.map((v) => [v.id, v.name, v.address, v.port, v.protocol]),
      [
        [2, 'a', '198.18.0.1', 0, 'udp'],
        [7, 'b', '2001:db8::10', 443, 'tcp'],
      ],
    );
    assert.deepEqual(vipOf(s, 'a').backends, [
      { id: 3, gen: 1, address: '198.18.1.1', weight: 100, state: 'active' },
      { id: 9, gen: 4, address: '198.18.1.2', weight: 100, state: 'active' },
    ]);
    assert.equal(vipOf(s, 'b').backends[0]!.address, '2001:db8:1::1', 'backend addresses canonical (Maglev keys)');
    assert.deepEqual(s.tombstones, []);
  });

  it("merges the VIP's own rules with its policies', canonical, of its family, without duplicates", () => {
    const s = plan(
      snapshot({
        vips: [
          vipRec('v', 1, '198.18.0.1', {
            allow: ['10.0.0.0/8', '10.1.2.3/8', '192.0.2.7'],
            deny: ['2001:DB8:BAD::/48'],
            policies: ['office', 'block'],
          }),
          vipRec('v6', 2, '2001:db8::1', { policies: ['block', 'mixed'] }),
        ],
        policies: [
          policyRec('office', ['10.0.0.0/8', '198.51.100.0/24'], []),
          policyRec('block', [], ['2001:db8:bad::1/48', '203.0.113.0/25']),
          policyRec('unused', ['0.0.0.0/0'], []),
          policyRec('mixed', ['0.0.0.0/0'], ['::/0']),
        ],
      }),
    );
    const v = vipOf(s, 'v');
    assert.deepEqual(v.allow, ['10.0.0.0/8', '192.0.2.7/32', '198.51.100.0/24']);
    assert.deepEqual(v.deny, ['203.0.113.0/25'], 'IPv6 rules never reach an IPv4 VIP (::/0 would match ::ffff:a.b.c.d)');
    assert.equal(v.flags, VIP_F_POLICY | VIP_F_ALLOWLIST);
    const v6 = vipOf(s, 'v6');
    assert.deepEqual(v6.allow, [], 'an IPv4 allow rule does not turn an IPv6 VIP into an allow-list');
    assert.deepEqual(v6.deny, ['2001:db8:bad::/48', '::/0']);
    assert.equal(v6.flags, VIP_F_POLICY);
  });

  it('sets VIP_F_POLICY for any rule, VIP_F_ALLOWLIST for an allow rule, VIP_F_SRC_AFFINITY from the VIP', () => {
    const s = plan(
      snapshot({
        vips: [
          vipRec('none', 1, '198.18.0.1'),
          vipRec('deny', 2, '198.18.0.2', { deny: ['10.0.0.0/8'] }),
          vipRec('allow', 3, '198.18.0.3', { allow: ['10.0.0.0/8'] }),
          vipRec('viapolicy', 4, '198.18.0.4', { policies: ['p'] }),
          vipRec('sticky', 5, '198.18.0.5', { source_affinity: true }),
        ],
        policies: [policyRec('p', [], ['10.0.0.0/8'])],
      }),
    );
    assert.equal(vipOf(s, 'none').flags, 0);
    assert.equal(vipOf(s, 'deny').flags, VIP_F_POLICY);
    assert.equal(vipOf(s, 'allow').flags, VIP_F_POLICY | VIP_F_ALLOWLIST);
    assert.equal(vipOf(s, 'viapolicy').flags, VIP_F_POLICY);
    assert.equal(vipOf(s, 'sticky').flags, VIP_F_SRC_AFFINITY);
  });

  it('refuses a VIP naming a policy that does not exist', () => {
    assert.throws(() => plan(snapshot({ vips: [vipRec('v', 1, '198.18.0.1', { policies: ['ghost'] })] })), /ghost/);
  });

  it('takes maglev_m when set, else chooseMaglevM of the backends that take new flows', () => {
    const bes = (vip: string, n: number, base: number, o: Partial<StoredBackend> = {}) =>
      Array.from({ length: n }, (_, i) => beRec(vip, `198.18.${base}.${i + 1}`, base * 100 + i, o));
    const down = new Set(['198.18.5.1', '198.18.5.2']);
    const s = plan(
      snapshot({
        vips: [
          vipRec('fixed', 1, '198.18.0.1', { maglev_m: 251 }),
          vipRec('ten', 2, '198.18.0.2'),
          vipRec('eleven', 3, '198.18.0.3'),
          vipRec('mixed', 4, '198.18.0.4'),
          vipRec('health', 5, '198.18.0.5'),
          vipRec('empty', 6, '198.18.0.6'),
        ],
        backends: [
          ...bes('fixed', 20, 1),
          ...bes('ten', 10, 2),
          ...bes('eleven', 11, 3),
          // 10 that take new flows, plus one draining, one disabled and one of weight 0.
          ...bes('mixed', 10, 4),
          beRec('mixed', '198.18.4.100', 499, { state: 'draining' }),
          beRec('mixed', '198.18.4.101', 498, { state: 'disabled' }),
          beRec('mixed', '198.18.4.102', 497, { weight: 0 }),
          ...bes('health', 11, 5),
        ],
      }),
      { health: (vip, addr) => (vip === 'health' && down.has(addr) ? 'down' : undefined) },
    );
    assert.equal(vipOf(s, 'fixed').m, 251);
    assert.equal(vipOf(s, 'ten').m, chooseMaglevM(10));
    assert.equal(vipOf(s, 'ten').m, 1021);
    assert.equal(vipOf(s, 'eleven').m, chooseMaglevM(11));
    assert.equal(vipOf(s, 'eleven').m, 2039);
    assert.equal(vipOf(s, 'mixed').m, 1021, 'draining, disabled and weight-0 backends are not counted');
    // Health is transient: it must not resize the table (a new M moves every slot).
    assert.equal(vipOf(s, 'health').m, 2039, 'health-down backends still count towards M');
    assert.equal(vipOf(s, 'health').backends.filter((b) => b.state === 'down').length, 2);
    assert.equal(vipOf(s, 'empty').m, 1021);
  });

  it('turns a rate limit into GCRA interval and tolerance', () => {
    const s = plan(
      snapshot({
        vips: [
          vipRec('none', 1, '198.18.0.1'),
          vipRec('k', 2, '198.18.0.2', { rate_limit: { new_flows_per_sec: 1000, burst: 50 } }),
          vipRec('third', 3, '198.18.0.3', { rate_limit: { new_flows_per_sec: 3, burst: 2 } }),
          vipRec('noburst', 4, '198.18.0.4', { rate_limit: { new_flows_per_sec: 10, burst: 0 } }),
          vipRec('huge', 5, '198.18.0.5', { rate_limit: { new_flows_per_sec: 5e9, burst: 1 } }),
        ],
      }),
    );
    const rl = (n: string) => [vipOf(s, n).rlIntervalNs, vipOf(s, n).rlToleranceNs];
    assert.deepEqual(rl('none'), [0n, 0n]);
    assert.deepEqual(rl('k'), [1_000_000n, 50_000_000n]);
    assert.deepEqual(rl('third'), [333_333_333n, 666_666_666n]);
    assert.deepEqual(rl('noburst'), [100_000_000n, 0n]);
    assert.deepEqual(rl('huge'), [1n, 1n], 'never 0, which would mean unlimited');
  });

  it('derives backend states from the configured state and health, keeping weights', () => {
    const asked: string[] = [];
    const s = plan(
      snapshot({
        vips: [vipRec('v', 1, '198.18.0.1')],
        backends: [
          beRec('v', '198.18.1.1', 1),
          beRec('v', '198.18.1.2', 2, { state: 'draining', weight: 7 }),
          beRec('v', '198.18.1.3', 3, { state: 'disabled' }),
          beRec('v', '198.18.1.4', 4),
          beRec('v', '198.18.1.5', 5, { weight: 0 }),
          beRec('v', '198.18.1.6', 6),
          beRec('v', '198.18.1.7', 7, { state: 'draining' }),
        ],
      }),
      {
        health: (vip, addr) => {
          asked.push(`${vip}/${addr}`);
          if (addr === '198.18.1.4' || addr === '198.18.1.7') return 'down';
          return addr === '198.18.1.6' ? 'up' : undefined;
        },
      },
    );
    assert.deepEqual(
      vipOf(s, 'v').backends.map((b) => [b.address, b.state, b.weight]),
      [
        ['198.18.1.1', 'active', 100],
        ['198.18.1.2', 'draining', 7],
        ['198.18.1.3', 'down', 100],
        ['198.18.1.4', 'down', 100],
        ['198.18.1.5', 'active', 0],
        ['198.18.1.6', 'active', 100],
        ['198.18.1.7', 'draining', 100],
      ],
    );
    assert.ok(asked.includes('v/198.18.1.4'), 'health is asked by VIP name and address');
  });

  it('turns tombstones into draining backends of their VIP', () => {
    const s = plan(
      snapshot({
        vips: [vipRec('v', 1, '198.18.0.1'), vipRec('w', 2, '198.18.0.2')],
        backends: [beRec('v', '198.18.1.1', 10)],
        tombstones: [
          tombstone(1, '198.18.1.9', 12, 3),
          tombstone(2, '198.18.2.9', 11),
          tombstone(9, '198.18.9.9', 13), // its VIP is gone: unreachable
          tombstone(1, '198.18.1.8', 10), // its id was given to a live backend
        ],
      }),
    );
    assert.deepEqual(s.tombstones, [
      { id: 11, gen: 1, address: '198.18.2.9', weight: 0, state: 'draining', vipId: 2 },
      { id: 12, gen: 3, address: '198.18.1.9', weight: 0, state: 'draining', vipId: 1 },
    ]);
  });

  it('is pure: same output for the same input, input untouched', () => {
    const snap = snapshot({
      vips: [vipRec('v', 1, '198.18.0.1', { allow: ['10.0.0.0/8'], policies: ['p'], rate_limit: { new_flows_per_sec: 5, burst: 1 } })],
      backends: [beRec('v', '198.18.1.2', 2), beRec('v', '198.18.1.1', 1)],
      policies: [policyRec('p', [], ['10.9.0.0/16'])],
      tombstones: [tombstone(1, '198.18.1.3', 3)],
    });
    const copy = structuredClone(snap);
    const a = plan(snap);
    const b = plan(snap);
    assert.deepEqual(a, b);
    assert.deepEqual(snap, copy);
  });
});

// ---- the reconciler against real maps --------------------------------------

const SIZES: Partial<LbSizes> = { ctSize: 4096, maxBackends: 1024, maxVips: 64, maxVipAddrs: 64, maxPolicyRules: 256 };

/** A private datapath and its pin directory. */
function openDp(name: string, sizes: Partial<LbSizes>, fresh = true): LbDatapath {
  ensureBpffs();
  const pinRoot = join('/sys/fs/bpf', `ferry-test-${name}-${process.pid}`);
  if (fresh) rmSync(pinRoot, { recursive: true, force: true });
  return LbDatapath.open({ pinRoot, sizes });
}

function closeDp(dp: LbDatapath | undefined): void {
  if (!dp) return;
  dp.close();
  rmSync(dp.pinRoot, { recursive: true, force: true });
}

interface Sent {
  retval: number;
  /** The backend address the packet was encapsulated to. */
  to?: string;
}

/** One TCP (or UDP) packet through xdp_lb. */
function send(dp: LbDatapath, src: string, dst: string, sport: number, dport: number, flags = TCP_SYN, proto: 'tcp' | 'udp' = 'tcp'): Sent {
  const data = frame({ src, dst, proto, sport, dport, tcpFlags: flags, payload: Buffer.from('x') });
  const r = dp.nat.progTestRun(dp.progFd, { data, dataOutSize: data.length + 256 });
  if (r.retval !== XDP_TX) return { retval: r.retval };
  const outer = parseIp(parseEth(r.data).l3);
  return { retval: r.retval, to: formatAddr(outer.version === 4 ? FERRY_AF_INET : FERRY_AF_INET6, outer.dst) };
}

/** The table the maps should hold for a planned VIP. */
function expectedTable(v: DpVip, seed = SEED): Uint32Array {
  const live = v.backends.filter((b) => b.state === 'active').map((b) => ({ id: b.id, key: b.address, weight: b.weight }));
  return buildMaglevTable(live, v.m, seed);
}

/** The backend address a new flow should reach, from the installed table. */
function expectedBackend(dp: LbDatapath, v: DpVip, flow: FlowKeyV): string | undefined {
  const table = dp.getMaglevTable(v.id)!;
  const id = table[flowHash(flow, SEED, (v.flags & VIP_F_SRC_AFFINITY) !== 0) % table.length]!;
  return [...v.backends].find((b) => b.id === id)?.address;
}

/** Source ports of new flows that Maglev sends to `address`. */
function portsTo(dp: LbDatapath, v: DpVip, address: string, n: number, from = 20000): number[] {
  const out: number[] = [];
  for (let sport = from; out.length < n && sport < from + 20000; sport++) {
    if (expectedBackend(dp, v, flowOf(CLIENT4, v.address, sport, v.port, 6)) === address) out.push(sport);
  }
  assert.equal(out.length, n, `found ${n} flows to ${address}`);
  return out;
}

const vipIn = (s: DpState, name: string): DpVip => {
  const v = s.vips.find((x) => x.name === name);
  assert.ok(v, `VIP ${name}`);
  return v;
};

/** Every map's raw contents, to check that something changed nothing. */
function dumpAll(dp: LbDatapath): string {
  const maps = [
    dp.vipIndex.indexFd,
    dp.vipIndex.overflowFd,
    dp.addrIndex.indexFd,
    dp.addrIndex.overflowFd,
    dp.backends.fd,
    dp.policy.fd,
    dp.config.fd,
  ];
  const parts = maps.map((fd) => {
    const { keys, values } = dp.nat.mapDump(fd);
    return keys
      .map((k, i) => `${k.toString('hex')}=${values[i]!.toString('hex')}`)
      .sort()
      .join(',');
  });
  for (let id = 0; id < dp.sizes.maxVips; id++) {
    const t = dp.getMaglevTable(id);
    if (t) parts.push(`${id}:${Buffer.from(t.buffer).toString('hex')}`);
  }
  return parts.join('|');
}

/** The base state most kernel tests start from. */
function baseSnapshot(): StoreSnapshot {
  return snapshot({
    vips: [
      vipRec('web', 0, '198.18.0.10'),
      vipRec('web6', 1, '2001:db8::10', { port: 443, deny: ['2001:db8:bad::/48'], source_affinity: true }),
      vipRec('dns', 2, '198.18.0.10', {
        port: 53,
        protocol: 'udp',
        policies: ['office'],
        rate_limit: { new_flows_per_sec: 100, burst: 10 },
      }),
      vipRec('empty', 3, '198.18.0.11', { port: 0 }),
    ],
    backends: [
      beRec('web', '198.18.1.1', 0),
      beRec('web', '198.18.1.2', 1, { weight: 200 }),
      beRec('web', '198.18.1.3', 2),
      beRec('web6', '2001:db8:1::1', 3),
      beRec('web6', '2001:db8:1::2', 4),
      beRec('dns', '198.18.1.5', 5),
    ],
    policies: [policyRec('office', ['198.18.200.0/24'])],
  });
}

describe('Reconciler', { skip }, () => {
  let dp: LbDatapath;
  let rec: Reconciler;

  before(() => {
    dp = openDp('rec', SIZES);
    rec = new Reconciler(dp, CONFIG);
  });
  after(() => closeDp(dp));

  it('writes VIPs, addresses, backends, tables, policy rules and config exactly', () => {
    const state = plan(baseSnapshot());
    const r = rec.apply(state);
    assert.equal(r.full, true, 'a fresh instance compares in full');
    assert.ok(r.changes > 0);
    assert.deepEqual(r.tablesWritten.sort(), [0, 1, 2, 3]);

    // ferry_config
    assert.deepEqual(dp.config.get(0), LbConfig.decode(LbConfig.encode(encodeConfig(CONFIG, dp.sizes))));
    // ferry_vips
    const vips = dp.vipIndex
      .entries()
      .map(([k, v]) => [formatAddr(k.family, k.addr), k.port, k.proto, v.vip_id, v.flags, v.rl_interval_ns, v.rl_tolerance_ns]);
    assert.deepEqual(
      vips.sort((a, b) => Number(a[3]) - Number(b[3])),
      [
        ['198.18.0.10', 80, 6, 0, 0, 0n, 0n],
        ['2001:db8::10', 443, 6, 1, VIP_F_POLICY | VIP_F_SRC_AFFINITY, 0n, 0n],
        ['198.18.0.10', 53, 17, 2, VIP_F_POLICY | VIP_F_ALLOWLIST, 10_000_000n, 100_000_000n],
        ['198.18.0.11', 0, 6, 3, 0, 0n, 0n],
      ],
    );
    // ferry_vip_addrs: one entry per distinct address
    const addrs = dp.addrIndex
      .entries()
      .map(([k, v]) => `${formatAddr(k.family, k.addr)}=${v.flags}`)
      .sort();
    assert.deepEqual(addrs, [`198.18.0.10=${VIP_ADDR_F_ECHO}`, `198.18.0.11=${VIP_ADDR_F_ECHO}`, `2001:db8::10=${VIP_ADDR_F_ECHO}`]);
    // ferry_backends
    const want = [
      ['198.18.1.1', 0],
      ['198.18.1.2', 0],
      ['198.18.1.3', 0],
      ['2001:db8:1::1', 1],
      ['2001:db8:1::2', 1],
      ['198.18.1.5', 2],
    ] as const;
    want.forEach(([addr, vipId], id) => {
      const b = dp.backends.get(id);
      assert.deepEqual([formatAddr(b.family, b.addr), b.state, b.vip_id, b.gen], [addr, BACKEND_ACTIVE, vipId, 1], `backend ${id}`);
    });
    assert.ok(Backend.encode(dp.backends.get(6)).equals(Buffer.alloc(Backend.size)), 'unused ids stay zero');
    // ferry_maglev
    for (const v of state.vips) assert.deepEqual(dp.getMaglevTable(v.id), expectedTable(v), `table of ${v.name}`);
    const empty = dp.getMaglevTable(3)!;
    assert.equal(empty.length, 1021);
    assert.ok(
      empty.every((x) => x === FERRY_BACKEND_NONE),
      'a VIP without backends drops',
    );
    // ferry_policy
    const rules = dp.policy
      .entries()
      .map(([k, v]) => `${k.vip_id}/${k.prefixlen}/${k.addr.toString('hex')}=${v.action}`)
      .sort();
    const rule = (vipId: number, cidr: string, action: number) => {
      const c = dpCidr(cidr);
      const bits = c.addr.family === FERRY_AF_INET ? 96 + c.prefix : c.prefix;
      return `${vipId}/${32 + bits}/${mappedBytes(c.addr).toString('hex')}=${action}`;
    };
    assert.deepEqual(rules, [rule(1, '2001:db8:bad::/48', POLICY_DENY), rule(2, '198.18.200.0/24', POLICY_ALLOW)].sort());
    assert.deepEqual(rec.verify(state), []);
  });

  it('sends packets where the plan says', () => {
    const state = plan(baseSnapshot());
    rec.apply(state);
    const web = vipIn(state, 'web');
    const seen = new Set<string>();
    for (let sport = 1000; sport < 1040; sport++) {
      const got = send(dp, CLIENT4, web.address, sport, 80);
      assert.equal(got.retval, XDP_TX);
      assert.equal(got.to, expectedBackend(dp, web, flowOf(CLIENT4, web.address, sport, 80, 6)));
      seen.add(got.to!);
    }
    assert.equal(seen.size, 3);
    // Source affinity: every connection of a client on one backend.
    const web6 = vipIn(state, 'web6');
    const first = send(dp, CLIENT6, web6.address, 1000, 443).to;
    assert.ok(first);
    for (let sport = 1001; sport < 1010; sport++) assert.equal(send(dp, CLIENT6, web6.address, sport, 443).to, first);
    assert.equal(send(dp, '2001:db8:bad::1', web6.address, 1000, 443).retval, XDP_DROP, 'denied prefix');
    // dns is allow-listed through policy "office".
    assert.equal(send(dp, '198.18.200.5', '198.18.0.10', 1000, 53, 0, 'udp').to, '198.18.1.5');
    assert.equal(send(dp, '198.18.201.5', '198.18.0.10', 1000, 53, 0, 'udp').retval, XDP_DROP, 'not allowed');
    // empty has no backend: dropped and counted.
    const drops = dp.dropCounts().no_backend.packets;
    assert.equal(send(dp, CLIENT4, '198.18.0.11', 1000, 8080).retval, XDP_DROP);
    assert.equal(dp.dropCounts().no_backend.packets - drops, 1n);
  });

  it('makes no change when applying the same state again, nor after a restart', () => {
    const state = plan(baseSnapshot());
    rec.apply(state);
    const r = rec.apply(state);
    assert.deepEqual([r.changes, r.full, r.tablesWritten], [0, false, []]);
    const restarted = new Reconciler(dp, CONFIG);
    const r2 = restarted.apply(state);
    assert.deepEqual([r2.changes, r2.full, r2.tablesWritten], [0, true, []]);
    rec.forget();
    const r3 = rec.apply(state);
    assert.deepEqual([r3.changes, r3.full], [0, true]);
  });

  it('rewrites only the changed VIP for a one-backend change', () => {
    const snap = baseSnapshot();
    rec.apply(plan(snap));
    const before = new Map([1, 2, 3].map((id) => [id, dp.getMaglevTable(id)]));
    // A weight change: only the table of web.
    snap.backends[0]!.weight = 50;
    let r = rec.apply(plan(snap));
    assert.deepEqual([r.tablesWritten, r.changes], [[0], 1]);
    // A new backend: its entry, its zeroed counters, the table of web.
    snap.backends.push(beRec('web', '198.18.1.4', 6));
    const state = plan(snap);
    r = rec.apply(state);
    assert.deepEqual([r.tablesWritten, r.changes, r.statsReset], [[0], 3, 1]);
    assert.deepEqual(dp.getMaglevTable(0), expectedTable(vipIn(state, 'web')));
    assert.ok(dp.getMaglevTable(0)!.includes(6));
    for (const [id, t] of before) assert.deepEqual(dp.getMaglevTable(id), t, `table ${id} untouched`);
    assert.deepEqual(rec.verify(state), []);
  });

  it('removes a VIP: its entry, table, rules and address when unused, and frees its backends', () => {
    const snap = baseSnapshot();
    rec.apply(plan(snap));
    // Drop dns (shares 198.18.0.10 with web).
    const noDns = snapshot({
      ...snap,
      vips: snap.vips.filter((v) => v.name !== 'dns'),
      backends: snap.backends.filter((b) => b.vip !== 'dns'),
    });
    let state = plan(noDns);
    rec.apply(state);
    assert.equal(dp.vipIndex.entries().length, 3);
    assert.equal(dp.getMaglevTable(2), undefined, 'table removed');
    assert.ok(Backend.encode(dp.backends.get(5)).equals(Buffer.alloc(Backend.size)), 'backend 5 freed (zero)');
    assert.equal(dp.policy.entries().length, 1, 'the allow rule of dns removed');
    assert.equal(dp.addrIndex.entries().length, 3, 'address still used by web');
    assert.equal(send(dp, '198.18.200.5', '198.18.0.10', 1000, 53, 0, 'udp').retval, 2 /* XDP_PASS */);
    assert.deepEqual(rec.verify(state), []);
    // Drop web as well: the address goes.
    const noWeb = snapshot({
      ...noDns,
      vips: noDns.vips.filter((v) => v.name !== 'web'),
      backends: noDns.backends.filter((b) => b.vip !== 'web'),
    });
    state = plan(noWeb);
    rec.apply(state);
    assert.deepEqual(
      dp.addrIndex
        .entries()
        .map(([k]) => formatAddr(k.family, k.addr))
        .sort(),
      ['198.18.0.11', '2001:db8::10'],
    );
    for (const id of [0, 1, 2]) assert.equal(dp.backends.get(id).state, 0, `backend ${id} free`);
    assert.deepEqual(rec.verify(state), []);
  });

  /** A VIP with four backends for the flow-level tests. */
  const flowSnap = (o: { backends?: (b: StoredBackend[]) => StoredBackend[]; vip?: Partial<StoredVip> } = {}) => {
    const backends = [1, 2, 3, 4].map((i) => beRec('t', `198.18.2.${i}`, 10 + i));
    return snapshot({ vips: [vipRec('t', 5, '198.18.0.20', o.vip)], backends: o.backends ? o.backends(backends) : backends });
  };

  it('keeps a deleted backend draining through its tombstone, then frees it', () => {
    let state = plan(flowSnap());
    rec.apply(state);
    const v = vipIn(state, 't');
    const gone = '198.18.2.1';
    const [est, fresh] = [portsTo(dp, v, gone, 3), portsTo(dp, v, gone, 3, 30000)];
    for (const p of est) assert.equal(send(dp, CLIENT4, v.address, p, 80).to, gone, 'established on the backend');
    // Deleted: a tombstone keeps it draining.
    const snap = flowSnap({ backends: (b) => b.filter((x) => x.address !== gone) });
    snap.tombstones.push(tombstone(5, gone, 11));
    state = plan(snap);
    const r = rec.apply(state);
    assert.deepEqual(r.tablesWritten, [5]);
    assert.equal(dp.backends.get(11).state, BACKEND_DRAINING);
    assert.ok(!dp.getMaglevTable(5)!.includes(11), 'out of the table');
    for (const p of est) assert.equal(send(dp, CLIENT4, v.address, p, 80, TCP_ACK).to, gone, 'existing flow drains there');
    for (const p of fresh) assert.notEqual(send(dp, CLIENT4, v.address, p, 80).to, gone, 'new flows go elsewhere');
    assert.deepEqual(rec.verify(state), []);
    // Expired: the id is freed and its flows re-chosen.
    state = plan(flowSnap({ backends: (b) => b.filter((x) => x.address !== gone) }));
    rec.apply(state);
    assert.equal(dp.backends.get(11).state, 0);
    for (const p of est) assert.notEqual(send(dp, CLIENT4, v.address, p, 80, TCP_ACK).to, gone);
    assert.deepEqual(rec.verify(state), []);
  });

  it('weight 0: no new flows, existing flows stay', () => {
    let state = plan(flowSnap());
    rec.apply(state);
    const v = vipIn(state, 't');
    const target = '198.18.2.2';
    const est = portsTo(dp, v, target, 3);
    for (const p of est) send(dp, CLIENT4, v.address, p, 80);
    state = plan(flowSnap({ backends: (b) => b.map((x) => (x.address === target ? { ...x, weight: 0 } : x)) }));
    const r = rec.apply(state);
    assert.deepEqual([r.tablesWritten, r.changes], [[5], 1], 'only the table changes');
    assert.equal(dp.backends.get(12).state, BACKEND_ACTIVE);
    assert.ok(!dp.getMaglevTable(5)!.includes(12));
    for (const p of est) assert.equal(send(dp, CLIENT4, v.address, p, 80, TCP_ACK).to, target);
    for (let p = 40000; p < 40050; p++) assert.notEqual(send(dp, CLIENT4, v.address, p, 80).to, target);
  });

  it('disabled and health-down backends go down: their flows are re-chosen', () => {
    let state = plan(flowSnap());
    rec.apply(state);
    const v = vipIn(state, 't');
    const [disabled, sick] = ['198.18.2.3', '198.18.2.4'];
    const estD = portsTo(dp, v, disabled, 3);
    const estS = portsTo(dp, v, sick, 3);
    for (const p of [...estD, ...estS]) send(dp, CLIENT4, v.address, p, 80);
    const snap = flowSnap({ backends: (b) => b.map((x) => (x.address === disabled ? { ...x, state: 'disabled' as const } : x)) });
    state = plan(snap, { health: (_vip, addr) => (addr === sick ? 'down' : 'up') });
    const r = rec.apply(state);
    assert.deepEqual(r.tablesWritten, [5]);
    assert.equal(dp.backends.get(13).state, BACKEND_DOWN);
    assert.equal(dp.backends.get(14).state, BACKEND_DOWN);
    const table = dp.getMaglevTable(5)!;
    assert.ok(!table.includes(13) && !table.includes(14));
    assert.deepEqual(table, expectedTable(vipIn(state, 't')));
    for (const p of estD) assert.ok(['198.18.2.1', '198.18.2.2'].includes(send(dp, CLIENT4, v.address, p, 80, TCP_ACK).to!));
    for (const p of estS) assert.ok(['198.18.2.1', '198.18.2.2'].includes(send(dp, CLIENT4, v.address, p, 80, TCP_ACK).to!));
    // Healthy again: back in the table.
    state = plan(flowSnap());
    rec.apply(state);
    assert.equal(dp.backends.get(14).state, BACKEND_ACTIVE);
    assert.ok(dp.getMaglevTable(5)!.includes(14));
    assert.deepEqual(rec.verify(state), []);
  });

  it('zeroes the counters of a backend id given a new generation, and of a VIP id given to another VIP', () => {
    let state = plan(flowSnap());
    rec.apply(state);
    const v = vipIn(state, 't');
    for (let p = 1; p < 50; p++) send(dp, CLIENT4, v.address, p, 80);
    assert.ok(dp.backendStats.sum(11).packets > 0n);
    const vipPackets = dp.vipStats.sum(5).packets;
    assert.ok(vipPackets > 0n);
    // A state change alone keeps counters.
    state = plan(flowSnap({ backends: (b) => b.map((x) => (x.dp_id === 12 ? { ...x, state: 'draining' as const } : x)) }));
    let r = rec.apply(state);
    assert.equal(r.statsReset, 0);
    assert.ok(dp.backendStats.sum(12).packets > 0n, 'counters of a draining backend kept');
    // Id 11 reallocated to another address with generation 2.
    state = plan(flowSnap({ backends: (b) => b.map((x) => (x.dp_id === 11 ? { ...x, address: '198.18.2.99', dp_gen: 2 } : x)) }));
    r = rec.apply(state);
    assert.equal(r.statsReset, 1);
    assert.deepEqual(dp.backendStats.sum(11), { packets: 0n, bytes: 0n, new_flows: 0n });
    assert.deepEqual([dp.backends.get(11).gen, formatAddr(4, dp.backends.get(11).addr)], [2, '198.18.2.99']);
    assert.ok(dp.backendStats.sum(13).packets > 0n, 'other backends keep theirs');
    assert.equal(dp.vipStats.sum(5).packets, vipPackets, 'the VIP keeps its counters');
    // VIP id 5 given to another VIP (the old one deleted in the same change).
    const other = snapshot({ vips: [vipRec('other', 5, '198.18.0.21')], backends: [beRec('other', '198.18.3.1', 20)] });
    state = plan(other);
    r = rec.apply(state);
    assert.equal(dp.vipStats.sum(5).packets, 0n, 'VIP counters zeroed for the new owner');
    assert.equal(send(dp, CLIENT4, '198.18.0.20', 1, 80).retval, 2 /* XDP_PASS: old address gone */);
    assert.equal(send(dp, CLIENT4, '198.18.0.21', 1, 80).to, '198.18.3.1');
    assert.deepEqual(rec.verify(state), []);
  });

  it('applies allow-lists and deny rules from the VIP and its policies, and lifts them', () => {
    const snapWith = (policies: string[]) =>
      snapshot({
        vips: [vipRec('p', 6, '198.18.0.30', { deny: ['198.18.200.66'], policies })],
        backends: [beRec('p', '198.18.4.1', 30)],
        policies: [policyRec('office', ['198.18.200.0/24']), policyRec('blocklist', [], ['198.18.201.0/24'])],
      });
    let state = plan(snapWith(['office', 'blocklist']));
    rec.apply(state);
    assert.equal(vipIn(state, 'p').flags, VIP_F_POLICY | VIP_F_ALLOWLIST);
    assert.equal(send(dp, '198.18.200.5', '198.18.0.30', 1, 80).retval, XDP_TX, 'allowed by policy office');
    assert.equal(send(dp, '198.18.200.66', '198.18.0.30', 1, 80).retval, XDP_DROP, 'own deny inside the allowed /24');
    assert.equal(send(dp, '198.18.201.1', '198.18.0.30', 1, 80).retval, XDP_DROP, 'denied by policy blocklist');
    assert.equal(send(dp, '198.18.202.1', '198.18.0.30', 1, 80).retval, XDP_DROP, 'not on the allow-list');
    // Only the deny-list policy: not an allow-list any more.
    state = plan(snapWith(['blocklist']));
    rec.apply(state);
    assert.equal(send(dp, '198.18.202.1', '198.18.0.30', 2, 80).retval, XDP_TX);
    assert.equal(send(dp, '198.18.201.1', '198.18.0.30', 2, 80).retval, XDP_DROP);
    assert.equal(dp.policy.entries().length, 2);
    // No policy: every rule but the VIP's own deny gone.
    state = plan(snapWith([]));
    rec.apply(state);
    assert.equal(send(dp, '198.18.201.1', '198.18.0.30', 3, 80).retval, XDP_TX);
    assert.equal(dp.policy.entries().length, 1);
    assert.deepEqual(rec.verify(state), []);
  });

  it('refuses a state the maps cannot hold without writing anything', () => {
    rec.apply(plan(baseSnapshot()));
    const before = dumpAll(dp);
    const bad = (mutate: (s: StoreSnapshot) => void) => {
      const s = baseSnapshot();
      mutate(s);
      return plan(s);
    };
    assert.throws(
      () =>
        rec.apply(
          bad((s) => {
            s.backends[0]!.dp_id = 5000;
          }),
        ),
      ReconcileError,
    );
    assert.throws(
      () =>
        rec.apply(
          bad((s) => {
            s.vips[1]!.dp_id = 0;
          }),
        ),
      ReconcileError,
    );
    assert.throws(
      () =>
        rec.apply(
          bad((s) => {
            s.vips[1]!.address = '198.18.0.10';
            s.vips[1]!.port = 80;
          }),
        ),
      ReconcileError,
    );
    assert.throws(
      () =>
        rec.apply(
          bad((s) => {
            s.vips[0]!.maglev_m = 1000;
          }),
        ),
      ReconcileError,
    );
    assert.throws(
      () =>
        rec.apply(
          bad((s) => {
            s.backends[1]!.dp_id = 0;
          }),
        ),
      ReconcileError,
    );
    assert.equal(dumpAll(dp), before);
    assert.equal(rec.apply(plan(baseSnapshot())).changes, 0, 'the cache survived the refusals');
  });

  it('propagates an addon error, then compares in full and converges on the next apply', () => {
    rec.apply(plan(baseSnapshot()));
    // A datapath whose next batch update fails, as a full map or a kernel refusal would.
    let armed = true;
    const nat: NativeAddon = {
      ...dp.nat,
      mapUpdateBatch: (fd, keys, values, count, flags) => {
        if (armed) {
          armed = false;
          throw Object.assign(new Error('mapUpdateBatch: injected failure'), { errno: 28, code: 'ENOSPC' });
        }
        dp.nat.mapUpdateBatch(fd, keys, values, count, flags);
      },
    };
    const faulty = Object.create(dp, { nat: { value: nat } }) as LbDatapath;
    const r = new Reconciler(faulty, CONFIG);
    const snap = baseSnapshot();
    r.apply(plan(snap));
    snap.backends.push(beRec('web', '198.18.1.7', 7), beRec('web', '198.18.1.8', 8));
    const state = plan(snap);
    assert.throws(() => r.apply(state), /injected failure/);
    const again = r.apply(state);
    assert.equal(again.full, true, 'the failed apply dropped the cache');
    assert.deepEqual(r.verify(state), []);
    assert.equal(r.apply(state).changes, 0);
    rec.forget(); // another reconciler wrote these maps: rec's knowledge of them is stale
  });

  it('setConfig: a new gateway rewrites the config only, a new seed every table', () => {
    const state = plan(baseSnapshot());
    rec.apply(state);
    rec.setConfig({ ...CONFIG, gwMac: Buffer.from('02000000fe02', 'hex') });
    let r = rec.apply(state);
    assert.deepEqual([r.changes, r.tablesWritten], [1, []]);
    assert.deepEqual(dp.config.get(0).gw_mac, Buffer.from('02000000fe02', 'hex'));
    rec.setConfig({ ...CONFIG, seed: 42 });
    r = rec.apply(state);
    assert.deepEqual(r.tablesWritten.sort(), [0, 1, 2, 3]);
    assert.deepEqual(dp.getMaglevTable(0), expectedTable(vipIn(state, 'web'), 42));
    assert.equal(dp.config.get(0).hash_seed, 42);
    rec.setConfig(CONFIG);
    rec.apply(state);
    assert.deepEqual(rec.verify(state), []);
  });

  it('repairs drift after a restart without disturbing correct entries or conntrack', (t) => {
    const snap = baseSnapshot();
    const state = plan(snap);
    rec.apply(state);
    const web = vipIn(state, 'web');
    // An established flow.
    assert.equal(send(dp, CLIENT4, web.address, 5555, 80).retval, XDP_TX);
    const flow = flowOf(CLIENT4, web.address, 5555, 80, 6);
    const ct = dp.ct.get(flow);
    assert.ok(ct);
    const owner = send(dp, CLIENT4, web.address, 5555, 80, TCP_ACK).to;
    const ctBefore = dp.ct.get(flow);

    // Corrupt the maps behind the reconciler's back.
    const b4 = dp.backends.get(4);
    dp.backends.set(4, { ...b4, addr: dpAddr('2001:db8:1::99').bytes }); // wrong address
    dp.backends.set(40, {
      addr: dpAddr('198.18.9.9').bytes,
      family: 4,
      state: 1,
      flags: 0,
      pad: 0,
      vip_id: 9,
      gen: 1,
      via: Buffer.alloc(16),
      port: 0,
      pad2: 0,
    }); // stray id
    const stale = dpAddr('198.18.0.99');
    dp.vipIndex.set({ addr: stale.bytes, port: 80, proto: 6, family: 4 }, { vip_id: 9, flags: 0, rl_interval_ns: 0n, rl_tolerance_ns: 0n });
    dp.addrIndex.set({ addr: stale.bytes, family: 4, pad: Buffer.alloc(3) }, { flags: VIP_ADDR_F_ECHO });
    dp.setMaglevTable(9, new Uint32Array(251).fill(40)); // stale VIP + table
    dp.deleteMaglevTable(2); // missing table
    corruptSlot(dp, 1, 17, 0); // wrong slot
    dp.policy.set({ prefixlen: 32 + 96 + 8, vip_id: 0, addr: mappedBytes(dpAddr('10.0.0.0')) }, { action: POLICY_DENY });
    dp.config.set(0, { ...dp.config.get(0), gw_mac: Buffer.from('02000000dead', 'hex') });
    const drift = rec.verify(state);
    for (const line of drift) t.diagnostic(line);
    assert.equal(drift.length, 9, drift.join('\n'));
    const webPackets = dp.vipStats.sum(0).packets;
    const correct = dp.getMaglevTable(0);

    // Restart: the datapath re-opened from its pins, a new reconciler.
    const pinRoot = dp.pinRoot;
    dp.close();
    dp = LbDatapath.open({ pinRoot, sizes: SIZES });
    rec = new Reconciler(dp, CONFIG);
    const r = rec.apply(state);
    assert.equal(r.full, true);
    assert.deepEqual(r.tablesWritten.sort(), [1, 2], 'only the damaged tables');
    assert.equal(r.changes, 9, 'one write per damaged entry, nothing else');
    assert.equal(r.statsReset, 0, 'no id changed hands: counters kept');
    assert.equal(dp.vipStats.sum(0).packets, webPackets);
    assert.deepEqual(rec.verify(state), []);
    assert.deepEqual(dp.getMaglevTable(0), correct);
    assert.deepEqual(dp.ct.get(flow), ctBefore, 'conntrack entry untouched');
    assert.equal(send(dp, CLIENT4, web.address, 5555, 80, TCP_ACK).to, owner, 'the flow stays on its backend');
    assert.equal(send(dp, CLIENT4, '198.18.0.99', 1, 80).retval, 2 /* XDP_PASS */);
  });
});

/** Overwrites one slot of an installed table (1-based slots after M) behind the reconciler's back. */
function corruptSlot(dp: LbDatapath, vipId: number, slot: number, backendId: number): void {
  // Behind the daemon's back, through the pins: the table's start, then the slot.
  const fds = ['ferry_maglev_at', 'ferry_maglev'].map((n) => dp.nat.objGet(join(dp.pinRoot, n)));
  try {
    const at = new Uint32Array(dp.nat.mapMmap(fds[0]!));
    const slots = new Uint32Array(dp.nat.mapMmap(fds[1]!));
    const start = at[2 * vipId]!; // u32 array elements lie 8 bytes apart
    assert.ok(start > 0, `VIP ${vipId} has a table`);
    slots[start + 1 + slot] = backendId;
  } finally {
    for (const fd of fds) dp.nat.closeFd(fd);
  }
}

// ---- scale -----------------------------------------------------------------

describe('Reconciler at 1,000 VIPs × 10 backends', { skip }, () => {
  let dp: LbDatapath | undefined;
  after(() => closeDp(dp));

  const VIPS = 1000;
  const PER = 10;
  const bigSnapshot = (): StoreSnapshot => {
    const vips: StoredVip[] = [];
    const backends: StoredBackend[] = [];
    for (let i = 0; i < VIPS; i++) {
      const name = `vip-${i}`;
      vips.push(vipRec(name, i, `198.18.${100 + (i >> 8)}.${i & 255}`));
      for (let j = 0; j < PER; j++) {
        const n = i * PER + j;
        backends.push(beRec(name, `198.19.${n >> 8}.${n & 255}`, n));
      }
    }
    return snapshot({ vips, backends });
  };

  it('applies from empty, then a one-backend change touching only its VIP', (t) => {
    dp = openDp('scale', { maxVips: 1024, maxVipAddrs: 1024, maxBackends: 10240, ctSize: 1024, maxPolicyRules: 64 });
    const rec = new Reconciler(dp, CONFIG);
    const snap = bigSnapshot();
    const time = <T>(f: () => T): [T, number] => {
      const t0 = performance.now();
      const out = f();
      return [out, performance.now() - t0];
    };
    const [state, planMs] = time(() => plan(snap));
    assert.equal(vipIn(state, 'vip-0').m, 1021);
    const first: ApplyReport = rec.apply(state);
    t.diagnostic(`plan: ${planMs.toFixed(1)} ms; apply from empty: ${first.durationMs.toFixed(1)} ms, ${first.changes} changes`);
    assert.equal(first.tablesWritten.length, VIPS);
    assert.equal(dp.vipIndex.entries().length, VIPS);

    const same = rec.apply(state);
    t.diagnostic(`apply of the same state: ${same.durationMs.toFixed(1)} ms, ${same.changes} changes`);
    assert.equal(same.changes, 0);

    snap.backends[4321]!.weight = 10; // vip-432
    const [changed, plan2Ms] = time(() => plan(snap));
    const one = rec.apply(changed);
    t.diagnostic(`one-backend weight change: plan ${plan2Ms.toFixed(1)} ms, apply ${one.durationMs.toFixed(1)} ms, ${one.changes} changes`);
    assert.deepEqual([one.tablesWritten, one.changes], [[432], 1]);

    snap.backends[6789]!.state = 'disabled'; // vip-678
    const down = rec.apply(plan(snap));
    t.diagnostic(`one backend disabled: apply ${down.durationMs.toFixed(1)} ms, ${down.changes} changes`);
    assert.deepEqual([down.tablesWritten, down.changes], [[678], 2]);
    const final = plan(snap);

    const restart = new Reconciler(dp, CONFIG).apply(final);
    t.diagnostic(`restart (full compare, every table read back): ${restart.durationMs.toFixed(1)} ms, ${restart.changes} changes`);
    assert.equal(restart.changes, 0);
    const [drift, verifyMs] = time(() => rec.verify(final));
    t.diagnostic(`verify: ${verifyMs.toFixed(1)} ms`);
    assert.deepEqual(drift, []);
    assert.deepEqual(dp.getMaglevTable(432), expectedTable(vipIn(final, 'vip-432')));
    assert.equal(send(dp, CLIENT4, '198.18.101.176', 1, 80).to?.startsWith('198.19.'), true);

    // Remove half the VIPs: their tables are retired in batches, not deleted one grace period at a time.
    const half = snapshot({ ...snap, vips: snap.vips.slice(0, VIPS / 2), backends: snap.backends.slice(0, (VIPS / 2) * PER) });
    const halfState = plan(half);
    const removed = rec.apply(halfState);
    t.diagnostic(`remove ${VIPS / 2} VIPs: apply ${removed.durationMs.toFixed(1)} ms, ${removed.changes} changes`);
    assert.equal(dp.vipIndex.entries().length, VIPS / 2);
    assert.equal(dp.getMaglevTable(VIPS - 1)?.length ?? 0, 0, 'retired table: no slots');
    assert.equal(send(dp, CLIENT4, '198.18.103.231', 1, 80).retval, 2 /* XDP_PASS: vip-999 gone */);
    assert.deepEqual(rec.verify(halfState), []);
    assert.equal(new Reconciler(dp, CONFIG).apply(halfState).changes, 0, 'a retired table counts as absent');
    // And back: the retired ids get real tables again.
    const back = rec.apply(final);
    t.diagnostic(`re-add ${VIPS / 2} VIPs: apply ${back.durationMs.toFixed(1)} ms, ${back.changes} changes`);
    assert.equal(back.tablesWritten.length, VIPS / 2);
    assert.deepEqual(rec.verify(final), []);
  });
});
