/**
 * What one client may ask of a listener: requests per time window (per
 * client address, counted before authentication so that guessing tokens
 * is limited too), how long a request may take to arrive (slow senders
 * would otherwise hold sockets forever), and TLS without legacy protocols
 * or ciphers.
 */
import type { ServerOptions as HttpServerOptions } from 'node:http';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import type { RateLimit, TlsOptions } from './types.js';

/** Thrown by the limiter; the error handler answers it as a 429 problem. */
export class RateLimitedError extends Error {
  readonly statusCode = 429;
  readonly code = 'FERRY_RATE_LIMITED';
}

/** Counts every request of a client address (probes included) before any other hook runs. */
export async function registerRateLimit(app: FastifyInstance, limit: RateLimit): Promise<void> {
  await app.register(rateLimit, {
    global: false,
    max: limit.max,
    timeWindow: limit.windowMs,
    errorResponseBuilder: (_request, ctx) => new RateLimitedError(
      `more than ${ctx.max} requests from this client within ${limit.windowMs / 1000} s; retry in ${ctx.after}`,
    ),
  });
  app.addHook('onRequest', app.rateLimit());
}

/**
 * Node's own request deadlines: the headers, then the whole request, must
 * arrive within `timeoutMs` (answered 408 and closed). Responses are not
 * limited: the monitor stream stays open as long as its client wants.
 */
export function requestDeadlines(timeoutMs: number): Pick<HttpServerOptions, 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'> {
  return {
    headersTimeout: timeoutMs,
    requestTimeout: timeoutMs,
    // How often Node looks for late requests: the deadline is honoured within this much.
    connectionsCheckingInterval: Math.min(5_000, Math.max(100, Math.floor(timeoutMs / 4))),
  };
}

/** TLS 1.3 suites and TLS 1.2's forward-secret AEAD suites only (no CBC, no RSA key exchange). */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** The server's TLS options: the given key and certificate with the defaults above. */
export function tlsServerOptions(tls: TlsOptions): TlsOptions & { ciphers: string; honorCipherOrder: boolean; minVersion: 'TLSv1.2' | 'TLSv1.3' } {
  return { ...tls, minVersion: tls.minVersion ?? 'TLSv1.2', ciphers: TLS_CIPHERS, honorCipherOrder: true };
}
