/**
 * The socket-level load balancer against the kernel: sock_lb attached to a
 * cgroup v2 directory of our own (ferrytest-sock-<pid> under
 * /sys/fs/cgroup/unified), clients (src/lab/sockclient.py) that move
 * themselves into it before they open a socket, and real TCP/UDP servers
 * (src/lab/sockserver.py) on the loopback of a network namespace we create.
 *
 * Every client runs in that namespace, also those outside the cgroup: an
 * untranslated connect() to a ClusterIP fails there (ENETUNREACH) instead of
 * leaving the host. The cgroup, the namespace, the servers and the pins
 * (/sys/fs/bpf/ferrytest-sock-<pid>) are removed in after(), also on failure.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  SOCK_COUNTERS,
  SOCKLB_AF_INET,
  SockEndpoint,
  SockMemberKey,
  SockSlotKey,
  type SockCounterName,
} from '../../../src/datapath/socket-lb-abi.js';
import { SOCKET_LB_HOOKS, SocketLb } from '../../../src/datapath/socket-lb.js';
import type { SocketLbService } from '../../../src/datapath/socket-lb-plan.js';
import { loadNative } from '../../../src/datapath/native.js';
import type { ClusterIpEntry } from '../../../src/k8s/translate.js';
import { cgroup2Unavailable } from '../../../src/lab/cgroup.js';
import { SocketLbLab, type BackendSpec, type LoopResult, type TcpResult, type UdpResult } from '../../../src/lab/socket-lb-lab.js';
import { BPFFS, bpfUnavailable, ensureBpffs } from '../../lib/harness.js';

function unavailable(): string | undefined {
  const why = bpfUnavailable() ?? cgroup2Unavailable();
  if (why) return why;
  if (spawnSync('python3', ['--version']).status !== 0) return 'python3 is not installed';
  return undefined;
}
const skip = unavailable();
if (skip) console.log(`# socket-LB tests skipped: ${skip}`);

const NAME = `ferrytest-sock-${process.pid}`;
const PIN_ROOT = join(BPFFS, NAME);

// ClusterIPs: never routed anywhere (the namespace has only lo).
const CIP = '10.96.0.10';
const CIP_EMPTY = '10.96.0.11';
const CIP6 = 'fd00:10:96::10';

const TCP_BACKENDS = ['be1', 'be2', 'be3', 'be4'].map((name, i) => ({ name, address: `127.0.0.${11 + i}`, port: 8080 }));
const ALT = { name: 'alt', address: '127.0.0.11', port: 9090 };
const UDP_BACKENDS = ['u1', 'u2', 'u3'].map((name, i) => ({ name, address: `127.0.0.${11 + i}`, port: 5353 }));
const V6_BACKENDS = ['v6a', 'v6b'].map((name, i) => ({ name, address: `2001:db8:5::${11 + i}`, port: 8080 }));
const V6_UDP = { name: 'v6u', address: '2001:db8:5::11', port: 5353 };

type Named = { name: string; address: string; port: number };
const ep = (b: Named) => ({ address: b.address, port: b.port });

/** A ClusterIP entry as src/k8s/translate.ts produces it: apply() takes it as it is. */
function clusterIp(ip: string, port: number, protocol: 'tcp' | 'udp', backends: Named[], affinityTimeoutSeconds?: number): ClusterIpEntry {
  const e: ClusterIpEntry = { service: 'test/svc', portName: `${protocol}${port}`, ip, port, protocol, backends: backends.map(ep) };
  if (affinityTimeoutSeconds !== undefined) e.affinityTimeoutSeconds = affinityTimeoutSeconds;
  return e;
}

const tcpSvc = (backends: Named[], affinity?: number) => clusterIp(CIP, 80, 'tcp', backends, affinity);
const udpSvc = (backends: Named[]) => clusterIp(CIP, 53, 'udp', backends);

describe('socket-level load balancer', { skip }, () => {
  const lab = new SocketLbLab(NAME);
  let lb: SocketLb | undefined;

  const socketLb = (): SocketLb => {
    assert.ok(lb, 'SocketLb is open');
    return lb;
  };
  const counters = (): Record<SockCounterName, number> => socketLb().counterValues();
  const delta = (before: Record<SockCounterName, number>): Partial<Record<SockCounterName, number>> => {
    const now = counters();
    const out: Partial<Record<SockCounterName, number>> = {};
    for (const c of SOCK_COUNTERS) if (now[c] !== before[c]) out[c] = now[c] - before[c];
    return out;
  };
  /** n TCP connections from one client process; the backends that answered, in order. */
  const tcpMany = async (n: number, host = CIP, port = 80): Promise<TcpResult[]> =>
    (await lab.client(Array.from({ length: n }, () => ({ op: 'tcp' as const, host, port })))) as TcpResult[];
  const replies = (rs: TcpResult[]): string[] => rs.map((r) => r.reply ?? `error ${r.error}`);

  before(async () => {
    ensureBpffs();
    for (const name of existsSync(BPFFS) ? readdirSync(BPFFS) : []) {
      const m = /^ferrytest-sock-(\d+)$/.exec(name);
      if (m && !existsSync(`/proc/${m[1]}`)) rmSync(join(BPFFS, name), { recursive: true, force: true });
    }
    lab.setUp();
    for (const b of V6_BACKENDS) lab.addAddress(`${b.address}/128`);
    const specs: BackendSpec[] = [
      ...[...TCP_BACKENDS, ALT, ...V6_BACKENDS].map((b) => ({ proto: 'tcp' as const, ...b })),
      ...[...UDP_BACKENDS, V6_UDP].map((b) => ({ proto: 'udp' as const, ...b })),
    ];
    await lab.serve(specs);
    lb = SocketLb.open({ pinRoot: PIN_ROOT, sizes: { maxServices: 16, maxSlots: 64, revnatSize: 1024, affinitySize: 64 } });
    lb.attach(lab.cgroup);
  });

  after(() => {
    try {
      lb?.destroy();
    } finally {
      lab.tearDown();
      rmSync(PIN_ROOT, { recursive: true, force: true });
    }
  });

  it('attaches nine programs to the cgroup through pinned links', () => {
    const nat = loadNative();
    const hooks = socketLb().attachedHooks();
    const ino = statSync(lab.cgroup).ino;
    for (const h of SOCKET_LB_HOOKS) {
      const got = hooks[h.hook];
      assert.ok(got, `${h.hook} attached`);
      assert.equal(got.cgroupId, ino, `${h.hook} on our cgroup`);
      assert.ok(existsSync(join(PIN_ROOT, 'links', `socklb_${h.hook}`)), `${h.hook} link pinned`);
      assert.deepEqual(nat.cgroupQuery(lab.cgroup, h.attachType).progIds, [got.progId], `${h.hook} is what the kernel runs`);
    }
  });

  it('TCP: connect() to a ClusterIP reaches a backend, getpeername() shows the ClusterIP', async () => {
    socketLb().apply([tcpSvc([ALT])]);
    const c0 = counters();
    const r = await lab.tcp(CIP, 80);
    assert.deepEqual(r, { peer: [CIP, 80], reply: 'alt' }, 'port 80 went to the backend on 9090, reported as the ClusterIP');
    assert.deepEqual(delta(c0), { connect: 1, rev_peername: 1, released: 1 });
  });

  it('UDP: sendto() a ClusterIP; recvfrom() reports the replies from the ClusterIP (unconnected and connected)', async () => {
    socketLb().apply([udpSvc([UDP_BACKENDS[1]!])]);
    const c0 = counters();
    const r = await lab.udp(CIP, 53, { count: 3 });
    assert.equal(r.error, undefined);
    assert.deepEqual(
      r.replies,
      Array.from({ length: 3 }, () => ({ source: [CIP, 53], reply: 'u2' })),
    );
    const c = await lab.udp(CIP, 53, { count: 2, connect: true });
    assert.deepEqual(c.peer, [CIP, 53]);
    assert.deepEqual(
      c.replies,
      Array.from({ length: 2 }, () => ({ source: [CIP, 53], reply: 'u2' })),
    );
    // 3 datagrams sent to an address, one connect; 5 replies received; one getpeername.
    assert.deepEqual(delta(c0), { sendmsg: 3, connect: 1, rev_recvmsg: 5, rev_peername: 1, released: 1 });
  });

  it('spreads connections over the backends; one UDP socket stays on one backend', async () => {
    socketLb().apply([tcpSvc(TCP_BACKENDS), udpSvc(UDP_BACKENDS)]);
    const seen = replies(await tcpMany(80));
    const counts = Object.fromEntries(TCP_BACKENDS.map((b) => [b.name, seen.filter((s) => s === b.name).length]));
    assert.equal(seen.filter((s) => !(s in counts)).length, 0, `only backends answered: ${seen.join(' ')}`);
    for (const b of TCP_BACKENDS) assert.ok(counts[b.name]! > 0, `${b.name} got connections: ${JSON.stringify(counts)}`);

    const sockets = (await lab.client(
      Array.from({ length: 40 }, () => ({ op: 'udp' as const, host: CIP, port: 53, count: 4 })),
    )) as UdpResult[];
    const udpSeen = new Set<string>();
    for (const s of sockets) {
      assert.equal(s.error, undefined);
      const names = new Set(s.replies.map((r) => r.reply));
      assert.equal(names.size, 1, `one socket, one backend: ${[...names].join(' ')}`);
      udpSeen.add(s.replies[0]!.reply);
      for (const r of s.replies) assert.deepEqual(r.source, [CIP, 53]);
    }
    assert.deepEqual(
      [...udpSeen].sort(),
      UDP_BACKENDS.map((b) => b.name),
      'sockets spread over every UDP backend',
    );
  });

  it('sessionAffinity ClientIP: one backend per client while it lasts, kept across set changes, expired by the timeout', async () => {
    const all = TCP_BACKENDS;
    socketLb().apply([tcpSvc(all, 2)]);
    const c0 = counters();
    const first = replies(await tcpMany(15));
    const x = first[0]!;
    assert.deepEqual(
      first,
      first.map(() => x),
      `all on one backend: ${first.join(' ')}`,
    );
    assert.deepEqual(delta(c0), { connect: 15, rev_peername: 15, released: 15, affinity_new: 1, affinity_hit: 14 });

    // The set changes but keeps x: the client stays.
    socketLb().apply([tcpSvc([...all, ALT], 2)]);
    const kept = replies(await tcpMany(15));
    assert.deepEqual(
      kept,
      kept.map(() => x),
      `still on ${x}: ${kept.join(' ')}`,
    );

    // x leaves: the client moves to one other backend and stays there.
    const rest = all.filter((b) => b.name !== x);
    socketLb().apply([tcpSvc(rest, 2)]);
    const moved = replies(await tcpMany(15));
    const y = moved[0]!;
    assert.notEqual(y, x);
    assert.ok(
      rest.some((b) => b.name === y),
      `${y} is a remaining backend`,
    );
    assert.deepEqual(
      moved,
      moved.map(() => y),
      `all on ${y}: ${moved.join(' ')}`,
    );

    // Connections 0.6 s apart keep the entry alive well beyond the 2 s
    // timeout: the timeout counts from the last use (refreshed at most once
    // a second, so an entry is at most ~1.2 s old here when it is checked).
    const spaced = (
      await lab.client(
        [0, 1, 2, 3, 4, 5].flatMap(() => [
          { op: 'sleep' as const, seconds: 0.6 },
          { op: 'tcp' as const, host: CIP, port: 80 },
        ]),
      )
    ).filter((r): r is TcpResult => 'peer' in (r as object) || 'error' in (r as object));
    assert.deepEqual(replies(spaced), [y, y, y, y, y, y]);

    // Idle longer than the timeout: a fresh random pick. It may pick y again
    // (1 in 3); each round is another chance, so ten rounds all on y would
    // mean the entry never expires (chance 3^-10 otherwise).
    let other: string | undefined;
    for (let round = 0; round < 10 && other === undefined; round++) {
      const r = (
        await lab.client([
          { op: 'sleep', seconds: 2.3 },
          { op: 'tcp', host: CIP, port: 80 },
        ])
      )[1] as TcpResult;
      assert.equal(r.error, undefined);
      if (r.reply !== y) other = r.reply;
    }
    assert.ok(other !== undefined && rest.some((b) => b.name === other), `expired affinity re-picked: ${other}`);
  });

  it('backend set changes apply; connects never fail while the set flips', async (t) => {
    const a = TCP_BACKENDS.slice(0, 2);
    const b = TCP_BACKENDS.slice(2);
    socketLb().apply([tcpSvc(a)]);
    const onA = replies(await tcpMany(30));
    assert.deepEqual(
      [...new Set(onA)].sort(),
      a.map((x) => x.name),
    );
    const gen0 = socketLb().entries()[0]!.gen;
    const fences = socketLb().fenceStats.fences;
    const r = socketLb().apply([tcpSvc(b)]);
    assert.equal(r.updated, 1);
    assert.equal(r.graceWaits, 0, 'the write did not wait for a grace period');
    const entry = socketLb().entries()[0]!;
    assert.equal(entry.gen, gen0 + 1);
    assert.deepEqual(entry.backends, b.map(ep));
    const nat = loadNative();
    const slotsFd = nat.objGet(join(PIN_ROOT, 'ferry_sock_slots'));
    try {
      assert.equal(nat.mapDump(slotsFd).keys.length, a.length + b.length, 'the old buffer waits for a grace period');
      // Changed again at once: the next buffer is the retired one, so this apply waits for it.
      const back = socketLb().apply([tcpSvc(a)]);
      assert.equal(back.graceWaits, 1, 'a retired buffer is reused only after a grace period');
      assert.deepEqual(socketLb().entries()[0]!.backends, a.map(ep));
      socketLb().apply([tcpSvc(b)]);
      await socketLb().settled();
      assert.ok(socketLb().fenceStats.fences > fences, 'a grace period was observed off the event loop');
      // Only the live buffer remains in the slots map.
      assert.equal(nat.mapDump(slotsFd).keys.length, b.length);
    } finally {
      nat.closeFd(slotsFd);
    }
    const onB = replies(await tcpMany(30));
    assert.deepEqual(
      [...new Set(onB)].sort(),
      b.map((x) => x.name),
    );

    // A client connecting as fast as it can for 1.5 s while the set flips
    // between one backend and three: every connect must reach a listening
    // backend. (A connect that saw the new count with the old slots, or a
    // slot deleted under it, would be refused and counted as slot_missing.)
    const one = TCP_BACKENDS.slice(0, 1);
    const three = TCP_BACKENDS.slice(1);
    const c0 = counters();
    const client = lab.client([{ op: 'loop', proto: 'tcp', targets: [[CIP, 80]], seconds: 1.5 }]);
    let flips = 0;
    let done = false;
    client.then(
      () => (done = true),
      () => (done = true),
    );
    while (!done) {
      socketLb().apply([tcpSvc(flips % 2 === 0 ? one : three)]);
      flips++;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const [loop] = (await client) as [LoopResult];
    t.diagnostic(`${flips} flips during ${loop.count} connects`);
    assert.ok(flips >= 20, `the set flipped ${flips} times during the run`);
    assert.ok(loop.count > 100, `${loop.count} connects`);
    assert.equal(loop.errors, 0, `failed connects (first: ${loop.firstError})`);
    const d = delta(c0);
    assert.equal(d.connect, loop.count, 'every connect was translated');
    assert.equal(d.slot_missing, undefined, 'no connect read a half-written set');
    assert.equal(d.no_backend, undefined);
  });

  it('a ClusterIP without backends refuses connect() and sendto() with ECONNREFUSED', async () => {
    socketLb().apply([clusterIp(CIP_EMPTY, 80, 'tcp', []), clusterIp(CIP_EMPTY, 53, 'udp', [])]);
    const c0 = counters();
    const [t, u] = (await lab.client([
      { op: 'tcp', host: CIP_EMPTY, port: 80 },
      { op: 'udp', host: CIP_EMPTY, port: 53 },
    ])) as [TcpResult, UdpResult];
    assert.equal(t.error, 'ECONNREFUSED');
    assert.equal(u.error, 'ECONNREFUSED');
    assert.deepEqual(delta(c0), { no_backend: 2 });
  });

  it('leaves processes outside the cgroup, other addresses and other ports alone', async () => {
    socketLb().apply([tcpSvc([ALT])]);
    const c0 = counters();
    assert.deepEqual(await lab.tcp(CIP, 80, { inCgroup: false }), { error: 'ENETUNREACH' }, 'outside: not translated');
    assert.deepEqual(await lab.tcp('127.0.0.12', 8080, { inCgroup: false }), { peer: ['127.0.0.12', 8080], reply: 'be2' });
    // Inside: a backend reached directly, and the ClusterIP on a port that is not a service.
    assert.deepEqual(await lab.tcp('127.0.0.12', 8080), { peer: ['127.0.0.12', 8080], reply: 'be2' });
    assert.deepEqual(await lab.tcp(CIP, 81), { error: 'ENETUNREACH' });
    assert.deepEqual(delta(c0), {});
  });

  it('IPv6 ClusterIPs, and IPv4 ClusterIPs from IPv6 sockets (v4-mapped)', async () => {
    socketLb().apply([
      clusterIp(CIP6, 80, 'tcp', V6_BACKENDS),
      clusterIp(CIP6, 53, 'udp', [V6_UDP]),
      tcpSvc([TCP_BACKENDS[2]!]),
      udpSvc([UDP_BACKENDS[0]!]),
    ]);
    const rs = await lab.client([
      ...Array.from({ length: 20 }, () => ({ op: 'tcp' as const, host: CIP6, port: 80 })),
      { op: 'udp', host: CIP6, port: 53, count: 2 },
      { op: 'udp', host: CIP6, port: 53, connect: true },
      { op: 'tcp', host: `::ffff:${CIP}`, port: 80, family: 6 },
      { op: 'udp', host: `::ffff:${CIP}`, port: 53, family: 6 },
      { op: 'udp', host: `::ffff:${CIP}`, port: 53, family: 6, connect: true },
    ]);
    const tcp6 = rs.slice(0, 20) as TcpResult[];
    for (const r of tcp6) assert.deepEqual(r.peer, [CIP6, 80]);
    assert.deepEqual([...new Set(replies(tcp6))].sort(), ['v6a', 'v6b']);
    const [u6, u6c, mapped, mappedUdp, mappedUdpC] = rs.slice(20) as [UdpResult, UdpResult, TcpResult, UdpResult, UdpResult];
    assert.deepEqual(u6.replies, [
      { source: [CIP6, 53], reply: 'v6u' },
      { source: [CIP6, 53], reply: 'v6u' },
    ]);
    assert.deepEqual(u6c.peer, [CIP6, 53]);
    assert.deepEqual(u6c.replies, [{ source: [CIP6, 53], reply: 'v6u' }]);
    assert.deepEqual(mapped, { peer: [`::ffff:${CIP}`, 80], reply: 'be3' });
    assert.deepEqual(mappedUdp.replies, [{ source: [`::ffff:${CIP}`, 53], reply: 'u1' }]);
    assert.deepEqual(mappedUdpC.peer, [`::ffff:${CIP}`, 53]);
    assert.deepEqual(mappedUdpC.replies, [{ source: [`::ffff:${CIP}`, 53], reply: 'u1' }]);
  });

  it('closing a connected socket removes its reverse entry', async () => {
    socketLb().apply([tcpSvc(TCP_BACKENDS)]);
    const nat = loadNative();
    const fd = nat.objGet(join(PIN_ROOT, 'ferry_sock_revnat'));
    try {
      const before = nat.mapDump(fd).keys.length;
      const c0 = counters();
      await tcpMany(25);
      assert.deepEqual(delta(c0), { connect: 25, rev_peername: 25, released: 25 });
      assert.equal(nat.mapDump(fd).keys.length, before);
    } finally {
      nat.closeFd(fd);
    }
  });

  it('apply() writes only the difference; a reopened SocketLb adopts the pinned maps and links', async () => {
    const list: SocketLbService[] = [
      tcpSvc(TCP_BACKENDS.slice(0, 3), 30),
      udpSvc(UDP_BACKENDS),
      clusterIp(CIP6, 80, 'tcp', V6_BACKENDS),
      clusterIp(CIP_EMPTY, 80, 'tcp', []),
    ];
    const first = socketLb().apply(list);
    assert.equal(first.services, 4);
    const same = socketLb().apply(list);
    assert.deepEqual([same.unchanged, same.slotsWritten, same.graceWaits], [4, 0, 0], 'the same entries given again');
    const again = socketLb().apply(list.map((e) => ({ ...e, backends: e.backends.map((b) => ({ ...b })) })));
    assert.deepEqual(
      {
        added: again.added,
        updated: again.updated,
        retimed: again.retimed,
        removed: again.removed,
        unchanged: again.unchanged,
        slotsWritten: again.slotsWritten,
        graceWaits: again.graceWaits,
      },
      { added: 0, updated: 0, retimed: 0, removed: 0, unchanged: 4, slotsWritten: 0, graceWaits: 0 },
    );
    const retimed = socketLb().apply([{ ...list[0]!, affinityTimeoutSeconds: 60 }, ...list.slice(1)]);
    assert.deepEqual([retimed.retimed, retimed.unchanged, retimed.slotsWritten, retimed.graceWaits], [1, 3, 0, 0]);
    const entries = socketLb().entries();

    // The daemon goes away (once the buffers the first apply retired are gone): the pinned links keep translating.
    await socketLb().settled();
    socketLb().close();
    lb = undefined;
    assert.equal((await lab.tcp(CIP6, 80)).peer?.[0], CIP6);

    lb = SocketLb.open({ pinRoot: PIN_ROOT, sizes: { maxServices: 16, maxSlots: 64, revnatSize: 1024, affinitySize: 64 } });
    assert.deepEqual(lb.replacedPins, []);
    assert.deepEqual(lb.entries(), entries);
    const linksBefore = lb.attachedHooks();
    lb.attach(lab.cgroup);
    const linksAfter = lb.attachedHooks();
    for (const h of SOCKET_LB_HOOKS) {
      assert.notEqual(linksAfter[h.hook]?.progId, linksBefore[h.hook]?.progId, `${h.hook} runs the new object's program`);
      assert.deepEqual(loadNative().cgroupQuery(lab.cgroup, h.attachType).progIds, [linksAfter[h.hook]!.progId], `${h.hook}: one program`);
    }
    const adopted = lb.apply([{ ...list[0]!, affinityTimeoutSeconds: 60 }, ...list.slice(1)]);
    assert.deepEqual([adopted.unchanged, adopted.slotsWritten, adopted.graceWaits], [4, 0, 0], 'nothing to write after a restart');
    const removed = lb.apply(list.slice(1, 2));
    assert.deepEqual([removed.removed, removed.unchanged, removed.graceWaits], [3, 1, 0]);
    const deleted = lb.fenceStats.slotsDeleted;
    await lb.settled();
    assert.equal(lb.fenceStats.slotsDeleted - deleted, 3 + 2, "the removed services' slots went after a grace period");
    assert.deepEqual(
      lb.entries().map((e) => `${e.protocol} ${e.ip}:${e.port}`),
      [`udp ${CIP}:53`],
    );
    assert.deepEqual(replies([await lab.tcp(CIP, 80)]), ['error ENETUNREACH'], 'a removed service is no longer translated');
  });

  it('a reopened SocketLb repairs what an interrupted apply() left: orphan slots and members, a missing slot', async () => {
    const svc = tcpSvc(TCP_BACKENDS.slice(0, 2), 30);
    socketLb().apply([svc]);
    const [entry] = socketLb().entries();
    assert.ok(entry);
    const nat = loadNative();
    const pinned = (name: string): number => nat.objGet(join(PIN_ROOT, name));
    const slots = pinned('ferry_sock_slots');
    const members = pinned('ferry_sock_members');
    const be = (b: Named) => {
      const a = Buffer.alloc(16);
      Buffer.from(b.address.split('.').map(Number)).copy(a);
      return SockEndpoint.encode({ addr: a, port: b.port, family: SOCKLB_AF_INET, pad: 0 });
    };
    try {
      // A crash between writing the other buffer and flipping, slot 1 of the
      // live buffer lost, and members of a service id nobody has.
      const other = (entry.gen + 1) & 1;
      nat.mapUpdate(slots, SockSlotKey.encode({ svc_id: entry.id, buf: other, index: 0 }), be(TCP_BACKENDS[3]!));
      nat.mapUpdate(slots, SockSlotKey.encode({ svc_id: 999, buf: 0, index: 0 }), be(TCP_BACKENDS[3]!));
      assert.ok(nat.mapDelete(slots, SockSlotKey.encode({ svc_id: entry.id, buf: entry.gen & 1, index: 1 })));
      nat.mapUpdate(members, SockMemberKey.encode({ svc_id: 999, backend: be(TCP_BACKENDS[3]!) }), Buffer.alloc(1, 1));

      socketLb().close();
      lb = SocketLb.open({ pinRoot: PIN_ROOT, sizes: { maxServices: 16, maxSlots: 64, revnatSize: 1024, affinitySize: 64 } });
      const r = lb.apply([svc]);
      assert.deepEqual(
        { updated: r.updated, unchanged: r.unchanged, slotsWritten: r.slotsWritten, graceWaits: r.graceWaits },
        { updated: 1, unchanged: 0, slotsWritten: 2, graceWaits: 1 },
        'the broken service is rewritten into its other buffer (the leftovers went after one grace period)',
      );
      await lb.settled();
      const fixed = lb.entries();
      assert.deepEqual(
        fixed.map((e) => [e.id, e.gen, e.backends]),
        [[entry.id, entry.gen + 1, TCP_BACKENDS.slice(0, 2).map(ep)]],
      );
      assert.equal(nat.mapDump(slots).keys.length, 2, 'only the live buffer is left');
      assert.deepEqual(
        nat
          .mapDump(members)
          .keys.map((k) => SockMemberKey.decode(k).svc_id)
          .sort(),
        [entry.id, entry.id],
        'only the members of the live service are left',
      );
      const again = lb.apply([svc]);
      assert.deepEqual([again.unchanged, again.slotsWritten, again.graceWaits], [1, 0, 0]);
    } finally {
      nat.closeFd(slots);
      nat.closeFd(members);
    }
    const seen = new Set(replies(await tcpMany(20)));
    assert.deepEqual(
      [...seen].filter((x) => x !== 'be1' && x !== 'be2'),
      [],
    );
  });

  it('bad input throws a specific error and changes nothing', async () => {
    const good = [tcpSvc([TCP_BACKENDS[0]!])];
    socketLb().apply(good);
    const entries = socketLb().entries();
    const bad: Array<[string, unknown[], RegExp]> = [
      ['bad ip', [{ ...good[0]!, ip: '10.96.0.300' }], /not an IP address/],
      ['port 0', [{ ...good[0]!, port: 0 }], /port must be an integer/],
      ['string port', [{ ...good[0]!, port: '80' }], /port must be an integer/],
      ['protocol', [{ ...good[0]!, protocol: 'sctp' }], /protocol must be 'tcp' or 'udp'/],
      ['backend family', [{ ...good[0]!, backends: [{ address: '2001:db8::1', port: 80 }] }], /backend #0.*not of the family/],
      ['backend port', [{ ...good[0]!, backends: [{ address: '127.0.0.1', port: 70000 }] }], /backend #0.*port/],
      ['timeout 0', [{ ...good[0]!, affinityTimeoutSeconds: 0 }], /affinityTimeoutSeconds/],
      ['timeout too long', [{ ...good[0]!, affinityTimeoutSeconds: 86401 }], /affinityTimeoutSeconds/],
      [
        'duplicate',
        [good[0]!, clusterIp(CIP6, 80, 'tcp', []), clusterIp('fd00:10:96:0:0::10', 80, 'tcp', [])],
        /\[fd00:10:96::10\]:80 appears twice/,
      ],
      ['not an array', [{ ...good[0]!, backends: 'x' }], /backends must be an array/],
      ['too many services', Array.from({ length: 17 }, (_, i) => clusterIp(`10.96.1.${i}`, 80, 'tcp', [])), /exceed maxServices 16/],
      [
        'too many slots',
        [
          clusterIp(
            CIP,
            80,
            'tcp',
            Array.from({ length: 65 }, (_, i) => ({ name: 'x', address: '127.0.0.1', port: 1000 + i })),
          ),
        ],
        /exceed maxSlots 64/,
      ],
    ];
    for (const [what, list, message] of bad) {
      assert.throws(
        () => socketLb().apply(list as SocketLbService[]),
        (e: Error) => {
          assert.ok(e instanceof TypeError || e instanceof RangeError, `${what}: ${e.name}`);
          assert.match(e.message, message, what);
          return true;
        },
        what,
      );
      assert.deepEqual(socketLb().entries(), entries, `${what}: maps unchanged`);
    }
    assert.deepEqual(await lab.tcp(CIP, 80), { peer: [CIP, 80], reply: 'be1' }, 'still serving');
  });

  it('detach() removes every program: connects are no longer translated', async () => {
    socketLb().apply([tcpSvc([ALT])]);
    assert.equal(socketLb().detach(), SOCKET_LB_HOOKS.length);
    for (const h of SOCKET_LB_HOOKS) assert.deepEqual(loadNative().cgroupQuery(lab.cgroup, h.attachType).progIds, [], h.hook);
    assert.deepEqual(await lab.tcp(CIP, 80), { error: 'ENETUNREACH' });
    socketLb().attach(lab.cgroup);
    assert.deepEqual(await lab.tcp(CIP, 80), { peer: [CIP, 80], reply: 'alt' });
  });
});
