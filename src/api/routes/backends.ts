/**
 * /v1/vips/{name}/backends: a VIP's backends, addressed by IP (IPv6 in the
 * path as is). DELETE drains: the store keeps a tombstone so established
 * flows finish for drainSeconds. Writes answer {revision, backend}; GETs add
 * the backend's runtime health.
 */
import type { FastifyInstance } from 'fastify';
import { UNCHECKED, type BackendHealth } from '../../model/health.js';
import type { BackendRecord, BackendSpec } from '../../model/types.js';
import { etagOf, notModified } from '../etag.js';
import { nameSchema, ref } from '../schemas.js';
import {
  addressParam, condHeaders, listing, LIST_ERRORS, etagHeader, json, locationHeader, nameParam, pageQuery, params, preconditions,
  problems, READ_ERRORS, revisionHeader, sameIp, sameKey, toPageQuery, urlIp, WRITE_ERRORS, wrote,
  type CondHeaders, type PageQs, type RouteContext,
} from './common.js';

const tags = ['backends'];
const beTag = (b: BackendRecord): string => etagOf(b.address, b.updated_revision);
const beUrl = (b: BackendRecord): string => `/v1/vips/${b.vip}/backends/${b.address}`;

interface VipP { name: string }
interface BeP { name: string; address: string }
const beParams = params({ name: nameSchema, address: addressParam });

export function backendRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { controller } = ctx;
  const healthOf = (b: BackendRecord): BackendHealth => ctx.health?.backendHealth(b.vip, b.address) ?? { ...UNCHECKED };
  const withHealth = (b: BackendRecord): BackendRecord & { health: BackendHealth } => ({ ...b, health: healthOf(b) });

  app.get<{ Params: VipP; Querystring: PageQs }>('/v1/vips/:name/backends', {
    schema: {
      tags, operationId: 'listBackends', summary: 'List a VIP\'s backends',
      params: nameParam, querystring: pageQuery,
      response: { 200: json('A page of backends.', ref('BackendPage')), ...problems(...LIST_ERRORS) },
    },
  }, async (request) => {
    ctx.health?.refresh();
    const page = listing(() => controller.read((tx) => tx.listBackends(request.params.name, toPageQuery(request.query))));
    return { ...page, items: page.items.map(withHealth) };
  });

  app.post<{ Params: VipP; Body: BackendSpec }>('/v1/vips/:name/backends', {
    schema: {
      tags, operationId: 'createBackend', summary: 'Add a backend to a VIP',
      params: nameParam, body: ref('BackendSpec'),
      response: {
        201: json('Created (committed and applied).', ref('BackendWrite'), { ...revisionHeader, ...etagHeader, ...locationHeader }),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const w = await controller.change(request.ferryActor, 'backend.create', (tx) => tx.createBackend(request.params.name, request.body, null));
    wrote(reply.code(201), w.revision, beTag(w.result), beUrl(w.result));
    return { revision: w.revision, backend: w.result };
  });

  app.get<{ Params: BeP; Headers: CondHeaders }>('/v1/vips/:name/backends/:address', {
    schema: {
      tags, operationId: 'getBackend', summary: 'Get a backend',
      description: 'The ETag covers the stored backend (If-Match on writes); health is live, so a checked backend never answers 304.',
      params: beParams, headers: condHeaders(true),
      response: {
        200: json('The backend.', ref('BackendRecord'), etagHeader),
        304: { description: 'Not modified (If-None-Match matched).', type: 'null' },
        ...problems(...READ_ERRORS),
      },
    },
  }, async (request, reply) => {
    const { name, address } = request.params;
    ctx.health?.refresh();
    const be = withHealth(controller.read((tx) => tx.getBackend(name, urlIp(address))));
    const tag = beTag(be);
    reply.header('etag', tag);
    // The tag does not change with health (writes compare it): only a representation without live health may be 304.
    if (be.health.status === 'unchecked' && notModified(request.headers['if-none-match'], tag)) return reply.code(304).send();
    return be;
  });

  app.put<{ Params: BeP; Body: Partial<BackendSpec>; Headers: CondHeaders }>('/v1/vips/:name/backends/:address', {
    schema: {
      tags, operationId: 'putBackend', summary: 'Create or replace a backend (idempotent)',
      params: beParams, headers: condHeaders(false), body: ref('BackendReplace'),
      response: {
        200: json('Replaced (or unchanged).', ref('BackendWrite'), { ...revisionHeader, ...etagHeader }),
        201: json('Created.', ref('BackendWrite'), { ...revisionHeader, ...etagHeader, ...locationHeader }),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const { name } = request.params;
    const address = urlIp(request.params.address);
    sameKey('address', address, request.body.address, sameIp);
    const spec: BackendSpec = { ...request.body, address };
    const w = await controller.change(request.ferryActor, 'backend.put', (tx) => {
      preconditions(request.headers, () => beTag(tx.getBackend(name, address)));
      return tx.putBackend(name, spec, null);
    });
    const { record, created } = w.result;
    wrote(reply.code(created ? 201 : 200), w.revision, beTag(record), created ? beUrl(record) : undefined);
    return { revision: w.revision, backend: record };
  });

  app.delete<{ Params: BeP; Headers: CondHeaders }>('/v1/vips/:name/backends/:address', {
    schema: {
      tags, operationId: 'deleteBackend', summary: 'Remove a backend (its established flows drain)',
      params: beParams, headers: condHeaders(false),
      response: {
        200: json('Deleted; the body holds the backend as it was.', ref('BackendWrite'), revisionHeader),
        ...problems(...WRITE_ERRORS),
      },
    },
  }, async (request, reply) => {
    const { name } = request.params;
    const address = urlIp(request.params.address);
    const w = await controller.change(request.ferryActor, 'backend.delete', (tx) => {
      preconditions(request.headers, () => beTag(tx.getBackend(name, address)));
      return tx.deleteBackend(name, address, ctx.drainSeconds, null);
    });
    wrote(reply, w.revision);
    return { revision: w.revision, backend: w.result };
  });
}
