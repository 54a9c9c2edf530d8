/**
 * Live events as the API and ferryctl show them: ferry_event records from the
 * datapath's ring buffer (bpf/lib/events.h), decoded with the ABI struct and
 * with datapath ids translated to names (VIP name, backend address).
 */
import {
  DROP_REASONS,
  FERRY_AF_INET,
  FERRY_BACKEND_NONE,
  FERRY_EVENT_FLOW,
  FERRY_VIP_NONE,
  FLOW_REASONS,
  FerryEvent,
  type FerryEventV,
} from '../datapath/abi.js';
import { formatAddr } from '../datapath/addr.js';

export type EventKind = 'flow' | 'drop';

/** One event. The same shape for flows and drops, so filters and consumers treat them alike. */
export interface MonitorEvent {
  kind: EventKind;
  /** Wall-clock time of the packet (ISO 8601, milliseconds). */
  time: string;
  /** flow: maglev | ct_stale (why the flow went to Maglev); drop: the drop reason (as in /v1/stats). */
  reason: string;
  family: 'ipv4' | 'ipv6';
  /** tcp, udp, icmp, icmpv6, or the IP protocol number. */
  protocol: string;
  /** The client (flows) or the packet's source (drops). */
  source: string;
  source_port: number;
  /** The VIP address (flows) or the packet's destination (drops). */
  destination: string;
  destination_port: number;
  /** VIP name; null when the packet was dropped before its VIP was known, or the VIP is gone. */
  vip: string | null;
  /** The chosen backend's address (flows); null for drops. */
  backend: string | null;
  /** Frame length as received. */
  bytes: number;
}

/** Datapath ids to names, from a store snapshot. */
export interface NameTable {
  vipName(id: number): string | undefined;
  backendAddress(id: number): string | undefined;
  /** The address of a VIP by name, for matching drops that came before the VIP lookup. */
  vipAddress(name: string): string | undefined;
}

export const EMPTY_NAMES: NameTable = {
  vipName: () => undefined,
  backendAddress: () => undefined,
  vipAddress: () => undefined,
};

/** A NameTable from VIP and backend lists (the store snapshot's shapes). */
export function nameTable(
  vips: ReadonlyArray<{ dp_id: number; name: string; address: string }>,
  backends: ReadonlyArray<{ dp_id: number; address: string }>,
): NameTable {
  const vipById = new Map(vips.map((v) => [v.dp_id, v.name]));
  const addrByName = new Map(vips.map((v) => [v.name, v.address]));
  const beById = new Map(backends.map((b) => [b.dp_id, b.address]));
  return {
    vipName: (id) => vipById.get(id),
    backendAddress: (id) => beById.get(id),
    vipAddress: (name) => addrByName.get(name),
  };
}

const PROTOCOLS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };

/**
 * Monotonic (bpf_ktime_get_ns, CLOCK_MONOTONIC) to wall-clock milliseconds.
 * process.hrtime is CLOCK_MONOTONIC too (libuv), so the difference is the
 * event's age.
 */
export function wallClockMs(tsNs: bigint, nowMs = Date.now(), nowMonoNs = process.hrtime.bigint()): number {
  return nowMs - Number(nowMonoNs - tsNs) / 1e6;
}

function reasonName(kind: number, code: number): string {
  if (kind === FERRY_EVENT_FLOW) return FLOW_REASONS[code] ?? `flow_reason_${code}`;
  return DROP_REASONS[code] ?? `drop_reason_${code}`;
}

/** A decoded record, ids translated. Unknown kinds come out as drops (never thrown away silently). */
export function toMonitorEvent(r: FerryEventV, names: NameTable, nowMs?: number, nowMonoNs?: bigint): MonitorEvent {
  const family = r.family === FERRY_AF_INET ? FERRY_AF_INET : 6;
  const kind: EventKind = r.kind === FERRY_EVENT_FLOW ? 'flow' : 'drop';
  return {
    kind,
    time: new Date(Math.round(wallClockMs(r.ts_ns, nowMs, nowMonoNs))).toISOString(),
    reason: reasonName(r.kind, r.reason),
    family: family === FERRY_AF_INET ? 'ipv4' : 'ipv6',
    protocol: PROTOCOLS[r.proto] ?? String(r.proto),
    source: formatAddr(family, r.src),
    source_port: r.sport,
    destination: formatAddr(family, r.dst),
    destination_port: r.dport,
    vip: r.vip_id === FERRY_VIP_NONE ? null : (names.vipName(r.vip_id) ?? null),
    backend: kind === 'flow' && r.backend_id !== FERRY_BACKEND_NONE ? (names.backendAddress(r.backend_id) ?? null) : null,
    bytes: r.frame_len,
  };
}

/** Decodes one ring buffer record; throws a RangeError when it is too short. */
export function decodeEvent(buf: Buffer, names: NameTable, nowMs?: number, nowMonoNs?: bigint): MonitorEvent {
  return toMonitorEvent(FerryEvent.decode(buf), names, nowMs, nowMonoNs);
}

/** What a subscriber wants to see. */
export interface MonitorFilter {
  /** Only events of this VIP (drops before the VIP lookup match by destination address). */
  vip?: string;
  /** Only flows or only drops. */
  kind?: EventKind;
}

export function matches(ev: MonitorEvent, f: MonitorFilter, names: NameTable): boolean {
  if (f.kind !== undefined && ev.kind !== f.kind) return false;
  if (f.vip !== undefined && ev.vip !== f.vip) {
    if (ev.vip !== null) return false;
    const addr = names.vipAddress(f.vip);
    if (addr === undefined || addr !== ev.destination) return false;
  }
  return true;
}

/** "198.18.0.1:80" or "[2001:db8::1]:80"; the bare address when the port is 0. */
export function endpoint(addr: string, port: number): string {
  const a = addr.includes(':') ? `[${addr}]` : addr;
  return port === 0 ? a : `${a}:${port}`;
}

/** One line of text per event, for ferryctl monitor. */
export function formatEvent(ev: MonitorEvent): string {
  const t = ev.time.slice(11, 23);
  const path = `${endpoint(ev.source, ev.source_port)} -> ${endpoint(ev.destination, ev.destination_port)}`;
  const what = ev.kind === 'flow' ? `backend ${ev.backend ?? '?'} (${ev.reason})` : ev.reason;
  return `${t} ${ev.kind.padEnd(4)} ${(ev.vip ?? '-').padEnd(16)} ${ev.protocol.padEnd(6)} ${path}  ${what}`;
}
