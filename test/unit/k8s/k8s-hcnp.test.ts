/**
 * The health-check node port responder on loopback: kube-proxy's answers
 * (200 / 503 with the Service and its local endpoint count), listeners
 * opened and closed as ports come and go, a port that cannot be bound
 * reported and retried until it can, two Services on one port, close().
 */
import assert from 'node:assert/strict';
import { request, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { HealthCheckNodePorts } from '../../../src/k8s/hcnp.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function get(host: string, port: number, path = '/'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, timeout: 2000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/** A port free on 127.0.0.1 and ::1 right now. */
async function freePort(): Promise<number> {
  for (;;) {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as AddressInfo).port;
    await new Promise((r) => s.close(r));
    const v6 = createServer();
    const ok = await new Promise<boolean>((r) => {
      v6.once('error', () => r(false));
      v6.listen(port, '::1', () => r(true));
    });
    if (ok) {
      await new Promise((r) => v6.close(r));
      return port;
    }
  }
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const refused = async (host: string, port: number): Promise<boolean> => {
  try {
    await get(host, port);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  }
};

const open: HealthCheckNodePorts[] = [];
const blockers: Server[] = [];
afterEach(async () => {
  for (const h of open.splice(0)) await h.close();
  for (const b of blockers.splice(0)) await new Promise((r) => b.close(r));
});

function responder(addresses: string[]): HealthCheckNodePorts {
  const h = new HealthCheckNodePorts({ addresses, retry: { initialMs: 20, maxMs: 60 } });
  open.push(h);
  return h;
}

describe('k8s health-check node ports', () => {
  it('answers like kube-proxy: 200 with the local endpoint count, 503 at zero, on every address; ports open and close with the list', async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const h = responder(['127.0.0.1', '::1']);
    h.update([
      { service: 'default/web', port: p1, localEndpoints: 2 },
      { service: 'shop/cart', port: p2, localEndpoints: 0 },
    ]);
    await until(() => h.status().every((s) => s.listeners.every((l) => l.listening)), 'both ports listening');

    const ok = await get('127.0.0.1', p1, '/any/path');
    assert.equal(ok.status, 200);
    assert.deepEqual(JSON.parse(ok.body), { service: { namespace: 'default', name: 'web' }, localEndpoints: 2 });
    assert.equal(ok.headers['content-type'], 'application/json');
    assert.equal(ok.headers['x-content-type-options'], 'nosniff');
    const v6 = await get('::1', p1);
    assert.equal(v6.status, 200, 'served on the IPv6 address too');
    const none = await get('127.0.0.1', p2);
    assert.equal(none.status, 503);
    assert.deepEqual(JSON.parse(none.body), { service: { namespace: 'shop', name: 'cart' }, localEndpoints: 0 });

    // Counts change the answer; a port that leaves the list is closed.
    h.update([{ service: 'default/web', port: p1, localEndpoints: 0 }]);
    const zero = await get('127.0.0.1', p1);
    assert.equal(zero.status, 503);
    assert.equal(JSON.parse(zero.body).localEndpoints, 0);
    await until(() => refused('127.0.0.1', p2), 'the removed port to close');
    assert.ok(await refused('::1', p2));
    assert.deepEqual(
      h.status().map((s) => [s.service, s.port, s.localEndpoints]),
      [['default/web', p1, 0]],
    );
    assert.equal(h.stats.bindFailures, 0);
    assert.ok(h.stats.requests >= 4);
  });

  it('a port that cannot be bound is reported, not fatal, and retried until it binds', async () => {
    const [taken, free] = [await freePort(), await freePort()];
    const blocker = createServer((_q, r) => r.end('someone else'));
    await new Promise<void>((r) => blocker.listen(taken, '127.0.0.1', r));
    blockers.push(blocker);
    const h = responder(['127.0.0.1']);
    h.update([
      { service: 'default/a', port: taken, localEndpoints: 1 },
      { service: 'default/b', port: free, localEndpoints: 1 },
    ]);
    await until(() => h.stats.bindFailures >= 2, 'a few failed binds');
    const st = h.status();
    const a = st.find((s) => s.service === 'default/a')!;
    assert.equal(a.listeners[0]?.listening, false);
    assert.match(a.listeners[0]?.error ?? '', /EADDRINUSE/);
    await until(() => h.status().find((s) => s.service === 'default/b')!.listeners[0]!.listening, 'the other port');
    assert.equal((await get('127.0.0.1', free)).status, 200, 'the other port is served meanwhile');
    assert.equal((await get('127.0.0.1', taken)).body, 'someone else');

    blockers.splice(0);
    await new Promise((r) => blocker.close(r));
    await until(() => h.status().find((s) => s.service === 'default/a')!.listeners[0]!.listening, 'the retry to bind');
    assert.equal(h.status().find((s) => s.service === 'default/a')!.listeners[0]!.error, null);
    const ans = await get('127.0.0.1', taken);
    assert.equal(ans.status, 200);
    assert.deepEqual(JSON.parse(ans.body), { service: { namespace: 'default', name: 'a' }, localEndpoints: 1 });
  });

  it('two Services on one port: the first by name is served, the other reported', async () => {
    const port = await freePort();
    const h = responder(['127.0.0.1']);
    h.update([
      { service: 'b/second', port, localEndpoints: 0 },
      { service: 'a/first', port, localEndpoints: 3 },
    ]);
    await until(() => h.status()[0]!.listeners[0]!.listening, 'listening');
    const st = h.status();
    assert.deepEqual(
      st.map((s) => [s.service, s.conflict]),
      [
        ['a/first', null],
        ['b/second', `port ${port} is already the health-check node port of a/first`],
      ],
    );
    assert.equal(JSON.parse((await get('127.0.0.1', port)).body).service.name, 'first');
  });

  it('close() closes every port; later updates open nothing', async () => {
    const port = await freePort();
    const h = responder(['127.0.0.1']);
    h.update([{ service: 'default/web', port, localEndpoints: 1 }]);
    await until(() => h.status()[0]?.listeners[0]?.listening === true, 'listening');
    await h.close();
    assert.ok(await refused('127.0.0.1', port));
    h.update([{ service: 'default/web', port, localEndpoints: 1 }]);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(await refused('127.0.0.1', port));
    assert.deepEqual(h.status(), []);
  });
});
