/**
 * Keyset pagination: a page is "the next `limit` items after this key", so
 * pages stay consistent while items are added or removed between requests.
 * The cursor is the last key of a page, opaque to clients (base64url JSON)
 * and tagged with what it lists so a VIP cursor is not accepted for policies.
 */
import { ValidationError } from '../model/errors.js';
import type { PageQuery } from './types.js';

export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 1000;

export type CursorKind = 'vip' | 'policy' | 'backend' | 'event';

interface CursorBody {
  k: CursorKind;
  a: string;
}

export function encodeCursor(kind: CursorKind, after: string): string {
  const body: CursorBody = { k: kind, a: after };
  return Buffer.from(JSON.stringify(body)).toString('base64url');
}

function badCursor(): ValidationError {
  return new ValidationError([{ field: '/cursor', reason: 'not a cursor returned by this list (start again without one)' }]);
}

/** The key a cursor points after; throws ValidationError on anything this store did not issue. */
export function decodeCursor(kind: CursorKind, cursor: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw badCursor();
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw badCursor();
  }
  if (typeof body !== 'object' || body === null) throw badCursor();
  const { k, a } = body as Record<string, unknown>;
  if (k !== kind || typeof a !== 'string') throw badCursor();
  return a;
}

/** A validated page request: the limit, and the key to start after (null: from the start). */
export function pageRequest(kind: CursorKind, q: PageQuery | undefined): { limit: number; after: string | null } {
  const limit = q?.limit ?? DEFAULT_PAGE_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
    throw new ValidationError([{ field: '/limit', reason: `must be an integer 1..${MAX_PAGE_LIMIT}` }]);
  }
  const cursor = q?.cursor;
  return { limit, after: cursor === undefined || cursor === null || cursor === '' ? null : decodeCursor(kind, cursor) };
}

/**
 * Builds a page from up to limit + 1 rows (the extra row only says that
 * there is a next page).
 */
export function toPage<R, T>(
  rows: R[],
  limit: number,
  kind: CursorKind,
  keyOf: (row: R) => string,
  map: (row: R) => T,
): { items: T[]; next: string | null } {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  const last = kept[kept.length - 1];
  return { items: kept.map(map), next: more && last !== undefined ? encodeCursor(kind, keyOf(last)) : null };
}
