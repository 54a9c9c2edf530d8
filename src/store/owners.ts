/**
 * Who owns a record and the rules every write checks before it changes one:
 * used by the transaction's own methods (tx.ts) and by replacing an owner's
 * whole state (replace.ts).
 */
import { ForbiddenError, ValidationError } from '../model/errors.js';

/** "10.0.0.1 port 80/tcp", "2001:db8::1 all ports/udp". */
export function describeEndpoint(v: { address: string; port: number; protocol: string }): string {
  return `${v.address} ${v.port === 0 ? 'all ports' : `port ${v.port}`}/${v.protocol}`;
}

export function ownerLabel(owner: string | null): string {
  return owner === null ? 'the API' : owner;
}

/** Throws ForbiddenError unless `writer` owns the record. */
export function assertOwner(kind: string, name: string, recordOwner: string | null, writer: string | null): void {
  if (recordOwner === writer) return;
  const where = recordOwner === null ? 'through the API' : recordOwner.startsWith('kubernetes:') ? 'in Kubernetes' : `as ${recordOwner}`;
  throw new ForbiddenError(`${kind} "${name}" is owned by ${ownerLabel(recordOwner)}; change it ${where}`);
}

/** Drain time of a deleted backend, in seconds: finite and not negative (0 = no drain). */
export function checkDrain(drainSeconds: number): void {
  if (typeof drainSeconds !== 'number' || !Number.isFinite(drainSeconds) || drainSeconds < 0) {
    throw new ValidationError([{ field: '/drain_seconds', reason: 'must be a number of seconds >= 0' }]);
  }
}
