/**
 * The API under test: the real store (in memory), a real Controller, the
 * real planner, and fakes for what touches the kernel (the Applier) and for
 * the daemon's status (DaemonInfo).
 */
import assert from 'node:assert/strict';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../src/api/app.js';
import type { ApiOptions, DaemonInfo } from '../../src/api/types.js';
import type { StatsBody, StatusBody } from '../../src/model/status.js';
import { Controller } from '../../src/control/controller.js';
import type { MetricsSource } from '../../src/metrics/index.js';
import type { Applier, DpState, ReconcileReport } from '../../src/model/dpstate.js';
import { planState } from '../../src/reconcile/plan.js';
import { openStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';

/** Records every state it is given; throws while `failing` is set. */
export class FakeApplier implements Applier {
  states: DpState[] = [];
  failing: string | null = null;

  apply(state: DpState): ReconcileReport {
    if (this.failing !== null) throw new Error(this.failing);
    this.states.push(state);
    return { changes: state.vips.length, durationMs: 0.1 };
  }

  get last(): DpState | undefined {
    return this.states[this.states.length - 1];
  }
}

export class FakeInfo implements DaemonInfo {
  version = '9.9.9-test';
  isReady = true;
  statusError: Error | null = null;

  constructor(private readonly controller: () => Controller) {}

  ready(): boolean {
    return this.isReady;
  }

  status(): StatusBody {
    if (this.statusError !== null) throw this.statusError;
    const c = this.controller();
    return {
      version: this.version,
      revision: c.revision(),
      applied_revision: c.appliedRevision,
      uptime_seconds: 12.5,
      interfaces: [{ name: 'eth0', xdp_mode: 'native' }],
      maps: [
        { name: 'ferry_vips', max_entries: 64, used: 1 },
        { name: 'ferry_conntrack', max_entries: 1 << 20 },
      ],
      last_reconcile: { changes: c.lastReconcile.changes, duration_ms: c.lastReconcile.durationMs },
    };
  }

  stats(): StatsBody {
    return {
      vips: [
        {
          name: 'web',
          packets: 10,
          bytes: 1500,
          new_flows: 2,
          ct_hits: 8,
          ct_misses: 2,
          drops: 0,
          rate_pps: 1.5,
          backends: [{ address: '198.19.0.1', packets: 10, bytes: 1500, new_flows: 2 }],
        },
      ],
      drops: { policy: 3, fragment: 1 },
    };
  }
}

/** A metrics source with an idle datapath and whatever views a test adds (bgpView, fleetView, ...). */
export function idleMetricsSource(views: Partial<MetricsSource> = {}): MetricsSource {
  return {
    counters: () => ({ vips: [], drops: {} }),
    status: () => ({
      version: 't',
      revision: 0,
      applied_revision: 0,
      uptime_seconds: 0,
      interfaces: [],
      maps: [],
      last_reconcile: { changes: 0, duration_ms: 0 },
    }),
    ...views,
  };
}

export interface Api {
  app: FastifyInstance;
  store: Store;
  controller: Controller;
  applier: FakeApplier;
  info: FakeInfo;
  close(): Promise<void>;
}

export interface ApiFixtureOptions extends Partial<
  Pick<
    ApiOptions,
    | 'auth'
    | 'logger'
    | 'bodyLimit'
    | 'stateBodyLimit'
    | 'drainSeconds'
    | 'metrics'
    | 'rateLimit'
    | 'requestTimeoutMs'
    | 'https'
    | 'bgp'
    | 'fleet'
  >
> {
  maxVips?: number;
  maxBackends?: number;
  /** The datapath side (default: a FakeApplier, which `applier` then is). */
  applier?: Applier;
  /** A database file instead of memory. */
  dbPath?: string;
}

export async function makeApi(o: ApiFixtureOptions = {}): Promise<Api> {
  const store = openStore(o.dbPath ?? ':memory:', { maxVips: o.maxVips ?? 64, maxBackends: o.maxBackends ?? 1024 });
  const applier = new FakeApplier();
  const controller = new Controller(store, o.applier ?? applier, (state) => planState(state));
  if (o.metrics) {
    const m = o.metrics;
    controller.onApply = (r) => m.observeReconcile(r);
  }
  controller.reconcile();
  const info = new FakeInfo(() => controller);
  const app = await buildApp({
    controller,
    info,
    drainSeconds: o.drainSeconds ?? 30,
    auth: o.auth ?? null,
    logger: o.logger ?? false,
    ...(o.bodyLimit === undefined ? {} : { bodyLimit: o.bodyLimit }),
    ...(o.stateBodyLimit === undefined ? {} : { stateBodyLimit: o.stateBodyLimit }),
    ...(o.metrics === undefined ? {} : { metrics: o.metrics }),
    ...(o.rateLimit === undefined ? {} : { rateLimit: o.rateLimit }),
    ...(o.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: o.requestTimeoutMs }),
    ...(o.https === undefined ? {} : { https: o.https }),
    ...(o.bgp === undefined ? {} : { bgp: o.bgp }),
    ...(o.fleet === undefined ? {} : { fleet: o.fleet }),
  });
  return {
    app,
    store,
    controller,
    applier,
    info,
    close: async () => {
      await app.close();
      store.close();
    },
  };
}

export interface Call {
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'OPTIONS';
  url: string;
  /** Sent as JSON unless a string (then as is, with contentType or application/json). */
  body?: unknown;
  contentType?: string;
  headers?: Record<string, string>;
}

/** Every response the tests see has been checked: no 500, and every error is a well-formed problem. */
export async function call(app: FastifyInstance, c: Call, allow500 = false): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { ...c.headers };
  let payload: string | undefined;
  if (c.body !== undefined) {
    payload = typeof c.body === 'string' ? c.body : JSON.stringify(c.body);
    headers['content-type'] = c.contentType ?? 'application/json';
  }
  const res = await app.inject({ method: c.method ?? 'GET', url: c.url, headers, ...(payload === undefined ? {} : { payload }) });
  if (!allow500) assert.notEqual(res.statusCode, 500, `${c.method ?? 'GET'} ${c.url} answered 500: ${res.body}`);
  if (res.statusCode >= 400 && c.method !== 'HEAD') assertProblem(res, res.statusCode, c.url);
  return res;
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  errors?: Array<{ field: string; reason: string }>;
}

export function assertProblem(res: LightMyRequestResponse, status: number, url?: string): ProblemBody {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const p = res.json<ProblemBody>();
  assert.equal(p.status, status);
  assert.equal(typeof p.title, 'string');
  assert.ok(p.type === 'about:blank' || p.type.startsWith('https://ferry.invalid/problems/'), p.type);
  if (url !== undefined) assert.equal(p.instance, url);
  return p;
}

/** A problem of this status and type suffix; returns it. */
export function problemOf(res: LightMyRequestResponse, status: number, type?: string): ProblemBody {
  const p = assertProblem(res, status);
  if (type !== undefined) assert.equal(p.type, `https://ferry.invalid/problems/${type}`);
  return p;
}

export function fields(p: ProblemBody): string[] {
  return (p.errors ?? []).map((e) => e.field);
}
