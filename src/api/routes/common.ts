/**
 * What every route module shares: the context it is given, reusable
 * schema fragments (query, params, conditional headers, problem responses)
 * and the helpers that put revision, ETag and Location on writes.
 */
import type { FastifyReply } from 'fastify';
import type { Controller } from '../../control/controller.js';
import { NotFoundError, ValidationError } from '../../model/errors.js';
import { canonicalIp } from '../../net/addr.js';
import type { PageQuery } from '../../store/types.js';
import { checkWritePreconditions } from '../etag.js';
import { PROBLEM_TYPE } from '../problems.js';
import { ipSchema, nameSchema, ref, type JsonSchema } from '../schemas.js';
import type { BgpControl, DaemonInfo, FleetStatus, HealthView } from '../types.js';

export interface RouteContext {
  controller: Controller;
  info: DaemonInfo;
  drainSeconds: number;
  stateBodyLimit: number;
  /** Where backups and restores are staged (ferryd: a folder of its state directory, emptied at start). */
  scratchDir: string;
  health?: HealthView;
  /** The BGP announcement (absent: bgp is not enabled). */
  bgp?: BgpControl;
  /** The fleet store (absent: not a fleet member). */
  fleet?: FleetStatus;
}

export const REVISION_HEADER = 'x-ferry-revision';

export interface PageQs { limit?: number; cursor?: string }
export interface CondHeaders { 'if-match'?: string; 'if-none-match'?: string }

export const pageQuery: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100, description: 'Items per page.' },
    cursor: { type: 'string', minLength: 1, maxLength: 1024, description: 'The `next` of the previous page.' },
  },
};

/** Runs a list read; the store's cursor/limit complaints name the query parameter. */
export function listing<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ValidationError && err.errors.every((e) => e.field === '/cursor' || e.field === '/limit')) {
      throw new ValidationError(err.errors.map((e) => ({ field: `query${e.field}`, reason: e.reason })));
    }
    throw err;
  }
}

export function toPageQuery(q: PageQs): PageQuery {
  return q.cursor === undefined ? { limit: q.limit ?? 100 } : { limit: q.limit ?? 100, cursor: q.cursor };
}

export const params = (props: Record<string, JsonSchema>): JsonSchema => ({
  type: 'object', additionalProperties: false, required: Object.keys(props), properties: props,
});
export const nameParam = params({ name: nameSchema });
export const addressParam = { ...ipSchema, description: 'Backend address (IPv6 as is, e.g. 2001:db8::10; %3A also accepted).' };

export const condHeaders = (get: boolean): JsonSchema => ({
  type: 'object',
  properties: get
    ? { 'if-none-match': { type: 'string', description: 'ETag(s); 304 when one matches.' } }
    : {
      'if-match': { type: 'string', description: 'Proceed only if the resource\'s ETag matches ("*": only if it exists); else 412.' },
      'if-none-match': { type: 'string', description: '"*": proceed only if the resource does not exist (create-only); else 412.' },
    },
});

const PROBLEM_TEXT: Record<number, string> = {
  400: 'Malformed request: bad JSON, schema violation (errors name each field).',
  401: 'Missing or wrong bearer token.',
  403: 'The resource is owned by another controller (e.g. the Kubernetes mode).',
  404: 'No such resource.',
  409: 'Conflict: duplicate name or address, or still referenced.',
  412: 'If-Match / If-None-Match precondition failed.',
  413: 'Body too large.',
  415: 'Content-Type is not application/json.',
  422: 'Semantically invalid (errors name each field), or a cursor this list did not issue.',
  429: 'Too many requests from this client address (TCP listener, api.rate_limit); Retry-After says when to try again.',
  503: 'The datapath refused the change; nothing was changed.',
  507: 'Datapath capacity exhausted (too many VIPs or backends).',
};

/** Problem responses for the OpenAPI document (the body is always a Problem). */
export function problems(...codes: number[]): Record<string, JsonSchema> {
  const out: Record<string, JsonSchema> = {};
  // Whatever needs a token on TCP is also rate-limited there.
  for (const c of codes.includes(401) ? [...codes, 429] : codes) {
    out[String(c)] = {
      description: PROBLEM_TEXT[c] ?? 'Error.',
      content: { [PROBLEM_TYPE]: { schema: ref('Problem') } },
    };
  }
  return out;
}

export const READ_ERRORS = [400, 401, 404];
export const LIST_ERRORS = [400, 401, 404, 422];
export const WRITE_ERRORS = [400, 401, 403, 404, 409, 412, 413, 415, 422, 503, 507];

export const json = (description: string, schema: JsonSchema, headers?: Record<string, JsonSchema>): JsonSchema => ({
  description,
  ...(headers === undefined ? {} : { headers }),
  content: { 'application/json': { schema } },
});

export const revisionHeader: Record<string, JsonSchema> = {
  'X-Ferry-Revision': { type: 'integer', description: 'The store revision now live (committed and applied).' },
};
export const etagHeader: Record<string, JsonSchema> = {
  ETag: {
    type: 'string',
    description: 'Strong entity tag: "<name>-r<updated_revision>" (backends: name = address; VIPs add "-b<backend_count>").',
  },
};
export const locationHeader: Record<string, JsonSchema> = {
  Location: { type: 'string', description: 'URL of the created resource.' },
};

/** Puts the live revision (and the resource's ETag and Location) on a write's reply. */
export function wrote(reply: FastifyReply, revision: number, etag?: string, location?: string): FastifyReply {
  reply.header(REVISION_HEADER, String(revision));
  if (etag !== undefined) reply.header('etag', etag);
  if (location !== undefined) reply.header('location', location);
  return reply;
}

/** The resource's ETag, or null when it does not exist. */
export function currentTag(get: () => string): string | null {
  try {
    return get();
  } catch (err) {
    if (err instanceof NotFoundError) return null;
    throw err;
  }
}

/** Checks preconditions inside a write transaction (only reads the resource when a header asks to). */
export function preconditions(h: CondHeaders, get: () => string): void {
  if (h['if-match'] === undefined && h['if-none-match'] === undefined) return;
  checkWritePreconditions(h['if-match'], h['if-none-match'], currentTag(get));
}

/** For PUT: the key in the URL wins; a body that names another is refused. */
export function sameKey(field: string, inUrl: string, inBody: string | undefined, eq = (a: string, b: string) => a === b): void {
  if (inBody !== undefined && !eq(inUrl, inBody)) {
    throw new ValidationError([{ field: `/${field}`, reason: `must match the ${field} in the URL (${JSON.stringify(inUrl)}) or be omitted` }]);
  }
}

/** A URL's address in its canonical text (lookups accept any spelling); unchanged if it does not parse. */
export function urlIp(text: string): string {
  return canonicalIp(text) ?? text;
}

export const sameIp = (a: string, b: string): boolean => urlIp(a) === urlIp(b);

export type { Controller };
