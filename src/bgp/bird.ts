/**
 * BIRD 2, the BGP speaker Ferry announces its VIPs through: the config
 * ferryd renders for it (the whole file: router id, one static protocol per
 * family holding the announced VIPs as blackhole routes, an export filter
 * that sets MED and communities, one BGP protocol per neighbor), and
 * birdc, which asks the running BIRD to reload it and reports its sessions.
 *
 * BIRD's reconfiguration is graceful: sessions stay up and only the routes
 * that changed are announced or withdrawn.
 */
import { execFile } from 'node:child_process';
import type { BgpConfig } from '../config/index.js';
import { ipFamily } from '../net/addr.js';

/** Protocol names ferryd owns in the rendered file. */
export const STATIC4 = 'ferry_vips4';
export const STATIC6 = 'ferry_vips6';
export const peerProtocol = (index: number): string => `ferry_peer${index + 1}`;

export interface BirdInput {
  config: BgpConfig;
  routerId: string;
  /** Addresses to announce (canonical text; /32 or /128 each). */
  announce: readonly string[];
}

/** The community list's BIRD statements: (a,b) standard, (a,b,c) large. */
function communityStatements(list: readonly string[]): string[] {
  return list.map((text) => {
    const parts = text.split(':');
    return parts.length === 2 ? `  bgp_community.add((${parts.join(', ')}));` : `  bgp_large_community.add((${parts.join(', ')}));`;
  });
}

function staticProtocol(name: string, family: 'ipv4' | 'ipv6', addrs: readonly string[]): string[] {
  const bits = family === 'ipv4' ? 32 : 128;
  return [`protocol static ${name} {`, `  ${family};`, ...addrs.map((a) => `  route ${a}/${bits} blackhole;`), '}', ''];
}

function peer(c: BgpConfig, index: number): string[] {
  const n = c.neighbors[index]!;
  const family = ipFamily(n.address) === 4 ? 'ipv4' : 'ipv6';
  const nextHop = family === 'ipv4' ? c.next_hop_v4 : c.next_hop_v6;
  return [
    `protocol bgp ${peerProtocol(index)} {`,
    `  local as ${c.local_as};`,
    `  neighbor ${n.address} port ${n.port} as ${n.as};`,
    n.multihop === null ? '  direct;' : `  multihop ${n.multihop};`,
    ...(n.password === null ? [] : [`  password "${n.password}";`]),
    `  hold time ${c.hold_time_seconds};`,
    `  keepalive time ${Math.max(1, Math.floor(c.hold_time_seconds / 3))};`,
    `  connect delay time 1;`,
    `  connect retry time ${c.connect_retry_seconds};`,
    `  error wait time ${c.connect_retry_seconds}, ${Math.max(c.connect_retry_seconds, 300)};`,
    `  ${family} {`,
    '    import none;',
    '    export filter ferry_export;',
    `    ${nextHop === null ? 'next hop self' : `next hop address ${nextHop}`};`,
    '  };',
    '}',
    '',
  ];
}

/**
 * The whole BIRD config. Everything in it comes from validated config
 * (src/config) and canonical addresses: nothing an API client typed is
 * pasted into it unchecked.
 */
export function renderBirdConfig(i: BirdInput): string {
  const c = i.config;
  const v4 = i.announce.filter((a) => ipFamily(a) === 4);
  const v6 = i.announce.filter((a) => ipFamily(a) === 6);
  return [
    '# Written by ferryd from the bgp section of its config; every change here is overwritten.',
    `router id ${i.routerId};`,
    // Two-token times in `show protocols`, so the status parser reads every line alike.
    'timeformat protocol iso long;',
    '',
    'protocol device ferry_device {',
    '  scan time 10;',
    '}',
    '',
    ...staticProtocol(STATIC4, 'ipv4', v4),
    ...staticProtocol(STATIC6, 'ipv6', v6),
    'filter ferry_export {',
    `  if proto != "${STATIC4}" && proto != "${STATIC6}" then reject;`,
    ...(c.med === null ? [] : [`  bgp_med = ${c.med};`]),
    ...communityStatements(c.communities),
    '  accept;',
    '}',
    '',
    ...c.neighbors.flatMap((_, n) => peer(c, n)),
    ...(c.include === null ? [] : [`include "${c.include}";`, '']),
  ].join('\n');
}

/** One protocol of `birdc show protocols`. */
export interface BirdProtocol {
  name: string;
  proto: string;
  /** up, start, down, flush... */
  state: string;
  since: string;
  /** For BGP: the session state (Established, Active, Connect, ...) then the last error, if any. */
  info: string;
}

/** Parses `birdc show protocols` (with `timeformat protocol iso long`). */
export function parseProtocols(text: string): BirdProtocol[] {
  const out: BirdProtocol[] = [];
  const re = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\s*(.*)$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line.trimEnd());
    if (m) out.push({ name: m[1]!, proto: m[2]!, state: m[4]!, since: m[5]!, info: m[6]!.trim() });
  }
  return out;
}

/** What ferryd asks of BIRD: reload the file, report the sessions. Tests substitute a fake. */
export interface BirdControl {
  /** Has BIRD re-read its config file; throws BirdError with BIRD's own words when it refused or is unreachable. */
  configure(): Promise<void>;
  protocols(): Promise<BirdProtocol[]>;
}

export class BirdError extends Error {
  constructor(
    message: string,
    readonly unreachable: boolean,
  ) {
    super(message);
    this.name = 'BirdError';
  }
}

const BIRDC_TIMEOUT_MS = 10_000;

/** BirdControl through the birdc command on BIRD's control socket. */
export class Birdc implements BirdControl {
  constructor(
    private readonly command: string,
    private readonly socket: string,
  ) {}

  private run(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(this.command, ['-s', this.socket, ...args], { timeout: BIRDC_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
        const text = `${stdout}${stderr}`.trim();
        if (err === null) return resolve(text);
        const spawnFailed = (err as NodeJS.ErrnoException).code === 'ENOENT';
        const unreachable = spawnFailed || /Unable to connect to server control socket/.test(text);
        const why = spawnFailed ? `${this.command} not found (install bird2, or set bgp.birdc)` : text.split('\n').pop() || err.message;
        reject(new BirdError(`birdc ${args.join(' ')}: ${why}`, unreachable));
      });
    });
  }

  async configure(): Promise<void> {
    const text = await this.run(['configure']);
    if (/Reconfigured|Reconfiguration in progress|queueing/.test(text)) return;
    // A parse error (from an operator's include file) leaves BIRD on its previous config.
    const lines = text.split('\n').filter((l) => !/^BIRD .* ready\.$/.test(l) && !l.startsWith('Reading configuration'));
    throw new BirdError(`BIRD refused its config: ${lines.join('; ') || text}`, false);
  }

  async protocols(): Promise<BirdProtocol[]> {
    return parseProtocols(await this.run(['show', 'protocols']));
  }
}
