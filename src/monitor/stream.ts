/**
 * The daemon's EventStream: polls the datapath's ferry_events ring buffer on
 * a timer, decodes each record, translates ids to names and fans the events
 * out to subscribers (the SSE streams of GET /v1/monitor).
 *
 * The daemon never waits for a subscriber. Each one has a bounded queue: an
 * event that finds it full is dropped for that subscriber and counted (the
 * stream tells the client how many it lost). A poll reads a bounded number
 * of records, so a burst is spread over ticks instead of stalling the event
 * loop; the datapath's own cap (events_per_second) bounds the rate anyway.
 *
 * The ring is read even with no subscriber (the records are then discarded
 * undecoded), so it never fills up and a new subscriber sees live events,
 * not a backlog. Records waiting in the ring when the stream starts (written
 * while no daemon was reading) are discarded for the same reason.
 */
import { FerryEvent } from '../datapath/abi.js';
import type { LbDatapath } from '../datapath/lb.js';
import type { NativeAddon } from '../datapath/native.js';
import type { Store } from '../store/types.js';
import { EMPTY_NAMES, matches, nameTable, toMonitorEvent, type MonitorEvent, type MonitorFilter, type NameTable } from './events.js';

/** Where records come from (the native ring buffer; tests fake it). */
export interface RingReader {
  /** Up to max records available now; never waits. */
  consume(max: number): Buffer[];
  close(): void;
}

/** The datapath's event settings, as the stream's clients are told. */
export interface MonitorSettings {
  /** 1 in N new flows are reported; 0 = none. */
  flow_sample: number;
  /** The datapath's cap on events per second; 0 = no events. */
  events_per_second: number;
}

export interface Subscription {
  /** Takes up to max queued events, oldest first. */
  take(max?: number): MonitorEvent[];
  /** Events this subscriber lost (queue full) since the last call. */
  takeLost(): number;
  readonly closed: boolean;
  /** Unsubscribes; the stream calls onEnd only when it ends the subscription itself. */
  close(): void;
}

/** What the API needs: subscriptions and the settings to announce. */
export interface MonitorSource {
  /**
   * wake() is called (at most once per poll) when events were queued;
   * onEnd() when the stream stops (daemon shutdown). Throws
   * TooManySubscribers when the stream has as many as it takes.
   */
  subscribe(filter: MonitorFilter, wake: () => void, onEnd: () => void): Subscription;
  settings(): MonitorSettings;
}

/** subscribe() refuses a subscriber beyond EventStreamOptions.maxSubscribers. */
export class TooManySubscribers extends Error {}

export interface EventStreamOptions {
  /** Poll period in ms (default 100). */
  intervalMs?: number;
  /** Records read per poll at most (default 4096). */
  maxPerPoll?: number;
  /** Events queued per subscriber at most (default 1024). */
  queueLimit?: number;
  /** Subscribers at once at most (default 64): each costs a queue and a share of every poll. */
  maxSubscribers?: number;
  /** Told about a failed poll (the stream keeps going). */
  onError?: (err: unknown) => void;
}

export interface EventStreamStats {
  /** Records read from the ring. */
  read: number;
  /** Events queued to subscribers (one per subscriber that matched). */
  delivered: number;
  /** Events dropped because a subscriber's queue was full. */
  lost: number;
  subscribers: number;
}

class Sub implements Subscription {
  queue: MonitorEvent[] = [];
  lost = 0;
  closed = false;
  woken = false;

  constructor(
    readonly filter: MonitorFilter,
    readonly wake: () => void,
    readonly onEnd: () => void,
    private readonly limit: number,
    private readonly detach: (s: Sub) => void,
  ) {}

  offer(ev: MonitorEvent): boolean {
    if (this.queue.length >= this.limit) {
      this.lost++;
      return false;
    }
    this.queue.push(ev);
    return true;
  }

  take(max = Infinity): MonitorEvent[] {
    if (max >= this.queue.length) {
      const all = this.queue;
      this.queue = [];
      return all;
    }
    return this.queue.splice(0, max);
  }

  takeLost(): number {
    const n = this.lost;
    this.lost = 0;
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.detach(this);
  }
}

export class EventStream implements MonitorSource {
  private readonly subs = new Set<Sub>();
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;
  private readonly maxPerPoll: number;
  private readonly queueLimit: number;
  private stopped = false;
  private readonly counts = { read: 0, delivered: 0, lost: 0 };

  constructor(
    private readonly reader: RingReader,
    private readonly names: () => NameTable,
    private readonly settingsOf: () => MonitorSettings,
    private readonly opts: EventStreamOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 100;
    this.maxPerPoll = opts.maxPerPoll ?? 4096;
    this.queueLimit = opts.queueLimit ?? 1024;
  }

  /** Discards the backlog and starts polling. */
  start(): void {
    for (let i = 0; i < 1024 && this.reader.consume(this.maxPerPoll).length === this.maxPerPoll; i++);
    this.timer = setInterval(() => {
      try {
        this.poll();
      } catch (err) {
        this.opts.onError?.(err);
      }
    }, this.intervalMs);
    this.timer.unref();
  }

  /** One poll: reads, decodes and fans out; returns the records read. */
  poll(): number {
    if (this.stopped) return 0;
    const records = this.reader.consume(this.maxPerPoll);
    this.counts.read += records.length;
    if (records.length === 0 || this.subs.size === 0) return records.length;
    const names = this.names();
    const nowMs = Date.now();
    const nowMono = process.hrtime.bigint();
    for (const rec of records) {
      if (rec.length < FerryEvent.size) continue;
      const ev = toMonitorEvent(FerryEvent.decode(rec), names, nowMs, nowMono);
      for (const s of this.subs) {
        if (!matches(ev, s.filter, names)) continue;
        if (s.offer(ev)) {
          this.counts.delivered++;
          s.woken = true;
        } else {
          this.counts.lost++;
        }
      }
    }
    for (const s of this.subs) {
      if (!s.woken) continue;
      s.woken = false;
      s.wake();
    }
    return records.length;
  }

  subscribe(filter: MonitorFilter, wake: () => void, onEnd: () => void): Subscription {
    if (!this.stopped && this.subs.size >= (this.opts.maxSubscribers ?? 64)) {
      throw new TooManySubscribers(`${this.subs.size} event streams are open already`);
    }
    const s = new Sub(filter, wake, onEnd, this.queueLimit, (x) => this.subs.delete(x));
    if (this.stopped) {
      s.closed = true;
      queueMicrotask(onEnd);
      return s;
    }
    this.subs.add(s);
    return s;
  }

  settings(): MonitorSettings {
    return this.settingsOf();
  }

  stats(): EventStreamStats {
    return { ...this.counts, subscribers: this.subs.size };
  }

  /** Stops polling, ends every subscription and releases the ring. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const s of [...this.subs]) {
      s.close();
      s.onEnd();
    }
    this.reader.close();
  }
}

/** A RingReader over the datapath's ferry_events map. */
export function datapathRing(dp: LbDatapath): RingReader {
  const nat: NativeAddon = dp.nat;
  const handle = nat.ringOpen(dp.eventsFd);
  let open = true;
  return {
    consume: (max) => (open ? nat.ringConsume(handle, max) : []),
    close: () => {
      if (open) nat.ringClose(handle);
      open = false;
    },
  };
}

/**
 * Names from the store, rebuilt only when the revision moved. Draining
 * backends (tombstones) keep their address: their flows are still live.
 */
export function storeNames(store: Store): () => NameTable {
  let cached: { revision: number; table: NameTable } | undefined;
  return () => {
    const revision = store.revision();
    if (cached?.revision !== revision) {
      const table = store.read((tx) => {
        const snap = tx.snapshot();
        return nameTable(snap.vips, [...snap.tombstones, ...snap.backends]);
      });
      cached = { revision, table };
    }
    return cached?.table ?? EMPTY_NAMES;
  };
}

/** The event settings of ferryd's config (datapath section). */
export interface EventsConfig {
  events_flow_sample: number;
  events_per_second: number;
}

/** The daemon's stream: the datapath's ring, the store's names, settings from the (reloadable) config. */
export function openEventStream(dp: LbDatapath, store: Store, config: () => EventsConfig, opts: EventStreamOptions = {}): EventStream {
  const settings = (): MonitorSettings => {
    const c = config();
    return { flow_sample: c.events_per_second > 0 ? c.events_flow_sample : 0, events_per_second: c.events_per_second };
  };
  const stream = new EventStream(datapathRing(dp), storeNames(store), settings, opts);
  stream.start();
  return stream;
}
