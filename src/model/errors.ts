/**
 * Errors the control plane raises on purpose. The API turns each into an
 * application/problem+json response with its status; anything else is a bug
 * (and still never leaves a half-applied change: see Controller).
 */

export interface FieldError {
  /** JSON pointer-ish path of the offending field, e.g. "/backends/2/weight" or "/address". */
  field: string;
  reason: string;
}

export abstract class FerryError extends Error {
  abstract readonly status: number;
  /** Short stable identifier, used as the problem type suffix. */
  abstract readonly type: string;
}

/** The request is well-formed JSON of the right shape but not acceptable (422 in the API). */
export class ValidationError extends FerryError {
  readonly status = 422;
  readonly type = 'invalid';
  constructor(readonly errors: FieldError[]) {
    super(errors.map((e) => `${e.field || '/'}: ${e.reason}`).join('; '));
  }
}

export class NotFoundError extends FerryError {
  readonly status = 404;
  readonly type = 'not-found';
}

/** Duplicate name or address, or a resource still referenced. */
export class ConflictError extends FerryError {
  readonly status = 409;
  readonly type = 'conflict';
}

/** If-Match did not match the resource's current ETag. */
export class PreconditionFailedError extends FerryError {
  readonly status = 412;
  readonly type = 'precondition-failed';
}

/** The resource belongs to another owner (e.g. the Kubernetes mode). */
export class ForbiddenError extends FerryError {
  readonly status = 403;
  readonly type = 'read-only';
}

/** The datapath refused the change; the store was rolled back. */
export class DatapathError extends FerryError {
  readonly status = 503;
  readonly type = 'datapath';
}

/** A datapath capacity (VIP or backend ids) is exhausted (507 Insufficient Storage in the API). */
export class CapacityError extends FerryError {
  readonly status = 507;
  readonly type = 'capacity';
}

/**
 * The state store cannot be written (disk full, read-only or failing
 * filesystem): nothing was changed; reads and the datapath keep working,
 * and writes succeed again once the filesystem does (503 in the API).
 */
export class StorageError extends FerryError {
  readonly status = 503;
  readonly type = 'storage-unavailable';
}

/**
 * The fleet store (etcd) cannot take a write now: unreachable, too slow, or
 * busy with other writes. Nothing was changed on this host; it keeps serving
 * what it mirrored last (503 in the API).
 */
export class FleetUnavailableError extends FerryError {
  readonly status = 503;
  readonly type = 'fleet-unavailable';
}
