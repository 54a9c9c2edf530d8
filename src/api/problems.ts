/**
 * RFC 9457 problem details for every error the API answers, and the
 * translation of ajv's errors into {field, reason}. Anything not
 * recognised here is a bug: it becomes a 500 with a generic detail (and is
 * logged), never a stack trace on the wire.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify';
import { FerryError, ValidationError, type FieldError } from '../model/errors.js';

export const PROBLEM_BASE = 'https://ferry.invalid/problems/';
export const PROBLEM_TYPE = 'application/problem+json';
/** At most this many field errors are listed in one problem. */
const MAX_FIELD_ERRORS = 100;

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  errors?: FieldError[];
}

export function problem(status: number, type: string | null, detail?: string, errors?: FieldError[]): Problem {
  const p: Problem = {
    type: type === null ? 'about:blank' : PROBLEM_BASE + type,
    title: STATUS_CODES[status] ?? 'Error',
    status,
  };
  if (detail !== undefined) p.detail = detail;
  if (errors !== undefined) p.errors = errors.slice(0, MAX_FIELD_ERRORS);
  return p;
}

export function sendProblem(request: FastifyRequest, reply: FastifyReply, p: Problem): FastifyReply {
  return reply
    .code(p.status)
    .type(PROBLEM_TYPE)
    .serializer(JSON.stringify)
    .send({ ...p, instance: request.url });
}

const PART_PREFIX: Record<string, string> = { body: '', querystring: 'query', params: 'path', headers: 'header' };

const FORMAT_REASON: Record<string, string> = {
  ipv4: 'must be an IPv4 address',
  ipv6: 'must be an IPv6 address',
  cidr: 'must be an IPv4 or IPv6 prefix (address or address/length)',
};

interface Translated extends FieldError {
  schemaPath: string;
  path: string;
}

function reasonOf(e: FastifySchemaValidationError): string {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required': return 'is required';
    case 'additionalProperties': return 'is not a known field';
    case 'enum': return `must be one of: ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'format': return FORMAT_REASON[String(p.format)] ?? `must be a valid ${String(p.format)}`;
    case 'type': return `must be of type ${Array.isArray(p.type) ? p.type.join(' or ') : String(p.type)}`;
    default: return e.message ?? `fails ${e.keyword}`;
  }
}

function pathOf(e: FastifySchemaValidationError): string {
  const p = e.params as Record<string, unknown>;
  const extra = e.keyword === 'required' ? p.missingProperty
    : e.keyword === 'additionalProperties' ? p.additionalProperty : undefined;
  return extra === undefined ? e.instancePath : `${e.instancePath}/${String(extra).replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

/**
 * ajv errors → field errors. An anyOf that failed reports either its
 * branches' deeper errors (the branch of the right shape), or its branches'
 * reasons joined with "or" ("must be an IPv4 address or must be an IPv6 address").
 */
export function fieldErrors(errors: FastifySchemaValidationError[], context: string): FieldError[] {
  const prefix = PART_PREFIX[context] ?? context;
  let out: Translated[] = [];
  for (const e of errors) {
    const path = pathOf(e);
    if (e.keyword === 'anyOf' || e.keyword === 'oneOf') {
      const inner = `${e.schemaPath}/`;
      const branch = out.filter((t) => t.schemaPath.startsWith(inner));
      out = out.filter((t) => !t.schemaPath.startsWith(inner));
      const deeper = branch.filter((t) => t.path.length > path.length);
      if (deeper.length > 0) out.push(...deeper);
      else {
        const reasons = [...new Set(branch.map((t) => t.reason))];
        out.push({ field: '', path, schemaPath: e.schemaPath, reason: reasons.length > 0 ? reasons.join(' or ') : reasonOf(e) });
      }
      continue;
    }
    out.push({ field: '', path, schemaPath: e.schemaPath, reason: reasonOf(e) });
  }
  const seen = new Set<string>();
  const result: FieldError[] = [];
  for (const t of out) {
    const field = prefix === '' ? t.path : t.path === '' ? prefix : `${prefix}${t.path}`;
    const key = `${field}\0${t.reason}`;
    if (seen.has(key)) continue;
    seen.add(key);
    result.push({ field, reason: t.reason });
  }
  return result;
}

const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported-media-type',
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload-too-large',
  FST_ERR_CTP_INVALID_JSON_BODY: 'bad-json',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'bad-json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad-request',
  FST_ERR_BAD_URL: 'bad-url',
  FERRY_RATE_LIMITED: 'rate-limited',
};

const DETAILS: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'the body is not valid JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'the body is empty but Content-Type says JSON',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'bodies must be application/json',
};

/** What an error becomes on the wire; `bug` is true for the 500s. */
export function toProblem(err: unknown): { problem: Problem; bug: boolean } {
  if (err instanceof FerryError) {
    return { problem: problem(err.status, err.type, err.message, err instanceof ValidationError ? err.errors : undefined), bug: false };
  }
  const fe = err as Partial<FastifyError> | null;
  if (fe !== null && typeof fe === 'object') {
    if (Array.isArray(fe.validation)) {
      const errors = fieldErrors(fe.validation, fe.validationContext ?? 'body');
      const detail = errors.map((e) => `${e.field || '/'}: ${e.reason}`).join('; ');
      return { problem: problem(400, 'schema', detail, errors), bug: false };
    }
    const status = typeof fe.statusCode === 'number' ? fe.statusCode : 0;
    if (status >= 400 && status < 500) {
      const code = typeof fe.code === 'string' ? fe.code : '';
      const type = FASTIFY_CODES[code];
      const detail = DETAILS[code] ?? fe.message;
      return { problem: problem(status, type ?? null, detail), bug: false };
    }
  }
  return { problem: problem(500, 'internal', 'internal error (a bug in ferryd; see its log)'), bug: true };
}
