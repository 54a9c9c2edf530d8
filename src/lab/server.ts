/**
 * The lab's backend servers, one process per backend namespace:
 *   - HTTP on port 80 (all addresses) answering with the backend's name
 *     (and, in the x-peer header, the client address it saw);
 *   - a TCP echo server on port 7 (long-lived streams echo byte for byte);
 *   - a UDP echo server on port 53 for each VIP, bound to the VIP address so
 *     replies leave from the address the client sent to.
 *
 *   node dist/src/lab/server.js NAME VIP[,VIP...]   (or "" for a pod, which holds no VIP)
 * Prints "ready" once every socket listens.
 */
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';

export const HTTP_PORT = 80;
export const ECHO_PORT = 7;
export const UDP_PORT = 53;

async function main(): Promise<void> {
  const [name, vipList] = process.argv.slice(2);
  if (!name || vipList === undefined) throw new Error('usage: server.js NAME VIP[,VIP...] (an empty list for an ordinary pod)');
  const http = createHttpServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.setHeader('x-backend', name);
    // A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d.
    res.setHeader('x-peer', (req.socket.remoteAddress ?? '').replace(/^::ffff:/, ''));
    res.end(`${name}\n`);
  });
  http.keepAliveTimeout = 1000;
  http.listen(HTTP_PORT, '::');
  await once(http, 'listening');
  const echo = createTcpServer((sock) => {
    sock.on('error', () => sock.destroy());
    sock.pipe(sock);
  });
  echo.listen(ECHO_PORT, '::');
  await once(echo, 'listening');
  for (const vip of vipList.split(',').filter((v) => v !== '')) {
    const udp = createSocket(vip.includes(':') ? 'udp6' : 'udp4');
    udp.on('message', (msg, rinfo) => udp.send(Buffer.concat([Buffer.from(`${name} `), msg]), rinfo.port, rinfo.address));
    udp.bind(UDP_PORT, vip);
    await once(udp, 'listening');
  }
  console.log('ready');
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
