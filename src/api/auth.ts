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

/** Paths that answer without a token: the probes, and the status page's files (they hold no data). */
export const PUBLIC_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz']);
const UI_FILE = /^\/ui(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)?\/?$/;
const isPublic = (path: string): boolean => PUBLIC_PATHS.has(path) || UI_FILE.test(path);

/** Methods a read-only token may use. */
const READS: ReadonlySet<string> = new Set(['GET', 'HEAD']);

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
    /** Whether this request's credentials allow writes (GET /v1/whoami). */
    ferryWrites: boolean;
  }
}

type Hook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void;

/**
 * An onRequest hook: sets request.ferryActor and ferryWrites, or answers 401
 * (no or an unknown token) or 403 (a write with a read-only token), and the
 * request goes no further.
 */
export function bearerHook(auth: { tokens: readonly string[]; readOnly?: readonly string[] } | null): Hook {
  const digests = auth === null ? null : auth.tokens.map(digest);
  const readOnly = new Set(auth?.readOnly ?? []);
  const writes = (auth?.tokens ?? []).map((t) => !readOnly.has(t));
  return (request, reply, done) => {
    if (digests === null) {
      request.ferryActor = 'api:local';
      request.ferryWrites = true;
      done();
      return;
    }
    const path = request.url.split('?', 1)[0] ?? '';
    if (isPublic(path)) {
      request.ferryActor = 'api:anonymous';
      request.ferryWrites = false;
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
    request.ferryWrites = writes[index] ?? false;
    if (!request.ferryWrites && !READS.has(request.method)) {
      sendProblem(request, reply, problem(403, 'read-only-token', `this token may only read (GET); ${request.method} needs a token without "read"`));
      return;
    }
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

/**
 * The tokens file: one bearer token per line, optionally followed by
 * `read` (GET only) or `write` (the default); # starts a comment line.
 * Throws naming the file and line for anything else.
 */
export function parseTokens(text: string, file: string): { tokens: string[]; readOnly: string[] } {
  const tokens: string[] = [];
  const readOnly: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const [token = '', scope = 'write', ...rest] = line.split(/\s+/);
    if (rest.length > 0 || (scope !== 'read' && scope !== 'write')) {
      throw new Error(`${file} line ${i + 1}: expected "<token>" or "<token> read|write"`);
    }
    tokens.push(token);
    if (scope === 'read') readOnly.push(token);
  });
  if (tokens.length === 0) throw new Error(`${file}: no tokens (one per line)`);
  return { tokens, readOnly };
}
