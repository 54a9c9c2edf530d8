/**
 * The fleet's keys under its etcd prefix (fleet.etcd.prefix):
 *   vips/NAME      a VIP with its backends (the DesiredState shape, JSON)
 *   policies/NAME  a policy (JSON)
 *   seed           the Maglev and flow hash seed every member uses (decimal)
 *   fence          who wrote last; every write through Ferry puts it and
 *                  compares its revision, so writes are serialized
 *   members/NAME   a member's published status, on that member's lease
 * One key per VIP and per policy: a write touches only its own keys and a
 * watch event names exactly what a member must reload.
 */
import type { PolicySpec, VipWithBackends } from '../model/types.js';

export const FENCE = 'fence';
export const SEED = 'seed';
export const vipKey = (name: string): string => `vips/${name}`;
export const policyKey = (name: string): string => `policies/${name}`;
export const memberKey = (name: string): string => `members/${name}`;

export type FleetKey = { kind: 'vip' | 'policy' | 'member'; name: string } | { kind: 'seed' | 'fence' | 'other' };

/** What a key (relative to the prefix) holds. */
export function parseKey(key: string): FleetKey {
  if (key === SEED || key === FENCE) return { kind: key };
  const slash = key.indexOf('/');
  if (slash <= 0 || slash === key.length - 1) return { kind: 'other' };
  const name = key.slice(slash + 1);
  if (name.includes('/')) return { kind: 'other' };
  switch (key.slice(0, slash)) {
    case 'vips':
      return { kind: 'vip', name };
    case 'policies':
      return { kind: 'policy', name };
    case 'members':
      return { kind: 'member', name };
    default:
      return { kind: 'other' };
  }
}

/** Who wrote last (the fence's value; the members' audit rows name them). */
export interface FenceValue {
  host: string;
  actor: string;
  action: string;
  time: string;
}

/** A VIP or policy key's content: the resource, null once deleted, or why it cannot be used. */
export type Content =
  { kind: 'vip'; name: string; value: VipWithBackends | null } | { kind: 'policy'; name: string; value: PolicySpec | null };

/** Decodes a VIP or policy value; throws an Error saying what is wrong (the store validates the rest). */
export function decodeContent(kind: 'vip' | 'policy', name: string, raw: string | null): Content {
  if (raw === null) return { kind, name, value: null };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
  const named = (value as { name?: unknown }).name;
  if (named !== name) throw new Error(`the key names ${kind} "${name}" but the value is named ${JSON.stringify(named)}`);
  return kind === 'vip' ? { kind, name, value: value as VipWithBackends } : { kind, name, value: value as PolicySpec };
}

/** The seed key's value: an integer from 0 to 2^32-1. */
export function decodeSeed(raw: string): number | null {
  if (!/^\d{1,10}$/.test(raw)) return null;
  const n = Number(raw);
  return n <= 0xffffffff ? n : null;
}
