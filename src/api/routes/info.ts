/** Status, counters and probes, all from the daemon's DaemonInfo. */
import type { FastifyInstance } from 'fastify';
import { problem, sendProblem } from '../problems.js';
import { ref } from '../schemas.js';
import { json, problems, type RouteContext } from './common.js';

export function infoRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { info } = ctx;

  app.get('/v1/status', {
    schema: {
      tags: ['status'], operationId: 'getStatus', summary: 'Version, revisions, interfaces, map fill levels, uptime',
      response: { 200: json('Daemon status.', ref('Status')), ...problems(401) },
    },
  }, async () => info.status());

  app.get('/v1/stats', {
    schema: {
      tags: ['status'], operationId: 'getStats', summary: 'Per-VIP and per-backend counters and rates; drops by reason',
      response: { 200: json('Datapath counters.', ref('Stats')), ...problems(401) },
    },
  }, async () => info.stats());

  app.get('/v1/maglev', {
    schema: {
      tags: ['status'], operationId: 'getMaglevTables',
      summary: 'The seed and a checksum of every VIP\'s Maglev table, to compare hosts behind one router (ferryctl fleet status)',
      response: { 200: json('This host\'s tables.', ref('MaglevTables')), ...problems(401, 404) },
    },
  }, async (request, reply) => {
    if (info.maglevTables === undefined) return sendProblem(request, reply, problem(404, 'no-tables', 'this daemon does not report its tables'));
    return info.maglevTables();
  });

  app.get('/healthz', {
    schema: {
      tags: ['probes'], operationId: 'healthz', summary: 'Liveness: 200 while the process serves', security: [],
      response: { 200: json('Alive.', ref('Health')) },
    },
  }, async () => ({ status: 'ok' }));

  app.get('/readyz', {
    schema: {
      tags: ['probes'], operationId: 'readyz', security: [],
      summary: 'Readiness: 200 once the first reconcile is done (kubernetes mode: and the first sync of the cluster\'s Services)',
      response: { 200: json('Ready.', ref('Health')), ...problems(503) },
    },
  }, async (request, reply) => {
    if (info.ready()) return { status: 'ok' };
    return sendProblem(request, reply, problem(503, 'not-ready', info.notReadyReason?.() ?? 'the daemon has not completed its first reconcile'));
  });
}
