/**
 * HTTP to the Kubernetes API over the credentials of @kubernetes/client-node's
 * KubeConfig (in-cluster service account with its rotating token file, or a
 * kubeconfig file: certificates, tokens, exec plugins, proxies): JSON
 * requests, and watch streams read line by line.
 *
 * Why our own requests rather than the library's Watch (1.4.0, the last
 * release that runs on Node 20; 2.x needs undici 8 and Node 22): its Watch
 * cannot be aborted before the response headers arrive nor notices a silent
 * connection. stream() can be aborted at any time and fails a stream that
 * stays silent longer than its idle timeout.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';

export interface KubeConfigSource {
  /** A kubeconfig file; null/undefined = in-cluster service account (or the library's default search). */
  kubeconfig?: string | null;
  /** Force the in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, /var/run/secrets/kubernetes.io/serviceaccount). */
  inCluster?: boolean;
  /** Prefix of the service-account directory (tests). */
  pathPrefix?: string;
}

/** Credentials and server: a kubeconfig file, or the in-cluster service account. */
export function loadKubeConfig(src: KubeConfigSource = {}): KubeConfig {
  const kc = new KubeConfig();
  if (src.kubeconfig !== undefined && src.kubeconfig !== null && src.kubeconfig !== '') kc.loadFromFile(src.kubeconfig);
  else if (src.inCluster === true) kc.loadFromCluster(src.pathPrefix);
  else kc.loadFromDefault();
  if (kc.getCurrentCluster() === null) throw new Error('kubernetes: the kubeconfig has no current cluster');
  return kc;
}

/** An API answer other than 2xx, with the Status the server sent when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Minimal HTTP over the KubeConfig's TLS material and auth headers. */
export class ApiClient {
  constructor(readonly kc: KubeConfig) {}

  private async request(
    path: string,
    query: Record<string, string | undefined>,
    method = 'GET',
    contentType?: string,
  ): Promise<{ req: http.ClientRequest; url: URL }> {
    const cluster = this.kc.getCurrentCluster();
    if (cluster === null) throw new Error('kubernetes: no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
    const opts: https.RequestOptions = {};
    await this.kc.applyToHTTPSOptions(opts); // agent (CA, client certificate), Authorization (token file, exec, …)
    const headers: Record<string, string> = {
      ...(opts.headers as Record<string, string> | undefined),
      Accept: 'application/json',
      'User-Agent': 'ferry',
    };
    if (contentType !== undefined) headers['Content-Type'] = contentType;
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { ...opts, method, headers });
    return { req, url };
  }

  /** GET returning the parsed JSON body; throws ApiError on a non-2xx answer. */
  async get<T>(
    path: string,
    query: Record<string, string | undefined>,
    timeoutMs = 60_000,
    onRequest?: (abort: () => void) => void,
  ): Promise<T> {
    return this.call<T>('GET', path, query, undefined, timeoutMs, onRequest);
  }

  /** POST (create) or PUT (replace, optimistic on metadata.resourceVersion) of a JSON object; the answer's body. */
  async send<T>(method: 'POST' | 'PUT', path: string, body: object, timeoutMs = 30_000): Promise<T> {
    return this.call<T>(method, path, {}, JSON.stringify(body), timeoutMs);
  }

  private async call<T>(
    method: string,
    path: string,
    query: Record<string, string | undefined>,
    body: string | undefined,
    timeoutMs: number,
    onRequest?: (abort: () => void) => void,
  ): Promise<T> {
    const { req } = await this.request(path, query, method, body === undefined ? undefined : 'application/json');
    onRequest?.(() => req.destroy(new Error(`kubernetes: ${method} ${path} aborted`)));
    return new Promise<T>((resolve, reject) => {
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`kubernetes: ${method} ${path} timed out after ${timeoutMs} ms`)));
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if ((res.statusCode ?? 0) < 200 || (res.statusCode ?? 0) >= 300) {
            reject(statusError(res.statusCode ?? 0, text));
            return;
          }
          try {
            resolve(JSON.parse(text) as T);
          } catch (err) {
            reject(new Error(`kubernetes: ${method} ${path}: invalid JSON (${(err as Error).message})`));
          }
        });
      });
      req.end(body);
    });
  }

  /**
   * A streaming GET: calls onLine for every newline-terminated line; the
   * returned `done` resolves when the server ends the stream and rejects on
   * a non-2xx answer (ApiError), a network error or idle timeout.
   */
  async stream(
    path: string,
    query: Record<string, string | undefined>,
    onLine: (line: string) => void,
    idleTimeoutMs: number,
  ): Promise<{ done: Promise<void>; abort: () => void }> {
    const { req } = await this.request(path, query);
    let aborted = false;
    const done = new Promise<void>((resolve, reject) => {
      let idle: NodeJS.Timeout | undefined;
      const arm = (): void => {
        if (idle !== undefined) clearTimeout(idle);
        idle = setTimeout(() => req.destroy(new Error(`kubernetes: watch ${path} silent for ${idleTimeoutMs} ms`)), idleTimeoutMs);
        idle.unref();
      };
      const finish = (err?: Error): void => {
        if (idle !== undefined) clearTimeout(idle);
        if (err !== undefined && !aborted) reject(err);
        else resolve();
      };
      arm();
      req.on('error', (err) => finish(err));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => finish(statusError(status, Buffer.concat(chunks).toString('utf8'))));
          res.on('error', (err) => finish(err));
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          arm();
          buf += chunk;
          let nl = buf.indexOf('\n');
          while (nl >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line !== '') onLine(line);
            if (aborted) return;
            nl = buf.indexOf('\n');
          }
        });
        res.on('end', () => {
          const rest = buf.trim();
          if (rest !== '' && !aborted) onLine(rest);
          finish();
        });
        res.on('error', (err) => finish(err));
        res.on('close', () => finish(res.complete ? undefined : new Error(`kubernetes: watch ${path}: connection closed`)));
      });
      req.end();
    });
    return {
      done,
      abort: () => {
        aborted = true;
        req.destroy();
      },
    };
  }
}

function statusError(status: number, body: string): ApiError {
  try {
    const s = JSON.parse(body) as { message?: string; reason?: string };
    return new ApiError(status, `kubernetes: ${status} ${s.reason ?? ''}: ${s.message ?? body}`.trim(), s.reason);
  } catch {
    return new ApiError(status, `kubernetes: HTTP ${status}: ${body.slice(0, 200)}`);
  }
}
