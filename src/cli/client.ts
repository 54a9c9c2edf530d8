/**
 * ferryctl's HTTP client: the unix socket by default, or a URL with a
 * bearer token. Answers are parsed JSON; problem+json answers become
 * ApiError carrying the status, detail and field errors.
 */
import { request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Command } from 'commander';

export interface Endpoint {
  socket?: string;
  url?: string;
  token?: string;
}

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  errors?: Array<{ field: string; reason: string }>;
}

export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    const fields = problem.errors?.map((e) => `\n  ${e.field || '/'}: ${e.reason}`).join('') ?? '';
    super(`${problem.status} ${problem.title ?? ''}${problem.detail ? `: ${problem.detail}` : ''}${fields}`);
  }
}

/** The daemon could not be reached (exit code 3). */
export class ConnectError extends Error {}

/** How a subcommand gets the client and the global options of the command it runs under. */
export type ClientOf = (cmd: Command) => { api: Client; g: { json?: boolean } };

export interface Response<T> {
  status: number;
  headers: IncomingHttpHeaders;
  body: T;
  raw: Buffer;
}

export class Client {
  constructor(private readonly ep: Endpoint) {}

  private where(): string {
    return this.ep.url ?? `unix:${this.ep.socket}`;
  }

  request<T>(
    method: string,
    path: string,
    opts: { body?: unknown; raw?: Buffer; contentType?: string; headers?: Record<string, string> } = {},
  ): Promise<Response<T>> {
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    let payload: Buffer | undefined;
    if (opts.raw) {
      payload = opts.raw;
      headers['content-type'] = opts.contentType ?? 'application/octet-stream';
    } else if (opts.body !== undefined) {
      payload = Buffer.from(JSON.stringify(opts.body));
      headers['content-type'] = 'application/json';
    }
    if (payload) headers['content-length'] = String(payload.length);
    if (this.ep.token) headers['authorization'] = `Bearer ${this.ep.token}`;
    const base: RequestOptions = { method, headers, timeout: 30_000 };
    let req;
    if (this.ep.url) {
      const u = new URL(path, this.ep.url);
      const fn = u.protocol === 'https:' ? httpsRequest : httpRequest;
      req = fn(u, base);
    } else {
      req = httpRequest({ ...base, socketPath: this.ep.socket, path });
    }
    return new Promise((resolve, reject) => {
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (err: NodeJS.ErrnoException) => {
        const unreachable = ['ENOENT', 'ECONNREFUSED', 'EACCES', 'ECONNRESET', 'EHOSTUNREACH', 'ETIMEDOUT'].includes(err.code ?? '');
        reject(
          unreachable || err.message === 'timed out' ? new ConnectError(`cannot reach ferryd at ${this.where()}: ${err.message}`) : err,
        );
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        // ferryd gone mid-answer (killed, restarted): say so instead of waiting for an end that never comes.
        const lost = (why: string) => reject(new ConnectError(`lost ferryd at ${this.where()} during its answer: ${why}`));
        res.on('error', (err) => lost(err.message));
        res.on('close', () => {
          if (!res.complete) lost('the connection closed early');
        });
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          const type = res.headers['content-type'] ?? '';
          let body: unknown = undefined;
          if (type.includes('json') && raw.length) {
            try {
              body = JSON.parse(raw.toString('utf8'));
            } catch {
              body = undefined;
            }
          }
          if (status >= 400) {
            const p = (body ?? {}) as Partial<Problem>;
            reject(new ApiError({ ...p, status, title: p.title ?? res.statusMessage ?? 'error' }));
            return;
          }
          resolve({ status, headers: res.headers, body: body as T, raw });
        });
      });
      req.end(payload);
    });
  }

  /**
   * A streaming GET (server-sent events): resolves with the response once a
   * 2xx status arrived; the caller reads it until it ends and closes it with
   * `close()`. Error answers reject as ApiError, like request().
   */
  stream(path: string, accept = 'text/event-stream'): Promise<{ res: IncomingMessage; close: () => void }> {
    const headers: Record<string, string> = { accept };
    if (this.ep.token) headers['authorization'] = `Bearer ${this.ep.token}`;
    let req: ClientRequest;
    if (this.ep.url) {
      const u = new URL(path, this.ep.url);
      req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, { method: 'GET', headers });
    } else {
      req = httpRequest({ method: 'GET', headers, socketPath: this.ep.socket, path });
    }
    return new Promise((resolve, reject) => {
      req.on('error', (err: NodeJS.ErrnoException) => {
        const unreachable = ['ENOENT', 'ECONNREFUSED', 'EACCES', 'ECONNRESET', 'EHOSTUNREACH', 'ETIMEDOUT'].includes(err.code ?? '');
        reject(unreachable ? new ConnectError(`cannot reach ferryd at ${this.where()}: ${err.message}`) : err);
      });
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status < 400) {
          resolve({ res, close: () => req.destroy() });
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let p: Partial<Problem> = {};
          try {
            p = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Partial<Problem>;
          } catch {
            p = {};
          }
          reject(new ApiError({ ...p, status, title: p.title ?? res.statusMessage ?? 'error' }));
        });
      });
      req.end();
    });
  }

  async get<T>(path: string): Promise<T> {
    return (await this.request<T>('GET', path)).body;
  }

  /** Follows `next` cursors and returns every item of a paginated list. */
  async list<T>(path: string): Promise<T[]> {
    const out: T[] = [];
    let cursor: string | null = null;
    do {
      const sep = path.includes('?') ? '&' : '?';
      const q: string = cursor ? `${sep}limit=1000&cursor=${encodeURIComponent(cursor)}` : `${sep}limit=1000`;
      const page: { items: T[]; next: string | null } = await this.get(`${path}${q}`);
      out.push(...page.items);
      cursor = page.next;
    } while (cursor);
    return out;
  }
}
