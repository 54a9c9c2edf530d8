/**
 * A small Kubernetes API server for tests: node:http (or https with a
 * throw-away self-signed certificate) on 127.0.0.1, random port, speaking
 * the real list/watch protocol for Services, EndpointSlices
 * (discovery.k8s.io/v1) and Nodes:
 *   - GET collection (all namespaces or /namespaces/NS/…): a List with
 *     metadata.resourceVersion; `limit` + `continue` pagination over a
 *     consistent snapshot (an expired token answers 410 Expired);
 *     fieldSelector (metadata.name, metadata.namespace; = == !=) and
 *     labelSelector (k=v, k==v, k!=v, k, !k);
 *   - `?watch=true|1&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=T`:
 *     a chunked stream of JSON lines {type, object}: history after N
 *     replayed, then live ADDED / MODIFIED / DELETED (selector-aware: an
 *     object leaving a selector is DELETED, entering it ADDED), BOOKMARK on
 *     demand or at an interval; no resourceVersion (or "0") starts with
 *     synthetic ADDED events of everything. Too old a resourceVersion:
 *     an ERROR event carrying a Status of code 410 (as the API server's
 *     watch cache does), or HTTP 410 with goneMode 'http';
 *   - single objects: GET; POST to a namespaced collection (create, 409
 *     AlreadyExists); PUT (replace, 409 Conflict when metadata.resourceVersion
 *     is not the stored one) and PUT …/status (Services: only the status
 *     replaced); Leases (coordination.k8s.io/v1) for leader election;
 *   - bearer-token authentication (401 without it).
 * Tests change objects (upsert/remove), expire history (forcing 410),
 * drop or end watch connections, inject failures, and read the request log.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KubeObject } from '../../src/k8s/types.js';

export type ResourceName = 'services' | 'endpointslices' | 'nodes' | 'leases';

interface ResourceDef {
  prefix: string;
  kind: string;
  listKind: string;
  apiVersion: string;
  namespaced: boolean;
}

const DEFS: Record<ResourceName, ResourceDef> = {
  services: { prefix: '/api/v1', kind: 'Service', listKind: 'ServiceList', apiVersion: 'v1', namespaced: true },
  endpointslices: {
    prefix: '/apis/discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    listKind: 'EndpointSliceList',
    apiVersion: 'discovery.k8s.io/v1',
    namespaced: true,
  },
  nodes: { prefix: '/api/v1', kind: 'Node', listKind: 'NodeList', apiVersion: 'v1', namespaced: false },
  leases: {
    prefix: '/apis/coordination.k8s.io/v1',
    kind: 'Lease',
    listKind: 'LeaseList',
    apiVersion: 'coordination.k8s.io/v1',
    namespaced: true,
  },
};

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEntry {
  rv: number;
  resource: ResourceName;
  type: EventType;
  object: KubeObject;
  prev: KubeObject | undefined;
  /** JSON.stringify(object), kept from the first event line that needed it (or from prepare()). */
  json?: string;
}

/** Changes made ready by prepare(): objects stamped and encoded, not yet stored or sent. */
export interface PreparedChanges {
  /** The server's resourceVersion they were stamped after: commit() refuses them once it moved. */
  readonly after: number;
  readonly entries: readonly HistoryEntry[];
}

type Filter = (o: KubeObject) => boolean;

interface Watcher {
  resource: ResourceName;
  filter: Filter;
  bookmarks: boolean;
  res: http.ServerResponse;
  timer: NodeJS.Timeout | undefined;
}

interface Injected {
  status: number;
  count: number;
  match: RegExp | undefined;
}

export interface K8sTestServerOptions {
  /** Bearer token clients must send; null = no authentication. Default "ferry-test-token". */
  token?: string | null;
  /** Serve HTTPS with a self-signed certificate for 127.0.0.1 (needed for in-cluster credentials). */
  tls?: boolean;
  /** How a watch from an expired resourceVersion is refused. Default 'event'. */
  goneMode?: 'event' | 'http';
  /** Send bookmarks to watchers that allow them every this many ms; 0 = only on sendBookmarks(). */
  bookmarkIntervalMs?: number;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
}

const statusBody = (code: number, reason: string, message: string): object => ({
  kind: 'Status',
  apiVersion: 'v1',
  metadata: {},
  status: 'Failure',
  message,
  reason,
  code,
});

const keyOf = (o: KubeObject): string => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);
const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;

export class K8sTestServer {
  rv = 1000;
  /** Watches from a resourceVersion older than this are answered 410. */
  compactedRv = 0;
  goneMode: 'event' | 'http';
  readonly requests: RequestRecord[] = [];
  private readonly objects: Record<ResourceName, Map<string, KubeObject>> = {
    services: new Map(),
    endpointslices: new Map(),
    nodes: new Map(),
    leases: new Map(),
  };
  private history: HistoryEntry[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly continues = new Map<string, { items: KubeObject[]; offset: number; rv: number; resource: ResourceName }>();
  private readonly injected: Injected[] = [];
  private bookmarkTimer: NodeJS.Timeout | undefined;
  private tmp: string;
  private server!: http.Server;
  port = 0;

  private constructor(private readonly o: K8sTestServerOptions) {
    this.goneMode = o.goneMode ?? 'event';
    this.tmp = mkdtempSync(join(tmpdir(), 'ferry-k8s-'));
  }

  static async start(o: K8sTestServerOptions = {}): Promise<K8sTestServer> {
    const s = new K8sTestServer(o);
    await s.listen();
    return s;
  }

  get token(): string | null {
    return this.o.token === undefined ? 'ferry-test-token' : this.o.token;
  }

  get url(): string {
    return `${this.o.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** The CA (= the self-signed certificate) in TLS mode. */
  get caFile(): string {
    return join(this.tmp, 'cert.pem');
  }

  get watchCount(): number {
    return this.watchers.size;
  }

  private async listen(): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => this.handle(req, res);
    if (this.o.tls) {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-days',
          '1',
          '-keyout',
          join(this.tmp, 'key.pem'),
          '-out',
          this.caFile,
          '-subj',
          '/CN=127.0.0.1',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
        ],
        { stdio: 'ignore' },
      );
      this.server = https.createServer({ key: readFileSync(join(this.tmp, 'key.pem')), cert: readFileSync(this.caFile) }, handler);
    } else {
      this.server = http.createServer(handler);
    }
    this.server.keepAliveTimeout = 1000;
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    if ((this.o.bookmarkIntervalMs ?? 0) > 0) {
      this.bookmarkTimer = setInterval(() => this.sendBookmarks(), this.o.bookmarkIntervalMs);
      this.bookmarkTimer.unref();
    }
  }

  async close(): Promise<void> {
    if (this.bookmarkTimer !== undefined) clearInterval(this.bookmarkTimer);
    this.dropWatches();
    this.server.closeAllConnections?.();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.tmp, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ credentials

  /** A kubeconfig file for this server (token auth; CA in TLS mode, insecure-skip-tls-verify for plain HTTP). */
  writeKubeconfig(): string {
    const path = join(this.tmp, 'kubeconfig.yaml');
    const cluster = this.o.tls ? `    certificate-authority: ${this.caFile}` : '    insecure-skip-tls-verify: true';
    const user = this.token === null ? '  user: {}' : `  user:\n    token: ${this.token}`;
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: test',
        '  cluster:',
        `    server: ${this.url}`,
        cluster,
        'users:',
        '- name: test',
        user,
        'contexts:',
        '- name: test',
        '  context:',
        '    cluster: test',
        '    user: test',
        'current-context: test',
        '',
      ].join('\n'),
    );
    return path;
  }

  /**
   * The files of an in-cluster service account (token, ca.crt, namespace)
   * under a prefix, and the environment KubeConfig.loadFromCluster reads.
   * TLS mode only (in-cluster is always HTTPS).
   */
  writeServiceAccount(): { pathPrefix: string; env: Record<string, string> } {
    if (!this.o.tls) throw new Error('k8s test server: in-cluster credentials need tls: true');
    const prefix = join(this.tmp, 'sa');
    const dir = join(prefix, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'token'), this.token ?? '');
    writeFileSync(join(dir, 'ca.crt'), readFileSync(this.caFile));
    writeFileSync(join(dir, 'namespace'), 'kube-system');
    return { pathPrefix: prefix, env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(this.port) } };
  }

  // ---------------------------------------------------------------- objects

  /** Creates or replaces an object (a new resourceVersion); returns the stored copy. */
  upsert(resource: ResourceName, obj: KubeObject): KubeObject {
    return this.upsertMany([[resource, obj]])[0]!;
  }

  /** Many changes at once (one write per watcher, as a burst). */
  upsertMany(list: ReadonlyArray<readonly [ResourceName, KubeObject]>): KubeObject[] {
    return this.commit(this.prepare(list));
  }

  /**
   * upsertMany's first half: the objects stamped (uid, resourceVersion) and
   * encoded, nothing stored or sent. A benchmark prepares a burst before
   * its clock starts, so that it times the watch streams, not this server.
   */
  prepare(list: ReadonlyArray<readonly [ResourceName, KubeObject]>): PreparedChanges {
    const entries: HistoryEntry[] = [];
    const pending = new Map<string, KubeObject>();
    let rv = this.rv;
    for (const [resource, obj] of list) {
      const def = DEFS[resource];
      const o = clone(obj);
      o.apiVersion = def.apiVersion;
      o.kind = def.kind;
      if (!def.namespaced) delete o.metadata.namespace;
      else o.metadata.namespace ??= 'default';
      const key = keyOf(o);
      const prev = pending.get(`${resource}/${key}`) ?? this.objects[resource].get(key);
      o.metadata.uid = prev?.metadata.uid ?? randomUUID();
      o.metadata.creationTimestamp = prev?.metadata.creationTimestamp ?? new Date().toISOString();
      o.metadata.resourceVersion = String(++rv);
      pending.set(`${resource}/${key}`, o);
      entries.push({ rv, resource, type: prev === undefined ? 'ADDED' : 'MODIFIED', object: o, prev, json: JSON.stringify(o) });
    }
    return { after: this.rv, entries };
  }

  /** Whether prepared changes still follow the server's latest change (commit() takes only those). */
  isCurrent(p: PreparedChanges): boolean {
    return p.after === this.rv;
  }

  /** upsertMany's second half: stores prepared changes and writes their events to the watchers. */
  commit(p: PreparedChanges): KubeObject[] {
    if (!this.isCurrent(p)) throw new Error(`prepared after resourceVersion ${p.after}, the server is at ${this.rv}`);
    for (const e of p.entries) this.objects[e.resource].set(keyOf(e.object), e.object);
    this.rv = p.entries.at(-1)?.rv ?? this.rv;
    this.record([...p.entries]);
    return p.entries.map((e) => e.object);
  }

  /** Deletes an object by "ns/name" (or "name" for Nodes); false if it did not exist. */
  remove(resource: ResourceName, key: string): boolean {
    return this.removeMany([[resource, key]]) === 1;
  }

  removeMany(list: ReadonlyArray<readonly [ResourceName, string]>): number {
    const entries: HistoryEntry[] = [];
    for (const [resource, key] of list) {
      const k = DEFS[resource].namespaced && !key.includes('/') ? `default/${key}` : key;
      const prev = this.objects[resource].get(k);
      if (prev === undefined) continue;
      this.objects[resource].delete(k);
      const o = clone(prev);
      o.metadata.resourceVersion = String(++this.rv);
      entries.push({ rv: this.rv, resource, type: 'DELETED', object: o, prev });
    }
    this.record(entries);
    return entries.length;
  }

  /** The stored object itself: not to be changed (history keeps its JSON; upsert a copy instead). */
  get(resource: ResourceName, key: string): KubeObject | undefined {
    return this.objects[resource].get(key);
  }

  keys(resource: ResourceName): string[] {
    return [...this.objects[resource].keys()];
  }

  count(resource: ResourceName): number {
    return this.objects[resource].size;
  }

  private record(entries: HistoryEntry[]): void {
    if (entries.length === 0) return;
    this.history.push(...entries);
    for (const w of this.watchers) {
      const lines: string[] = [];
      for (const e of entries) {
        if (e.resource !== w.resource) continue;
        const line = eventFor(e, w.filter);
        if (line !== null) lines.push(line);
      }
      if (lines.length > 0) w.res.write(lines.join(''));
    }
  }

  // ----------------------------------------------------------------- control

  /** Forgets all history: a watch from any resourceVersion older than now is answered 410. */
  expireHistory(): void {
    this.compactedRv = this.rv;
    this.history = [];
    this.continues.clear();
  }

  /** Destroys every watch connection abruptly (no terminating chunk). */
  dropWatches(): void {
    for (const w of [...this.watchers]) {
      this.forget(w);
      w.res.socket?.destroy();
    }
  }

  /** Ends every watch stream cleanly (as a server-side timeout does). */
  endWatches(): void {
    for (const w of [...this.watchers]) {
      this.forget(w);
      w.res.end();
    }
  }

  /** Sends an ERROR event with a 410 Status to every watcher, then ends its stream. */
  goneWatches(): void {
    for (const w of [...this.watchers]) {
      this.forget(w);
      w.res.end(line('ERROR', statusBody(410, 'Expired', `too old resource version (${this.compactedRv})`)));
    }
  }

  /** A BOOKMARK with the current resourceVersion to every watcher that allows bookmarks. */
  sendBookmarks(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      const def = DEFS[w.resource];
      w.res.write(line('BOOKMARK', { kind: def.kind, apiVersion: def.apiVersion, metadata: { resourceVersion: String(this.rv) } }));
    }
  }

  /** The next `count` requests (whose path+query match `match`, if given) answer `status`. */
  failNext(count: number, status = 500, match?: RegExp): void {
    this.injected.push({ status, count, match });
  }

  /** Requests that were watches / lists of a resource. */
  watchRequests(resource?: ResourceName): RequestRecord[] {
    return this.requests.filter((r) => isWatch(r.query) && (resource === undefined || r.path.endsWith(`/${resource}`)));
  }

  listRequests(resource?: ResourceName): RequestRecord[] {
    return this.requests.filter((r) => !isWatch(r.query) && (resource === undefined || r.path.endsWith(`/${resource}`)));
  }

  private forget(w: Watcher): void {
    this.watchers.delete(w);
    if (w.timer !== undefined) clearTimeout(w.timer);
  }

  // ---------------------------------------------------------------- serving

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams);
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query });
    const send = (status: number, body: object): void => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (this.token !== null && req.headers.authorization !== `Bearer ${this.token}`) {
      send(401, statusBody(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    const inj = this.injected.find((i) => i.count > 0 && (i.match === undefined || i.match.test(req.url ?? '')));
    if (inj !== undefined) {
      inj.count--;
      send(inj.status, statusBody(inj.status, inj.status === 429 ? 'TooManyRequests' : 'InternalError', `injected failure ${inj.status}`));
      return;
    }
    const item = parseItemRoute(url.pathname);
    if (item !== null || req.method === 'POST') {
      this.objectRequest(req, item, url.pathname, send);
      return;
    }
    if (req.method !== 'GET') {
      send(405, statusBody(405, 'MethodNotAllowed', `${req.method ?? ''} is not served on collections`));
      return;
    }
    const route = parseRoute(url.pathname);
    if (route === null) {
      send(404, statusBody(404, 'NotFound', `the server could not find the requested resource (${url.pathname})`));
      return;
    }
    let filter: Filter;
    try {
      filter = makeFilter(route.namespace, query.fieldSelector, query.labelSelector);
    } catch (err) {
      send(400, statusBody(400, 'BadRequest', (err as Error).message));
      return;
    }
    if (isWatch(query)) this.watch(route.resource, filter, query, res);
    else this.list(route.resource, filter, query, send);
  }

  /** GET / PUT / PUT status of one object, POST to a collection. */
  private objectRequest(req: http.IncomingMessage, item: ItemRoute | null, path: string, send: (s: number, b: object) => void): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: KubeObject | undefined;
      if (chunks.length > 0) {
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as KubeObject;
        } catch {
          send(400, statusBody(400, 'BadRequest', 'the body is not JSON'));
          return;
        }
      }
      if (req.method === 'POST') {
        const route = parseRoute(path);
        if (route === null || route.namespace === undefined || body === undefined) {
          send(404, statusBody(404, 'NotFound', `cannot create at ${path}`));
          return;
        }
        const key = `${route.namespace}/${body.metadata?.name ?? ''}`;
        if (this.objects[route.resource].has(key)) {
          send(409, statusBody(409, 'AlreadyExists', `${route.resource} "${body.metadata.name}" already exists`));
          return;
        }
        send(201, this.upsert(route.resource, { ...body, metadata: { ...body.metadata, namespace: route.namespace } }));
        return;
      }
      const r = item!;
      const stored = this.objects[r.resource].get(r.key);
      if (stored === undefined) {
        send(404, statusBody(404, 'NotFound', `${r.resource} "${r.key}" not found`));
        return;
      }
      if (req.method === 'GET') {
        send(200, stored);
        return;
      }
      if (req.method !== 'PUT' || body === undefined || (r.status && r.resource !== 'services')) {
        send(405, statusBody(405, 'MethodNotAllowed', `${req.method ?? ''} ${path} is not served`));
        return;
      }
      const rv = body.metadata?.resourceVersion;
      if (rv !== undefined && rv !== stored.metadata.resourceVersion) {
        send(
          409,
          statusBody(
            409,
            'Conflict',
            `Operation cannot be fulfilled on ${r.resource} "${stored.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`,
          ),
        );
        return;
      }
      const next = r.status
        ? { ...stored, status: (body as KubeObject & { status?: unknown }).status }
        : { ...body, metadata: { ...body.metadata, name: stored.metadata.name, namespace: stored.metadata.namespace } };
      send(200, this.upsert(r.resource, next));
    });
  }

  private list(resource: ResourceName, filter: Filter, query: Record<string, string>, send: (s: number, b: object) => void): void {
    const def = DEFS[resource];
    const limit = query.limit === undefined ? 0 : Number(query.limit);
    let snap: { items: KubeObject[]; offset: number; rv: number; resource: ResourceName };
    if (query.continue !== undefined && query.continue !== '') {
      const c = this.continues.get(query.continue);
      if (c === undefined || c.resource !== resource) {
        send(410, statusBody(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result.'));
        return;
      }
      this.continues.delete(query.continue);
      snap = c;
    } else {
      const items = [...this.objects[resource].values()].filter(filter).sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1));
      snap = { items, offset: 0, rv: this.rv, resource };
    }
    const end = limit > 0 ? Math.min(snap.items.length, snap.offset + limit) : snap.items.length;
    const page = snap.items.slice(snap.offset, end).map((o) => {
      const c = clone(o) as Partial<KubeObject>;
      delete c.kind; // list items carry no kind/apiVersion, as the API server sends them
      delete c.apiVersion;
      return c;
    });
    const metadata: Record<string, unknown> = { resourceVersion: String(snap.rv) };
    if (end < snap.items.length) {
      const token = randomUUID();
      this.continues.set(token, { ...snap, offset: end });
      metadata.continue = token;
      metadata.remainingItemCount = snap.items.length - end;
    }
    send(200, { kind: def.listKind, apiVersion: def.apiVersion, metadata, items: page });
  }

  private watch(resource: ResourceName, filter: Filter, query: Record<string, string>, res: http.ServerResponse): void {
    const rvText = query.resourceVersion ?? '';
    const from = rvText === '' || rvText === '0' ? null : Number(rvText);
    if (from !== null && (!Number.isInteger(from) || from < this.compactedRv)) {
      const body = statusBody(410, 'Expired', `too old resource version: ${rvText} (${this.compactedRv})`);
      if (this.goneMode === 'http') {
        res.writeHead(410, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(body));
      } else {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(line('ERROR', body));
      }
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    const lines: string[] = [];
    if (from === null) {
      const items = [...this.objects[resource].values()]
        .filter(filter)
        .sort((a, b) => Number(a.metadata.resourceVersion) - Number(b.metadata.resourceVersion));
      for (const o of items) lines.push(line('ADDED', o));
    } else {
      for (const e of this.history) {
        if (e.rv <= from || e.resource !== resource) continue;
        const l = eventFor(e, filter);
        if (l !== null) lines.push(l);
      }
    }
    if (lines.length > 0) res.write(lines.join(''));
    else res.flushHeaders();
    const w: Watcher = { resource, filter, bookmarks: query.allowWatchBookmarks === 'true', res, timer: undefined };
    const timeout = Number(query.timeoutSeconds ?? 0);
    if (timeout > 0) {
      w.timer = setTimeout(() => {
        this.forget(w);
        res.end();
      }, timeout * 1000);
    }
    this.watchers.add(w);
    res.on('close', () => this.forget(w));
  }
}

function isWatch(q: Record<string, string>): boolean {
  return q.watch === 'true' || q.watch === '1';
}

function line(type: string, object: object): string {
  return `${JSON.stringify({ type, object })}\n`;
}

/** line(type, e.object), the object encoded once for every watcher and event type. */
function entryLine(type: string, e: HistoryEntry): string {
  e.json ??= JSON.stringify(e.object);
  return `{"type":"${type}","object":${e.json}}\n`;
}

/** The event a watcher with this filter sees for a change, as a line, or null. */
function eventFor(e: HistoryEntry, filter: Filter): string | null {
  const now = filter(e.object);
  const was = e.prev !== undefined && filter(e.prev);
  switch (e.type) {
    case 'ADDED':
      return now ? entryLine('ADDED', e) : null;
    case 'MODIFIED':
      if (was && now) return entryLine('MODIFIED', e);
      if (!was && now) return entryLine('ADDED', e);
      if (was && !now) return entryLine('DELETED', e);
      return null;
    case 'DELETED':
      return was || now ? entryLine('DELETED', e) : null;
  }
}

function parseRoute(path: string): { resource: ResourceName; namespace: string | undefined } | null {
  for (const [name, def] of Object.entries(DEFS) as Array<[ResourceName, ResourceDef]>) {
    if (path === `${def.prefix}/${name}`) return { resource: name, namespace: undefined };
    if (def.namespaced) {
      const m = new RegExp(`^${def.prefix}/namespaces/([a-z0-9-]+)/${name}$`).exec(path);
      if (m !== null) return { resource: name, namespace: m[1] };
    }
  }
  return null;
}

interface ItemRoute {
  resource: ResourceName;
  /** "ns/name", or "name" for cluster-scoped objects. */
  key: string;
  /** The status subresource. */
  status: boolean;
}

function parseItemRoute(path: string): ItemRoute | null {
  for (const [name, def] of Object.entries(DEFS) as Array<[ResourceName, ResourceDef]>) {
    const m = def.namespaced
      ? new RegExp(`^${def.prefix}/namespaces/([a-z0-9-]+)/${name}/([a-z0-9.-]+)(/status)?$`).exec(path)
      : new RegExp(`^${def.prefix}/${name}/([a-z0-9.-]+)(/status)?$`).exec(path);
    if (m === null) continue;
    return def.namespaced
      ? { resource: name, key: `${m[1]}/${m[2]}`, status: m[3] !== undefined }
      : { resource: name, key: m[1]!, status: m[2] !== undefined };
  }
  return null;
}

function makeFilter(namespace: string | undefined, fieldSel: string | undefined, labelSel: string | undefined): Filter {
  const tests: Filter[] = [];
  if (namespace !== undefined) tests.push((o) => o.metadata.namespace === namespace);
  for (const term of (fieldSel ?? '').split(',').filter((t) => t !== '')) {
    const m = /^([a-zA-Z.]+)(==|=|!=)(.*)$/.exec(term);
    if (m === null) throw new Error(`invalid field selector term ${term}`);
    const [, field, op, value] = m as unknown as [string, string, string, string];
    const get = (o: KubeObject): string | undefined => {
      if (field === 'metadata.name') return o.metadata.name;
      if (field === 'metadata.namespace') return o.metadata.namespace ?? '';
      throw new Error(`field label not supported: ${field}`);
    };
    get({ metadata: { name: '' } });
    tests.push(op === '!=' ? (o) => get(o) !== value : (o) => get(o) === value);
  }
  for (const term of (labelSel ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')) {
    const m = /^(!?)([a-zA-Z0-9./_-]+)(?:(==|=|!=)([a-zA-Z0-9._-]*))?$/.exec(term);
    if (m === null) throw new Error(`unsupported label selector term ${term}`);
    const [, not, key, op, value] = m as unknown as [string, string, string, string | undefined, string | undefined];
    const labels = (o: KubeObject): Record<string, string> => o.metadata.labels ?? {};
    if (op === undefined) tests.push(not === '!' ? (o) => !(key in labels(o)) : (o) => key in labels(o));
    else if (op === '!=') tests.push((o) => labels(o)[key] !== value);
    else tests.push((o) => labels(o)[key] === value);
  }
  return (o) => tests.every((t) => t(o));
}
