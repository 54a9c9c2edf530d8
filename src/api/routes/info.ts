/** Status, counters and probes, all from the daemon's DaemonInfo. */
import type { FastifyInstance } from 'fastify';
import { problem, sendProblem } from '../problems.js';
import { nameSchema, ref } from '../schemas.js';
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

  app.get<{ Params: { name: string } }>('/v1/maglev/:name', {
    schema: {
      tags: ['status'], operationId: 'getMaglevShares',
      summary: 'One VIP\'s Maglev table as slots per backend: the share of new flows each gets',
      params: { type: 'object', required: ['name'], properties: { name: nameSchema } },
      response: { 200: json('The VIP\'s table.', ref('MaglevShares')), ...problems(401, 404) },
    },
  }, async (request, reply) => {
    const shares = info.maglevShares?.(request.params.name) ?? null;
    if (shares === null) return sendProblem(request, reply, problem(404, 'not-found', `no VIP named ${request.params.name} in the datapath`));
    return shares;
  });

  app.get('/v1/whoami', {
    schema: {
      tags: ['status'], operationId: 'whoami', summary: 'Who the API takes this caller for, and whether it may write (the status page asks)',
      response: { 200: json('The caller.', ref('Whoami')), ...problems(401) },
    },
  }, async (request) => ({ actor: request.ferryActor, writes: request.ferryWrites }));

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
