/**
 * /v1/bgp: the BGP announcement of this host's VIPs (src/bgp): which
 * addresses are announced and why the others are not, BIRD's sessions,
 * and the host drain (`ferryctl drain-host`). 404 when bgp is not enabled.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { BgpControl } from '../types.js';
import { problem, sendProblem } from '../problems.js';
import { ref, type JsonSchema } from '../schemas.js';
import { json, problems, type RouteContext } from './common.js';

interface DrainBody { reason?: string }

const drainBody: JsonSchema = {
  type: 'object', additionalProperties: false,
  properties: { reason: { type: 'string', minLength: 1, maxLength: 200, description: 'Why (shown by GET /v1/bgp and ferryctl bgp).' } },
};

export function bgpRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const disabled = (request: FastifyRequest, reply: FastifyReply) =>
    sendProblem(request, reply, problem(404, 'bgp-disabled', 'BGP is not enabled on this host (bgp.enabled in ferryd\'s config)'));

  /** Runs a drain change; a record that cannot be written (full disk) is a 503 and changes nothing. */
  const change = async (request: FastifyRequest, reply: FastifyReply, fn: (b: BgpControl) => void) => {
    const b = ctx.bgp;
    if (b === undefined) return disabled(request, reply);
    try {
      fn(b);
    } catch (err) {
      return sendProblem(request, reply, problem(503, 'drain-not-recorded', `the host drain could not be recorded: ${(err as Error).message}`));
    }
    await b.settled();
    return b.view();
  };

  app.get('/v1/bgp', {
    schema: {
      tags: ['bgp'], operationId: 'getBgp', summary: 'Announced VIP addresses, BIRD\'s sessions and the host drain',
      response: { 200: json('The BGP announcement.', ref('Bgp')), ...problems(401, 404) },
    },
  }, async (request, reply) => {
    const b = ctx.bgp;
    if (b === undefined) return disabled(request, reply);
    await b.refresh();
    return b.view();
  });

  app.put<{ Body: DrainBody }>('/v1/bgp/drain', {
    schema: {
      tags: ['bgp'], operationId: 'drainHost',
      summary: 'Withdraw every VIP of this host (kept across restarts until DELETE); the datapath keeps serving flows that still arrive',
      body: drainBody,
      response: { 200: json('The BGP announcement after the drain.', ref('Bgp')), ...problems(400, 401, 404, 503) },
    },
  }, (request, reply) => change(request, reply, (b) => b.drain(request.body?.reason ?? null)));

  app.delete('/v1/bgp/drain', {
    schema: {
      tags: ['bgp'], operationId: 'undrainHost', summary: 'Announce this host\'s serving VIPs again',
      response: { 200: json('The BGP announcement after the undrain.', ref('Bgp')), ...problems(401, 404, 503) },
    },
  }, (request, reply) => change(request, reply, (b) => b.undrain()));
}
