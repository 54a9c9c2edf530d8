/**
 * The status page at /ui: static files (src/ui, and uPlot's from its npm
 * package) read once at start-up and served from memory. They hold no data
 * and answer without a token; the page asks the API for everything with the
 * operator's token (src/api/auth.ts), so it sees and may change exactly what
 * that token may.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { packageRoot } from '../../paths.js';
import { problem, sendProblem } from '../problems.js';

interface Asset {
  type: string;
  body: Buffer;
}

/** Scripts and styles from this origin only; style attributes (the share bars' widths) allowed. */
const CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

/** The page's files by URL path; a file that cannot be read is left out (and answers 404). */
export function loadUiAssets(): Map<string, Asset> {
  const ui = join(packageRoot(), 'src', 'ui');
  const uplot = join(dirname(createRequire(import.meta.url).resolve('uplot')), '..', 'dist');
  const files: Array<[string, string, string]> = [
    ['/ui/', join(ui, 'index.html'), 'text/html; charset=utf-8'],
    ['/ui/app.js', join(ui, 'app.js'), 'text/javascript; charset=utf-8'],
    ['/ui/app.css', join(ui, 'app.css'), 'text/css; charset=utf-8'],
    ['/ui/uplot.min.js', join(uplot, 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
    ['/ui/uplot.min.css', join(uplot, 'uPlot.min.css'), 'text/css; charset=utf-8'],
  ];
  const out = new Map<string, Asset>();
  for (const [path, file, type] of files) {
    try {
      out.set(path, { type, body: readFileSync(file) });
    } catch {
      // Served as 404 below: a package without the page still runs the API.
    }
  }
  return out;
}

export function uiRoutes(app: FastifyInstance, assets: Map<string, Asset>): void {
  const serve = async (request: FastifyRequest, reply: FastifyReply, file: string): Promise<FastifyReply> => {
    const a = assets.get(`/ui/${file}`);
    if (a === undefined) return sendProblem(request, reply, problem(404, 'not-found', `no such file of the status page: /ui/${file}`));
    return reply.type(a.type).header('cache-control', 'no-cache').header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff').send(a.body);
  };
  app.get('/ui', { schema: { hide: true } }, async (_request, reply) => reply.redirect('/ui/', 301));
  app.get('/ui/', { schema: { hide: true } }, async (request, reply) => serve(request, reply, ''));
  app.get<{ Params: { file: string } }>('/ui/:file', { schema: { hide: true } }, async (request, reply) => serve(request, reply, request.params.file));
}
