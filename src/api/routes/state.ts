/**
 * /v1/state: the whole desired state at once. PUT replaces it in one
 * transaction (committed and applied, or nothing) and answers the diff;
 * ?dry_run=true answers the diff of a rolled-back transaction. GET exports
 * the state in the same shape. The state's ETag is "state-r<revision>" (any
 * write anywhere changes it), so `If-Match` makes an apply conditional on
 * nothing having changed since the GET.
 */
import type { FastifyInstance } from 'fastify';
import type { DesiredState } from '../../model/types.js';
import { etagOf, notModified } from '../etag.js';
import { ref, type JsonSchema } from '../schemas.js';
import {
  condHeaders, etagHeader, json, preconditions, problems, revisionHeader, wrote, type CondHeaders, type RouteContext,
} from './common.js';

const tags = ['state'];
const stateTag = (revision: number): string => etagOf('state', revision);

const dryRunQuery: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    dry_run: { type: 'boolean', default: false, description: 'Answer the diff without changing anything.' },
  },
};

export function stateRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { controller } = ctx;

  app.get<{ Headers: CondHeaders }>('/v1/state', {
    schema: {
      tags, operationId: 'getState', summary: 'Export the desired state (of API-owned resources)',
      headers: condHeaders(true),
      response: {
        200: json('The desired state.', ref('DesiredState'), { ...revisionHeader, ...etagHeader }),
        304: { description: 'Not modified (If-None-Match matched).', type: 'null' },
        ...problems(400, 401),
      },
    },
  }, async (request, reply) => {
    const { state, revision } = controller.read((tx) => ({ state: tx.exportState(null), revision: controller.revision() }));
    const tag = stateTag(revision);
    reply.header('etag', tag).header('x-ferry-revision', String(revision));
    if (notModified(request.headers['if-none-match'], tag)) return reply.code(304).send();
    return state;
  });

  app.put<{ Body: DesiredState; Querystring: { dry_run?: boolean }; Headers: CondHeaders }>('/v1/state', {
    bodyLimit: ctx.stateBodyLimit,
    schema: {
      tags, operationId: 'applyState', summary: 'Replace the whole desired state (declarative apply)',
      description: 'Resources not in the body are deleted (removed backends drain). One transaction: all of it is applied or none.',
      querystring: dryRunQuery, headers: condHeaders(false), body: ref('DesiredState'),
      response: {
        200: json('The diff; with dry_run nothing changed.', ref('StateResult'), revisionHeader),
        ...problems(400, 401, 403, 404, 409, 412, 413, 415, 422, 503, 507),
      },
    },
  }, async (request, reply) => {
    const body = request.body;
    const check = (): void => preconditions(request.headers, () => stateTag(controller.revision()));
    if (request.query.dry_run === true) {
      const changes = controller.dryRun((tx) => {
        check();
        return tx.replaceState(body, ctx.drainSeconds, null);
      });
      const revision = controller.revision();
      wrote(reply, revision);
      return { revision, dry_run: true, changes };
    }
    const w = await controller.change(request.ferryActor, 'state.apply', (tx) => {
      check();
      return tx.replaceState(body, ctx.drainSeconds, null);
    });
    wrote(reply, w.revision, stateTag(w.revision));
    return { revision: w.revision, dry_run: false, changes: w.result };
  });
}
