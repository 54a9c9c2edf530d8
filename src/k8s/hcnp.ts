/**
 * Health-check node ports: the HTTP responders a cloud load balancer in
 * front of the nodes probes for a LoadBalancer Service with
 * externalTrafficPolicy Local (spec.healthCheckNodePort), answered as
 * kube-proxy answers them, so that only nodes with a ready endpoint of the
 * Service receive its traffic:
 *
 *   200 {"service":{"namespace":"default","name":"web"},"localEndpoints":2}
 *   503 {"service":{"namespace":"default","name":"web"},"localEndpoints":0}
 *
 * with Content-Type application/json and X-Content-Type-Options nosniff,
 * on any path. One HTTP server per port and configured address, opened
 * and closed as the ports come and go (K8sSync's onHealthCheckNodePorts
 * gives the whole list after every change); a count change only changes
 * the answer. A port that cannot be bound (in use, address missing) is
 * logged, reported in status() and retried with backoff: it never stops
 * the others nor the daemon. Two Services claiming one port (the API
 * server allocates them uniquely, but a user may set one): the first by
 * namespace/name is served, the other reported.
 */
import * as http from 'node:http';
import type { HealthCheckNodePort } from './translate.js';
import { backoffDelay, type Backoff } from './backoff.js';
import { silentLogger, type K8sLogger } from './log.js';
import { ipFamily } from '../net/addr.js';

export interface HcnpListenerStatus {
  address: string;
  listening: boolean;
  /** Why the last bind failed (retried), or null. */
  error: string | null;
}

export interface HcnpStatus {
  /** "namespace/name" */
  service: string;
  port: number;
  localEndpoints: number;
  /** One per configured address; empty when the port is not served (see conflict). */
  listeners: HcnpListenerStatus[];
  /** Set when another Service already holds this port (this one is not served). */
  conflict: string | null;
}

export interface HcnpStats {
  /** Bind attempts that failed (each is retried). */
  bindFailures: number;
  /** Requests answered. */
  requests: number;
}

export interface HcnpOptions {
  /** Addresses every port is served on, e.g. ["0.0.0.0", "::"]; empty = none. */
  addresses: readonly string[];
  log?: K8sLogger;
  /** Delays between bind retries; default 1 s doubling to 30 s. */
  retry?: Backoff;
  random?: () => number;
}

const DEFAULT_RETRY: Backoff = { initialMs: 1000, maxMs: 30_000 };

interface Listener {
  port: number;
  address: string;
  server: http.Server | undefined;
  listening: boolean;
  error: string | null;
  failures: number;
  retry: NodeJS.Timeout | undefined;
  closed: boolean;
}

/** The answer body for one port. */
function body(e: HealthCheckNodePort | undefined): string {
  const [namespace, name] = e === undefined ? ['', ''] : splitKey(e.service);
  return JSON.stringify({ service: { namespace, name }, localEndpoints: e?.localEndpoints ?? 0 });
}

function splitKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return slash < 0 ? ['', key] : [key.slice(0, slash), key.slice(slash + 1)];
}

export class HealthCheckNodePorts {
  /** Port → the entry served on it. */
  private readonly served = new Map<number, HealthCheckNodePort>();
  /** Entries not served because their port is taken by another Service. */
  private conflicts: Array<{ entry: HealthCheckNodePort; holder: string }> = [];
  /** `${port} ${address}` → listener. */
  private readonly listeners = new Map<string, Listener>();
  private closed = false;
  readonly stats: HcnpStats = { bindFailures: 0, requests: 0 };
  private readonly log: K8sLogger;
  private readonly random: () => number;

  constructor(private readonly o: HcnpOptions) {
    this.log = o.log ?? silentLogger;
    this.random = o.random ?? Math.random;
  }

  /** The whole list of health-check node ports (replaces the previous one). */
  update(all: readonly HealthCheckNodePort[]): void {
    if (this.closed) return;
    const next = new Map<number, HealthCheckNodePort>();
    const conflicts: Array<{ entry: HealthCheckNodePort; holder: string }> = [];
    for (const e of [...all].sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0))) {
      const holder = next.get(e.port);
      if (holder !== undefined) conflicts.push({ entry: e, holder: holder.service });
      else next.set(e.port, e);
    }
    for (const c of conflicts) {
      if (!this.conflicts.some((x) => x.entry.service === c.entry.service && x.entry.port === c.entry.port)) {
        this.log.warn(
          { service: c.entry.service, port: c.entry.port, holder: c.holder },
          'kubernetes: health-check node port already used by another Service; not served',
        );
      }
    }
    this.conflicts = conflicts;
    this.served.clear();
    for (const [port, e] of next) this.served.set(port, e);
    for (const [key, l] of this.listeners) {
      if (next.has(l.port)) continue;
      this.closeListener(l);
      this.listeners.delete(key);
    }
    for (const port of next.keys()) {
      for (const address of this.o.addresses) {
        const key = `${port} ${address}`;
        if (this.listeners.has(key)) continue;
        const l: Listener = {
          port,
          address,
          server: undefined,
          listening: false,
          error: null,
          failures: 0,
          retry: undefined,
          closed: false,
        };
        this.listeners.set(key, l);
        this.bind(l);
      }
    }
  }

  status(): HcnpStatus[] {
    const out: HcnpStatus[] = [];
    for (const [port, e] of [...this.served].sort((a, b) => a[0] - b[0])) {
      const listeners = this.o.addresses.map((address) => {
        const l = this.listeners.get(`${port} ${address}`);
        return { address, listening: l?.listening ?? false, error: l?.error ?? null };
      });
      out.push({ service: e.service, port, localEndpoints: e.localEndpoints, listeners, conflict: null });
    }
    for (const c of this.conflicts) {
      out.push({
        service: c.entry.service,
        port: c.entry.port,
        localEndpoints: c.entry.localEndpoints,
        listeners: [],
        conflict: `port ${c.entry.port} is already the health-check node port of ${c.holder}`,
      });
    }
    return out;
  }

  /** Closes every listener; update() does nothing afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const waits = [...this.listeners.values()].map((l) => this.closeListener(l));
    this.listeners.clear();
    this.served.clear();
    await Promise.all(waits);
  }

  private bind(l: Listener): void {
    if (l.closed) return;
    const server = http.createServer((req, res) => this.answer(l.port, req, res));
    server.keepAliveTimeout = 5000;
    l.server = server;
    const onError = (err: NodeJS.ErrnoException): void => {
      server.removeListener('listening', onListening);
      l.server = undefined;
      if (l.closed) return;
      l.failures++;
      this.stats.bindFailures++;
      const message = err.message;
      const delay = backoffDelay(this.o.retry ?? DEFAULT_RETRY, l.failures, this.random);
      // Said once per distinct reason; the retries go on quietly.
      if (message !== l.error) {
        this.log.warn(
          { port: l.port, address: l.address, err: message, retryInMs: delay },
          'kubernetes: cannot serve a health-check node port; retrying',
        );
      } else {
        this.log.debug(
          { port: l.port, address: l.address, err: message, retryInMs: delay },
          'kubernetes: health-check node port still not bound',
        );
      }
      l.error = message;
      l.retry = setTimeout(() => {
        l.retry = undefined;
        this.bind(l);
      }, delay);
      l.retry.unref();
    };
    const onListening = (): void => {
      server.removeListener('error', onError);
      server.on('error', (err) =>
        this.log.error({ port: l.port, address: l.address, err: err.message }, 'kubernetes: health-check node port server failed'),
      );
      if (l.closed) {
        server.close();
        return;
      }
      if (l.failures > 0) this.log.info({ port: l.port, address: l.address }, 'kubernetes: health-check node port now served');
      l.listening = true;
      l.error = null;
      l.failures = 0;
    };
    server.once('error', onError);
    server.once('listening', onListening);
    const v6only = ipFamily(l.address) === 6 && this.o.addresses.some((a) => ipFamily(a) === 4);
    server.listen({ host: l.address, port: l.port, ipv6Only: v6only, exclusive: true });
  }

  private answer(port: number, _req: http.IncomingMessage, res: http.ServerResponse): void {
    this.stats.requests++;
    const e = this.served.get(port);
    const text = body(e);
    res.writeHead((e?.localEndpoints ?? 0) > 0 ? 200 : 503, {
      'Content-Type': 'application/json',
      'X-Content-Type-Options': 'nosniff',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  private closeListener(l: Listener): Promise<void> {
    l.closed = true;
    l.listening = false;
    if (l.retry !== undefined) clearTimeout(l.retry);
    l.retry = undefined;
    const server = l.server;
    l.server = undefined;
    if (server === undefined || !server.listening) return Promise.resolve();
    return new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
