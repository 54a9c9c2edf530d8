/**
 * ferryctl's HTTP client (src/cli/client.ts) against a server that dies
 * mid-answer, as ferryd does when it is killed: the request fails as
 * "unreachable" (exit code 3) instead of waiting forever.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, ConnectError } from '../../../src/cli/client.js';

describe('ferryctl client', () => {
  let dir: string;
  let server: Server;
  let answer = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-client-'));
    server = createServer((sock) => {
      sock.once('data', () => {
        sock.write(answer);
        setTimeout(() => sock.destroy(), 20);
      });
    });
    await new Promise<void>((r) => server.listen(join(dir, 'api.sock'), r));
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [what, text] of [
    [
      'a body shorter than its Content-Length',
      'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"vips":[',
    ],
    [
      'a chunked body without its last chunk',
      'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n',
    ],
  ] as const) {
    it(`rejects ${what} as unreachable`, async () => {
      answer = text;
      const c = new Client({ socket: join(dir, 'api.sock') });
      await assert.rejects(c.request('GET', '/v1/state'), (err: unknown) => {
        assert.ok(err instanceof ConnectError, String(err));
        assert.match(err.message, /lost ferryd at unix:.*during its answer/);
        return true;
      });
    });
  }
});
