/**
 * GET /metrics: Prometheus exposition (on TCP it needs the bearer token like
 * every other route but the probes; Prometheus sends one with
 * `authorization`). Every answered request is counted by route and status.
 */
import type { FastifyInstance } from 'fastify';
import type { FerryMetrics } from '../../metrics/index.js';
import { problems } from './common.js';

export function metricsRoutes(app: FastifyInstance, metrics: FerryMetrics): void {
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.observeRequest(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
  });

  app.get('/metrics', {
    schema: {
      tags: ['status'], operationId: 'metrics', summary: 'Prometheus metrics',
      response: {
        200: { description: 'Prometheus text exposition format.', content: { 'text/plain': { schema: { type: 'string' } } } },
        ...problems(401),
      },
    },
  }, async (_request, reply) => {
    const text = await metrics.render();
    return reply.type(metrics.contentType).send(text);
  });
}
