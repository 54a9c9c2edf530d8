/**
 * One health check against one backend: TCP connect, HTTP(S) GET, or a UDP
 * request/reply. Everything is asynchronous (sockets and one timer per
 * check); a probe never throws, it answers {ok, error, durationMs}, and it
 * gives up at its timeout or when its signal aborts, releasing its socket.
 */
import dgram from 'node:dgram';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { loadNative } from '../datapath/native.js';
import { ipFamily, isIp } from '../net/addr.js';

export interface HttpExpect {
  path: string;
  /** Host header and TLS server name; null: the backend's address. */
  host: string | null;
  status: readonly [number, number];
  /** Substring the body must contain; null: the status decides. */
  body: string | null;
}

export interface UdpExpect {
  payload: Buffer;
  /** Substring the reply must contain; null: any reply passes. */
  reply: string | null;
}

/** What to check, resolved from the configuration (see targets.ts). */
export interface Probe {
  type: 'tcp' | 'http' | 'https' | 'udp';
  address: string;
  port: number;
  timeoutMs: number;
  http?: HttpExpect;
  udp?: UdpExpect;
  /** Through the DSR path: the VIP the tunnel delivers the check to (see dsr.ts). */
  dsr?: { vip: string };
  /** SO_MARK of the check's socket (set at run time for DSR checks). */
  mark?: number;
}

export interface ProbeResult {
  ok: boolean;
  /** Why it failed; null when it passed. */
  error: string | null;
  durationMs: number;
}

export type ProbeFn = (p: Probe, signal: AbortSignal) => Promise<ProbeResult>;

/** Ends a probe once: the first verdict wins, later ones (late errors, data) are ignored. */
type Finish = (ok: boolean, error: string | null) => void;
/** Releases what a probe holds (its socket); must not throw. */
type Release = () => void;

/** Bodies are scanned for expect_body up to this many bytes, then the check fails. */
export const MAX_BODY_SCAN = 256 * 1024;

const SHORT_ERRORS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EPIPE: 'connection closed',
  EADDRNOTAVAIL: 'no local address to reach it',
};

/** "connection refused" rather than "connect ECONNREFUSED 198.18.0.1:80": the event names the backend already. */
export function describeError(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && SHORT_ERRORS[code] !== undefined) return SHORT_ERRORS[code];
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Runs a probe with its deadline and abort handling. */
export function runProbe(p: Probe, signal: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    let release: Release = () => {};
    let phase = p.type === 'udp' ? 'no reply' : 'connecting';
    let done = false;
    const finish: Finish = (ok, error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      release();
      resolve({ ok, error, durationMs: performance.now() - started });
    };
    const onAbort = (): void => finish(false, 'aborted');
    const timer = setTimeout(() => finish(false, `timeout after ${p.timeoutMs} ms (${phase})`), p.timeoutMs);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    const setPhase = (next: string): void => {
      phase = next;
    };
    try {
      release = start(p, finish, setPhase);
    } catch (err) {
      finish(false, describeError(err));
    }
    // A probe that finished synchronously (bad input) released nothing yet.
    if (done) release();
  });
}

function start(p: Probe, finish: Finish, setPhase: (phase: string) => void): Release {
  switch (p.type) {
    case 'tcp':
      return tcpProbe(p, finish);
    case 'http':
    case 'https':
      return httpProbe(p, finish, setPhase);
    case 'udp':
      return udpProbe(p, finish);
  }
}

/** A connection that opens passes. It is closed with a RST: no TIME_WAIT left behind per check. */
function tcpProbe(p: Probe, finish: Finish): Release {
  const sock = tcpConnect(p);
  sock.once('connect', () => finish(true, null));
  sock.on('error', (err) => finish(false, describeError(err)));
  return () => {
    if (sock.readyState === 'open') sock.resetAndDestroy();
    else sock.destroy();
  };
}

/**
 * A TCP connection to the probe's backend; a marked one when the probe has a
 * mark. The mark must be on the socket before the SYN, and Node cannot set
 * SO_MARK, so the addon creates the socket and net.Socket adopts it by fd.
 */
function tcpConnect(p: Probe): net.Socket {
  if (p.mark === undefined) return net.connect({ host: p.address, port: p.port });
  const fd = loadNative().socketOpen(ipFamily(p.address), 'tcp', p.mark);
  const sock = new net.Socket({ fd, readable: true, writable: true });
  return sock.connect({ host: p.address, port: p.port });
}

/** "[2001:db8::1]:8080", "198.18.0.1" (the scheme's default port is left out, as browsers do). */
function hostHeader(p: Probe, h: HttpExpect): string {
  const name = h.host ?? (ipFamily(p.address) === 6 ? `[${p.address}]` : p.address);
  const defaultPort = p.type === 'https' ? 443 : 80;
  return p.port === defaultPort ? name : `${name}:${p.port}`;
}

/** GET path: the status must be in range and, if asked, the body must contain the text. */
function httpProbe(p: Probe, finish: Finish, setPhase: (phase: string) => void): Release {
  const h = p.http;
  if (h === undefined) throw new Error('http probe without its expectations');
  const options: https.RequestOptions = {
    host: p.address,
    port: p.port,
    path: h.path,
    method: 'GET',
    // A fresh connection every time: a pooled one would not test that the server still accepts.
    agent: false,
    headers: { host: hostHeader(p, h), 'user-agent': 'ferry-health-check', accept: '*/*', connection: 'close' },
  };
  if (p.type === 'https') {
    // Backends are addressed by IP and commonly carry certificates for a public name: check liveness, not identity.
    options.rejectUnauthorized = false;
    if (h.host !== null && !isIp(h.host)) options.servername = h.host;
  }
  if (p.mark !== undefined) {
    // The marked socket is ours; TLS (for https) runs over it. Without an agent: an agent (even a
    // fresh one, agent: false) opens its own connection and ignores createConnection.
    const servername = options.servername;
    delete options.agent;
    options.createConnection = () => {
      const raw = tcpConnect(p);
      if (p.type !== 'https') return raw;
      return tls.connect({ socket: raw, rejectUnauthorized: false, ...(servername ? { servername } : {}) });
    };
  }
  const req = (p.type === 'https' ? https : http).request(options, (res) => onResponse(res, h, finish, setPhase));
  req.on('socket', (s) => s.once(p.type === 'https' ? 'secureConnect' : 'connect', () => setPhase('waiting for the response')));
  req.on('error', (err) => finish(false, describeError(err)));
  req.end();
  return () => req.destroy();
}

function onResponse(res: http.IncomingMessage, h: HttpExpect, finish: Finish, setPhase: (phase: string) => void): void {
  // Destroying the request mid-body makes the response emit an error: it must not go unhandled.
  res.on('error', (err) => finish(false, describeError(err)));
  const code = res.statusCode ?? 0;
  const [lo, hi] = h.status;
  if (code < lo || code > hi) return finish(false, `status ${code}, expected ${lo === hi ? lo : `${lo}-${hi}`}`);
  const want = h.body;
  if (want === null) return finish(true, null);
  setPhase('reading the body');
  res.setEncoding('utf8');
  // Keep only a tail as long as the needle: a match may straddle two chunks.
  let tail = '';
  let seen = 0;
  res.on('data', (chunk: string) => {
    const text = tail + chunk;
    if (text.includes(want)) return finish(true, null);
    seen += chunk.length;
    if (seen > MAX_BODY_SCAN) return finish(false, `body lacks ${JSON.stringify(want)} in its first ${MAX_BODY_SCAN} bytes`);
    tail = text.slice(-(want.length - 1) || text.length);
  });
  res.on('end', () => finish(false, `body lacks ${JSON.stringify(want)}`));
}

/**
 * Sends the payload from a connected socket: only the backend's address and
 * port can answer, and an ICMP port unreachable fails the check at once
 * (ECONNREFUSED) instead of waiting for the timeout.
 */
function udpProbe(p: Probe, finish: Finish): Release {
  const u = p.udp;
  if (u === undefined) throw new Error('udp probe without its payload');
  const sock = dgram.createSocket(ipFamily(p.address) === 6 ? 'udp6' : 'udp4');
  sock.on('error', (err) => finish(false, describeError(err)));
  sock.on('message', (msg) => {
    if (u.reply === null || msg.toString('utf8').includes(u.reply)) finish(true, null);
    else finish(false, `reply lacks ${JSON.stringify(u.reply)}`);
  });
  const send = (): void => {
    sock.connect(p.port, p.address, () => {
      sock.send(u.payload, (err) => {
        if (err) finish(false, describeError(err));
      });
    });
  };
  if (p.mark === undefined) send();
  else {
    // Marked after bind (the socket exists from then on), before anything is sent.
    const mark = p.mark;
    sock.bind(0, () => {
      try {
        loadNative().socketSetMark(udpFd(sock), mark);
      } catch (err) {
        return finish(false, describeError(err));
      }
      send();
    });
  }
  return () => {
    try {
      sock.close();
    } catch {
      // Already closed (an error closed it first).
    }
  };
}

/**
 * The fd of a bound dgram socket. Node does not expose it; its handle keeps
 * it under an internal symbol (Node 20, 22). Throws a clear error when that
 * changes instead of sending an unmarked check.
 */
function udpFd(sock: dgram.Socket): number {
  for (const sym of Object.getOwnPropertySymbols(sock)) {
    const state = (sock as unknown as Record<symbol, unknown>)[sym] as { handle?: { fd?: unknown } } | undefined;
    const fd = state?.handle?.fd;
    if (typeof fd === 'number' && fd >= 0) return fd;
  }
  throw new Error('cannot mark this UDP socket (its fd is not reachable on this Node version)');
}
