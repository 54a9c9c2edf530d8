/**
 * Checks through the direct-server-return path. A check with `dsr: true`
 * runs from a socket marked for its (VIP, backend) pair: bpf/hc.bpf.c, on
 * the interfaces ferryd attaches to, sends its packets to the VIP inside
 * the tunnel to the backend and gives the replies (from the VIP) the
 * backend's address back. The socket still talks to the backend's address,
 * so every probe type works unchanged.
 *
 * A check whose packets did not go through the tunnel fails: the route to
 * the backend may leave by an interface without the filters, and a check
 * that silently went direct would report a healthy DSR path it never used.
 */
import type { HcDatapath, HcPair } from '../datapath/hc.js';
import { describeError, runProbe, type ProbeFn } from './probe.js';
import type { Target } from './targets.js';

/** What the daemon passes when the DSR path could not be set up: why, for every DSR check's error. */
export interface DsrUnavailable {
  reason: string;
}

/** A ProbeFn running DSR checks through `hc` and every other check with `base`. */
export function dsrProbe(hc: HcDatapath | DsrUnavailable, base: ProbeFn = runProbe): ProbeFn {
  return async (p, signal) => {
    if (p.dsr === undefined) return base(p, signal);
    if (!('markFor' in hc)) return { ok: false, error: `the DSR check path is unavailable: ${hc.reason}`, durationMs: 0 };
    const pair: HcPair = { vip: p.dsr.vip, backend: p.address };
    let mark: number;
    let before: bigint;
    try {
      mark = hc.markFor(pair);
      before = hc.sent(pair);
    } catch (err) {
      return { ok: false, error: describeError(err), durationMs: 0 };
    }
    const r = await base({ ...p, mark }, signal);
    if (r.ok && hc.sent(pair) === before) {
      return {
        ok: false,
        error: `not sent through the tunnel: the route to ${p.address} leaves by an interface ferryd is not attached to`,
        durationMs: r.durationMs,
      };
    }
    return r;
  };
}

/** The pairs checked through the tunnel: their slots stay, the others' are freed. */
export function dsrPairs(targets: readonly Target[]): HcPair[] {
  const out: HcPair[] = [];
  for (const t of targets) if (t.probe.dsr !== undefined) out.push({ vip: t.probe.dsr.vip, backend: t.address });
  return out;
}
