/**
 * Which VIP addresses this host announces by BGP, kept up to date from
 * every datapath apply, and BIRD told whenever that set changes.
 *
 * An address is announced while some VIP on it has an active backend
 * (health up, weight > 0: the datapath would balance a new flow) and the
 * host is not drained; addresses outside bgp.prefixes and this host's own
 * addresses (NodePort VIPs) never are. Each apply's plan says which VIPs it
 * planned anew (DpState.changes), so following it costs what changed.
 *
 * BIRD is told by rewriting its config file (atomically) and `birdc
 * configure`; one reload runs at a time and changes arriving meanwhile are
 * folded into the next. The file is written first: a BIRD that is down
 * reads the current set when it starts, and the status timer retries the
 * reload until BIRD holds it. ferryd's own stop leaves BIRD announcing:
 * the datapath keeps forwarding across restarts, as the XDP side does.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { BgpConfig } from '../config/index.js';
import type { BgpNeighborView, BgpPrefixView, BgpView, NotAnnouncedReason } from '../model/bgp.js';
import { hasSlots, type DpState, type DpVip } from '../model/dpstate.js';
import { cidrContains, parseCidr, parseIp, type Cidr, type Ip } from '../net/addr.js';
import { BirdError, peerProtocol, renderBirdConfig, type BirdControl, type BirdProtocol } from './bird.js';

export interface AnnouncerOptions {
  config: BgpConfig;
  routerId: string;
  bird: BirdControl;
  /** Where `drain-host` is kept across restarts (JSON; absent: not drained). */
  drainFile: string;
  /** This host's own addresses (canonical text), never announced. */
  localAddresses: () => ReadonlySet<string>;
  log: Logger;
}

interface VipEntry {
  address: string;
  serving: boolean;
}

interface Drained {
  since: string;
  reason: string | null;
}

function writeAtomically(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const partial = `${path}.partial`;
  const fd = openSync(partial, 'w', 0o640);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(partial, path);
}

export class Announcer {
  private readonly vips = new Map<number, VipEntry>();
  /** Per address: VIPs on it, and those serving. */
  private readonly addresses = new Map<string, { vips: number; serving: number }>();
  private planSerial: number | undefined;
  private readonly ranges: Cidr[];
  private drained: Drained | null;
  private started = false;
  private stopped = false;
  /** The announced set BIRD's file holds, as one sorted string, and whether BIRD has loaded that file. */
  private written: string | null = null;
  private inSync = false;
  /** Some address may have changed its announcement since the set was last computed (so an apply that changed none costs O(changed)). */
  private dirty = true;
  private running: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private sessions: BirdProtocol[] | null = null;
  private reachable = false;
  private reloads = 0;
  private failedReloads = 0;
  private lastReloadAt: string | null = null;
  private lastError: string | null = null;

  constructor(private readonly o: AnnouncerOptions) {
    this.ranges = o.config.prefixes.map((text) => parseCidr(text) as Cidr);
    this.drained = this.readDrain();
  }

  /** Follows one datapath apply (Controller.onApply): only the VIPs it planned anew when it continues the last plan. */
  observe(plan: DpState): void {
    const ch = plan.changes;
    if (ch !== undefined && this.planSerial !== undefined && ch.since === this.planSerial) {
      for (const id of ch.removed) this.forget(id);
      for (const v of ch.vips) this.learn(v);
    } else {
      for (const id of [...this.vips.keys()]) this.forget(id);
      for (const v of plan.vips) this.learn(v);
    }
    this.planSerial = plan.serial;
    this.kick();
  }

  private learn(v: DpVip): void {
    this.forget(v.id);
    // Serving: a new flow to this VIP would find a backend.
    const e = { address: v.address, serving: v.backends.some(hasSlots) };
    this.vips.set(v.id, e);
    const a = this.addresses.get(e.address) ?? { vips: 0, serving: 0 };
    if (a.vips === 0 || (e.serving && a.serving === 0)) this.dirty = true;
    a.vips += 1;
    if (e.serving) a.serving += 1;
    this.addresses.set(e.address, a);
  }

  private forget(id: number): void {
    const e = this.vips.get(id);
    if (e === undefined) return;
    this.vips.delete(id);
    const a = this.addresses.get(e.address)!;
    a.vips -= 1;
    if (e.serving) a.serving -= 1;
    if (a.vips === 0) this.addresses.delete(e.address);
    if (a.vips === 0 || (e.serving && a.serving === 0)) this.dirty = true;
  }

  private reason(address: string, serving: number, local: ReadonlySet<string>): NotAnnouncedReason | null {
    if (local.has(address)) return 'address of this host';
    if (this.ranges.length > 0) {
      const ip = parseIp(address) as Ip;
      if (!this.ranges.some((r) => cidrContains(r, ip))) return 'outside bgp.prefixes';
    }
    if (serving === 0) return 'no active backend';
    if (this.drained !== null) return 'host drained';
    return null;
  }

  /** The addresses to announce now, sorted. */
  announced(): string[] {
    const local = this.o.localAddresses();
    const out: string[] = [];
    for (const [address, a] of this.addresses) if (this.reason(address, a.serving, local) === null) out.push(address);
    return out.sort();
  }

  /** Writes the first file and starts following BIRD; call once the datapath is attached. */
  start(): void {
    this.started = true;
    this.kick();
    const every = this.o.config.status_interval_seconds * 1000;
    this.timer = setInterval(() => void this.refresh(), every);
    this.timer.unref();
    void this.refresh();
  }

  /** Waits for the reload in flight; BIRD keeps its routes (see the module comment). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /** Resolves once BIRD has been told of every change seen so far (or telling it failed). */
  async settled(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  private kick(): void {
    if (!this.started || this.stopped) return;
    if (this.running !== null) {
      this.again = true;
      return;
    }
    if (!this.dirty && this.inSync) return;
    this.dirty = false;
    const want = this.announced();
    if (this.written === want.join(' ') && this.inSync) return;
    this.running = this.sync(want).finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async sync(want: string[]): Promise<void> {
    const key = want.join(' ');
    this.reloads += 1;
    try {
      if (this.written !== key) {
        const file = this.o.config.bird_config;
        try {
          writeAtomically(file, renderBirdConfig({ config: this.o.config, routerId: this.o.routerId, announce: want }));
        } catch (err) {
          throw new Error(`cannot write BIRD's config ${file}: ${(err as Error).message}`);
        }
        this.written = key;
        this.inSync = false;
        this.o.log.info({ announced: want.length }, 'BGP: announced VIP addresses changed; reloading BIRD');
      }
      await this.o.bird.configure();
      this.inSync = true;
      this.reachable = true;
      this.lastError = null;
      this.lastReloadAt = new Date().toISOString();
    } catch (err) {
      // The file could not be written (full disk) or BIRD did not load it: either way BIRD lacks the set.
      this.inSync = false;
      this.failedReloads += 1;
      const message = (err as Error).message;
      if (err instanceof BirdError) this.reachable = !err.unreachable;
      if (message !== this.lastError) this.o.log.error({ err: message }, 'BGP: BIRD did not take the announced set (retried)');
      this.lastError = message;
    }
  }

  /**
   * Reads BIRD's sessions (the status timer; GET /v1/bgp for fresh states),
   * retries a reload BIRD has not taken, recomputes the set.
   */
  async refresh(): Promise<void> {
    if (this.stopped) return;
    try {
      this.sessions = await this.o.bird.protocols();
      this.reachable = true;
    } catch (err) {
      this.sessions = null;
      if (err instanceof BirdError && err.unreachable) this.reachable = false;
    }
    // Also picks up what no apply reports: an address this host gained or lost.
    this.dirty = true;
    this.kick();
  }

  // ---- drain-host -------------------------------------------------------------

  private readDrain(): Drained | null {
    let text: string;
    try {
      text = readFileSync(this.o.drainFile, 'utf8');
    } catch {
      return null;
    }
    try {
      const d = JSON.parse(text) as Partial<Drained>;
      return {
        since: typeof d.since === 'string' ? d.since : new Date().toISOString(),
        reason: typeof d.reason === 'string' ? d.reason : null,
      };
    } catch {
      // A torn or edited file: drained is the safe reading (an operator asked for it).
      this.o.log.warn({ file: this.o.drainFile }, 'BGP: the drain record is unreadable; the host stays drained');
      return { since: new Date().toISOString(), reason: null };
    }
  }

  /** Withdraws every VIP until undrain(); kept across restarts. Idempotent (keeps the first since). */
  drain(reason: string | null): void {
    const d: Drained = { since: this.drained?.since ?? new Date().toISOString(), reason };
    writeAtomically(this.o.drainFile, `${JSON.stringify(d)}\n`);
    this.drained = d;
    this.dirty = true;
    this.o.log.warn({ reason }, 'BGP: host drained; withdrawing every VIP');
    this.kick();
  }

  undrain(): void {
    rmSync(this.o.drainFile, { force: true });
    if (this.drained !== null) this.o.log.warn('BGP: host undrained; announcing its serving VIPs');
    this.drained = null;
    this.dirty = true;
    this.kick();
  }

  // ---- views --------------------------------------------------------------------

  view(): BgpView {
    const c = this.o.config;
    const local = this.o.localAddresses();
    const prefixes: BgpPrefixView[] = [...this.addresses]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([address, a]) => {
        const reason = this.reason(address, a.serving, local);
        return {
          prefix: `${address}/${address.includes(':') ? 128 : 32}`,
          announced: reason === null,
          reason,
          vips: a.vips,
          serving: a.serving,
        };
      });
    const neighbors: BgpNeighborView[] = c.neighbors.map((n, i) => {
      const p = this.sessions?.find((s) => s.name === peerProtocol(i));
      const [session, ...rest] = p?.info.split(/\s+/) ?? [];
      return {
        protocol: peerProtocol(i),
        address: n.address,
        as: n.as,
        state: p?.state ?? null,
        session: session || null,
        established: session === 'Established',
        since: p?.since ?? null,
        info: rest.join(' ') || null,
      };
    });
    return {
      router_id: this.o.routerId,
      local_as: c.local_as,
      drained: this.drained,
      announced: prefixes.filter((p) => p.announced).length,
      prefixes,
      neighbors,
      bird: {
        config: c.bird_config,
        socket: c.bird_socket,
        reachable: this.reachable,
        in_sync: this.inSync,
        reloads: this.reloads,
        failed_reloads: this.failedReloads,
        last_reload_at: this.lastReloadAt,
        last_error: this.lastError,
      },
    };
  }
}
