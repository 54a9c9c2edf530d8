/**
 * ferryctl monitor and ferryctl top: what the datapath is doing now.
 *
 *   monitor  streams live events (sampled new flows, drops) from
 *            GET /v1/monitor (server-sent events), one line each, or one JSON
 *            object per line with --json, until interrupted (or --count N).
 *   top      per-VIP and per-backend rates (packets, bits, new flows, drops
 *            per second) from two readings of the monotonic counters of
 *            /v1/stats, refreshed every --interval seconds (--once: one frame).
 */
import { type Command, InvalidArgumentError } from 'commander';
import type { StatsBody } from '../model/status.js';
import { formatEvent, type MonitorEvent } from '../monitor/events.js';
import { ConnectError, type Client, type ClientOf } from './client.js';
import { printTable } from './output.js';

interface MonitorOpts {
  vip?: string;
  drops?: boolean;
  flows?: boolean;
  count?: number;
}

interface TopOpts {
  interval: number;
  once?: boolean;
}

const positiveInt =
  (name: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
    return n;
  };

const seconds = (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0.1 || n > 3600) throw new InvalidArgumentError('--interval must be from 0.1 to 3600 seconds');
  return n;
};

/** One server-sent event. */
export interface SseMessage {
  event: string;
  data: string;
}

/** Splits a text/event-stream into messages; feed it chunks, it calls back per complete message. */
export class SseParser {
  private buf = '';
  private event = 'message';
  private data: string[] = [];

  constructor(private readonly onMessage: (m: SseMessage) => void) {}

  push(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0) this.onMessage({ event: this.event, data: this.data.join('\n') });
      this.event = 'message';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
  }
}

/** Exits quietly when stdout goes away (e.g. `ferryctl monitor | head`). */
function quietOnEpipe(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

async function monitor(api: Client, json: boolean, o: MonitorOpts): Promise<void> {
  if (o.drops && o.flows) throw new InvalidArgumentError('--drops and --flows exclude each other');
  const q = new URLSearchParams();
  if (o.vip !== undefined) q.set('vip', o.vip);
  if (o.drops) q.set('kind', 'drop');
  if (o.flows) q.set('kind', 'flow');
  const qs = q.toString();
  const { res, close } = await api.stream(`/v1/monitor${qs ? `?${qs}` : ''}`);
  quietOnEpipe();
  let seen = 0;
  let stopping = false;
  await new Promise<void>((resolve, reject) => {
    const stop = () => {
      stopping = true;
      close();
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const parser = new SseParser((m) => {
      if (stopping) return;
      if (m.event === 'ready') {
        const s = JSON.parse(m.data) as { flow_sample: number; events_per_second: number };
        if (json) return;
        const flows =
          s.flow_sample === 0
            ? 'no flow events (datapath.events_flow_sample is 0)'
            : s.flow_sample === 1
              ? 'every new flow'
              : `1 in ${s.flow_sample} new flows`;
        const cap =
          s.events_per_second === 0 ? 'events are off (datapath.events_per_second is 0)' : `at most ${s.events_per_second} events/s`;
        console.error(`# monitoring: every drop, ${flows}; ${cap}. Ctrl-C stops.`);
        return;
      }
      if (m.event === 'lost') {
        const n = (JSON.parse(m.data) as { events: number }).events;
        if (json) console.log(JSON.stringify({ kind: 'lost', events: n }));
        else console.error(`# ${n} event(s) lost: this client read too slowly`);
        return;
      }
      if (m.event !== 'flow' && m.event !== 'drop') return;
      if (json) console.log(m.data);
      else console.log(formatEvent(JSON.parse(m.data) as MonitorEvent));
      seen++;
      if (o.count !== undefined && seen >= o.count) stop();
    });
    res.setEncoding('utf8');
    res.on('data', (c: string) => parser.push(c));
    res.on('end', () => {
      if (!stopping) reject(new ConnectError('ferryd closed the event stream'));
    });
    res.on('error', (err) => {
      if (!stopping) reject(new ConnectError(`event stream failed: ${err.message}`));
    });
  });
}

/** Rates between two readings of /v1/stats. */
export interface TopFrame {
  interval_seconds: number;
  vips: Array<{
    name: string;
    pps: number;
    bps: number;
    new_flows_per_sec: number;
    drops_per_sec: number;
    ct_hit_ratio: number | null;
    backends: Array<{ address: string; pps: number; bps: number; new_flows_per_sec: number; share: number | null }>;
  }>;
  drops_per_sec: Record<string, number>;
}

const rate = (now: number, before: number | undefined, secs: number): number =>
  before === undefined || now < before ? 0 : Math.round(((now - before) / secs) * 10) / 10;

export function topFrame(a: StatsBody, b: StatsBody, secs: number): TopFrame {
  const prevVip = new Map(a.vips.map((v) => [v.name, v]));
  const vips = b.vips.map((v) => {
    const p = prevVip.get(v.name);
    const prevBe = new Map((p?.backends ?? []).map((x) => [x.address, x]));
    const hits = v.ct_hits - (p?.ct_hits ?? v.ct_hits);
    const misses = v.ct_misses - (p?.ct_misses ?? v.ct_misses);
    const pps = rate(v.packets, p?.packets, secs);
    return {
      name: v.name,
      pps,
      bps: rate(v.bytes * 8, p === undefined ? undefined : p.bytes * 8, secs),
      new_flows_per_sec: rate(v.new_flows, p?.new_flows, secs),
      drops_per_sec: rate(v.drops, p?.drops, secs),
      ct_hit_ratio: hits + misses > 0 && hits >= 0 && misses >= 0 ? Math.round((hits / (hits + misses)) * 1000) / 1000 : null,
      backends: v.backends.map((x) => {
        const q = prevBe.get(x.address);
        const bpps = rate(x.packets, q?.packets, secs);
        return {
          address: x.address,
          pps: bpps,
          bps: rate(x.bytes * 8, q === undefined ? undefined : q.bytes * 8, secs),
          new_flows_per_sec: rate(x.new_flows, q?.new_flows, secs),
          share: pps > 0 ? Math.round((bpps / pps) * 1000) / 1000 : null,
        };
      }),
    };
  });
  const drops: Record<string, number> = {};
  for (const [r, n] of Object.entries(b.drops)) {
    const d = rate(n, a.drops[r] ?? n, secs);
    if (d > 0) drops[r] = d;
  }
  return { interval_seconds: secs, vips, drops_per_sec: drops };
}

const human = (n: number, unit = ''): string => {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G${unit}`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M${unit}`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k${unit}`;
  return `${Number.isInteger(n) ? n : n.toFixed(1)}${unit}`;
};
const pct = (x: number | null): string => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);

function printTop(f: TopFrame): void {
  console.log(`ferry top  ${new Date().toISOString().slice(11, 19)}  (rates over ${f.interval_seconds} s)\n`);
  printTable(
    f.vips.map((v) => ({
      vip: v.name,
      'pkt/s': human(v.pps),
      'bit/s': human(v.bps),
      'flows/s': human(v.new_flows_per_sec),
      'drops/s': human(v.drops_per_sec),
      'ct hit': pct(v.ct_hit_ratio),
    })),
  );
  const rows = f.vips.flatMap((v) =>
    v.backends.map((b) => ({
      vip: v.name,
      backend: b.address,
      'pkt/s': human(b.pps),
      'bit/s': human(b.bps),
      'flows/s': human(b.new_flows_per_sec),
      share: pct(b.share),
    })),
  );
  if (rows.length) {
    console.log('');
    printTable(rows);
  }
  const drops = Object.entries(f.drops_per_sec);
  console.log(`\ndrops/s: ${drops.length ? drops.map(([r, n]) => `${r}=${human(n)}`).join(' ') : 'none'}`);
}

async function top(api: Client, json: boolean, o: TopOpts): Promise<void> {
  quietOnEpipe();
  const tty = process.stdout.isTTY === true && !o.once && !json;
  let stop = false;
  const onSignal = () => {
    stop = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let prev = await api.get<StatsBody>('/v1/stats');
  let prevAt = process.hrtime.bigint();
  for (;;) {
    const until = Date.now() + o.interval * 1000;
    while (!stop && Date.now() < until) await new Promise((r) => setTimeout(r, Math.min(200, until - Date.now())));
    if (stop) return;
    const cur = await api.get<StatsBody>('/v1/stats');
    const at = process.hrtime.bigint();
    const frame = topFrame(prev, cur, Math.round(Number(at - prevAt) / 1e6) / 1000);
    if (json) console.log(JSON.stringify(frame));
    else {
      if (tty) process.stdout.write('\x1b[2J\x1b[H');
      printTop(frame);
    }
    if (o.once) return;
    prev = cur;
    prevAt = at;
  }
}

export function monitorCommands(root: Command, client: ClientOf): void {
  root
    .command('monitor')
    .description('stream live datapath events: sampled new flows and every drop (Ctrl-C stops)')
    .option('--vip <name>', 'only events of this VIP')
    .option('--drops', 'only drops')
    .option('--flows', 'only sampled new flows')
    .option('-n, --count <n>', 'exit after N events', positiveInt('--count'))
    .action(async (o: MonitorOpts, cmd: Command) => {
      const { api, g } = client(cmd);
      await monitor(api, g.json === true, o);
    });
  root
    .command('top')
    .description('live per-VIP and per-backend rates (packets, bits, new flows, drops per second)')
    .option('-i, --interval <seconds>', 'seconds between readings', seconds, 2)
    .option('--once', 'print one frame (after one interval) and exit')
    .action(async (o: TopOpts, cmd: Command) => {
      const { api, g } = client(cmd);
      await top(api, g.json === true, o);
    });
}
