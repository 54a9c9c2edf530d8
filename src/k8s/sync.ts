/**
 * Kubernetes events → store transactions.
 *
 * The informers' events update caches here and mark the affected Services
 * dirty (an EndpointSlice marks its Service, through the
 * kubernetes.io/service-name label; a change of this node's addresses
 * marks every Service). Dirty Services are flushed as one batch when the
 * streams have been quiet for `quietMs` (10 ms; but no sooner than a quarter
 * window after the previous batch began, so changes that trickle in
 * coalesce), the oldest pending event is `maxDelayMs` old (200 ms) or
 * `maxEvents` (10,000) have accumulated, whichever comes first, so a burst
 * of thousands of changes becomes a few batches of bounded transactions and
 * a lone change after a quiet spell waits only for the quiet. A Service never
 * written yet that has no EndpointSlice waits for one: the two arrive on
 * different watch streams, and in a burst the Services' (small objects)
 * arrives whole while the EndpointSlices' is still being read. It waits
 * until `maxDelayMs` have passed since it arrived and since the last
 * EndpointSlice event (the slices' stream is quiet), at most 10 windows;
 * it is then written once, with its endpoints, instead of empty and again
 * (which also kept the event loop from reading the slices). A batch:
 *   1. translates each dirty Service (translate.ts, pure);
 *   2. skips those whose owner-scoped desired state equals what was last
 *      committed (an endpoint change of a ClusterIP-only Service touches
 *      only the socket-LB list, not the store);
 *   3. commits the rest through Controller.write('kubernetes', 'k8s.sync'):
 *      one replaceState per Service, scoped to its owner
 *      "kubernetes:<ns>/<name>" (a savepoint each), then the datapath is
 *      applied once and the store commits (or both roll back). A batch is
 *      written in steps of up to 500 Services, one transaction each, each
 *      on its own turn of the event loop so the API, health checks and
 *      watch streams are served in between (servicesPerTransaction,
 *      maxTransactionsPerBatch; see the option). Events meanwhile are
 *      batched next;
 *   4. tells the socket-LB and health-check sinks the new lists.
 *
 * Failures never crash the sync:
 *   - one Service refused by the store (its address:port already used by
 *     a VIP of the API or of another Service, a name taken, capacity): its
 *     VIPs are retried one by one on top of those it already holds, the
 *     refused ones are reported in skipped() with the store's reason, and
 *     the Service is retried later (backoff with jitter), e.g. after the
 *     other owner let go of the address;
 *   - the whole transaction refused (the datapath refused the apply, SQLite
 *     failed): logged, every Service of it requeued, retried after a
 *     backoff with jitter, and split into 2, 4, … 64 transactions on
 *     successive failures so that one poisonous Service cannot hold the
 *     others back.
 *
 * Nothing is written before all three informers have listed once (a
 * Service seen before its EndpointSlices would lose its backends). The
 * first batch after that also removes what the store holds for Services
 * that no longer exist (owners "kubernetes:*" left from before a restart);
 * a periodic resync does the same and rewrites every Service (no-op writes
 * cost no revision), repairing the store after a restore from backup.
 */
import type { Controller } from '../control/controller.js';
import { DatapathError, FerryError } from '../model/errors.js';
import type { DesiredState, PolicySpec, VipWithBackends } from '../model/types.js';
import type { StoreTx } from '../store/types.js';
import {
  ownerOf,
  serviceKeyOfOwner,
  sliceServiceKey,
  translateService,
  type ClusterIpEntry,
  type HealthCheckNodePort,
  type NatEntry,
  type ServiceTranslation,
  type TranslateConfig,
} from './translate.js';
import { objectKey, type EndpointSlice, type Node, type Service } from './types.js';
import type { SkippedEntry } from '../model/kubernetes.js';
import type { NodeEndpoint } from '../datapath/node.js';
import { backoffDelay, DEFAULT_BACKOFF, type Backoff } from './backoff.js';
import type { EventType, K8sEventHandler } from './informer.js';
import { silentLogger, type K8sLogger } from './log.js';

/** Where `key` is in `sorted` (which holds it). */
function sortedIndex(sorted: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** What a Service gives the socket-LB: its ClusterIPs, then its outside addresses for local sockets. */
function socketLbEntries(t: ServiceTranslation): ClusterIpEntry[] {
  return t.localAddresses.length === 0 ? t.clusterIps : [...t.clusterIps, ...t.localAddresses];
}

/** The socket-LB list of translations in order: pushed into one array (a step rebuilds it; no array per Service). */
function socketLbList(results: readonly ServiceTranslation[]): ClusterIpEntry[] {
  const out: ClusterIpEntry[] = [];
  for (const t of results) {
    for (const e of t.clusterIps) out.push(e);
    for (const e of t.localAddresses) out.push(e);
  }
  return out;
}

/** How the socket-LB list differs from the one handed over before: the entries that left it and the new ones. */
export interface ClusterIpChanges {
  removed: ClusterIpEntry[];
  added: ClusterIpEntry[];
}

export interface BatchReport {
  /** Services translated in this batch. */
  services: number;
  /** Services whose store state was rewritten. */
  written: number;
  /** Transactions that committed a change. */
  transactions: number;
  /** The store revision after the batch. */
  revision: number;
  /** Wall time of the batch (translation + store + datapath). */
  ms: number;
  /** Services refused in whole or part by the store (retried later). */
  refused: number;
  /** Transactions that failed as a whole (requeued). */
  failedTransactions: number;
  /** The longest step (translation and one transaction): the longest the batch held the event loop at once. */
  longestStepMs: number;
}

export interface K8sSyncOptions {
  controller: Controller;
  translate: TranslateConfig;
  /** Drain time of removed backends (their flows continue this long). */
  drainSeconds: number;
  /** Coalescing window, from the first pending event; default 200 ms. */
  maxDelayMs?: number;
  /** A batch starts sooner once no event came for this long; default 10 ms. */
  quietMs?: number;
  /** Flush at once when this many events are pending; default 10,000. */
  maxEvents?: number;
  /**
   * A batch is split into steps of this many Services (default 500), each
   * translated and written in one transaction on its own turn of the event
   * loop, but into no more than maxTransactionsPerBatch steps (default 100;
   * beyond 50,000 Services the steps grow). A step holds the event loop for
   * its translation, its replaceStates (O(its Services): savepoints cost
   * what they change) and the planning and datapath apply of the whole
   * state (O(state): ~0.3 s at 10,000 VIPs × 10 backends). 500 keeps a step
   * of new Services under about 1 s at 10,000 VIPs on a busy 2-core machine
   * (the default health-check timeout is 1 s); larger steps hold the loop
   * proportionally longer and do not finish a 10,000-Service burst sooner
   * (bench/k8s.ts --services-per-tx).
   */
  servicesPerTransaction?: number;
  maxTransactionsPerBatch?: number;
  /** Retry delays for refused Services and failed transactions. */
  retry?: Backoff;
  log?: K8sLogger;
  /** The audit actor; default "kubernetes". */
  actor?: string;
  /**
   * After a step that changed any ClusterIP entry: the whole socket-LB list, and how it differs from the list
   * handed over before (null: not known, e.g. after a failed batch).
   */
  onClusterIps?(all: ClusterIpEntry[], changes: ClusterIpChanges | null): void;
  /** After a batch that changed any health-check node port. */
  onHealthCheckNodePorts?(all: HealthCheckNodePort[]): void;
  /** The whole kernel-NAT list (translate.ts NatEntry) after a batch that changed it. */
  onNat?(all: NatEntry[]): void;
  /** The node programs' pairs no VIP of this node names (translate.ts nodeEndpoints), after a batch that changed them. */
  onNodeEndpoints?(all: NodeEndpoint[]): void;
  onBatch?(report: BatchReport): void;
  random?: () => number;
}

export interface SyncStats {
  events: number;
  batches: number;
  /** Transactions that committed a change (store revisions consumed). */
  transactions: number;
  failedTransactions: number;
  servicesWritten: number;
  lastBatch: BatchReport | null;
}

interface WriteItem {
  key: string;
  owner: string;
  desired: DesiredState & { policies: PolicySpec[] };
  json: string;
}

/** A batch being written, one transaction per turn of the event loop. */
interface RunningBatch {
  /** The dirty Services, sorted. */
  keys: string[];
  /** Index of the first one not yet translated. */
  next: number;
  /** Services per step (translation and one transaction). */
  size: number;
  /** The Services the store holds an owner for, when this batch sweeps (null otherwise). */
  storeOwners: Set<string> | null;
  failed: boolean;
  report: BatchReport;
  started: number;
  /** How the socket-LB list changed since it was last handed over (it is, after every step that changes it). */
  socketLbChanges: ClusterIpChanges;
  hcnpChanged: boolean;
  natChanged: boolean;
  nodeEndpointsChanged: boolean;
}

interface Refusal {
  reasons: string[];
  attempts: number;
  retryAt: number;
}

const EMPTY_JSON = JSON.stringify({ vips: [], policies: [] });

/**
 * Whether two lists print the same JSON. Lists of different lengths never
 * do (JSON keeps an array's length), so a Service's first translation or
 * an empty list is decided without printing anything.
 */
function sameJson(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false;
  return a.length === 0 || JSON.stringify(a) === JSON.stringify(b);
}

const MAX_SPLIT = 64;
/** The longest a new Service waits for its first EndpointSlice, in coalescing windows. */
const AWAIT_SLICES_WINDOWS = 10;
const DEFAULT_PER_TX = 500;
const DEFAULT_MAX_TX = 100;

export class K8sSync implements K8sEventHandler {
  private readonly services = new Map<string, Service>();
  private readonly slicesByService = new Map<string, Map<string, EndpointSlice>>();
  /** Slice key → the Service key it was filed under (its label may change). */
  private readonly sliceService = new Map<string, string>();
  private nodeObj: Node | undefined;
  /** Every node, by name. */
  private readonly nodes = new Map<string, Node>();
  private readonly results = new Map<string, ServiceTranslation>();
  /** The keys of `results`, sorted at the last sortedResults() and appended to since; null: to rebuild. */
  private keyOrder: string[] | null = [];
  /** sortedResults()' answer, in keyOrder's order; null: to rebuild. */
  private sorted: ServiceTranslation[] | null = null;
  /** Service key → JSON of the desired state the store holds for its owner. */
  private readonly committed = new Map<string, string>();
  private readonly refused = new Map<string, Refusal>();
  private dirty = new Set<string>();
  /** New Services without an EndpointSlice yet, and when they arrived (performance.now()). */
  private readonly awaitingSlices = new Map<string, number>();
  /** When the last EndpointSlice event came. */
  private lastSliceEvent = -Infinity;
  private awaitTimer: NodeJS.Timeout | undefined;
  private pendingEvents = 0;
  /** When the first pending event and the latest event came, and when the last batch started (performance.now()). */
  private firstPending = 0;
  private lastEvent = 0;
  private lastBatchStart = -Infinity;
  private readonly syncedKinds = new Set<string>();
  private ready = false;
  private sweepPending = true;
  private timer: NodeJS.Timeout | undefined;
  /** The batch timer's decision, taken after the loop has polled for I/O (armBatch). */
  private quietCheck: NodeJS.Immediate | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The batch being written, and the turn that writes its next transaction. */
  private running: RunningBatch | undefined;
  private nextStep: NodeJS.Immediate | undefined;
  private consecutiveFailures = 0;
  /** The retry after a failed batch: until it fires, new events wait for it instead of starting a batch. */
  private backoffTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private clusterIpList: ClusterIpEntry[] = [];
  private hcnpList: HealthCheckNodePort[] = [];
  private natList: NatEntry[] = [];
  private nodeEndpointList: NodeEndpoint[] = [];
  readonly stats: SyncStats = { events: 0, batches: 0, transactions: 0, failedTransactions: 0, servicesWritten: 0, lastBatch: null };
  private readonly log: K8sLogger;
  private readonly random: () => number;

  constructor(private readonly o: K8sSyncOptions) {
    this.log = o.log ?? silentLogger;
    this.random = o.random ?? Math.random;
  }

  // ------------------------------------------------------------ events

  service(type: EventType, obj: Service): void {
    const key = objectKey(obj);
    if (type === 'DELETED') {
      this.services.delete(key);
      this.awaitingSlices.delete(key);
    } else {
      const fresh = !this.services.has(key) && !this.committed.has(key) && !this.slicesByService.has(key);
      if (fresh && this.ready) this.awaitingSlices.set(key, performance.now());
      this.services.set(key, obj);
    }
    this.mark(key);
  }

  endpointSlice(type: EventType, obj: EndpointSlice): void {
    this.lastSliceEvent = performance.now();
    const sk = objectKey(obj);
    const before = this.sliceService.get(sk);
    const after = type === 'DELETED' ? null : sliceServiceKey(obj);
    if (before !== undefined && before !== after) {
      const m = this.slicesByService.get(before);
      m?.delete(sk);
      if (m !== undefined && m.size === 0) this.slicesByService.delete(before);
      this.sliceService.delete(sk);
      this.mark(before);
    }
    if (after !== null) {
      let m = this.slicesByService.get(after);
      if (m === undefined) {
        m = new Map();
        this.slicesByService.set(after, m);
      }
      m.set(sk, obj);
      this.sliceService.set(sk, after);
      this.awaitingSlices.delete(after);
      this.mark(after);
    }
  }

  /**
   * Any node: this one's addresses are its NodePort VIPs, the others' are
   * where endpoints live and their NodePorts' pairs. Kubelet rewrites its
   * Node often (conditions, heartbeats): only a change of addresses (or a
   * node coming or going) re-translates, and then every Service.
   */
  node(type: EventType, obj: Node): void {
    const name = obj.metadata.name;
    const addresses = (n: Node | undefined): string | null => (n === undefined ? null : JSON.stringify(n.status?.addresses ?? null));
    const before = addresses(this.nodes.get(name));
    const now = type === 'DELETED' ? undefined : obj;
    if (now === undefined) this.nodes.delete(name);
    else this.nodes.set(name, now);
    if (name === this.o.translate.nodeName) this.nodeObj = now;
    if (addresses(now) === before) return;
    for (const key of this.services.keys()) this.dirty.add(key);
    this.mark(null);
  }

  synced(kind: string): void {
    this.syncedKinds.add(kind);
    if (!this.ready && this.syncedKinds.size >= 3) {
      this.ready = true;
      this.log.info({ services: this.services.size }, 'kubernetes: caches synced; writing the store');
      this.flushSoon();
    }
  }

  /** Rewrites every Service and sweeps owners of Services gone (periodic; after a store restore). */
  resync(): void {
    this.committed.clear();
    this.sweepPending = true;
    for (const key of this.services.keys()) this.dirty.add(key);
    this.mark(null);
  }

  // ------------------------------------------------------------- views

  /** Whether the caches are synced and nothing is waiting to be written (refused Services may still retry). */
  get idle(): boolean {
    return (
      this.ready &&
      this.dirty.size === 0 &&
      this.awaitingSlices.size === 0 &&
      this.timer === undefined &&
      this.quietCheck === undefined &&
      this.immediate === undefined &&
      this.running === undefined
    );
  }

  get isReady(): boolean {
    return this.ready;
  }

  /** The socket-LB list (ClusterIP × port), as of the last batch. */
  clusterIps(): ClusterIpEntry[] {
    return this.clusterIpList;
  }

  healthCheckNodePorts(): HealthCheckNodePort[] {
    return this.hcnpList;
  }

  /** The kernel-NAT list as last published. */
  nat(): NatEntry[] {
    return this.natList;
  }

  /** The node programs' extra pairs as last published. */
  nodeEndpoints(): NodeEndpoint[] {
    return this.nodeEndpointList;
  }

  /** What is not served and why: translation limits and store refusals. */
  skipped(): SkippedEntry[] {
    const out: SkippedEntry[] = [];
    for (const t of this.sortedResults()) out.push(...t.skipped);
    for (const [service, r] of this.refused) for (const reason of r.reasons) out.push({ service, reason });
    return out;
  }

  /** The last translation of a Service. */
  translation(key: string): ServiceTranslation | undefined {
    return this.results.get(key);
  }

  stop(): void {
    this.stopped = true;
    this.clearBatchTimer();
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    if (this.nextStep !== undefined) clearImmediate(this.nextStep);
    if (this.backoffTimer !== undefined) clearTimeout(this.backoffTimer);
    if (this.awaitTimer !== undefined) clearTimeout(this.awaitTimer);
    this.immediate = this.retryTimer = this.nextStep = this.backoffTimer = this.awaitTimer = undefined;
    this.running = undefined;
  }

  // ---------------------------------------------------------- batching

  private mark(key: string | null): void {
    this.stats.events++;
    if (key !== null) this.dirty.add(key);
    this.pendingEvents++;
    this.lastEvent = performance.now();
    if (!this.ready || this.stopped || this.backoffTimer !== undefined) return;
    if (this.pendingEvents >= (this.o.maxEvents ?? 10_000)) this.flushSoon();
    else if (this.timer === undefined && this.quietCheck === undefined && this.immediate === undefined) {
      this.firstPending = this.lastEvent;
      this.armBatch(this.lastEvent);
    }
  }

  /**
   * When the pending events' batch is due: once the streams are quiet, but
   * not sooner than a quarter window after the last batch started (changes
   * that trickle in, each after a quiet moment, would otherwise each cost a
   * batch), and at the latest at the end of the window.
   */
  private batchDue(): number {
    const window = this.o.maxDelayMs ?? 200;
    const quiet = Math.max(this.lastEvent + (this.o.quietMs ?? 10), this.lastBatchStart + window / 4);
    return Math.min(quiet, this.firstPending + window);
  }

  /**
   * One timer per batch, re-armed when events kept coming (cheaper than a
   * timer reset per event). It decides on a later turn (setImmediate runs
   * after the loop's poll for I/O): watch data that arrived while the loop
   * was held elsewhere (an API write, a collection) is read as events
   * first, rather than found after a batch of part of it started.
   */
  private armBatch(now: number): void {
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.quietCheck = setImmediate(() => {
          this.quietCheck = undefined;
          const t = performance.now();
          if (this.batchDue() - t >= 1) this.armBatch(t);
          else this.safeFlush();
        });
      },
      Math.max(1, Math.ceil(this.batchDue() - now)),
    );
  }

  private clearBatchTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.quietCheck !== undefined) clearImmediate(this.quietCheck);
    this.timer = this.quietCheck = undefined;
  }

  private flushSoon(): void {
    if (this.stopped || this.immediate !== undefined) return;
    this.clearBatchTimer();
    this.immediate = setImmediate(() => {
      this.immediate = undefined;
      this.safeFlush();
    });
  }

  /** flush() from a timer: an unexpected error is logged and the batch retried, never thrown. */
  private safeFlush(): void {
    // A running batch flushes what became dirty meanwhile when it ends.
    if (this.running !== undefined) return;
    const keys = [...this.dirty];
    try {
      this.flush();
    } catch (err) {
      this.running = undefined;
      this.recover(keys, err);
    }
  }

  /** The next transaction of the running batch, on its own turn of the event loop; never throws. */
  private safeStep(): void {
    const b = this.running;
    if (b === undefined) return;
    const keys = b.keys.slice(b.next);
    try {
      this.step(b);
    } catch (err) {
      this.running = undefined;
      this.recover(keys, err);
    }
  }

  /** After an unexpected error: `keys` are dirty again and the next batch waits for a backoff. */
  private recover(keys: string[], err: unknown): void {
    for (const k of keys) this.dirty.add(k);
    // The lost batch may have translated ClusterIP or health-check node port changes that its end would have
    // published; the sinks take whole lists, so publishing them now loses nothing and repeats nothing.
    try {
      const results = this.sortedResults();
      this.clusterIpList = socketLbList(results);
      this.hcnpList = results.flatMap((t) => t.healthCheckNodePorts);
      this.natList = results.flatMap((t) => t.nat);
      this.nodeEndpointList = results.flatMap((t) => t.nodeEndpoints);
      this.notify(() => this.o.onClusterIps?.(this.clusterIpList, null));
      this.notify(() => this.o.onHealthCheckNodePorts?.(this.hcnpList));
      this.notify(() => this.o.onNat?.(this.natList));
      this.notify(() => this.o.onNodeEndpoints?.(this.nodeEndpointList));
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'kubernetes: publishing the lists after a failed batch failed');
    }
    this.consecutiveFailures++;
    const delay = this.backoff();
    this.log.error({ err: (err as Error).stack ?? String(err), retryInMs: delay }, 'kubernetes: batch failed unexpectedly; retrying');
  }

  /** Schedules the next batch after the backoff of the current failure count; returns the delay. */
  private backoff(): number {
    const delay = backoffDelay(this.o.retry ?? DEFAULT_BACKOFF, this.consecutiveFailures, this.random);
    // Events pending meanwhile wait for the backoff, not for a batch timer armed before the failure.
    this.clearBatchTimer();
    if (this.backoffTimer !== undefined) clearTimeout(this.backoffTimer);
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined;
      this.flushSoon();
    }, delay);
    this.backoffTimer.unref();
    return delay;
  }

  /**
   * Starts writing every dirty Service (normally called by the timers). The
   * first transaction is written now; a batch of several writes each of
   * the others on a later turn of the event loop, so the API, health
   * checks and watch streams are served between them. Events meanwhile
   * are batched next. No-op while a batch is running.
   */
  flush(): void {
    if (!this.ready || this.stopped || this.running !== undefined) return;
    this.clearBatchTimer();
    const started = performance.now();
    const keys = new Set(this.dirty);
    this.dirty = new Set();
    this.pendingEvents = 0;
    this.holdAwaiting(keys, started);
    const storeOwners = this.sweepPending ? this.kubernetesOwners() : null;
    if (storeOwners !== null) {
      for (const key of storeOwners) if (!this.services.has(key)) keys.add(key);
      this.sweepPending = false;
    }
    if (keys.size === 0) return;
    this.lastBatchStart = started;

    const sorted = [...keys].sort();
    let size = Math.max(
      this.o.servicesPerTransaction ?? DEFAULT_PER_TX,
      Math.ceil(sorted.length / (this.o.maxTransactionsPerBatch ?? DEFAULT_MAX_TX)),
    );
    if (this.consecutiveFailures > 0) size = Math.min(size, Math.ceil(sorted.length / Math.min(MAX_SPLIT, 2 ** this.consecutiveFailures)));
    const batch: RunningBatch = {
      keys: sorted,
      next: 0,
      size: Math.max(1, size),
      storeOwners,
      failed: false,
      started,
      socketLbChanges: { removed: [], added: [] },
      hcnpChanged: false,
      natChanged: false,
      nodeEndpointsChanged: false,
      report: { services: keys.size, written: 0, transactions: 0, revision: 0, ms: 0, refused: 0, failedTransactions: 0, longestStepMs: 0 },
    };
    this.running = batch;
    this.step(batch);
  }

  /** Until when a Service waiting for its first EndpointSlice waits. */
  private awaitEnd(arrived: number): number {
    const window = this.o.maxDelayMs ?? 200;
    return Math.min(arrived + AWAIT_SLICES_WINDOWS * window, Math.max(arrived, this.lastSliceEvent) + window);
  }

  /**
   * Takes the new Services still waiting for their first EndpointSlice out
   * of `keys` (they are not dirty meanwhile, so batches of the others do not
   * follow each other back to back: the event loop keeps reading the
   * slices); the timer makes them dirty when their wait ends.
   */
  private holdAwaiting(keys: Set<string>, now: number): void {
    // A wait may have ended before the timer could say so (a long step delays timers): written now.
    this.releaseAwaiting(now, keys);
    for (const key of this.awaitingSlices.keys()) keys.delete(key);
    this.armAwait(now);
  }

  /** Ends the waits over by `now`, adding their Services to `into`; whether there were any. */
  private releaseAwaiting(now: number, into: Set<string>): boolean {
    let any = false;
    for (const [key, arrived] of this.awaitingSlices) {
      if (this.awaitEnd(arrived) > now) continue;
      this.awaitingSlices.delete(key);
      into.add(key);
      any = true;
    }
    return any;
  }

  /** Schedules the end of the earliest wait (slice events may have moved it later: then it re-arms). */
  private armAwait(now: number): void {
    if (this.awaitTimer !== undefined || this.awaitingSlices.size === 0 || this.stopped) return;
    let next = Infinity;
    for (const arrived of this.awaitingSlices.values()) next = Math.min(next, this.awaitEnd(arrived));
    this.awaitTimer = setTimeout(
      () => {
        this.awaitTimer = undefined;
        const t = performance.now();
        if (this.releaseAwaiting(t, this.dirty) && this.backoffTimer === undefined) this.flushSoon();
        this.armAwait(t);
      },
      Math.max(1, Math.ceil(next - now)),
    );
  }

  /** Translates and writes the batch's next Services (one transaction); schedules the next step, or ends the batch. */
  private step(b: RunningBatch): void {
    this.nextStep = undefined;
    if (this.running !== b || this.stopped) return;
    const t0 = performance.now();
    const chunk = b.keys.slice(b.next, b.next + b.size);
    b.next += chunk.length;
    const items = this.translateChunk(chunk, b);
    if (items.length > 0 && !this.commitChunk(items, b.report)) b.failed = true;
    const t1 = performance.now();
    b.report.longestStepMs = Math.max(b.report.longestStepMs, t1 - t0);
    // No event was read while the step held the loop: a slices' stream busy just before counts as busy still.
    if (this.lastSliceEvent >= t0 - (this.o.maxDelayMs ?? 200)) this.lastSliceEvent = t1;
    // The socket-LB holds no store state: it gets each step's changes at once, not at the end of a long batch.
    this.publishSocketLb(b);
    if (b.next < b.keys.length) {
      this.nextStep = setImmediate(() => this.safeStep());
      return;
    }
    this.running = undefined;
    this.finish(b);
  }

  /**
   * Translates Services; returns those whose owner-scoped desired state
   * differs from what the store holds (or that were refused and retry).
   */
  private translateChunk(keys: string[], b: RunningBatch): WriteItem[] {
    const toWrite: WriteItem[] = [];
    for (const key of keys) {
      const svc = this.services.get(key);
      const before = this.results.get(key);
      let desired: WriteItem['desired'];
      if (svc === undefined) {
        if (this.results.delete(key)) this.keyOrder = this.sorted = null;
        desired = { vips: [], policies: [] };
      } else {
        const t = translateService(svc, [...(this.slicesByService.get(key)?.values() ?? [])], this.nodeObj, this.o.translate, this.nodes);
        if (!this.results.has(key)) {
          this.keyOrder?.push(key);
          this.sorted = null;
        } else if (this.sorted !== null) {
          this.sorted[sortedIndex(this.keyOrder!, key)] = t;
        }
        this.results.set(key, t);
        desired = t.desired;
      }
      const after = this.results.get(key);
      const was = before ? socketLbEntries(before) : [];
      const now = after ? socketLbEntries(after) : [];
      if (!sameJson(was, now)) {
        b.socketLbChanges.removed.push(...was);
        b.socketLbChanges.added.push(...now);
      } else if (before !== undefined && after !== undefined && before.clusterIps.length === after.clusterIps.length) {
        // Unchanged: the socket-LB keeps holding the same objects, which the changes handed over later name.
        after.clusterIps = before.clusterIps;
        after.localAddresses = before.localAddresses;
      }
      // A flag already set needs no second look.
      if (!b.hcnpChanged && !sameJson(before?.healthCheckNodePorts ?? [], after?.healthCheckNodePorts ?? [])) b.hcnpChanged = true;
      if (!b.natChanged && !sameJson(before?.nat ?? [], after?.nat ?? [])) b.natChanged = true;
      if (!b.nodeEndpointsChanged && !sameJson(before?.nodeEndpoints ?? [], after?.nodeEndpoints ?? [])) b.nodeEndpointsChanged = true;
      const json = desired.vips.length === 0 && desired.policies.length === 0 ? EMPTY_JSON : JSON.stringify(desired);
      // Known not to be in the store (the sweep listed every owner there): nothing to remove.
      if (!this.committed.has(key) && json === EMPTY_JSON && b.storeOwners !== null && !b.storeOwners.has(key)) {
        this.committed.set(key, json);
      }
      if (this.committed.get(key) === json && !this.refused.has(key)) {
        if (svc === undefined) this.committed.delete(key);
        continue;
      }
      toWrite.push({ key, owner: ownerOf(key), desired, json });
    }
    return toWrite;
  }

  /** Hands the socket-LB the whole list, with what changed, when the batch changed it since the last time. */
  private publishSocketLb(b: RunningBatch): void {
    const changes = b.socketLbChanges;
    if (changes.removed.length === 0 && changes.added.length === 0) return;
    b.socketLbChanges = { removed: [], added: [] };
    this.clusterIpList = socketLbList(this.sortedResults());
    this.notify(() => this.o.onClusterIps?.(this.clusterIpList, changes));
  }

  /** A batch is written: retry policy, report, listeners; then whatever became dirty meanwhile. */
  private finish(b: RunningBatch): void {
    const { report } = b;
    if (b.failed) {
      this.consecutiveFailures++;
      const delay = this.backoff();
      this.log.warn({ retryInMs: delay, attempt: this.consecutiveFailures }, 'kubernetes: batch failed; retrying');
    } else if (b.report.written > 0) {
      this.consecutiveFailures = 0;
    }
    report.revision = this.o.controller.revision();
    report.ms = performance.now() - b.started;
    this.stats.batches++;
    this.stats.lastBatch = report;
    this.publishSocketLb(b);
    if (b.nodeEndpointsChanged) {
      this.nodeEndpointList = this.sortedResults().flatMap((t) => t.nodeEndpoints);
      this.notify(() => this.o.onNodeEndpoints?.(this.nodeEndpointList));
    }
    if (b.natChanged) {
      this.natList = this.sortedResults().flatMap((t) => t.nat);
      this.notify(() => this.o.onNat?.(this.natList));
    }
    if (b.hcnpChanged) {
      this.hcnpList = this.sortedResults().flatMap((t) => t.healthCheckNodePorts);
      this.notify(() => this.o.onHealthCheckNodePorts?.(this.hcnpList));
    }
    this.log.info(
      {
        services: report.services,
        written: report.written,
        transactions: report.transactions,
        revision: report.revision,
        refused: report.refused,
        failed: report.failedTransactions,
        ms: Math.round(report.ms),
        longestStepMs: Math.round(report.longestStepMs),
      },
      'kubernetes: batch',
    );
    this.notify(() => this.o.onBatch?.(report));
    this.scheduleRetries();
    // Events that came while the batch was written have waited long enough; after a failure the backoff decides.
    if (!b.failed && this.dirty.size > 0) this.flushSoon();
  }

  /**
   * The translations in Service key order. The order is kept between calls:
   * new keys are appended (a batch translates them in order) and the sort,
   * a merge of two sorted runs then, is linear; a removal rebuilds it. The
   * answer is kept too, a Service translated again replacing its own in it,
   * until a Service comes or goes.
   */
  private sortedResults(): ServiceTranslation[] {
    if (this.sorted !== null) return this.sorted;
    this.keyOrder ??= [...this.results.keys()];
    this.keyOrder.sort();
    this.sorted = this.keyOrder.map((k) => this.results.get(k)!);
    return this.sorted;
  }

  private notify(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'kubernetes: a sync listener failed');
    }
  }

  /** Service keys of every "kubernetes:" owner the store holds. */
  private kubernetesOwners(): Set<string> {
    return this.o.controller.read((tx) => {
      const keys = new Set<string>();
      const add = (owner: string | null): void => {
        const k = serviceKeyOfOwner(owner);
        if (k !== null) keys.add(k);
      };
      for (let cursor: string | null = null; ;) {
        const page = tx.listVips({ limit: 1000, cursor });
        for (const v of page.items) add(v.owner);
        cursor = page.next;
        if (cursor === null) break;
      }
      for (let cursor: string | null = null; ;) {
        const page = tx.listPolicies({ limit: 1000, cursor });
        for (const p of page.items) add(p.owner);
        cursor = page.next;
        if (cursor === null) break;
      }
      return keys;
    });
  }

  // ------------------------------------------------------------ writing

  /** One transaction; false when it failed as a whole (its Services are requeued). */
  private commitChunk(items: WriteItem[], report: BatchReport): boolean {
    const outcomes = new Map<string, string[]>();
    try {
      const before = this.o.controller.revision();
      const { revision } = this.o.controller.write(this.o.actor ?? 'kubernetes', 'k8s.sync', (tx) => {
        outcomes.clear();
        for (const it of items) outcomes.set(it.key, this.replaceOne(tx, it));
      });
      if (revision !== before) {
        report.transactions++;
        this.stats.transactions++;
      }
    } catch (err) {
      report.failedTransactions++;
      this.stats.failedTransactions++;
      for (const it of items) this.dirty.add(it.key);
      this.log.error({ services: items.length, err: (err as Error).message }, 'kubernetes: transaction failed; requeued');
      return false;
    }
    const now = Date.now();
    for (const it of items) {
      const reasons = outcomes.get(it.key) ?? [];
      report.written++;
      this.stats.servicesWritten++;
      if (reasons.length === 0) {
        this.refused.delete(it.key);
        if (this.services.has(it.key) || it.json !== EMPTY_JSON) this.committed.set(it.key, it.json);
        else this.committed.delete(it.key);
      } else {
        report.refused++;
        // What the store holds now is a subset: never equal to the desired JSON, so the retry rewrites it.
        this.committed.delete(it.key);
        const attempts = (this.refused.get(it.key)?.attempts ?? 0) + 1;
        const delay = backoffDelay(this.o.retry ?? DEFAULT_BACKOFF, attempts, this.random);
        this.refused.set(it.key, { reasons, attempts, retryAt: now + delay });
        this.log.warn({ service: it.key, reasons, retryInMs: delay }, 'kubernetes: the store refused part of a Service');
      }
    }
    return true;
  }

  /**
   * replaceState for one owner; on a refusal, keeps what the owner already
   * holds and adds its other VIPs one at a time (each a savepoint), so one
   * conflicting address does not take the Service's other VIPs down.
   * Returns the reasons of what was refused (empty = all written).
   */
  private replaceOne(tx: StoreTx, it: WriteItem): string[] {
    const drain = this.o.drainSeconds;
    try {
      tx.replaceState(it.desired, drain, it.owner);
      return [];
    } catch (err) {
      if (!(err instanceof FerryError) || err instanceof DatapathError) throw err;
      const reasons: string[] = [];
      let policies = it.desired.policies;
      const held = (v: VipWithBackends): boolean => {
        try {
          return tx.getVip(v.name).owner === it.owner;
        } catch {
          return false;
        }
      };
      const refs = (v: VipWithBackends): boolean => (v.policies ?? []).every((p) => policies.some((q) => q.name === p));
      let accepted = it.desired.vips.filter(held);
      try {
        tx.replaceState({ vips: accepted, policies }, drain, it.owner);
      } catch (e) {
        if (!(e instanceof FerryError) || e instanceof DatapathError) throw e;
        // The policy itself is refused: VIPs that need it are left out (never opened without their source ranges).
        reasons.push(`refused by the store: ${e.message}`);
        policies = [];
        accepted = accepted.filter(refs);
        try {
          tx.replaceState({ vips: accepted, policies }, drain, it.owner);
        } catch (e2) {
          if (!(e2 instanceof FerryError) || e2 instanceof DatapathError) throw e2;
          // Not even what it holds can be kept as is: leave the owner as it was, retry later.
          reasons.push(`refused by the store: ${e2.message}`);
          return reasons;
        }
      }
      for (const v of it.desired.vips) {
        if (accepted.includes(v)) continue;
        if (!refs(v)) {
          reasons.push(`VIP ${v.name} (${v.address} ${v.port}/${v.protocol}) left out: its source-range policy was refused`);
          continue;
        }
        try {
          tx.replaceState({ vips: [...accepted, v], policies }, drain, it.owner);
          accepted.push(v);
        } catch (e) {
          if (!(e instanceof FerryError) || e instanceof DatapathError) throw e;
          reasons.push(`VIP ${v.name} (${v.address} ${v.port}/${v.protocol}) refused by the store: ${e.message}`);
        }
      }
      return reasons.length > 0 ? reasons : [`refused by the store: ${(err as Error).message}`];
    }
  }

  /** Re-marks refused Services when their retry time comes. */
  private scheduleRetries(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.refused.size === 0 || this.stopped) return;
    let next = Infinity;
    for (const r of this.refused.values()) next = Math.min(next, r.retryAt);
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = undefined;
        const now = Date.now();
        for (const [key, r] of this.refused) if (r.retryAt <= now) this.dirty.add(key);
        // During a failed batch's backoff the dirty Services wait for it (it flushes them).
        if (this.dirty.size > 0 && this.backoffTimer === undefined) this.flushSoon();
        else if (this.dirty.size === 0) this.scheduleRetries();
      },
      Math.max(0, next - Date.now()),
    );
    this.retryTimer.unref();
  }
}
