/**
 * The OpenAPI document as committed in api/openapi.json: built from an app
 * with inert fakes (no store, no datapath), pretty-printed with a trailing
 * newline. scripts/gen-openapi.mjs writes it; test/unit/api/api.test.ts checks the
 * committed file equals it.
 */
import type { Controller } from '../control/controller.js';
import { buildApp } from './app.js';
import type { DaemonInfo } from './types.js';
import { FerryMetrics } from '../metrics/index.js';

const inert = new Proxy({}, {
  get(): never {
    throw new Error('the OpenAPI generator serves no requests');
  },
}) as Controller;

export async function openApiText(version: string): Promise<string> {
  const info: DaemonInfo = {
    version,
    ready: () => false,
    status: () => { throw new Error('inert'); },
    stats: () => { throw new Error('inert'); },
  };
  const metrics = new FerryMetrics({ counters: () => { throw new Error('inert'); }, status: () => { throw new Error('inert'); } });
  const app = await buildApp({ controller: inert, info, drainSeconds: 0, auth: null, logger: false, metrics });
  try {
    return `${JSON.stringify(app.swagger(), null, 2)}\n`;
  } finally {
    await app.close();
  }
}
