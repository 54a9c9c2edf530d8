/**
 * /v1/fleet: this host's view of the fleet store (src/fleet): the etcd
 * revision it mirrors, keys it could not apply, and every live member with
 * a digest of its Maglev tables. 404 when fleet.etcd names no endpoint.
 */
import type { FastifyInstance } from 'fastify';
import { problem, sendProblem } from '../problems.js';
import { ref } from '../schemas.js';
import { json, problems, type RouteContext } from './common.js';

export function fleetRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get('/v1/fleet', {
    schema: {
      tags: ['fleet'], operationId: 'getFleet', summary: 'The fleet store as this host mirrors it, and every live member',
      response: { 200: json('The fleet.', ref('Fleet')), ...problems(401, 404) },
    },
  }, async (request, reply) => {
    if (ctx.fleet === undefined) {
      return sendProblem(request, reply, problem(404, 'fleet-disabled', 'this host is not a fleet member (fleet.etcd.endpoints in ferryd\'s config)'));
    }
    return ctx.fleet.view();
  });
}
