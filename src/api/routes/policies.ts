/**
 * /v1/policies: named allow/deny CIDR sets VIPs reference by name.
 * Writes answer {revision, policy}; deleting a referenced policy is 409.
 */
import type { FastifyInstance } from 'fastify';
import type { PolicyRecord, PolicySpec } from '../../model/types.js';
import { etagOf, notModified } from '../etag.js';
import { ref } from '../schemas.js';
import {
  condHeaders, listing, LIST_ERRORS, etagHeader, json, locationHeader, nameParam, pageQuery, preconditions, problems, READ_ERRORS,
  revisionHeader, sameKey, toPageQuery, WRITE_ERRORS, wrote, type CondHeaders, type PageQs, type RouteContext,
} from './common.js';

const tags = ['policies'];
const polTag = (p: PolicyRecord): string => etagOf(p.name, p.updated_revision);
const polUrl = (name: string): string => `/v1/policies/${name}`;

interface NameP { name: string }

export function policyRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { controller } = ctx;

  app.get<{ Querystring: PageQs }>('/v1/policies', {
    schema: {
      tags, operationId: 'listPolicies', summary: 'List policies (by name)',
      querystring: pageQuery,
      response: { 200: json('A page of policies.', ref('PolicyPage')), ...problems(...LIST_ERRORS) },
    },
  }, async (request) => listing(() => controller.read((tx) => tx.listPolicies(toPageQuery(request.query)))));

  app.post<{ Body: PolicySpec }>('/v1/policies', {
    schema: {
      tags, operationId: 'createPolicy', summary: 'Create a policy',
      body: ref('PolicySpec'),
      response: {
        201: json('Created (committed and applied).', ref('PolicyWrite'), { ...revisionHeader, ...etagHeader, ...locationHeader }),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const w = await controller.change(request.ferryActor, 'policy.create', (tx) => tx.createPolicy(request.body, null));
    wrote(reply.code(201), w.revision, polTag(w.result), polUrl(w.result.name));
    return { revision: w.revision, policy: w.result };
  });

  app.get<{ Params: NameP; Headers: CondHeaders }>('/v1/policies/:name', {
    schema: {
      tags, operationId: 'getPolicy', summary: 'Get a policy',
      params: nameParam, headers: condHeaders(true),
      response: {
        200: json('The policy.', ref('PolicyRecord'), etagHeader),
        304: { description: 'Not modified (If-None-Match matched).', type: 'null' },
        ...problems(...READ_ERRORS),
      },
    },
  }, async (request, reply) => {
    const pol = controller.read((tx) => tx.getPolicy(request.params.name));
    const tag = polTag(pol);
    reply.header('etag', tag);
    if (notModified(request.headers['if-none-match'], tag)) return reply.code(304).send();
    return pol;
  });

  app.put<{ Params: NameP; Body: Partial<PolicySpec>; Headers: CondHeaders }>('/v1/policies/:name', {
    schema: {
      tags, operationId: 'putPolicy', summary: 'Create or replace a policy (idempotent)',
      params: nameParam, headers: condHeaders(false), body: ref('PolicyReplace'),
      response: {
        200: json('Replaced (or unchanged).', ref('PolicyWrite'), { ...revisionHeader, ...etagHeader }),
        201: json('Created.', ref('PolicyWrite'), { ...revisionHeader, ...etagHeader, ...locationHeader }),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const { name } = request.params;
    sameKey('name', name, request.body.name);
    const spec: PolicySpec = { ...request.body, name };
    const w = await controller.change(request.ferryActor, 'policy.put', (tx) => {
      preconditions(request.headers, () => polTag(tx.getPolicy(name)));
      return tx.putPolicy(spec, null);
    });
    const { record, created } = w.result;
    wrote(reply.code(created ? 201 : 200), w.revision, polTag(record), created ? polUrl(name) : undefined);
    return { revision: w.revision, policy: record };
  });

  app.delete<{ Params: NameP; Headers: CondHeaders }>('/v1/policies/:name', {
    schema: {
      tags, operationId: 'deletePolicy', summary: 'Delete a policy (409 while a VIP references it)',
      params: nameParam, headers: condHeaders(false),
      response: {
        200: json('Deleted; the body holds the policy as it was.', ref('PolicyWrite'), revisionHeader),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const { name } = request.params;
    const w = await controller.change(request.ferryActor, 'policy.delete', (tx) => {
      preconditions(request.headers, () => polTag(tx.getPolicy(name)));
      return tx.deletePolicy(name, null);
    });
    wrote(reply, w.revision);
    return { revision: w.revision, policy: w.result };
  });
}
