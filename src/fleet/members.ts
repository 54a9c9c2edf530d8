/**
 * FleetMembers: this host's record under members/NAME, on a lease of its
 * own, so the record goes when the host does (at once on a clean stop, after
 * member_ttl_seconds otherwise). It says which etcd revision the host
 * mirrors and a digest of its Maglev tables, so `ferryctl fleet status`
 * sees from one host whether every member balances alike.
 */
import { createHash } from 'node:crypto';
import type { Lease, Namespace } from 'etcd3';
import type { Logger } from 'pino';
import type { FleetMember } from '../model/fleet.js';
import type { MaglevTablesView } from '../model/maglev.js';
import { memberKey } from './keys.js';

/** Equal on two hosts when every VIP has the same table (same names, same checksums). */
export function tablesDigest(t: MaglevTablesView): string {
  const h = createHash('sha256');
  for (const v of t.vips) h.update(`${v.name}\0${v.checksum}\n`);
  return h.digest('hex').slice(0, 16);
}

export interface MembersOptions {
  ns: Namespace;
  name: string;
  ttlSeconds: number;
  /** The record as of now (its `updated` is set here). */
  record: () => Omit<FleetMember, 'updated'>;
  log: Logger;
}

export class FleetMembers {
  private lease: Lease | undefined;
  private published = '';
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private stopped = false;

  constructor(private readonly o: MembersOptions) {}

  /** Something the record shows may have changed: publish soon (changes within 200 ms fold into one put). */
  poke(): void {
    if (this.stopped || this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.publish();
    }, 200);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const lease = this.lease;
    this.lease = undefined;
    // Revoking deletes the record at once: the others stop listing this host.
    await lease?.revoke().catch(() => {});
  }

  private async publish(): Promise<void> {
    if (this.busy) {
      this.poke();
      return;
    }
    const record = this.o.record();
    const json = JSON.stringify(record);
    if (json === this.published && this.lease !== undefined) return;
    this.busy = true;
    try {
      const lease = this.lease ?? this.grant();
      await lease.put(memberKey(this.o.name)).value(JSON.stringify({ ...record, updated: new Date().toISOString() }));
      this.published = json;
    } catch (err) {
      this.published = '';
      this.o.log.debug({ err: (err as Error).message }, 'fleet: publishing this member failed; retrying');
      this.retry();
    } finally {
      this.busy = false;
    }
  }

  private grant(): Lease {
    const lease = this.o.ns.lease(this.o.ttlSeconds);
    lease.on('lost', () => {
      if (this.lease !== lease) return;
      this.lease = undefined;
      this.published = '';
      this.retry();
    });
    this.lease = lease;
    return lease;
  }

  private retry(): void {
    if (this.stopped) return;
    const t = setTimeout(() => this.poke(), 1000);
    t.unref();
  }
}
