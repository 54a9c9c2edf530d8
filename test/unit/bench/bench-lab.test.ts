/**
 * The comparison `npm run bench:lab` makes is real: in its packet-rate rig
 * (bench/lab-rig.ts) each balancer forwards the generator's frames to the
 * backends as it should, and the HTTP lab's iptables balancer serves real
 * connections. No timing is asserted: frames go at 5,000 per second, far
 * below what any of them handles. A window in which the load balancer's
 * receive ring overflowed (its thread was kept off the CPU for 50 ms by the
 * rest of the machine) is run again, up to three times: which frames were
 * lost then is unknown, so the exact checks could not be made.
 *
 * Statistical checks: a random balancer's share of N independent choices
 * among 3 backends is Binomial(N, 1/3); the bounds are 6 standard deviations
 * wide (a correct balancer fails them about once in 10^8 runs).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { flowHash } from '../../../src/datapath/hash.js';
import { loadNative } from '../../../src/datapath/native.js';
import { bpfObjectPath, packageRoot } from '../../../src/paths.js';
import { GenConfig, GenState, SINK_IPIP, SINK_MAX, SINK_PASSED, SINK_TCP, SINK_UDP } from '../../../bench/lab-bpf.js';
import { HTTP_VIP, IptablesHttpLab, httpRate } from '../../../bench/lab-http.js';
import {
  HASH_SEED,
  NODE_PORT_TCP,
  podAddr,
  PORT_BASE,
  RateRig,
  rigUnavailable,
  SRC_BASE,
  SYN_PORTS,
  TCP_PORT,
  UDP_PORT,
  VIP,
  type TrafficKind,
  type Window,
} from '../../../bench/lab-rig.js';
import { nsRun } from '../../../src/lab/exec.js';
import { flowOf } from '../../lib/harness.js';

const skip = rigUnavailable();
if (skip) console.log(`# skipping bench:lab tests: ${skip}`);

const BACKENDS = 3;
const SOURCES = 256;
const UDP_PORTS = 4;
const UDP_FLOWS = SOURCES * UDP_PORTS;
const RATE = 5000;
const SYNS = 3000;

const ip4 = (base: string, add: number): string => {
  const n = (base.split('.').reduce((a, o) => a * 256 + Number(o), 0) + add) >>> 0;
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
};

/** The backend Maglev gives each frame of a window (bench.bpf.c names frame n's flow), counted per backend. */
function maglevCounts(rig: RateRig, w: Window): number[] {
  const table = rig.tables.get(w.kind)!;
  const vipId = w.kind === 'syn' ? 0 : 1;
  const ports = w.kind === 'syn' ? SYN_PORTS : UDP_PORTS;
  const counts = new Array<number>(BACKENDS).fill(0);
  for (let n = w.first_seq; n < w.first_seq + w.offered; n++) {
    const src = ip4(SRC_BASE, n % SOURCES);
    const sport = PORT_BASE + (Math.floor(n / SOURCES) % ports);
    const flow = w.kind === 'syn' ? flowOf(src, VIP, sport, TCP_PORT, 6) : flowOf(src, VIP, sport, UDP_PORT, 17);
    counts[table[flowHash(flow, HASH_SEED) % table.length]! - vipId * 16]! += 1;
  }
  return counts;
}

/** Each count is within 6 standard deviations of n/3. */
function assertUniform(per: number[], what: string): void {
  const n = per.reduce((a, b) => a + b, 0);
  const sd = Math.sqrt(n * (1 / BACKENDS) * (1 - 1 / BACKENDS));
  for (const c of per) assert.ok(Math.abs(c - n / BACKENDS) <= 6 * sd, `${what}: ${JSON.stringify(per)} is not uniform over ${n}`);
}

describe('bench:lab BPF mirror', { skip }, () => {
  it('gen_config and gen_state match the BTF of bench.bpf.o, sink counters the C enum', () => {
    const nat = loadNative();
    for (const s of [GenConfig, GenState]) {
      const btf = nat.btfStructLayout(bpfObjectPath('bench'), s.cName);
      assert.equal(btf.size, s.size, `${s.cName} size`);
      assert.deepEqual(
        btf.members,
        s.layout.map((f) => ({ name: f.name, offset: f.offset, size: f.size })),
        s.cName,
      );
    }
    const src = readFileSync(join(packageRoot(), 'bpf', 'bench.bpf.c'), 'utf8');
    const names = /enum sink_counter \{([^}]*)\}/s
      .exec(src)![1]!
      .split('\n')
      .map((l) =>
        l
          .replace(/\/\*.*?\*\//g, '')
          .trim()
          .replace(',', ''),
      )
      .filter((l) => l);
    assert.deepEqual(names, ['SINK_TCP', 'SINK_UDP', 'SINK_IPIP', 'SINK_PASSED', 'SINK_MAX']);
    assert.deepEqual([SINK_TCP, SINK_UDP, SINK_IPIP, SINK_PASSED, SINK_MAX], [0, 1, 2, 3, 4]);
  });
});

describe('bench:lab packet-rate rig: each balancer forwards to the backends', { skip }, () => {
  let rig: RateRig;

  before(async () => {
    rig = await RateRig.start({ backends: BACKENDS, sources: SOURCES, udpPorts: UDP_PORTS });
  });
  after(() => rig?.stop());

  /** Offers frames; again (at most three times) if the load balancer's ring overflowed. */
  async function offerWhole(kind: TrafficKind, count: number, then?: () => Promise<Window>, before?: () => void): Promise<Window[]> {
    for (let attempt = 1; ; attempt++) {
      before?.();
      const ws = [await rig.offer(kind, RATE, { count })];
      if (then) ws.push(await then());
      if (ws.every((w) => w.lost_ingress === 0)) return ws;
      assert.ok(attempt < 3, `the load balancer's receive ring overflowed in 3 attempts: ${JSON.stringify(ws)}`);
    }
  }

  /** Two passes over every UDP flow: the second must land exactly where the first did. */
  async function udpTwice(): Promise<Window[]> {
    const [first, second] = await offerWhole('udp', UDP_FLOWS, () => rig.offer('udp', RATE, { count: UDP_FLOWS }));
    for (const w of [first!, second!]) assert.equal(w.forwarded, UDP_FLOWS, `${w.mode}: ${JSON.stringify(w)}`);
    assert.deepEqual(second!.per_backend, first!.per_backend, `${first!.mode}: established UDP flows stayed on their backend`);
    return [first!, second!];
  }

  /** Packets each backend's KUBE-SEP DNAT rule (TCP) has taken. */
  const dnatRuleCounts = (): number[] =>
    rig.backends.map((addr) => {
      const line = rig
        .listRules()
        .split('\n')
        .find((l) => l.includes(`-j DNAT --to-destination ${addr}:${TCP_PORT}`));
      assert.ok(line, `a DNAT rule for ${addr}`);
      return Number(/^\[(\d+):/.exec(line)![1]);
    });

  it('floor: the load balancer takes in every frame, on its own thread', async () => {
    rig.activate('floor');
    const [w] = await offerWhole('udp', 2000);
    assert.equal(w!.offered, 2000);
    assert.equal(w!.forwarded, 2000, JSON.stringify(w));
    assert.ok(w!.lb_cpu_ns > 0, 'the load balancer thread ran');
  });

  it('Ferry: every packet reaches the backend Maglev picks for its flow, IPv4-in-IPv4', async () => {
    rig.activate('ferry');
    for (const kind of ['syn', 'udp'] as TrafficKind[]) {
      const windows = kind === 'syn' ? await offerWhole('syn', SYNS) : await udpTwice();
      for (const w of windows) {
        assert.equal(w.forwarded, w.offered, JSON.stringify(w));
        assert.equal(w.ipip, w.forwarded, 'every packet came encapsulated');
        assert.deepEqual(w.per_backend, maglevCounts(rig, w), `${kind}: per backend as Maglev predicts`);
        assert.ok(w.lb_cpu_ns > 0, 'the load balancer thread ran');
      }
    }
    assert.equal(rig.conntrackCount(), 0, "no netfilter connection tracking on Ferry's path");
  });

  for (const b of ['iptables', 'nftables'] as const) {
    it(`${b}: new flows are DNATed to random backends, established ones stay (connection tracking)`, async () => {
      rig.activate(b);
      let rules0: number[] = [];
      const [syn] = await offerWhole('syn', SYNS, undefined, () => {
        if (b === 'iptables') rules0 = dnatRuleCounts();
      });
      assert.equal(syn!.forwarded, SYNS, JSON.stringify(syn));
      assert.equal(syn!.ipip, 0, 'plain packets, no encapsulation');
      assert.ok(syn!.lb_cpu_ns > 0, 'the load balancer thread ran');
      assertUniform(syn!.per_backend, `${b} SYN`);
      if (b === 'iptables') {
        // Each new connection took one KUBE-SEP DNAT rule: its counters match what each backend received.
        assert.deepEqual(
          dnatRuleCounts().map((n, i) => n - rules0[i]!),
          syn!.per_backend,
        );
      } else {
        assert.match(rig.listRules(), /dnat to numgen random mod 3 map/);
      }
      assert.ok(rig.conntrackCount() >= SYNS, 'every SYN made a connection tracking entry');
      const [first] = await udpTwice();
      assert.equal(first!.ipip, 0);
      assertUniform(first!.per_backend, `${b} UDP flows`);
    });
  }

  it("NodePort through Ferry: to the load balancer's own address and NodePort, encapsulated to each pod through its node", async () => {
    rig.activate('ferry-nodeport');
    const [syn] = await offerWhole('syn', SYNS);
    assert.equal(syn!.forwarded, SYNS, `every SYN reached a pod with the NodePort kept: ${JSON.stringify(syn)}`);
    assert.equal(syn!.ipip, SYNS, 'encapsulated');
    assertUniform(syn!.per_backend, 'ferry-nodeport SYN');
    const [first] = await udpTwice();
    assert.equal(first!.ipip, UDP_FLOWS);
    assert.equal(rig.conntrackCount(), 0, "no netfilter connection tracking on Ferry's path");
  });

  it("NodePort through the nftables table Ferry writes for external_path nat: DNAT to the pods' port, masqueraded", async () => {
    rig.activate('nft-nat');
    const [syn] = await offerWhole('syn', SYNS);
    assert.equal(syn!.forwarded, SYNS, `every SYN reached a pod's own port: ${JSON.stringify(syn)}`);
    assert.equal(syn!.ipip, 0, 'plain packets, no encapsulation');
    assertUniform(syn!.per_backend, 'nft-nat SYN');
    assert.match(rig.listRules(), /table inet ferry_k8s/);
    // A rule per pod: the first takes 1 in BACKENDS of the connections (nat.ts, natRules).
    assert.match(
      rig.listRules(),
      new RegExp(`numgen random mod ${BACKENDS} 0 meta l4proto tcp dnat ip to ${podAddr(0).replaceAll('.', '\\.')}:`),
    );
    // conntrack's reply tuple: the pod answers the balancer's own address on its link (masquerade), not the client.
    const tracked = nsRun(rig.lb, 'conntrack', ['-L', '-p', 'tcp', '--dport', String(NODE_PORT_TCP)]);
    const reply = new RegExp(
      `dport=${NODE_PORT_TCP} \\[UNREPLIED\\] src=${podAddr(0).replaceAll('.', '\\.')} dst=198\\.18\\.16\\.1 sport=${TCP_PORT} `,
    );
    assert.ok(reply.test(tracked), `a masqueraded entry for pod 0 among ${tracked.split('\n').length} entries`);
    assert.ok(rig.conntrackCount() >= SYNS, 'every SYN made a connection tracking entry');
    const [first] = await udpTwice();
    assertUniform(first!.per_backend, 'nft-nat UDP flows');
  });
});

describe('bench:lab HTTP lab: the iptables balancer serves real connections', { skip }, () => {
  let lab: IptablesHttpLab;

  before(async () => {
    lab = await IptablesHttpLab.start();
  });
  after(() => lab?.stop());

  it('answers come back from the VIP (un-NATed on the way back), from every backend, one DNAT per connection', async () => {
    const r = await httpRate(lab.lab.client, 1500, 4);
    assert.equal(r.errors, 0, JSON.stringify(r.error_kinds));
    assert.ok(r.requests >= 20, `only ${r.requests} requests`);
    assert.deepEqual(Object.keys(r.sources), [HTTP_VIP]);
    assert.deepEqual(
      Object.keys(r.per_backend).sort(),
      lab.lab.backends.map((b) => b.name),
    );
    assert.ok(r.latency_ms.p99 >= r.latency_ms.p50 && r.latency_ms.p50 > 0);
    const dnat = lab.dnatCounts();
    assert.equal(
      Object.values(dnat).reduce((a, n) => a + n, 0),
      r.requests,
    );
  });
});
