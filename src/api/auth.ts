/**
 * Bearer-token authentication for TCP listeners. Tokens are compared in
 * constant time: both sides are hashed with SHA-256 (equal lengths) and
 * compared with timingSafeEqual, against every configured token without
 * stopping early. Tokens never reach the log: the request serializer
 * (requestLogFields) logs no headers, no query values, and no configured
 * token even where a client put one into the path.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { problem, sendProblem } from './problems.js';

/** Paths that answer without a token (probes). */
export const PUBLIC_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz']);

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Index of the matching token, or -1. */
export function matchToken(given: string, digests: readonly Buffer[]): number {
  const d = digest(given);
  let found = -1;
  digests.forEach((t, i) => {
    if (timingSafeEqual(d, t) && found < 0) found = i;
  });
  return found;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who the audit log names for this request's writes. */
    ferryActor: string;
  }
}

type Hook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void;

/** An onRequest hook: sets request.ferryActor, or answers 401 (and the request goes no further). */
export function bearerHook(tokens: readonly string[] | null): Hook {
  const digests = tokens === null ? null : tokens.map(digest);
  return (request, reply, done) => {
    if (digests === null) {
      request.ferryActor = 'api:local';
      done();
      return;
    }
    const path = request.url.split('?', 1)[0] ?? '';
    if (PUBLIC_PATHS.has(path)) {
      request.ferryActor = 'api:anonymous';
      done();
      return;
    }
    const header = request.headers.authorization;
    const m = header === undefined ? null : /^Bearer[ ]+([^\s]+)\s*$/i.exec(header);
    const index = m?.[1] === undefined ? -1 : matchToken(m[1], digests);
    if (index < 0) {
      reply.header('www-authenticate', header === undefined
        ? 'Bearer realm="ferry"'
        : 'Bearer realm="ferry", error="invalid_token"');
      sendProblem(request, reply, problem(401, 'unauthorized',
        header === undefined ? 'a bearer token is required (Authorization: Bearer <token>)' : 'the bearer token is not valid'));
      return;
    }
    request.ferryActor = `api:token#${index + 1}`;
    done();
  };
}

/** What the log records of a request: no headers, query values replaced, configured tokens cut out of the path. */
export function requestLogFields(request: FastifyRequest, secrets: readonly string[]): Record<string, unknown> {
  const [path = '', query] = request.url.split(/\?(.*)/s, 2);
  let url = path;
  for (const s of secrets) if (s !== '' && url.includes(s)) url = url.split(s).join('[redacted]');
  if (query !== undefined) {
    url += `?${query.split('&').map((kv) => `${kv.split('=', 1)[0]}=[redacted]`).join('&')}`;
  }
  return { method: request.method, url, host: request.host, remoteAddress: request.ip, remotePort: request.socket?.remotePort };
}
