/**
 * /v1/health/events: backends going down and coming back, newest first,
 * from the store (bounded retention). Health itself is shown on each
 * backend (GET /v1/vips/{name}/backends).
 */
import type { FastifyInstance } from 'fastify';
import { ipSchema, nameSchema, ref, type JsonSchema } from '../schemas.js';
import { json, listing, LIST_ERRORS, problems, urlIp, type RouteContext } from './common.js';

interface EventsQs {
  vip?: string;
  backend?: string;
  limit?: number;
  cursor?: string;
}

const eventsQuery: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    vip: { ...nameSchema, description: 'Only events of this VIP (it need not exist any more).' },
    backend: { ...ipSchema, description: 'Only events of this backend address.' },
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100, description: 'Items per page.' },
    cursor: { type: 'string', minLength: 1, maxLength: 1024, description: 'The `next` of the previous page.' },
  },
};

export function healthRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { controller } = ctx;

  app.get<{ Querystring: EventsQs }>('/v1/health/events', {
    schema: {
      tags: ['health'], operationId: 'listHealthEvents', summary: 'Health transitions of backends, newest first',
      querystring: eventsQuery,
      response: { 200: json('A page of events.', ref('HealthEventPage')), ...problems(...LIST_ERRORS.filter((c) => c !== 404)) },
    },
  }, async (request) => {
    const q = request.query;
    return listing(() => controller.read((tx) => tx.listHealthEvents({
      limit: q.limit ?? 100,
      ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
      ...(q.vip === undefined ? {} : { vip: q.vip }),
      ...(q.backend === undefined ? {} : { backend: urlIp(q.backend) }),
    })));
  });
}
