/**
 * /v1/backup and /v1/restore: a consistent copy of the database (SQLite's
 * online backup, taken while writes go on) and its way back. A restore
 * reads the desired state out of the uploaded copy and applies it like
 * `PUT /v1/state`: one transaction, committed and applied or nothing, the
 * revision moving forward (never back) and the diff in the answer.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ValidationError } from '../../model/errors.js';
import type { DesiredState } from '../../model/types.js';
import { openStore } from '../../store/store.js';
import { ref } from '../schemas.js';
import { json, problems, revisionHeader, wrote, type RouteContext } from './common.js';

export const SQLITE_TYPE = 'application/vnd.sqlite3';
const tags = ['state'];
/** Capacities for reading a backup: only the allocator uses them, and it does not run here. */
const READ_ONLY_CAPACITY = 1 << 24;

/** Runs fn with a private folder under `scratch`, removed afterwards. */
async function withTempDir<T>(scratch: string, fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = mkdtempSync(join(scratch, 'ferry-backup-'));
  try {
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The revision and API-owned desired state held by a database file. */
function readBackup(file: string): { revision: number; state: DesiredState } {
  const s = openStore(file, { maxVips: READ_ONLY_CAPACITY, maxBackends: READ_ONLY_CAPACITY });
  try {
    return { revision: s.revision(), state: s.read((tx) => tx.exportState(null)) };
  } finally {
    s.close();
  }
}

export function backupRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { controller } = ctx;

  app.get('/v1/backup', {
    schema: {
      tags, operationId: 'backup', summary: 'A consistent copy of the database (SQLite online backup)',
      response: {
        200: {
          description: 'The database file; X-Ferry-Revision is the revision it holds.',
          headers: revisionHeader,
          content: { [SQLITE_TYPE]: { schema: { type: 'string', format: 'binary' } } },
        },
        ...problems(401),
      },
    },
  }, async (_request, reply) => withTempDir(ctx.scratchDir, async (dir) => {
    const file = join(dir, 'ferry-backup.db');
    await controller.backup(file);
    const { revision } = readBackup(file);
    const bytes = readFileSync(file);
    reply.header('x-ferry-revision', String(revision)).type(SQLITE_TYPE);
    return reply.send(bytes);
  }));

  app.register(async (sub) => {
    // Only the database type here: JSON or anything else is 415.
    sub.removeAllContentTypeParsers();
    sub.addContentTypeParser(SQLITE_TYPE, { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    sub.post<{ Body: Buffer }>('/v1/restore', {
      bodyLimit: ctx.stateBodyLimit * 8,
      schema: {
        tags, operationId: 'restore', summary: 'Replace the desired state with the one in a backup',
        description: `Body: a file from GET /v1/backup, Content-Type ${SQLITE_TYPE}. Applied like PUT /v1/state.`,
        response: {
          200: json('The diff applied.', ref('StateResult'), revisionHeader),
          ...problems(400, 401, 403, 409, 413, 415, 422, 503, 507),
        },
      },
    }, async (request, reply) => withTempDir(ctx.scratchDir, async (dir) => {
      if (!Buffer.isBuffer(request.body) || request.body.length === 0) {
        throw new ValidationError([{ field: '/', reason: `the body must be a database file (${SQLITE_TYPE})` }]);
      }
      const file = join(dir, 'restore.db');
      writeFileSync(file, request.body);
      let state: DesiredState;
      try {
        state = readBackup(file).state;
      } catch (err) {
        throw new ValidationError([{ field: '/', reason: `not a usable Ferry backup: ${(err as Error).message.split('\n')[0]}` }]);
      }
      const w = await controller.change(request.ferryActor, 'restore', (tx) => tx.replaceState(state, ctx.drainSeconds, null));
      wrote(reply, w.revision);
      return { revision: w.revision, dry_run: false, changes: w.result };
    }));
  });
}
