/**
 * Retry delays of the Kubernetes mode (informers, batch sync, health-check
 * node ports, LB-IPAM): exponential with jitter, so that many nodes failing
 * at once against one API server do not retry in step.
 */

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000 };

/** The delay before retry number `attempt` (1-based): base doubles, jitter keeps it in [base/2, base]. */
export function backoffDelay(b: Backoff, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base / 2 + random() * (base / 2));
}
