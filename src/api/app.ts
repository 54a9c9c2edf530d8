/**
 * buildApp: the REST API as a fastify instance (not listening). The daemon
 * listens with it on the unix socket (auth null) and, when configured, on
 * TCP (bearer tokens, TLS): one instance per listener.
 */
import type { Server as HttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import Fastify, {
  type FastifyBaseLogger, type FastifyHttpsOptions, type FastifyInstance, type FastifyRequest, type FastifyServerOptions,
} from 'fastify';
import type { LoggerOptions } from 'pino';
import { validatorCompiler } from './ajv.js';
import { bearerHook, requestLogFields } from './auth.js';
import { registerRateLimit, requestDeadlines, tlsServerOptions } from './limits.js';
import { registerDocs, registerOpenApi } from './openapi.js';
import { problem, sendProblem, toProblem } from './problems.js';
import { backendRoutes } from './routes/backends.js';
import { backupRoutes } from './routes/backup.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { monitorRoutes } from './routes/monitor.js';
import { loadUiAssets, uiRoutes } from './routes/ui.js';
import type { RouteContext } from './routes/common.js';
import { infoRoutes } from './routes/info.js';
import { kubernetesRoutes } from './routes/kubernetes.js';
import { bgpRoutes } from './routes/bgp.js';
import { fleetRoutes } from './routes/fleet.js';
import { policyRoutes } from './routes/policies.js';
import { stateRoutes } from './routes/state.js';
import { vipRoutes } from './routes/vips.js';
import { sharedSchemas } from './schemas.js';
import type { ApiOptions } from './types.js';

export type { ApiOptions, DaemonInfo, HealthView } from './types.js';

const MiB = 1024 * 1024;
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const;

function isLogger(l: ApiOptions['logger']): l is FastifyBaseLogger {
  return typeof l === 'object' && l !== null && typeof (l as { child?: unknown }).child === 'function'
    && typeof (l as { info?: unknown }).info === 'function';
}

function loggerOptions(l: ApiOptions['logger'], secrets: readonly string[]): Pick<FastifyServerOptions, 'logger' | 'loggerInstance'> {
  if (l === false) return { logger: false };
  const serializers = { req: (request: FastifyRequest) => requestLogFields(request, secrets) };
  // A child's serializers take precedence over fastify's own request serializer.
  if (isLogger(l)) return { loggerInstance: l.child({}, { serializers }) };
  const opts: LoggerOptions = { ...l, serializers: { ...l.serializers, ...serializers } };
  const redact = ['req.headers.authorization', 'req.headers.cookie'];
  opts.redact = Array.isArray(opts.redact) ? [...opts.redact, ...redact] : opts.redact ?? redact;
  return { logger: opts };
}

let assets: ReturnType<typeof loadUiAssets> | undefined;
/** The status page's files, read once per process (both listeners serve the same). */
const uiAssets = (): ReturnType<typeof loadUiAssets> => (assets ??= loadUiAssets());

export async function buildApp(opts: ApiOptions): Promise<FastifyInstance> {
  const bodyLimit = opts.bodyLimit ?? MiB;
  const deadlines = requestDeadlines(opts.requestTimeoutMs ?? 30_000);
  const base: FastifyServerOptions = {
    ...loggerOptions(opts.logger, opts.auth?.tokens ?? []),
    bodyLimit,
    requestTimeout: deadlines.requestTimeout,
    exposeHeadRoutes: true,
    return503OnClosing: true,
    // Malformed URLs (bad percent-encoding) answer a problem too.
    frameworkErrors: (err, request, reply) => {
      sendProblem(request, reply, toProblem(err).problem);
    },
  };
  const app = (opts.https === undefined
    ? Fastify({ ...base, http: deadlines })
    : Fastify({ ...base, https: { ...tlsServerOptions(opts.https), ...deadlines } } as FastifyHttpsOptions<HttpsServer>)
  ) as unknown as FastifyInstance;

  // JSON only: anything else is 415 (fastify also knows text/plain; drop it).
  app.removeContentTypeParser('text/plain');

  app.decorateRequest('ferryActor', '');
  if (opts.rateLimit !== undefined) await registerRateLimit(app, opts.rateLimit);
  app.addHook('onRequest', bearerHook(opts.auth));

  for (const s of sharedSchemas) app.addSchema(s);
  app.setValidatorCompiler(validatorCompiler(sharedSchemas));

  app.setErrorHandler((err, request, reply) => {
    const { problem: p, bug } = toProblem(err);
    if (bug) request.log.error({ err }, 'unhandled error answered as 500');
    else if (p.status >= 500) request.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'request failed');
    return sendProblem(request, reply, p);
  });

  app.setNotFoundHandler((request, reply) => {
    const url = request.url.split('?', 1)[0] ?? '/';
    const allow = METHODS.filter((m) => m !== request.method && app.findRoute({ method: m, url }) !== null);
    if (allow.length > 0) {
      reply.header('allow', allow.join(', '));
      return sendProblem(request, reply, problem(405, 'method-not-allowed', `${request.method} is not allowed on ${url}; allowed: ${allow.join(', ')}`));
    }
    return sendProblem(request, reply, problem(404, 'no-route', `no route ${request.method} ${url}`));
  });

  await registerOpenApi(app, opts.info.version);

  const ctx: RouteContext = {
    controller: opts.controller,
    info: opts.info,
    drainSeconds: opts.drainSeconds,
    stateBodyLimit: Math.max(bodyLimit, opts.stateBodyLimit ?? 32 * MiB),
    scratchDir: opts.scratchDir ?? tmpdir(),
    ...(opts.health === undefined ? {} : { health: opts.health }),
    ...(opts.bgp === undefined ? {} : { bgp: opts.bgp }),
    ...(opts.fleet === undefined ? {} : { fleet: opts.fleet }),
  };
  if (opts.metrics) metricsRoutes(app, opts.metrics);
  vipRoutes(app, ctx);
  backendRoutes(app, ctx);
  policyRoutes(app, ctx);
  stateRoutes(app, ctx);
  backupRoutes(app, ctx);
  healthRoutes(app, ctx);
  infoRoutes(app, ctx);
  kubernetesRoutes(app, ctx);
  bgpRoutes(app, ctx);
  fleetRoutes(app, ctx);
  monitorRoutes(app, opts.monitor);
  uiRoutes(app, uiAssets());
  await registerDocs(app);

  await app.ready();
  return app;
}
