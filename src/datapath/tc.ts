/**
 * tc filters of Ferry's own on an interface, as the health-check and node
 * programs place them: each set has a handle and priority of its own (see
 * HC_TC, NODE_TC), so an operator's filters are never replaced.
 */
import type { NativeAddon, TcDirection, TcOptions } from './native.js';

/** Puts the filters on an interface in the order given, replacing those at the same place. */
export function attachTcFilters(
  nat: NativeAddon,
  ifname: string,
  filters: ReadonlyArray<readonly [TcDirection, number]>,
  opts: TcOptions,
): void {
  const ifindex = nat.ifNameToIndex(ifname);
  for (const [dir, fd] of filters) nat.tcAttach(fd, ifindex, dir, opts);
}

/** Takes the filters at this place off both directions; an interface that is gone or has none is not an error. */
export function detachTcFilters(nat: NativeAddon, ifname: string, opts: TcOptions): void {
  let ifindex: number;
  try {
    ifindex = nat.ifNameToIndex(ifname);
  } catch {
    return;
  }
  for (const dir of ['egress', 'ingress'] as const) {
    try {
      nat.tcDetach(ifindex, dir, opts);
    } catch {
      // Not attached (or removed by hand): nothing to undo.
    }
  }
}
