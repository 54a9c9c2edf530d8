/**
 * List+watch of Services, EndpointSlices and Nodes: the reflector/informer
 * loop of client-go, over ApiClient (./client.ts).
 *
 * Why our own loop rather than the library's ListWatch/makeInformer
 * (1.4.0, the last release that runs on Node 20; 2.x needs undici 8 and
 * Node 22): its informer stops for good on any error other than 410 (no
 * retry, no backoff), cannot ask for bookmarks or a server-side watch
 * timeout, and lists without pagination. The loop here, per resource:
 *   - lists in pages (limit/continue) and delivers the difference against
 *     its cache (ADDED / MODIFIED / DELETED, objects whose resourceVersion
 *     did not change are not redelivered), then reports "synced";
 *   - watches from the list's resourceVersion with allowWatchBookmarks and
 *     a randomised timeoutSeconds (5–10 min, as client-go), keeping the
 *     resourceVersion of every event and bookmark, and re-watches from it
 *     when the server ends the stream or the connection drops;
 *   - on 410 Gone (an ERROR event with a Status of code 410, or HTTP 410)
 *     re-lists at once;
 *   - on any other API or network error, retries after an exponential
 *     backoff with jitter (./backoff.ts: delay in [base/2, base], base
 *     doubling from backoff.initialMs to backoff.maxMs), reset once a watch
 *     delivers;
 *   - aborts a stream that stays silent longer than idleTimeoutMs.
 * K8sWatch runs the three informers and adds a periodic resync (the
 * handler recomputes everything from the caches).
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { backoffDelay, DEFAULT_BACKOFF, type Backoff } from './backoff.js';
import { ApiClient, ApiError } from './client.js';
import { silentLogger, type K8sLogger } from './log.js';
import type { EndpointSlice, KubeObject, Node, Service } from './types.js';
import { objectKey } from './types.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface WatchLine {
  type: EventType | 'BOOKMARK' | 'ERROR';
  object: KubeObject & { code?: number; reason?: string; message?: string };
}

interface ListBody<T> {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: T[] | null;
}

export interface InformerHandler<T> {
  /** `old` is the cached object a MODIFIED or DELETED replaces. */
  onEvent(type: EventType, obj: T, old: T | undefined): void;
  /** After every (re)list has been delivered. */
  onSynced?(): void;
}

export interface InformerOptions {
  /** Collection path, e.g. /api/v1/services. */
  path: string;
  /** For logs. */
  kind: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** List page size (limit); default 500. */
  pageSize?: number;
  backoff?: Backoff;
  /** Server-side watch timeout: a random value in [t, 2t) seconds; default 300. */
  watchTimeoutSeconds?: number;
  /** Abort a watch silent this long; default 2 × watchTimeoutSeconds + 30 s. */
  idleTimeoutMs?: number;
  log?: K8sLogger;
  random?: () => number;
}

export interface InformerStats {
  lists: number;
  watches: number;
  events: number;
  bookmarks: number;
  /** 410 Gone answers (each followed by a re-list). */
  gone: number;
  errors: number;
}

/** One resource's reflector and cache. */
export class Informer<T extends KubeObject> {
  readonly cache = new Map<string, T>();
  readonly stats: InformerStats = { lists: 0, watches: 0, events: 0, bookmarks: 0, gone: 0, errors: 0 };
  private rv = '';
  private hasSynced = false;
  private stopped = true;
  private loop: Promise<void> | undefined;
  private abortCurrent: (() => void) | undefined;
  private wake: (() => void) | undefined;
  private syncWaiters: Array<() => void> = [];
  private readonly log: K8sLogger;
  private readonly random: () => number;

  constructor(
    private readonly client: ApiClient,
    private readonly o: InformerOptions,
    private readonly handler: InformerHandler<T>,
  ) {
    this.log = o.log ?? silentLogger;
    this.random = o.random ?? Math.random;
  }

  get resourceVersion(): string {
    return this.rv;
  }

  get synced(): boolean {
    return this.hasSynced;
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abortCurrent?.();
    this.wake?.();
    await this.loop;
    this.loop = undefined;
  }

  /** Resolves once the first list has been delivered. */
  waitSynced(): Promise<void> {
    if (this.hasSynced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  private async run(): Promise<void> {
    let needList = true;
    let failures = 0;
    while (!this.stopped) {
      let phase: 'list' | 'watch' = 'list';
      try {
        if (needList) {
          await this.relist();
          needList = false;
        }
        phase = 'watch';
        const started = Date.now();
        const r = await this.watchOnce();
        if (this.stopped) break;
        if (r.gone) {
          this.stats.gone++;
          this.log.info({ kind: this.o.kind, resourceVersion: this.rv }, 'kubernetes: watch answered 410 Gone; re-listing');
          needList = true;
          continue;
        }
        // A stream that ends at once without delivering anything counts as a failure (no hot loop).
        if (r.delivered > 0 || Date.now() - started >= 5000) failures = 0;
        else await this.sleep(backoffDelay(this.o.backoff ?? DEFAULT_BACKOFF, ++failures, this.random));
      } catch (err) {
        if (this.stopped) break;
        if (err instanceof ApiError && err.status === 410) {
          this.stats.gone++;
          needList = true;
          this.log.info({ kind: this.o.kind, phase }, 'kubernetes: 410 Gone; re-listing');
          // A watch too old re-lists at once; a list answering 410 (an expired continue token) after a backoff.
          if (phase === 'watch') continue;
        } else {
          this.stats.errors++;
        }
        failures++;
        const delay = backoffDelay(this.o.backoff ?? DEFAULT_BACKOFF, failures, this.random);
        this.log.warn(
          { kind: this.o.kind, phase, err: (err as Error).message, retryInMs: delay, attempt: failures },
          'kubernetes: list/watch failed; retrying',
        );
        await this.sleep(delay);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private selectors(): Record<string, string | undefined> {
    return { fieldSelector: this.o.fieldSelector, labelSelector: this.o.labelSelector };
  }

  /** Lists every page, then delivers the difference against the cache. */
  private async relist(): Promise<void> {
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      if (this.stopped) return;
      const body = await this.client
        .get<ListBody<T>>(
          this.o.path,
          {
            ...this.selectors(),
            limit: String(this.o.pageSize ?? 500),
            continue: cont,
          },
          60_000,
          (abort) => {
            this.abortCurrent = abort;
            if (this.stopped) abort();
          },
        )
        .finally(() => {
          this.abortCurrent = undefined;
        });
      if (this.stopped) return;
      items.push(...(body.items ?? []));
      rv = body.metadata?.resourceVersion ?? '';
      cont = body.metadata?.continue !== undefined && body.metadata.continue !== '' ? body.metadata.continue : undefined;
    } while (cont !== undefined);
    this.stats.lists++;
    this.replace(items, rv);
  }

  private replace(items: T[], rv: string): void {
    const fresh = new Map<string, T>();
    for (const o of items) fresh.set(objectKey(o), o);
    for (const [k, old] of this.cache) {
      if (fresh.has(k)) continue;
      this.cache.delete(k);
      this.deliver('DELETED', old, old);
    }
    for (const [k, o] of fresh) {
      const old = this.cache.get(k);
      this.cache.set(k, o);
      if (old === undefined) this.deliver('ADDED', o, undefined);
      else if (old.metadata.resourceVersion !== o.metadata.resourceVersion) this.deliver('MODIFIED', o, old);
    }
    this.rv = rv;
    this.log.debug({ kind: this.o.kind, items: items.length, resourceVersion: rv }, 'kubernetes: listed');
    const first = !this.hasSynced;
    this.hasSynced = true;
    this.handler.onSynced?.();
    if (first) for (const w of this.syncWaiters.splice(0)) w();
  }

  private deliver(type: EventType, obj: T, old: T | undefined): void {
    this.stats.events++;
    try {
      this.handler.onEvent(type, obj, old);
    } catch (err) {
      this.log.error({ kind: this.o.kind, err: (err as Error).message }, 'kubernetes: event handler failed');
    }
  }

  private async watchOnce(): Promise<{ gone: boolean; delivered: number }> {
    const t = this.o.watchTimeoutSeconds ?? 300;
    const timeoutSeconds = Math.floor(t + this.random() * t);
    const idleMs = this.o.idleTimeoutMs ?? (2 * t + 30) * 1000;
    let gone = false;
    let delivered = 0;
    let failure: Error | undefined;
    const onLine = (line: string): void => {
      let ev: WatchLine;
      try {
        ev = JSON.parse(line) as WatchLine;
      } catch {
        failure = new Error(`kubernetes: watch ${this.o.kind}: unparseable event`);
        s.abort();
        return;
      }
      delivered++;
      this.apply(
        ev,
        () => {
          gone = true;
          s.abort();
        },
        (err) => {
          failure = err;
          s.abort();
        },
      );
    };
    const s = await this.client.stream(
      this.o.path,
      {
        ...this.selectors(),
        watch: 'true',
        resourceVersion: this.rv,
        allowWatchBookmarks: 'true',
        timeoutSeconds: String(timeoutSeconds),
      },
      onLine,
      idleMs,
    );
    this.stats.watches++;
    this.abortCurrent = s.abort;
    if (this.stopped) s.abort(); // stop() came while the request was being set up
    try {
      await s.done;
    } finally {
      this.abortCurrent = undefined;
    }
    if (failure !== undefined) throw failure;
    return { gone, delivered };
  }

  private apply(ev: WatchLine, onGone: () => void, onError: (err: Error) => void): void {
    const obj = ev.object;
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED': {
        const k = objectKey(obj);
        const old = this.cache.get(k);
        this.cache.set(k, obj as T);
        this.rv = obj.metadata.resourceVersion ?? this.rv;
        if (old !== undefined && old.metadata.resourceVersion === obj.metadata.resourceVersion) return;
        this.deliver(old === undefined ? 'ADDED' : 'MODIFIED', obj as T, old);
        return;
      }
      case 'DELETED': {
        const k = objectKey(obj);
        const old = this.cache.get(k);
        this.cache.delete(k);
        this.rv = obj.metadata.resourceVersion ?? this.rv;
        if (old !== undefined) this.deliver('DELETED', obj as T, old);
        return;
      }
      case 'BOOKMARK':
        this.stats.bookmarks++;
        this.rv = obj.metadata?.resourceVersion ?? this.rv;
        return;
      case 'ERROR':
        if (obj.code === 410 || obj.reason === 'Expired' || obj.reason === 'Gone') onGone();
        else
          onError(
            new ApiError(obj.code ?? 500, `kubernetes: watch ${this.o.kind}: ${obj.reason ?? 'error'}: ${obj.message ?? ''}`, obj.reason),
          );
        return;
      default:
        onError(new Error(`kubernetes: watch ${this.o.kind}: unknown event type ${JSON.stringify((ev as { type: unknown }).type)}`));
    }
  }
}

/** What K8sWatch tells its user. */
export interface K8sEventHandler {
  service(type: EventType, obj: Service, old: Service | undefined): void;
  endpointSlice(type: EventType, obj: EndpointSlice, old: EndpointSlice | undefined): void;
  node(type: EventType, obj: Node, old: Node | undefined): void;
  /** Every informer has delivered a (re)list; called after each one. */
  synced?(kind: 'Service' | 'EndpointSlice' | 'Node'): void;
  /** Periodic: recompute everything from the caches. */
  resync?(): void;
}

export interface K8sWatchOptions {
  kubeConfig: KubeConfig;
  /** This node (every Node is watched). */
  nodeName: string;
  handler: K8sEventHandler;
  log?: K8sLogger;
  backoff?: Backoff;
  /** 0 = no periodic resync. Default 10 minutes. */
  resyncMs?: number;
  pageSize?: number;
  watchTimeoutSeconds?: number;
  idleTimeoutMs?: number;
  random?: () => number;
}

export const SERVICES_PATH = '/api/v1/services';
export const ENDPOINTSLICES_PATH = '/apis/discovery.k8s.io/v1/endpointslices';
export const NODES_PATH = '/api/v1/nodes';

/** The three informers Ferry's Kubernetes mode needs. */
export class K8sWatch {
  readonly services: Informer<Service>;
  readonly endpointSlices: Informer<EndpointSlice>;
  readonly nodes: Informer<Node>;
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: K8sWatchOptions) {
    const client = new ApiClient(o.kubeConfig);
    const common = {
      ...(o.backoff ? { backoff: o.backoff } : {}),
      ...(o.pageSize ? { pageSize: o.pageSize } : {}),
      ...(o.watchTimeoutSeconds ? { watchTimeoutSeconds: o.watchTimeoutSeconds } : {}),
      ...(o.idleTimeoutMs ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
      ...(o.log ? { log: o.log } : {}),
      ...(o.random ? { random: o.random } : {}),
    };
    const h = o.handler;
    this.services = new Informer<Service>(
      client,
      { ...common, path: SERVICES_PATH, kind: 'Service' },
      {
        onEvent: (t, obj, old) => h.service(t, obj, old),
        onSynced: () => h.synced?.('Service'),
      },
    );
    this.endpointSlices = new Informer<EndpointSlice>(
      client,
      { ...common, path: ENDPOINTSLICES_PATH, kind: 'EndpointSlice' },
      {
        onEvent: (t, obj, old) => h.endpointSlice(t, obj, old),
        onSynced: () => h.synced?.('EndpointSlice'),
      },
    );
    // Every node: endpoints live on them, and their NodePorts reach this node's endpoints.
    this.nodes = new Informer<Node>(
      client,
      { ...common, path: NODES_PATH, kind: 'Node' },
      {
        onEvent: (t, obj, old) => h.node(t, obj, old),
        onSynced: () => h.synced?.('Node'),
      },
    );
  }

  get synced(): boolean {
    return this.services.synced && this.endpointSlices.synced && this.nodes.synced;
  }

  start(): void {
    this.services.start();
    this.endpointSlices.start();
    this.nodes.start();
    const every = this.o.resyncMs ?? 600_000;
    if (every > 0 && this.resyncTimer === undefined) {
      this.resyncTimer = setInterval(() => {
        if (this.synced) this.o.handler.resync?.();
      }, every);
      this.resyncTimer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.resyncTimer !== undefined) clearInterval(this.resyncTimer);
    this.resyncTimer = undefined;
    await Promise.all([this.services.stop(), this.endpointSlices.stop(), this.nodes.stop()]);
  }

  async waitSynced(): Promise<void> {
    await Promise.all([this.services.waitSynced(), this.endpointSlices.waitSynced(), this.nodes.waitSynced()]);
  }

  stats(): Record<'services' | 'endpointSlices' | 'nodes', InformerStats & { resourceVersion: string; objects: number }> {
    const one = (i: Informer<KubeObject>): InformerStats & { resourceVersion: string; objects: number } => ({
      ...i.stats,
      resourceVersion: i.resourceVersion,
      objects: i.cache.size,
    });
    return { services: one(this.services), endpointSlices: one(this.endpointSlices), nodes: one(this.nodes) };
  }
}
