/**
 * Pinned maps across upgrades and resizes: before an object loads, a pinned
 * map whose definition (type, key and value size, capacity, flags) no longer
 * matches the object's is unpinned, so the load creates it anew instead of
 * failing. Which maps may be dropped that way is the caller's decision.
 */
import { existsSync, rmSync } from 'node:fs';
import type { BpfObject, NativeAddon } from './native.js';

/**
 * Unpins the stale maps `replaceable` allows; returns their names. Maps of
 * one group are only meaningful together (a table and the offsets into it):
 * when one of them is replaced, so are the others.
 */
export function replaceStalePins(
  nat: NativeAddon,
  obj: BpfObject,
  replaceable: (name: string) => boolean,
  groups: readonly (readonly string[])[] = [],
): string[] {
  const replaced: string[] = [];
  for (const m of obj.maps()) {
    if (!replaceable(m.name) || m.pinPath === null || !existsSync(m.pinPath)) continue;
    const fd = nat.objGet(m.pinPath);
    let pinned;
    try {
      pinned = nat.mapInfo(fd);
    } finally {
      nat.closeFd(fd);
    }
    if (
      pinned.type === m.type &&
      pinned.keySize === m.keySize &&
      pinned.valueSize === m.valueSize &&
      pinned.maxEntries === m.maxEntries &&
      pinned.flags === m.flags
    )
      continue;
    rmSync(m.pinPath);
    replaced.push(m.name);
  }
  for (const group of groups) {
    if (!group.some((name) => replaced.includes(name))) continue;
    for (const m of obj.maps()) {
      if (!group.includes(m.name) || replaced.includes(m.name) || m.pinPath === null || !existsSync(m.pinPath)) continue;
      rmSync(m.pinPath);
      replaced.push(m.name);
    }
  }
  return replaced;
}

/** Detaches the bpf link pinned at `path` and removes the pin; false when there is none. */
export function detachPinnedLink(nat: NativeAddon, path: string): boolean {
  if (!existsSync(path)) return false;
  const link = nat.objGet(path);
  try {
    nat.linkDetach(link);
  } finally {
    nat.closeFd(link);
    rmSync(path, { force: true });
  }
  return true;
}
