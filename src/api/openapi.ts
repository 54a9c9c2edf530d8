/**
 * The OpenAPI 3.1 document, generated from the routes' schemas by
 * @fastify/swagger (dynamic mode); shared schemas become components by
 * their $id. Served at /openapi.json and, with a UI, at /docs.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';

export const OPENAPI_TAGS = [
  { name: 'vips', description: 'Virtual IPs (address, port, protocol) and their settings.' },
  { name: 'backends', description: 'A VIP\'s backends; removed backends drain their flows.' },
  { name: 'policies', description: 'Named source allow/deny sets VIPs reference.' },
  { name: 'state', description: 'Declarative apply and export of the whole desired state.' },
  { name: 'health', description: 'Health transitions of backends (each backend shows its live health).' },
  { name: 'status', description: 'Daemon status and datapath counters.' },
  { name: 'kubernetes', description: 'The Kubernetes mode (ferryd as an in-cluster proxy); its VIPs are owned by "kubernetes:NS/NAME".' },
  { name: 'bgp', description: 'Announcing this host\'s VIPs by BGP through BIRD (bgp.enabled), and the host drain.' },
  { name: 'fleet', description: 'The fleet store (fleet.etcd): the API\'s resources shared by several hosts through etcd.' },
  { name: 'probes', description: 'Liveness and readiness (no token needed).' },
];

const DESCRIPTION = [
  'Operator API of ferryd, the Ferry L4 load balancer.',
  '',
  'Writes are acknowledged only after the change is committed in the store and applied to the datapath; they',
  'answer the live revision in `X-Ferry-Revision` and in the body (`{revision, <resource>}`). A write that fails',
  'changes nothing. Errors are RFC 9457 problem details (`application/problem+json`); `errors` names each field.',
  'Single resources carry a strong ETag `"<name>-r<updated_revision>"` (a VIP\'s adds `-b<backend_count>`);',
  'PUT and DELETE honour If-Match',
  '(`*`: must exist) and If-None-Match: `*` (create only); GET honours If-None-Match (304).',
  'An unknown path is 404; a known path with another method is 405 with `Allow`.',
].join('\n');

export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Ferry', version, description: DESCRIPTION },
      tags: OPENAPI_TAGS,
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'Required on TCP listeners; the unix socket needs none.' },
        },
      },
      security: [{ bearer: [] }],
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`),
    },
  });
}

export async function registerDocs(app: FastifyInstance): Promise<void> {
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
