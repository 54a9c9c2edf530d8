/**
 * api.probe_listen: a plain-HTTP listener answering only the probes,
 * without a token: GET /healthz (200 while the process serves) and
 * GET /readyz (200 once ready, else 503 with the reason), the same bodies
 * as the API's. Meant for kubelet probes on a local port (the DaemonSet);
 * everything else is 404, so it exposes nothing of the state.
 */
import * as http from 'node:http';
import { PROBLEM_BASE, PROBLEM_TYPE } from '../api/problems.js';

export interface ProbeSource {
  ready(): boolean;
  notReadyReason?(): string;
}

export async function listenProbes(listen: string, src: ProbeSource): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    const send = (status: number, type: string, body: object): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
      res.end(text);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, PROBLEM_TYPE, { type: `${PROBLEM_BASE}method-not-allowed`, title: 'Method Not Allowed', status: 405, instance: req.url });
    } else if (path === '/healthz') {
      send(200, 'application/json', { status: 'ok' });
    } else if (path === '/readyz' && src.ready()) {
      send(200, 'application/json', { status: 'ok' });
    } else if (path === '/readyz') {
      send(503, PROBLEM_TYPE, {
        type: `${PROBLEM_BASE}not-ready`,
        title: 'Service Unavailable',
        status: 503,
        detail: src.notReadyReason?.() ?? 'not ready',
        instance: req.url,
      });
    } else {
      send(404, PROBLEM_TYPE, {
        type: `${PROBLEM_BASE}no-route`,
        title: 'Not Found',
        status: 404,
        detail: 'only /healthz and /readyz are served here',
        instance: req.url,
      });
    }
  });
  server.keepAliveTimeout = 5000;
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(listen);
  if (m === null) throw new Error(`api.probe_listen: ${listen} is not host:port`);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: m[1], port: Number(m[2]) }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  return server;
}
