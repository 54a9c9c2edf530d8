/**
 * Health checking wired as ferryd wires it, minus the kernel: the real store
 * (in memory), a real Controller whose planner asks the HealthMonitor, a
 * FakeApplier recording every DpState, and the API with the monitor as its
 * health view. The store refuses loopback backends, so backends live at
 * 198.19.0.0/16 and the probe dials them at 127.72.0.0/16 (same last two
 * octets), where the tests run their servers.
 */
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApp } from '../../src/api/app.js';
import { Controller } from '../../src/control/controller.js';
import { HealthMonitor } from '../../src/health/monitor.js';
import { runProbe, type ProbeFn } from '../../src/health/probe.js';
import type { DpBackendState } from '../../src/model/dpstate.js';
import { planState } from '../../src/reconcile/plan.js';
import { openStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { FakeApplier, FakeInfo } from './api-fixture.js';

/** 198.19.a.b (a backend as stored) → 127.72.a.b (where its server listens). */
export function loopbackOf(address: string): string {
  return address.replace(/^198\.19\./, '127.72.');
}

export const mappedProbe: ProbeFn = (p, signal) => runProbe({ ...p, address: loopbackOf(p.address) }, signal);

export interface HealthRig {
  store: Store;
  controller: Controller;
  applier: FakeApplier;
  monitor: HealthMonitor;
  app: FastifyInstance;
  /** The state of a backend in the last applied DpState. */
  dpState(vip: string, address: string): DpBackendState | undefined;
  close(): Promise<void>;
}

/** A rig on `store` (a new in-memory one by default); the monitor is started. */
export async function makeHealthRig(o: { store?: Store; probe?: ProbeFn } = {}): Promise<HealthRig> {
  const store = o.store ?? openStore(':memory:', { maxVips: 64, maxBackends: 1024 });
  const applier = new FakeApplier();
  let monitor: HealthMonitor | undefined;
  const controller = new Controller(store, applier, (state) => planState(state, { health: monitor?.verdict }));
  controller.reconcile();
  monitor = new HealthMonitor({
    store,
    reconcile: () => controller.reconcile(),
    logger: pino({ level: 'silent' }),
    syncIntervalMs: 20,
    checker: { probe: o.probe ?? mappedProbe },
  });
  monitor.start();
  const m = monitor;
  const app = await buildApp({
    controller,
    info: new FakeInfo(() => controller),
    drainSeconds: 0,
    auth: null,
    logger: false,
    health: m,
  });
  return {
    store,
    controller,
    applier,
    monitor: m,
    app,
    dpState: (vip, address) => applier.last?.vips.find((v) => v.name === vip)?.backends.find((b) => b.address === address)?.state,
    close: async () => {
      await m.stop();
      await app.close();
    },
  };
}
