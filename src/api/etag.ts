/**
 * Entity tags and conditional requests (RFC 9110 §13). A single resource's
 * ETag is strong: "<name>-r<updated_revision>" (a backend's name is its
 * address; a VIP's adds "-b<backend_count>", see routes/vips.ts). If-Match uses strong comparison, If-None-Match weak.
 */
import { PreconditionFailedError } from '../model/errors.js';

/** A strong ETag: "<name>-r<revision>", or the quoted opaque text when no revision is given. */
export function etagOf(name: string, updatedRevision?: number): string {
  return updatedRevision === undefined ? `"${name}"` : `"${name}-r${updatedRevision}"`;
}

/** The entity tags of an If-Match / If-None-Match value; '*' is returned as ['*']. */
export function parseTags(header: string): string[] {
  if (header.trim() === '*') return ['*'];
  const tags: string[] = [];
  const re = /\s*((?:W\/)?"[^"]*")\s*(?:,|$)/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(header)) !== null && m[0] !== '') {
    if (m[1] !== undefined) tags.push(m[1]);
  }
  return tags;
}

const opaque = (tag: string): string => (tag.startsWith('W/') ? tag.slice(2) : tag);

/**
 * Checks If-Match / If-None-Match of a write against the current ETag
 * (null: the resource does not exist). Throws PreconditionFailedError.
 */
export function checkWritePreconditions(ifMatch: string | undefined, ifNoneMatch: string | undefined, current: string | null): void {
  if (ifMatch !== undefined) {
    const tags = parseTags(ifMatch);
    const ok = current !== null && (tags.includes('*') || tags.some((t) => !t.startsWith('W/') && t === current));
    if (!ok) {
      throw new PreconditionFailedError(current === null
        ? 'If-Match: the resource does not exist'
        : `If-Match: the resource's ETag is ${current}`);
    }
  }
  if (ifNoneMatch !== undefined && current !== null) {
    const tags = parseTags(ifNoneMatch);
    if (tags.includes('*') || tags.some((t) => opaque(t) === current)) {
      throw new PreconditionFailedError(`If-None-Match: the resource exists with ETag ${current}`);
    }
  }
}

/** True when a GET should answer 304 Not Modified. */
export function notModified(ifNoneMatch: string | undefined, current: string): boolean {
  if (ifNoneMatch === undefined) return false;
  const tags = parseTags(ifNoneMatch);
  return tags.includes('*') || tags.some((t) => opaque(t) === current);
}
