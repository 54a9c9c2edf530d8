/**
 * The lab's traffic client, run inside the client namespace.
 *
 *   node dist/src/lab/client.js http VIP COUNT [OPTIONS]   one new connection per request
 *   node dist/src/lab/client.js udp VIP COUNT [OPTIONS]    one datagram per new source port
 *   node dist/src/lab/client.js stream VIP [OPTIONS]       one long-lived TCP stream to the echo server
 *   node dist/src/lab/client.js rate VIP MS [OPTIONS]      HTTP, one new connection per request, for MS ms
 *
 * Options: --port N (80 / 53 / 7 by mode), --source ADDR (local address to
 * send from), --timeout MS (per request, default 2000), --parallel N (16),
 * --rate BYTES_PER_SEC (stream, default 1,600,000).
 *
 * http and udp print one JSON object (ClientResult): answers per backend,
 * the addresses replies came from, the client addresses the backends saw
 * (http), errors by kind. rate keeps --parallel requests in flight until
 * MS have passed and prints a RateResult: the
 * ClientResult plus the elapsed time and latency percentiles (connect to
 * last body byte, successful requests only).
 *
 * stream writes a known byte sequence continuously (paced, never more than
 * 256 KiB unacknowledged in the socket) and checks every echoed byte. It
 * prints JSON lines: {"event":"connected",...} once connected, and a
 * {"event":"report",...} StreamReport for each "report" line on stdin;
 * "stop" on stdin (or SIGTERM) stops writing, waits for the echo of every
 * byte sent, closes and prints {"event":"final",...}.
 */
import { request } from 'node:http';
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

export interface ClientResult {
  requests: number;
  errors: number;
  per_backend: Record<string, number>;
  /** Source address of the replies → count (a DSR reply must come from the VIP). */
  sources: Record<string, number>;
  /** Error code or message → count. */
  error_kinds: Record<string, number>;
  /** http: the client address the backend saw (its x-peer header) → count: kept, or translated on the way. */
  peers: Record<string, number>;
}

export interface RateResult extends ClientResult {
  elapsed_ms: number;
  /** Successful requests per second of elapsed time. */
  per_second: number;
  latency_ms: { p50: number; p90: number; p99: number; max: number };
}

export interface StreamReport {
  event: 'connected' | 'report' | 'final';
  local_address: string;
  local_port: number;
  remote_address: string;
  /** Bytes written to the socket. */
  sent: number;
  /** Bytes echoed back and checked. */
  received: number;
  /** Offset of the first echoed byte that differed from what was sent, or null. */
  first_mismatch: number | null;
  /** A reset, timeout or other socket error, or null. */
  error: string | null;
  /** The peer closed the stream before we did. */
  closed_by_peer: boolean;
}

interface Options {
  port?: number;
  source?: string;
  timeoutMs: number;
  parallel: number;
  rate: number;
}

const DEFAULT_PORTS = { http: 80, udp: 53, stream: 7 } as const;

interface Answer {
  name: string;
  from: string;
  peer?: string;
}

function httpOnce(vip: string, o: Options): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: vip,
        port: o.port ?? DEFAULT_PORTS.http,
        path: '/',
        agent: false,
        timeout: o.timeoutMs,
        ...(o.source ? { localAddress: o.source } : {}),
      },
      (res) => {
        const from = res.socket.remoteAddress ?? '';
        const peer = res.headers['x-peer'];
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ name: body.trim(), from, ...(typeof peer === 'string' ? { peer } : {}) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function udpOnce(vip: string, o: Options): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const sock = createSocket(vip.includes(':') ? 'udp6' : 'udp4');
    const done = (err: Error | null, value?: Answer) => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => done(new Error('timeout')), o.timeoutMs);
    sock.on('message', (msg, rinfo) => done(null, { name: msg.toString().split(' ')[0] ?? '', from: rinfo.address }));
    sock.on('error', (err) => done(err));
    // An unconnected socket: a reply from any address is received and reported.
    sock.bind({ port: 0, ...(o.source ? { address: o.source } : {}) }, () => sock.send('ping', o.port ?? DEFAULT_PORTS.udp, vip));
  });
}

async function drive(count: number, o: Options, once: () => Promise<Answer>): Promise<ClientResult> {
  const out: ClientResult = { requests: count, errors: 0, per_backend: {}, sources: {}, error_kinds: {}, peers: {} };
  const inc = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      try {
        const r = await once();
        inc(out.per_backend, r.name);
        inc(out.sources, r.from);
        if (r.peer !== undefined) inc(out.peers, r.peer);
      } catch (err) {
        out.errors++;
        inc(out.error_kinds, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.parallel, count) }, worker));
  return out;
}

/** The value below which a fraction q of the sorted samples lie (nearest rank). */
function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

async function rate(vip: string, ms: number, o: Options): Promise<RateResult> {
  const out: ClientResult = { requests: 0, errors: 0, per_backend: {}, sources: {}, error_kinds: {}, peers: {} };
  const inc = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
  const latencies: number[] = [];
  const t0 = performance.now();
  const end = t0 + ms;
  const worker = async () => {
    while (performance.now() < end) {
      const start = performance.now();
      out.requests++;
      try {
        const r = await httpOnce(vip, o);
        latencies.push(performance.now() - start);
        inc(out.per_backend, r.name);
        inc(out.sources, r.from);
      } catch (err) {
        out.errors++;
        inc(out.error_kinds, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: o.parallel }, worker));
  const elapsed = performance.now() - t0;
  latencies.sort((a, b) => a - b);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    ...out,
    elapsed_ms: Math.round(elapsed),
    per_second: Math.round((latencies.length * 1000) / elapsed),
    latency_ms: {
      p50: r3(percentile(latencies, 0.5)),
      p90: r3(percentile(latencies, 0.9)),
      p99: r3(percentile(latencies, 0.99)),
      max: r3(latencies.at(-1) ?? 0),
    },
  };
}

// ---- stream ----------------------------------------------------------------

/** The byte at offset i of the stream: a hash of its 4-byte word, so any loss, duplication or shift shows. */
function fill(buf: Buffer, offset: number): void {
  let word = -1;
  let w = 0;
  for (let j = 0; j < buf.length; j++) {
    const i = offset + j;
    const k = Math.floor(i / 4);
    if (k !== word) {
      word = k;
      let x = (k ^ 0x9e3779b9) >>> 0;
      x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
      x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
      w = (x ^ (x >>> 16)) >>> 0;
    }
    buf[j] = (w >>> ((i & 3) * 8)) & 0xff;
  }
}

const STREAM_CHUNK = 16 * 1024;
const STREAM_TICK_MS = 10;
const STREAM_MAX_QUEUED = 256 * 1024;

async function stream(vip: string, o: Options): Promise<void> {
  const sock: Socket = connect({ host: vip, port: o.port ?? DEFAULT_PORTS.stream, ...(o.source ? { localAddress: o.source } : {}) });
  const st: StreamReport = {
    event: 'report',
    local_address: '',
    local_port: 0,
    remote_address: '',
    sent: 0,
    received: 0,
    first_mismatch: null,
    error: null,
    closed_by_peer: false,
  };
  const print = (event: StreamReport['event']) => process.stdout.write(`${JSON.stringify({ ...st, event })}\n`);
  let stopping = false;
  let ended = false;
  const perTick = Math.max(1, Math.round((o.rate * STREAM_TICK_MS) / 1000));
  let budget = 0;
  let timer: NodeJS.Timeout | undefined;

  sock.setNoDelay(true);
  sock.on('connect', () => {
    st.local_address = sock.localAddress ?? '';
    st.local_port = sock.localPort ?? 0;
    st.remote_address = sock.remoteAddress ?? '';
    print('connected');
    timer = setInterval(() => {
      if (stopping || st.error || ended) return;
      budget = Math.min(budget + perTick, STREAM_CHUNK * 8);
      while (budget > 0 && sock.writableLength < STREAM_MAX_QUEUED) {
        const n = Math.min(budget, STREAM_CHUNK);
        const b = Buffer.allocUnsafe(n);
        fill(b, st.sent);
        sock.write(b);
        st.sent += n;
        budget -= n;
      }
    }, STREAM_TICK_MS);
  });
  const expect = Buffer.allocUnsafe(64 * 1024);
  sock.on('data', (d: Buffer) => {
    for (let off = 0; off < d.length; off += expect.length) {
      const part = d.subarray(off, off + expect.length);
      const want = expect.subarray(0, part.length);
      fill(want, st.received);
      if (st.first_mismatch === null && !part.equals(want)) {
        let k = 0;
        while (part[k] === want[k]) k++;
        st.first_mismatch = st.received + k;
      }
      st.received += part.length;
    }
  });
  sock.on('error', (err: NodeJS.ErrnoException) => {
    st.error ??= err.code ?? err.message;
  });
  sock.on('end', () => {
    if (!stopping) st.closed_by_peer = true;
    ended = true;
  });
  sock.on('close', () => {
    ended = true;
    if (st.local_port === 0) {
      // Never connected: say why and give up.
      print('final');
      process.exit(1);
    }
  });

  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const deadline = Date.now() + 15_000;
    while (!ended && !st.error && st.received < st.sent && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (timer) clearInterval(timer);
    print('final');
    sock.end();
    sock.destroy();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'report') print('report');
    else if (cmd === 'stop') void stop();
  });
  rl.on('close', () => void stop());
}

// ---- main ------------------------------------------------------------------

function parseOptions(args: string[]): Options {
  const o: Options = { timeoutMs: 2000, parallel: 16, rate: 1_600_000 };
  const int = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} takes an integer from ${min} to ${max}`);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = args[i + 1];
    i++;
    if (a === '--port') o.port = int(a, v, 1, 65535);
    else if (a === '--source' && v) o.source = v;
    else if (a === '--timeout') o.timeoutMs = int(a, v, 1, 600_000);
    else if (a === '--parallel') o.parallel = int(a, v, 1, 1024);
    else if (a === '--rate') o.rate = int(a, v, 1000, 1_000_000_000);
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

const USAGE =
  'usage: client.js http|udp VIP COUNT [--port N] [--source ADDR] [--timeout MS] [--parallel N] | rate VIP MS [--port N] [--parallel N] | stream VIP [--port N] [--source ADDR] [--rate B/S]';

async function main(): Promise<void> {
  const [kind, vip, ...rest] = process.argv.slice(2);
  if (!vip) throw new Error(USAGE);
  if (kind === 'stream') return stream(vip, parseOptions(rest));
  const [countText, ...opts] = rest;
  const count = Number(countText);
  if (kind === 'rate') {
    if (!Number.isInteger(count) || count <= 0) throw new Error(USAGE);
    console.log(JSON.stringify(await rate(vip, count, parseOptions(opts))));
    return;
  }
  if ((kind !== 'http' && kind !== 'udp') || !Number.isInteger(count) || count <= 0) throw new Error(USAGE);
  const o = parseOptions(opts);
  const result = await drive(count, o, kind === 'http' ? () => httpOnce(vip, o) : () => udpOnce(vip, o));
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
