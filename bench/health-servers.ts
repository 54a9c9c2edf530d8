/**
 * Child process of bench/health.ts: a TCP and an HTTP server on each of
 * ADDRS loopback addresses 127.75.0.1.., so their work is not counted in the
 * checker's event loop. Prints "TCP_PORT HTTP_PORT" once listening.
 *
 * Usage: node health-servers.js ADDRS
 */
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';

const count = Number(process.argv[2] ?? '1');

async function listenAll(make: () => net.Server): Promise<number> {
  let port = 0;
  for (let i = 1; i <= count; i++) {
    const s = make();
    s.listen({ host: `127.75.0.${i}`, port, backlog: 4096 });
    await once(s, 'listening');
    port = (s.address() as net.AddressInfo).port;
  }
  return port;
}

const tcpPort = await listenAll(() =>
  net.createServer((c) => {
    c.on('error', () => {});
    c.end();
  }),
);
const httpPort = await listenAll(() => {
  const s = http.createServer((_req, res) => res.end('ok\n'));
  s.on('clientError', (_e, sock) => sock.destroy());
  return s;
});
process.stdout.write(`${tcpPort} ${httpPort}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
