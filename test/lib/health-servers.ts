/**
 * Real servers on loopback addresses (127.0.0.0/8: every address of it is
 * local on Linux, so each backend gets an address of its own without a
 * namespace) for the health check tests and benchmark.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

/** A TCP listener that can be stopped and started again on the same address and port. */
export class TcpServer {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(readonly host: string) {}

  async start(): Promise<this> {
    const server = net.createServer((s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {});
      s.end();
    });
    server.listen({ host: this.host, port: this.port, exclusive: true });
    await once(server, 'listening');
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
    return this;
  }

  /** Connections are refused from now on. */
  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s === null) return;
    for (const c of this.sockets) c.destroy();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  get listening(): boolean {
    return this.server !== null;
  }
}

export type HttpHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** An HTTP (or HTTPS, with a key and certificate) server on a loopback address; the handler may never answer. */
export class HttpServer {
  private server: http.Server | https.Server | null = null;
  port = 0;
  requests = 0;

  constructor(
    readonly host: string,
    private readonly handler: HttpHandler,
    private readonly tls?: { key: string; cert: string },
  ) {}

  async start(): Promise<this> {
    const handler: HttpHandler = (req, res) => {
      this.requests += 1;
      this.handler(req, res);
    };
    const server = this.tls === undefined ? http.createServer(handler) : https.createServer(this.tls, handler);
    server.on('clientError', () => {});
    server.listen({ host: this.host, port: this.port });
    await once(server, 'listening');
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
    return this;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s === null) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** A UDP server answering each datagram with reply(datagram), or not at all when reply returns null. */
export class UdpServer {
  private sock: dgram.Socket | null = null;
  port = 0;
  received = 0;

  constructor(
    readonly host: string,
    private readonly reply: (msg: Buffer) => Buffer | null,
  ) {}

  async start(): Promise<this> {
    const sock = dgram.createSocket('udp4');
    sock.on('message', (msg, rinfo) => {
      this.received += 1;
      const out = this.reply(msg);
      if (out !== null) sock.send(out, rinfo.port, rinfo.address);
    });
    sock.bind(this.port, this.host);
    await once(sock, 'listening');
    this.port = sock.address().port;
    this.sock = sock;
    return this;
  }

  async stop(): Promise<void> {
    const s = this.sock;
    this.sock = null;
    if (s !== null) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** A port nothing listens on at `host` (bound and released: the kernel will refuse connections to it). */
export async function closedPort(host: string): Promise<number> {
  const s = net.createServer();
  s.listen({ host, port: 0 });
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Polls `cond` every `everyMs` until it holds or `timeoutMs` passes; returns the time it took, or throws. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs: number, everyMs = 10): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (cond()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
