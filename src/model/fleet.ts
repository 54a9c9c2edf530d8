/** One member of the fleet as it publishes itself in etcd (members/NAME), kept while its lease lives. */
export interface FleetMember {
  name: string;
  /** Where its API answers (fleet.api_url), null when not published. */
  api_url: string | null;
  version: string;
  /** The etcd revision its store mirrors. */
  revision: number;
  /** Its own store's revision, and the one its datapath holds (host-local numbers). */
  store_revision: number;
  applied_revision: number;
  hash_seed: number;
  /** A digest of every VIP's Maglev table checksum (GET /v1/maglev): equal on two members, same tables. */
  tables: string;
  vips: number;
  updated: string;
}

/** A key of the fleet's prefix this host could not apply; its old state (or none) stays. */
export interface FleetRejected {
  key: string;
  revision: number;
  reason: string;
}

/** GET /v1/fleet: this host's view of the fleet store. */
export interface FleetView {
  host: string;
  endpoints: string[];
  prefix: string;
  /** Watching etcd now; false: the local store serves what it last mirrored and writes answer 503. */
  connected: boolean;
  /** The etcd revision this host's store mirrors (0: never synced). */
  revision: number;
  /** etcd's cluster id, once seen. */
  cluster: string | null;
  /** The fleet's Maglev seed as this host uses it. */
  hash_seed: number;
  last_error: string | null;
  rejected: FleetRejected[];
  /** Every member with a live record, this host included, by name. */
  members: FleetMember[];
}
