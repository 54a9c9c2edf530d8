/**
 * The fleet store (fleet.etcd): one configuration for several hosts. See
 * src/fleet/README.md. Fleet wires the etcd client, the mirror, the write
 * route and this host's member record, and answers GET /v1/fleet.
 */
import { hostname } from 'node:os';
import { Etcd3, type Namespace } from 'etcd3';
import type { Logger } from 'pino';
import type { FleetConfig } from '../config/index.js';
import type { Controller } from '../control/controller.js';
import type { FleetMember, FleetView } from '../model/fleet.js';
import type { MaglevTablesView } from '../model/maglev.js';
import { FleetMembers, tablesDigest } from './members.js';
import { FleetMirror } from './mirror.js';
import { FleetRoute } from './route.js';

export interface FleetOptions {
  config: FleetConfig;
  controller: Controller;
  drainSeconds: () => number;
  /** The seed this host's datapath uses now. */
  localSeed: () => number;
  /** The fleet's seed replaced this host's (the store holds it): rebuild the tables. */
  onSeed: (seed: number) => void;
  /** This host's tables as GET /v1/maglev shows them. */
  tables: () => MaglevTablesView;
  log: Logger;
}

export class Fleet {
  readonly host: string;
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly mirror: FleetMirror;
  private readonly route: FleetRoute;
  private readonly members: FleetMembers;

  constructor(private readonly o: FleetOptions) {
    const c = o.config;
    this.host = c.host_name ?? hostname();
    const deadline = c.etcd.dial_timeout_ms;
    this.client = new Etcd3({
      hosts: c.etcd.endpoints,
      dialTimeout: deadline,
      // Every unary call is bounded; the watch stream is not.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + deadline }),
    });
    this.ns = this.client.namespace(c.etcd.prefix);
    this.mirror = new FleetMirror({
      ns: this.ns,
      prefix: c.etcd.prefix,
      controller: o.controller,
      drainSeconds: o.drainSeconds,
      localSeed: o.localSeed,
      onSeed: o.onSeed,
      onChange: () => this.poke(),
      log: o.log,
    });
    this.route = new FleetRoute({
      ns: this.ns,
      mirror: this.mirror,
      controller: o.controller,
      host: this.host,
      endpoints: c.etcd.endpoints,
      timeoutMs: c.write_timeout_ms,
    });
    this.members = new FleetMembers({
      ns: this.ns,
      name: this.host,
      ttlSeconds: c.member_ttl_seconds,
      record: () => this.record(),
      log: o.log,
    });
  }

  /** From now on the API's writes go to etcd first. */
  start(): void {
    this.o.controller.route = this.route;
    this.mirror.start();
  }

  async stop(): Promise<void> {
    if (this.o.controller.route === this.route) this.o.controller.route = undefined;
    await this.members.stop();
    await this.mirror.stop();
    this.client.close();
  }

  /** The record may have changed (an apply, the mirror moved). */
  poke(): void {
    if (this.mirror.live) this.members.poke();
  }

  view(): FleetView {
    const m = this.mirror;
    const members = [...m.members.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return {
      host: this.host,
      endpoints: [...this.o.config.etcd.endpoints],
      prefix: this.o.config.etcd.prefix,
      connected: m.live,
      revision: m.revision,
      cluster: m.cluster,
      hash_seed: this.o.localSeed(),
      last_error: m.lastError,
      rejected: [...m.rejected.values()],
      members,
    };
  }

  private record(): Omit<FleetMember, 'updated'> {
    const t = this.o.tables();
    return {
      name: this.host,
      api_url: this.o.config.api_url,
      version: t.version,
      revision: this.mirror.revision,
      store_revision: t.revision,
      applied_revision: t.applied_revision,
      hash_seed: t.hash_seed,
      tables: tablesDigest(t),
      vips: t.vips.length,
    };
  }
}
