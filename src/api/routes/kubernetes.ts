/**
 * GET /v1/kubernetes: the Kubernetes mode as the daemon sees it (watch and
 * sync figures, the ClusterIP list's size, health-check node ports, and
 * every Service or part of one that is not served, with the reason). 404
 * in standalone mode. The VIPs themselves are ordinary VIPs (GET /v1/vips),
 * owned by "kubernetes:<namespace>/<name>".
 */
import type { FastifyInstance } from 'fastify';
import { problem, sendProblem } from '../problems.js';
import { ref } from '../schemas.js';
import { json, problems, type RouteContext } from './common.js';

export function kubernetesRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { info } = ctx;
  app.get('/v1/kubernetes', {
    schema: {
      tags: ['kubernetes'], operationId: 'getKubernetes',
      summary: 'Kubernetes mode: sync state, ClusterIP list, health-check node ports, skipped and ignored Services',
      response: { 200: json('The Kubernetes mode\'s state.', ref('Kubernetes')), ...problems(401, 404) },
    },
  }, async (request, reply) => {
    const view = info.kubernetes?.() ?? null;
    if (view === null) return sendProblem(request, reply, problem(404, 'not-kubernetes-mode', 'ferryd runs in standalone mode (mode: kubernetes is not set)'));
    return view;
  });
}
