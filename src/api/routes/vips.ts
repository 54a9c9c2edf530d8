/**
 * /v1/vips: list (paginated), create, get, create-or-replace, delete.
 * Writes answer {revision, vip} with X-Ferry-Revision and the VIP's ETag;
 * DELETE answers 200 with the deleted VIP (its backends go with it and drain).
 */
import type { FastifyInstance } from 'fastify';
import type { VipRecord, VipSpec } from '../../model/types.js';
import { etagOf, notModified } from '../etag.js';
import { ref } from '../schemas.js';
import {
  condHeaders, listing, LIST_ERRORS, etagHeader, json, locationHeader, nameParam, pageQuery, preconditions, problems, READ_ERRORS,
  revisionHeader, sameKey, toPageQuery, WRITE_ERRORS, wrote, type CondHeaders, type PageQs, type RouteContext,
} from './common.js';

const tags = ['vips'];
/**
 * "<name>-r<updated_revision>-b<backend_count>": backend_count is the one
 * field of a VIP that its backends' writes change without bumping the VIP's
 * updated_revision, and a validator must change whenever the representation does.
 */
export const vipTag = (v: VipRecord): string => etagOf(`${v.name}-r${v.updated_revision}-b${v.backend_count}`);
const vipUrl = (name: string): string => `/v1/vips/${name}`;

interface NameP { name: string }

export function vipRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { controller } = ctx;

  app.get<{ Querystring: PageQs }>('/v1/vips', {
    schema: {
      tags, operationId: 'listVips', summary: 'List VIPs (by name)',
      querystring: pageQuery,
      response: { 200: json('A page of VIPs.', ref('VipPage')), ...problems(...LIST_ERRORS) },
    },
  }, async (request) => listing(() => controller.read((tx) => tx.listVips(toPageQuery(request.query)))));

  app.post<{ Body: VipSpec }>('/v1/vips', {
    schema: {
      tags, operationId: 'createVip', summary: 'Create a VIP',
      body: ref('VipSpec'),
      response: {
        201: json('Created (committed and applied).', ref('VipWrite'), { ...revisionHeader, ...etagHeader, ...locationHeader }),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const w = await controller.change(request.ferryActor, 'vip.create', (tx) => tx.createVip(request.body, null));
    wrote(reply.code(201), w.revision, vipTag(w.result), vipUrl(w.result.name));
    return { revision: w.revision, vip: w.result };
  });

  app.get<{ Params: NameP; Headers: CondHeaders }>('/v1/vips/:name', {
    schema: {
      tags, operationId: 'getVip', summary: 'Get a VIP',
      params: nameParam, headers: condHeaders(true),
      response: {
        200: json('The VIP.', ref('VipRecord'), etagHeader),
        304: { description: 'Not modified (If-None-Match matched).', type: 'null' },
        ...problems(...READ_ERRORS),
      },
    },
  }, async (request, reply) => {
    const vip = controller.read((tx) => tx.getVip(request.params.name));
    const tag = vipTag(vip);
    reply.header('etag', tag);
    if (notModified(request.headers['if-none-match'], tag)) return reply.code(304).send();
    return vip;
  });

  app.put<{ Params: NameP; Body: Partial<VipSpec>; Headers: CondHeaders }>('/v1/vips/:name', {
    schema: {
      tags, operationId: 'putVip', summary: 'Create or replace a VIP (idempotent)',
      params: nameParam, headers: condHeaders(false), body: ref('VipReplace'),
      response: {
        200: json('Replaced (or unchanged).', ref('VipWrite'), { ...revisionHeader, ...etagHeader }),
        201: json('Created.', ref('VipWrite'), { ...revisionHeader, ...etagHeader, ...locationHeader }),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const { name } = request.params;
    sameKey('name', name, request.body.name);
    const spec = { ...request.body, name } as VipSpec;
    const w = await controller.change(request.ferryActor, 'vip.put', (tx) => {
      preconditions(request.headers, () => vipTag(tx.getVip(name)));
      return tx.putVip(spec, null);
    });
    const { record, created } = w.result;
    wrote(reply.code(created ? 201 : 200), w.revision, vipTag(record), created ? vipUrl(name) : undefined);
    return { revision: w.revision, vip: record };
  });

  app.delete<{ Params: NameP; Headers: CondHeaders }>('/v1/vips/:name', {
    schema: {
      tags, operationId: 'deleteVip', summary: 'Delete a VIP and its backends (their flows drain)',
      params: nameParam, headers: condHeaders(false),
      response: {
        200: json('Deleted; the body holds the VIP as it was.', ref('VipWrite'), revisionHeader),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const { name } = request.params;
    const w = await controller.change(request.ferryActor, 'vip.delete', (tx) => {
      preconditions(request.headers, () => vipTag(tx.getVip(name)));
      return tx.deleteVip(name, null);
    });
    wrote(reply, w.revision);
    return { revision: w.revision, vip: w.result };
  });
}
