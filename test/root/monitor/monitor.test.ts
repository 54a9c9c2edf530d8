/**
 * Live events above the datapath: decoding and naming, the daemon's
 * EventStream (filters, bounded per-subscriber queues, shutdown), the SSE
 * route GET /v1/monitor, and, against a real ferryd, the stream carrying the
 * flows and drops a test sends through xdp_lb, ferryctl monitor and top.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../../src/api/app.js';
import { SseParser, topFrame, type SseMessage } from '../../../src/cli/monitor.js';
import { Controller } from '../../../src/control/controller.js';
import {
  DROP_REASONS,
  FERRY_AF_INET,
  FERRY_AF_INET6,
  FERRY_BACKEND_NONE,
  FERRY_EVENT_DROP,
  FERRY_EVENT_FLOW,
  FERRY_VIP_NONE,
  FerryEvent,
  type FerryEventV,
} from '../../../src/datapath/abi.js';
import { dpAddr } from '../../../src/datapath/addr.js';
import type { LbDatapath } from '../../../src/datapath/lb.js';
import { XDP_DROP, XDP_TX } from '../../../src/datapath/native.js';
import { formatEvent, matches, nameTable, toMonitorEvent, type MonitorEvent } from '../../../src/monitor/events.js';
import { EventStream, TooManySubscribers, type RingReader } from '../../../src/monitor/stream.js';
import { planState } from '../../../src/reconcile/plan.js';
import { openStore } from '../../../src/store/store.js';
import { packageRoot } from '../../../src/paths.js';
import { FakeApplier, FakeInfo } from '../../lib/api-fixture.js';
import { bpfUnavailable } from '../../lib/harness.js';
import {
  destroyFerrydEnv,
  ferryctl,
  makeFerrydEnv,
  openDaemonDatapath,
  startFerryd,
  stopFerryd,
  type Ferryd,
  type FerrydEnv,
} from '../../lib/ferryd.js';
import { TCP_SYN, frame } from '../../lib/packet.js';

// ---- helpers -------------------------------------------------------------------

const NAMES = nameTable(
  [
    { dp_id: 0, name: 'web', address: '198.18.0.10' },
    { dp_id: 1, name: 'v6', address: '2001:db8::10' },
  ],
  [
    { dp_id: 10, address: '198.18.1.10' },
    { dp_id: 11, address: '198.18.1.11' },
    { dp_id: 20, address: '2001:db8:1::20' },
  ],
);

function record(o: Partial<FerryEventV>): Buffer {
  return FerryEvent.encode({
    ...FerryEvent.zero(),
    ts_ns: process.hrtime.bigint(),
    src: dpAddr('198.18.100.1').bytes,
    dst: dpAddr('198.18.0.10').bytes,
    sport: 40000,
    dport: 80,
    vip_id: 0,
    backend_id: 10,
    frame_len: 74,
    kind: FERRY_EVENT_FLOW,
    reason: 0,
    proto: 6,
    family: FERRY_AF_INET,
    ...o,
  });
}

/** A RingReader fed by the test. */
class FakeRing implements RingReader {
  records: Buffer[] = [];
  closed = false;
  consume(max: number): Buffer[] {
    return this.records.splice(0, max);
  }
  close(): void {
    this.closed = true;
  }
}

/** An open SSE stream over a unix socket, its messages collected. */
interface Sse {
  res: IncomingMessage;
  messages: SseMessage[];
  events(): MonitorEvent[];
  waitFor(pred: (ms: SseMessage[]) => boolean, what: string, ms?: number): Promise<void>;
  ended: Promise<void>;
  close(): void;
}

function openSse(socket: string, path: string): Promise<Sse> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, headers: { accept: 'text/event-stream' } }, (res) => {
      const messages: SseMessage[] = [];
      const parser = new SseParser((m) => messages.push(m));
      res.setEncoding('utf8');
      res.on('data', (c: string) => parser.push(c));
      const ended = new Promise<void>((r) => {
        res.on('end', () => r());
        res.on('close', () => r());
      });
      resolve({
        res,
        messages,
        ended,
        events: () => messages.filter((m) => m.event === 'flow' || m.event === 'drop').map((m) => JSON.parse(m.data) as MonitorEvent),
        async waitFor(pred, what, ms = 5000) {
          const deadline = Date.now() + ms;
          while (!pred(messages)) {
            if (Date.now() > deadline)
              throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(messages.map((m) => m.event))}`);
            await new Promise((r) => setTimeout(r, 20));
          }
        },
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
    req.end();
  });
}

// ---- decoding, names, filters ---------------------------------------------------

describe('monitor events: decoding and filters', () => {
  it('decodes a flow record and names its VIP and backend', () => {
    const nowMono = process.hrtime.bigint();
    const ev = toMonitorEvent(FerryEvent.decode(record({ ts_ns: nowMono - 1_500_000_000n })), NAMES, 1_700_000_000_000, nowMono);
    assert.deepEqual(ev, {
      kind: 'flow',
      time: new Date(1_700_000_000_000 - 1500).toISOString(),
      reason: 'maglev',
      family: 'ipv4',
      protocol: 'tcp',
      source: '198.18.100.1',
      source_port: 40000,
      destination: '198.18.0.10',
      destination_port: 80,
      vip: 'web',
      backend: '198.18.1.10',
      bytes: 74,
    });
    assert.match(formatEvent(ev), /flow web +tcp +198\.18\.100\.1:40000 -> 198\.18\.0\.10:80 +backend 198\.18\.1\.10 \(maglev\)$/);
  });

  it('decodes drops: reason names, unknown VIP as null, IPv6 endpoints in brackets', () => {
    const ev = toMonitorEvent(
      FerryEvent.decode(
        record({
          kind: FERRY_EVENT_DROP,
          reason: DROP_REASONS.indexOf('fragment'),
          vip_id: FERRY_VIP_NONE,
          backend_id: FERRY_BACKEND_NONE,
          family: FERRY_AF_INET6,
          src: dpAddr('2001:db8:100::1').bytes,
          dst: dpAddr('2001:db8::10').bytes,
          sport: 0,
          dport: 0,
          proto: 17,
        }),
      ),
      NAMES,
    );
    assert.equal(ev.kind, 'drop');
    assert.equal(ev.reason, 'fragment');
    assert.equal(ev.vip, null);
    assert.equal(ev.backend, null);
    assert.equal(ev.family, 'ipv6');
    assert.equal(ev.protocol, 'udp');
    assert.match(formatEvent(ev), /drop - +udp +\[2001:db8:100::1\] -> \[2001:db8::10\]  fragment$/);
    const stale = toMonitorEvent(FerryEvent.decode(record({ reason: 1, vip_id: 7, backend_id: 99 })), NAMES);
    assert.equal(stale.reason, 'ct_stale');
    assert.equal(stale.vip, null, 'an id the store does not know');
    assert.equal(stale.backend, null);
  });

  it('filters by kind and VIP; a drop before the VIP lookup matches its VIP by address', () => {
    const flow = toMonitorEvent(FerryEvent.decode(record({})), NAMES);
    const early = toMonitorEvent(FerryEvent.decode(record({ kind: FERRY_EVENT_DROP, reason: 4, vip_id: FERRY_VIP_NONE })), NAMES);
    const other = toMonitorEvent(
      FerryEvent.decode(record({ kind: FERRY_EVENT_DROP, reason: 6, vip_id: 1, dst: dpAddr('2001:db8::10').bytes })),
      NAMES,
    );
    assert.ok(matches(flow, {}, NAMES));
    assert.ok(matches(flow, { vip: 'web', kind: 'flow' }, NAMES));
    assert.ok(!matches(flow, { kind: 'drop' }, NAMES));
    assert.ok(matches(early, { vip: 'web' }, NAMES), "fragment to web's address");
    assert.ok(!matches(early, { vip: 'v6' }, NAMES));
    assert.ok(!matches(other, { vip: 'web' }, NAMES));
    assert.ok(!matches(flow, { vip: 'nope' }, NAMES));
  });

  it('parses server-sent events split anywhere, ignoring comments', () => {
    const got: SseMessage[] = [];
    const p = new SseParser((m) => got.push(m));
    const text = ': keepalive\n\nevent: ready\ndata: {"a":1}\n\nevent: flow\r\ndata: x\ndata: y\n\ndata: plain\n\n';
    for (const ch of text) p.push(ch);
    assert.deepEqual(got, [
      { event: 'ready', data: '{"a":1}' },
      { event: 'flow', data: 'x\ny' },
      { event: 'message', data: 'plain' },
    ]);
  });

  it('top computes per-VIP and per-backend rates from two readings', () => {
    const a = {
      vips: [
        {
          name: 'web',
          packets: 100,
          bytes: 10_000,
          new_flows: 10,
          ct_hits: 90,
          ct_misses: 10,
          drops: 0,
          backends: [
            { address: '198.18.1.10', packets: 60, bytes: 6000, new_flows: 6 },
            { address: '198.18.1.11', packets: 40, bytes: 4000, new_flows: 4 },
          ],
        },
      ],
      drops: { policy: 5 },
    };
    const b = {
      vips: [
        {
          name: 'web',
          packets: 300,
          bytes: 30_000,
          new_flows: 30,
          ct_hits: 270,
          ct_misses: 30,
          drops: 4,
          backends: [
            { address: '198.18.1.10', packets: 210, bytes: 21_000, new_flows: 21 },
            { address: '198.18.1.11', packets: 90, bytes: 9000, new_flows: 9 },
          ],
        },
        { name: 'new', packets: 5, bytes: 5, new_flows: 1, ct_hits: 0, ct_misses: 0, drops: 0, backends: [] },
      ],
      drops: { policy: 9 },
    };
    const f = topFrame(a, b, 2);
    assert.deepEqual(f.vips[0], {
      name: 'web',
      pps: 100,
      bps: 80_000,
      new_flows_per_sec: 10,
      drops_per_sec: 2,
      ct_hit_ratio: 0.9,
      backends: [
        { address: '198.18.1.10', pps: 75, bps: 60_000, new_flows_per_sec: 7.5, share: 0.75 },
        { address: '198.18.1.11', pps: 25, bps: 20_000, new_flows_per_sec: 2.5, share: 0.25 },
      ],
    });
    assert.equal(f.vips[1]!.pps, 0, 'a VIP seen once has no rate yet');
    assert.deepEqual(f.drops_per_sec, { policy: 2 });
  });
});

// ---- EventStream -----------------------------------------------------------------

describe('EventStream', () => {
  const settings = () => ({ flow_sample: 1, events_per_second: 1000 });

  it('fans events out to matching subscribers, waking each once per poll', () => {
    const ring = new FakeRing();
    const s = new EventStream(ring, () => NAMES, settings);
    const woken = { all: 0, drops: 0 };
    const all = s.subscribe(
      {},
      () => woken.all++,
      () => {},
    );
    const drops = s.subscribe(
      { kind: 'drop' },
      () => woken.drops++,
      () => {},
    );
    ring.records.push(record({}), record({ kind: FERRY_EVENT_DROP, reason: 6 }), record({ sport: 1 }));
    assert.equal(s.poll(), 3);
    assert.deepEqual(woken, { all: 1, drops: 1 });
    assert.deepEqual(
      all.take().map((e) => e.kind),
      ['flow', 'drop', 'flow'],
    );
    assert.deepEqual(
      drops.take().map((e) => e.reason),
      ['policy'],
    );
    assert.equal(s.poll(), 0);
    assert.deepEqual(woken, { all: 1, drops: 1 }, 'no events, no wake-up');
    assert.deepEqual(s.stats(), { read: 3, delivered: 4, lost: 0, subscribers: 2 });
  });

  it('a slow subscriber loses events, counted; others and the daemon are unaffected', () => {
    const ring = new FakeRing();
    const s = new EventStream(ring, () => NAMES, settings, { queueLimit: 4, maxPerPoll: 1000 });
    const slow = s.subscribe(
      {},
      () => {},
      () => {},
    );
    const fast = s.subscribe(
      {},
      () => {},
      () => {},
    );
    const got: MonitorEvent[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 10; i++) ring.records.push(record({ sport: round * 10 + i }));
      s.poll();
      got.push(...fast.take(2), ...fast.take());
    }
    assert.equal(got.length, 12, 'the fast one read 4 per poll');
    assert.deepEqual(
      slow.take().map((e) => e.source_port),
      [0, 1, 2, 3],
      'the slow one kept the first 4, in order',
    );
    assert.equal(slow.takeLost(), 26);
    assert.equal(slow.takeLost(), 0, 'lost counts are taken once');
    assert.equal(s.stats().lost, 26 + 18);
  });

  it('takes at most maxSubscribers at once', () => {
    const s = new EventStream(new FakeRing(), () => NAMES, settings, { maxSubscribers: 2 });
    const a = s.subscribe(
      {},
      () => {},
      () => {},
    );
    s.subscribe(
      {},
      () => {},
      () => {},
    );
    assert.throws(
      () =>
        s.subscribe(
          {},
          () => {},
          () => {},
        ),
      TooManySubscribers,
    );
    a.close();
    s.subscribe(
      {},
      () => {},
      () => {},
    );
  });

  it('reads at most maxPerPoll records per poll; reads even without subscribers', () => {
    const ring = new FakeRing();
    const s = new EventStream(
      ring,
      () => {
        throw new Error('names are not needed without subscribers');
      },
      settings,
      { maxPerPoll: 5 },
    );
    for (let i = 0; i < 12; i++) ring.records.push(record({}));
    assert.deepEqual([s.poll(), s.poll(), s.poll(), s.poll()], [5, 5, 2, 0]);
  });

  it('discards the backlog at start, ends subscriptions at stop, refuses new ones after', async () => {
    const ring = new FakeRing();
    for (let i = 0; i < 10_000; i++) ring.records.push(record({}));
    const s = new EventStream(ring, () => NAMES, settings, { maxPerPoll: 64, intervalMs: 10 });
    s.start();
    assert.equal(ring.records.length, 0, 'backlog discarded');
    let ended = 0;
    const sub = s.subscribe(
      {},
      () => {},
      () => ended++,
    );
    ring.records.push(record({}));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(sub.take().length, 1, 'the timer polls');
    s.stop();
    assert.equal(ended, 1);
    assert.ok(sub.closed);
    assert.ok(ring.closed);
    let late = 0;
    const after = s.subscribe(
      {},
      () => {},
      () => late++,
    );
    await new Promise((r) => setImmediate(r));
    assert.ok(after.closed);
    assert.equal(late, 1);
  });
});

// ---- GET /v1/monitor against the API alone -----------------------------------------

describe('GET /v1/monitor (API)', () => {
  let dir: string;
  let socket: string;
  let app: FastifyInstance;
  let ring: FakeRing;
  let stream: EventStream;
  const store = openStore(':memory:', { maxVips: 64, maxBackends: 1024 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-mon-'));
    socket = join(dir, 'api.sock');
    ring = new FakeRing();
    stream = new EventStream(
      ring,
      () => NAMES,
      () => ({ flow_sample: 4, events_per_second: 500 }),
      { intervalMs: 20 },
    );
    stream.start();
    const controller = new Controller(store, new FakeApplier(), (state) => planState(state));
    controller.reconcile();
    app = await buildApp({
      controller,
      info: new FakeInfo(() => controller),
      drainSeconds: 1,
      auth: null,
      logger: false,
      monitor: stream,
    });
    await app.listen({ path: socket });
  });
  after(async () => {
    stream?.stop();
    await app?.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('streams text/event-stream: ready with the settings, then the events, filtered by the query', async () => {
    const all = await openSse(socket, '/v1/monitor');
    const web = await openSse(socket, '/v1/monitor?vip=web');
    const drops = await openSse(socket, '/v1/monitor?drops=true');
    const flows = await openSse(socket, '/v1/monitor?kind=flow&vip=v6');
    try {
      assert.equal(all.res.statusCode, 200);
      assert.match(String(all.res.headers['content-type']), /^text\/event-stream/);
      assert.equal(all.res.headers['cache-control'], 'no-cache, no-store');
      for (const s of [all, web, drops, flows]) await s.waitFor((ms) => ms.length >= 1, 'ready');
      assert.deepEqual(all.messages[0], { event: 'ready', data: '{"flow_sample":4,"events_per_second":500}' });
      ring.records.push(
        record({ sport: 1 }),
        record({ sport: 2, kind: FERRY_EVENT_DROP, reason: 4, vip_id: FERRY_VIP_NONE }),
        record({
          sport: 3,
          vip_id: 1,
          backend_id: 20,
          family: FERRY_AF_INET6,
          src: dpAddr('2001:db8:100::1').bytes,
          dst: dpAddr('2001:db8::10').bytes,
        }),
        record({ sport: 4, kind: FERRY_EVENT_DROP, reason: 6, vip_id: 1, family: FERRY_AF_INET6, dst: dpAddr('2001:db8::10').bytes }),
      );
      await all.waitFor((ms) => ms.length >= 5, 'four events');
      await web.waitFor((ms) => ms.length >= 3, 'web events');
      await drops.waitFor((ms) => ms.length >= 3, 'drops');
      await flows.waitFor((ms) => ms.length >= 2, 'v6 flows');
      await new Promise((r) => setTimeout(r, 100));
      const ports = (s: Sse) => s.events().map((e) => `${e.kind}:${e.source_port}`);
      assert.deepEqual(ports(all), ['flow:1', 'drop:2', 'flow:3', 'drop:4']);
      assert.deepEqual(ports(web), ['flow:1', 'drop:2']);
      assert.deepEqual(ports(drops), ['drop:2', 'drop:4']);
      assert.deepEqual(ports(flows), ['flow:3']);
      assert.deepEqual(
        all.messages.slice(1).map((m) => m.event),
        ['flow', 'drop', 'flow', 'drop'],
      );
      assert.equal(all.events()[2]!.backend, '2001:db8:1::20');
    } finally {
      for (const s of [all, web, drops, flows]) s.close();
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(stream.stats().subscribers, 0, 'closed streams unsubscribe');
  });

  it('refuses bad queries (400) and answers 503 without a datapath', async () => {
    for (const url of ['/v1/monitor?kind=flows', '/v1/monitor?drops=true&kind=flow', '/v1/monitor?vip=NOT%20A%20NAME', '/v1/monitor?x=1']) {
      const r = await app.inject({ url });
      assert.equal(r.statusCode, 400, `${url}: ${r.body}`);
      assert.match(String(r.headers['content-type']), /problem\+json/);
    }
    const controller = new Controller(store, new FakeApplier(), (state) => planState(state));
    const bare = await buildApp({ controller, info: new FakeInfo(() => controller), drainSeconds: 1, auth: null, logger: false });
    try {
      const r = await bare.inject({ url: '/v1/monitor' });
      assert.equal(r.statusCode, 503);
      assert.equal(r.json<{ type: string }>().type, 'https://ferry.invalid/problems/monitor-unavailable');
      const head = await bare.inject({ method: 'HEAD', url: '/v1/monitor' });
      assert.equal(head.statusCode, 405, 'no HEAD for a stream');
      assert.equal(head.headers['allow'], 'GET');
    } finally {
      await bare.close();
    }
  });

  it('needs the bearer token on TCP listeners like every route', async () => {
    const controller = new Controller(store, new FakeApplier(), (state) => planState(state));
    const tcp = await buildApp({
      controller,
      info: new FakeInfo(() => controller),
      drainSeconds: 1,
      auth: { tokens: ['s3cret'] },
      logger: false,
      monitor: stream,
    });
    try {
      assert.equal((await tcp.inject({ url: '/v1/monitor' })).statusCode, 401);
      assert.equal(
        (await tcp.inject({ url: '/v1/monitor?kind=nope', headers: { authorization: 'Bearer s3cret' } })).statusCode,
        400,
        'past auth',
      );
    } finally {
      await tcp.close();
    }
  });

  it('closing the app ends open streams instead of waiting for them', async () => {
    const controller = new Controller(store, new FakeApplier(), (state) => planState(state));
    const other = await buildApp({
      controller,
      info: new FakeInfo(() => controller),
      drainSeconds: 1,
      auth: null,
      logger: false,
      monitor: stream,
    });
    const path = join(dir, 'other.sock');
    await other.listen({ path });
    const s = await openSse(path, '/v1/monitor');
    await s.waitFor((ms) => ms.length >= 1, 'ready');
    const t0 = Date.now();
    await other.close();
    await s.ended;
    assert.ok(Date.now() - t0 < 2000, 'closed promptly');
  });
});

// ---- a real ferryd ------------------------------------------------------------------

const skip = bpfUnavailable();
if (skip) console.log(`# skipping ferryd monitor tests: ${skip}`);

const WEB = '198.18.0.10';
const EMPTY = '198.18.0.20';

describe('ferryd live events', { skip }, () => {
  let e: FerrydEnv;
  let d: Ferryd;
  let dp: LbDatapath;
  let ctl: string[];

  const syn = (src: string, dst: string, sport: number) => frame({ src, dst, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_SYN });
  const run = (data: Buffer) => dp.nat.progTestRun(dp.progFd, { data }).retval;

  before(async () => {
    e = makeFerrydEnv('mon');
    // Every flow is an event; a cap well above what the tests send.
    const cfg = readFileSync(e.config, 'utf8').replace('datapath:\n', 'datapath:\n  events_flow_sample: 1\n  events_per_second: 20000\n');
    writeFileSync(e.config, cfg);
    d = await startFerryd(e);
    const ok = (args: string[]) => {
      const r = ferryctl(e, args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
    };
    ok(['vip', 'add', 'web', '--address', WEB, '--port', '80', '--protocol', 'tcp']);
    ok(['backend', 'add', 'web', '198.18.1.10']);
    ok(['backend', 'add', 'web', '198.18.1.11']);
    ok(['vip', 'add', 'empty', '--address', EMPTY, '--port', '80', '--protocol', 'tcp']);
    // A second xdp_lb on the daemon's pinned maps (and ring), driven by test runs.
    dp = openDaemonDatapath(e);
    ctl = [join(packageRoot(), 'dist', 'src', 'cli', 'ferryctl.js')];
  });
  after(async () => {
    dp?.close();
    if (d) await stopFerryd(d, 'SIGKILL');
    if (e) destroyFerrydEnv(e);
  });

  it('the stream carries the flows and drops the test caused, named, and filtered', async () => {
    const all = await openSse(e.socket, '/v1/monitor');
    const web = await openSse(e.socket, '/v1/monitor?vip=web');
    const drops = await openSse(e.socket, '/v1/monitor?drops=true');
    try {
      for (const s of [all, web, drops]) await s.waitFor((ms) => ms.length >= 1, 'ready');
      assert.deepEqual(JSON.parse(all.messages[0]!.data), { flow_sample: 1, events_per_second: 20000 });
      for (let i = 0; i < 5; i++) assert.equal(run(syn(`198.18.100.${i + 1}`, WEB, 41000 + i)), XDP_TX);
      const frag = syn('198.18.100.9', WEB, 41009);
      frag[20] = 0x20; // MF: a fragment to web's address, dropped before the VIP lookup
      assert.equal(run(frag), XDP_DROP);
      assert.equal(run(syn('198.18.100.8', EMPTY, 41008)), XDP_DROP);
      const mine = (s: Sse) => s.events().filter((x) => x.source.startsWith('198.18.100.'));
      await all.waitFor(() => mine(all).length >= 7, 'seven events');
      await web.waitFor(() => mine(web).length >= 6, "web's six");
      await drops.waitFor(() => mine(drops).length >= 2, 'two drops');
      const flows = mine(all).filter((x) => x.kind === 'flow');
      assert.equal(flows.length, 5);
      for (const [i, f] of flows.entries()) {
        assert.equal(f.vip, 'web');
        assert.equal(f.source, `198.18.100.${i + 1}`);
        assert.equal(f.source_port, 41000 + i);
        assert.equal(f.destination, WEB);
        assert.equal(f.destination_port, 80);
        assert.equal(f.protocol, 'tcp');
        assert.equal(f.reason, 'maglev');
        assert.ok(['198.18.1.10', '198.18.1.11'].includes(f.backend ?? ''), `backend ${f.backend}`);
        assert.ok(Math.abs(Date.parse(f.time) - Date.now()) < 10_000, 'wall-clock time');
      }
      const dropped = mine(all).filter((x) => x.kind === 'drop');
      assert.deepEqual(
        dropped.map((x) => [x.reason, x.vip, x.source]),
        [
          ['fragment', null, '198.18.100.9'],
          ['no_backend', 'empty', '198.18.100.8'],
        ],
      );
      assert.deepEqual(
        mine(web).map((x) => (x.kind === 'flow' ? 'flow' : x.reason)),
        ['flow', 'flow', 'flow', 'flow', 'flow', 'fragment'],
      );
      assert.deepEqual(
        mine(drops).map((x) => x.reason),
        ['fragment', 'no_backend'],
      );
    } finally {
      for (const s of [all, web, drops]) s.close();
    }
  });

  /** Starts `ferryctl … args`, collecting stdout lines. */
  function spawnCtl(args: string[]): { proc: ChildProcess; lines: string[]; err: () => string } {
    const proc = spawn(process.execPath, [...ctl, '--socket', e.socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let buf = '';
    let err = '';
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (c: string) => {
      buf += c;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts.filter((l) => l.length > 0));
    });
    proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    return { proc, lines, err: () => err };
  }

  it('ferryctl monitor --json prints one event per line until interrupted', async () => {
    const m = spawnCtl(['monitor', '--json', '--vip', 'web']);
    try {
      const deadline = Date.now() + 10_000;
      for (let i = 0; m.lines.length < 3; i++) {
        assert.ok(Date.now() < deadline, `no events from ferryctl monitor: ${m.err()}`);
        run(syn('198.18.100.50', WEB, 42000 + i));
        run(syn('198.18.100.51', EMPTY, 42000 + i)); // another VIP's drop: filtered out
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const l of m.lines) {
        const ev = JSON.parse(l) as MonitorEvent;
        assert.equal(ev.kind, 'flow');
        assert.equal(ev.vip, 'web');
        assert.equal(ev.source, '198.18.100.50');
      }
      m.proc.kill('SIGINT');
      const [code] = (await once(m.proc, 'exit')) as [number | null];
      assert.equal(code, 0, m.err());
    } finally {
      if (m.proc.exitCode === null) m.proc.kill('SIGKILL');
    }
  });

  it('ferryctl monitor --drops --count N prints text lines and exits by itself', async () => {
    const m = spawnCtl(['monitor', '--drops', '--count', '2']);
    const exit = once(m.proc, 'exit') as Promise<[number | null]>;
    for (let i = 0; i < 100 && m.proc.exitCode === null; i++) {
      run(syn('198.18.100.60', EMPTY, 43000 + i));
      await new Promise((r) => setTimeout(r, 100));
    }
    const [code] = await exit;
    assert.equal(code, 0, m.err());
    assert.equal(m.lines.length, 2);
    for (const l of m.lines) assert.match(l, /drop empty +tcp +198\.18\.100\.60:\d+ -> 198\.18\.0\.20:80  no_backend$/);
    assert.match(m.err(), /# monitoring: every drop, every new flow; at most 20000 events\/s/);
  });

  it('ferryctl top --once shows the rates of the traffic sent meanwhile', async () => {
    const t = spawnCtl(['top', '--once', '--json', '--interval', '1']);
    const exit = once(t.proc, 'exit') as Promise<[number | null]>;
    const stopAt = Date.now() + 1500;
    for (let i = 0; Date.now() < stopAt && t.proc.exitCode === null; i++) {
      for (let k = 0; k < 20; k++) run(syn(`198.18.101.${k}`, WEB, 44000 + i));
      await new Promise((r) => setTimeout(r, 50));
    }
    const [code] = await exit;
    assert.equal(code, 0, t.err());
    assert.equal(t.lines.length, 1);
    const f = JSON.parse(t.lines[0]!) as ReturnType<typeof topFrame>;
    const w = f.vips.find((v) => v.name === 'web')!;
    assert.ok(w.pps > 0 && w.new_flows_per_sec > 0, JSON.stringify(w));
    assert.equal(w.backends.length, 2);
    assert.ok(Math.abs(w.backends.reduce((s, b) => s + b.pps, 0) - w.pps) <= 1, 'backends add up to the VIP');
    const text = spawnSync(process.execPath, [...ctl, '--socket', e.socket, 'top', '--once', '--interval', '0.2'], { encoding: 'utf8' });
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /VIP +PKT\/S +BIT\/S +FLOWS\/S +DROPS\/S +CT HIT/);
    assert.match(text.stdout, /^web /m);
  });

  it('a stopping ferryd ends the streams; ferryctl monitor exits 3', async () => {
    const s = await openSse(e.socket, '/v1/monitor');
    await s.waitFor((ms) => ms.length >= 1, 'ready');
    const m = spawnCtl(['monitor']);
    await new Promise((r) => setTimeout(r, 500));
    const exit = once(m.proc, 'exit') as Promise<[number | null]>;
    assert.equal(await stopFerryd(d, 'SIGTERM'), 0);
    await s.ended;
    const [code] = await exit;
    assert.equal(code, 3, m.err());
    d = await startFerryd(e);
  });
});
