/**
 * What one client may ask of a listener (src/api/limits.ts): requests per
 * window per client address, request deadlines against slow senders, and
 * the TLS versions and ciphers a TCP listener accepts. Real sockets on
 * loopback for the deadlines and TLS.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { assertProblem, makeApi, type Api } from '../../lib/api-fixture.js';
import { selfSignedCert } from '../../lib/tls.js';

describe('API rate limit per client', () => {
  let api: Api;
  before(async () => {
    api = await makeApi({ auth: { tokens: ['limit-token'] }, rateLimit: { max: 5, windowMs: 60_000 } });
  });
  after(async () => api.close());

  const get = (from: string, token?: string) => api.app.inject({
    method: 'GET', url: '/v1/vips', remoteAddress: from, headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });

  it('answers 429 with Retry-After past the limit, counting refused tokens too; other clients go on', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await get('192.0.2.1', 'limit-token')).statusCode, 200);
    for (let i = 0; i < 2; i++) assert.equal((await get('192.0.2.1', 'guess')).statusCode, 401);
    const over = await get('192.0.2.1', 'limit-token');
    const p = assertProblem(over, 429);
    assert.equal(p.type, 'https://ferry.invalid/problems/rate-limited');
    assert.match(p.detail ?? '', /more than 5 requests from this client within 60 s; retry in/);
    assert.ok(Number(over.headers['retry-after']) > 0, 'Retry-After');
    assert.equal((await get('192.0.2.1')).statusCode, 429, 'no token is limited as well');
    assert.equal((await get('192.0.2.2', 'limit-token')).statusCode, 200, 'another client is not');
  });
});

describe('API request deadlines', () => {
  let api: Api;
  let port: number;
  before(async () => {
    api = await makeApi({ requestTimeoutMs: 400 });
    await api.app.listen({ host: '127.0.0.1', port: 0 });
    port = (api.app.server.address() as AddressInfo).port;
  });
  after(async () => api.close());

  /** Sends `text` and never finishes the request; resolves with what the server wrote before closing. */
  const stall = (text: string) => new Promise<{ reply: string; ms: number }>((resolve, reject) => {
    const t0 = Date.now();
    let reply = '';
    const s = netConnect({ host: '127.0.0.1', port }, () => s.write(text));
    s.on('data', (d: Buffer) => (reply += d.toString()));
    s.on('close', () => resolve({ reply, ms: Date.now() - t0 }));
    s.on('error', reject);
    setTimeout(() => { s.destroy(); reject(new Error('the server kept a stalled request open for 10 s')); }, 10_000).unref();
  });

  it('closes a request whose headers never end with 408', async () => {
    const r = await stall('GET /v1/status HTTP/1.1\r\nHost: ferry\r\nX-Slow: 1\r\n');
    assert.match(r.reply, /^HTTP\/1\.1 408/);
    assert.ok(r.ms >= 350, `closed after ${r.ms} ms, before the deadline`);
  });

  it('closes a request whose body never arrives with 408', async () => {
    const r = await stall('PUT /v1/vips/web HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"address"');
    assert.match(r.reply, /^HTTP\/1\.1 408/);
    assert.equal(api.store.read((tx) => tx.snapshot().vips.length), 0, 'nothing written');
  });

  it('still answers a request that arrives in time', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/v1/status`);
    assert.equal(res.status, 200);
  });
});

const haveOpenssl = spawnSync('openssl', ['version']).status === 0;

describe('API TLS defaults', { skip: haveOpenssl ? false : 'openssl not installed' }, () => {
  let dir: string;
  let cert: Buffer;
  let key: Buffer;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-tls-limits-'));
    const pem = selfSignedCert(dir);
    cert = readFileSync(pem.cert);
    key = readFileSync(pem.key);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** The protocol and cipher a client with `opts` gets, or the handshake's error. */
  async function handshake(minVersion: 'TLSv1.2' | 'TLSv1.3', opts: ConnectionOptions): Promise<{ protocol: string; cipher: string } | Error> {
    const api = await makeApi({ https: { cert, key, minVersion } });
    try {
      await api.app.listen({ host: '127.0.0.1', port: 0 });
      const port = (api.app.server.address() as AddressInfo).port;
      return await new Promise((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port, ca: cert, servername: undefined, ...opts }, () => {
          resolve({ protocol: s.getProtocol() ?? '', cipher: s.getCipher().name });
          s.end();
        });
        s.on('error', (err) => resolve(err));
      });
    } finally {
      await api.close();
    }
  }

  it('offers TLS 1.3, and TLS 1.2 only with forward-secret AEAD ciphers', async () => {
    const best = await handshake('TLSv1.2', {});
    assert.ok(!(best instanceof Error), String(best));
    assert.equal(best.protocol, 'TLSv1.3');
    const v12 = await handshake('TLSv1.2', { maxVersion: 'TLSv1.2' });
    assert.ok(!(v12 instanceof Error), String(v12));
    assert.match(v12.cipher, /^ECDHE-RSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
    // A client that only offers CBC or plain-RSA key exchange is refused by the server.
    for (const ciphers of ['ECDHE-RSA-AES128-SHA256', 'AES128-GCM-SHA256']) {
      const r = await handshake('TLSv1.2', { maxVersion: 'TLSv1.2', ciphers });
      assert.ok(r instanceof Error, `${ciphers} was accepted`);
      assert.match(r.message, /handshake failure|no shared cipher/i);
    }
  });

  it('refuses TLS 1.2 when tls_min_version is TLSv1.3', async () => {
    const r = await handshake('TLSv1.3', { maxVersion: 'TLSv1.2' });
    assert.ok(r instanceof Error, 'a TLS 1.2 client was accepted');
    assert.match(r.message, /protocol version|handshake failure/i);
    const ok = await handshake('TLSv1.3', {});
    assert.ok(!(ok instanceof Error) && ok.protocol === 'TLSv1.3', String(ok));
  });
});
