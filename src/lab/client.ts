/**
 * The lab's traffic client, run inside the client namespace. Prints one
 * JSON object with per-backend answer counts.
 *
 *   node dist/src/lab/client.js http VIP COUNT   one new connection per request
 *   node dist/src/lab/client.js udp VIP COUNT    one datagram per new source port
 */
import { request } from 'node:http';
import { createSocket } from 'node:dgram';

export interface ClientResult {
  requests: number;
  errors: number;
  per_backend: Record<string, number>;
}

const TIMEOUT_MS = 2000;
const PARALLEL = 16;

function httpOnce(vip: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: vip, port: 80, path: '/', agent: false, timeout: TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body.trim()));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function udpOnce(vip: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = createSocket(vip.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error('timeout'));
    }, TIMEOUT_MS);
    sock.on('message', (msg) => {
      clearTimeout(timer);
      sock.close();
      resolve(msg.toString().split(' ')[0] ?? '');
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      sock.close();
      reject(err);
    });
    sock.send('ping', 53, vip);
  });
}

async function drive(count: number, once: () => Promise<string>): Promise<ClientResult> {
  const out: ClientResult = { requests: count, errors: 0, per_backend: {} };
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      try {
        const name = await once();
        out.per_backend[name] = (out.per_backend[name] ?? 0) + 1;
      } catch {
        out.errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return out;
}

async function main(): Promise<void> {
  const [kind, vip, countText] = process.argv.slice(2);
  const count = Number(countText);
  if ((kind !== 'http' && kind !== 'udp') || !vip || !Number.isInteger(count) || count <= 0) {
    throw new Error('usage: client.js http|udp VIP COUNT');
  }
  const result = await drive(count, kind === 'http' ? () => httpOnce(vip) : () => udpOnce(vip));
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
