/**
 * GET /v1/monitor: the datapath's live events (sampled new flows, drops) as
 * a server-sent event stream, from the daemon's EventStream. Each event is
 * one SSE message whose `event` is its kind and whose `data` is one JSON
 * object (src/monitor/events.ts MonitorEvent). Nothing here ever blocks the
 * daemon: when the client reads too slowly its queue fills and further
 * events are dropped for it, then announced as an `event: lost` message.
 */
import type { FastifyInstance } from 'fastify';
import type { MonitorFilter } from '../../monitor/events.js';
import { TooManySubscribers, type MonitorSource, type Subscription } from '../../monitor/stream.js';
import { problem, sendProblem } from '../problems.js';
import { nameSchema, type JsonSchema } from '../schemas.js';
import { problems } from './common.js';

interface MonitorQs {
  vip?: string;
  kind?: 'flow' | 'drop';
  drops?: boolean;
}

const monitorQuery: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    vip: { ...nameSchema, description: 'Only events of this VIP. Drops that came before the VIP lookup (e.g. fragments) match by destination address.' },
    kind: { type: 'string', enum: ['flow', 'drop'], description: 'Only sampled new flows, or only drops.' },
    drops: { type: 'boolean', description: 'true: only drops (the same as kind=drop).' },
  },
};

/** Events written per chunk, between checks of the socket's buffer. */
const BATCH = 256;
/** A comment line this often keeps proxies and idle timers from closing the stream. */
const KEEPALIVE_MS = 15_000;

const STREAM_DESCRIPTION = [
  'A `text/event-stream` (server-sent events) that stays open until the client closes it.',
  '',
  'The first message is `event: ready` with `data` `{"flow_sample": N, "events_per_second": M}` (the datapath\'s',
  'settings: 1 in N new flows are reported, 0 = none; M is the hard cap on events per second, 0 = no events).',
  'Then one message per event: `event: flow` or `event: drop`, `data` one JSON object with the fields',
  '`kind` (flow | drop), `time` (ISO 8601), `reason` (flows: maglev | ct_stale; drops: a drop reason as in',
  '/v1/stats), `family` (ipv4 | ipv6), `protocol`, `source`, `source_port`, `destination`, `destination_port`,',
  '`vip` (name or null), `backend` (the chosen backend\'s address for flows, else null), `bytes` (frame length).',
  '`event: lost` with `data` `{"events": N}` says N events were dropped because this client read too slowly.',
  'Comment lines (`: keepalive`) arrive every 15 s. When ferryd stops, the stream ends.',
].join('\n');

export function monitorRoutes(app: FastifyInstance, source: MonitorSource | undefined): void {
  /** Enders of this app's open streams, so that closing the app does not wait for them. */
  const open = new Set<() => void>();
  app.addHook('preClose', (done) => {
    for (const end of [...open]) end();
    done();
  });

  app.get<{ Querystring: MonitorQs }>('/v1/monitor', {
    exposeHeadRoute: false,
    schema: {
      tags: ['status'], operationId: 'monitor', summary: 'Live datapath events: sampled new flows and drops (server-sent events)',
      description: STREAM_DESCRIPTION,
      querystring: monitorQuery,
      response: {
        200: {
          description: 'The event stream (never ends by itself).',
          content: { 'text/event-stream': { schema: { type: 'string' } } },
        },
        ...problems(400, 401, 503),
        429: { ...problems(429)['429'] as object, description: 'Too many event streams are open (64).' },
      },
    },
  }, async (request, reply) => {
    const q = request.query;
    if (q.drops === true && q.kind === 'flow') {
      return sendProblem(request, reply, problem(400, 'schema', 'drops=true and kind=flow exclude each other', [
        { field: 'query/kind', reason: 'must be drop (or absent) with drops=true' },
      ]));
    }
    if (!source) return sendProblem(request, reply, problem(503, 'monitor-unavailable', 'live events are not available (no datapath in this process)'));
    const filter: MonitorFilter = {};
    if (q.vip !== undefined) filter.vip = q.vip;
    if (q.drops === true) filter.kind = 'drop';
    else if (q.kind !== undefined) filter.kind = q.kind;

    let ended = false;
    let blocked = false;
    let keepalive: NodeJS.Timeout | undefined;
    let sub: Subscription;
    try {
      sub = source.subscribe(filter, () => flush(), () => end());
    } catch (err) {
      if (!(err instanceof TooManySubscribers)) throw err;
      return sendProblem(request, reply, problem(429, 'too-many-streams', err.message));
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-store',
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    const flush = (): void => {
      if (ended || blocked) return;
      const lost = sub.takeLost();
      if (lost > 0) res.write(`event: lost\ndata: {"events":${lost}}\n\n`);
      for (;;) {
        const batch = sub.take(BATCH);
        if (batch.length === 0) return;
        const text = batch.map((ev) => `event: ${ev.kind}\ndata: ${JSON.stringify(ev)}\n\n`).join('');
        if (!res.write(text)) {
          // The socket's buffer is full: wait; meanwhile the queue is bounded.
          blocked = true;
          res.once('drain', () => {
            blocked = false;
            flush();
          });
          return;
        }
      }
    };
    const end = (): void => {
      if (ended) return;
      ended = true;
      if (keepalive) clearInterval(keepalive);
      open.delete(end);
      sub.close();
      if (!res.writableEnded) res.end();
    };
    keepalive = setInterval(() => {
      if (!blocked) res.write(': keepalive\n\n');
    }, KEEPALIVE_MS);
    keepalive.unref();
    open.add(end);
    res.on('close', end);
    res.on('error', end);
    res.write(`event: ready\ndata: ${JSON.stringify(source.settings())}\n\n`);
    if (sub.closed) end();
  });
}
