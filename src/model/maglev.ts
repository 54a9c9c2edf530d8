/** GET /v1/maglev: this host's Maglev tables as other hosts can compare them (`ferryctl fleet status`). */
export interface MaglevTablesView {
  version: string;
  /** The store's revision, and the one the datapath holds. */
  revision: number;
  applied_revision: number;
  /** The seed of the flow hash and the tables (datapath.hash_seed, else the store's). */
  hash_seed: number;
  vips: Array<{
    name: string;
    address: string;
    port: number;
    protocol: string;
    m: number;
    /** Backends with slots (active, weight > 0). */
    backends: number;
    /** src/maglev tableChecksum: equal on two hosts means the same table. */
    checksum: string;
  }>;
}

/** GET /v1/maglev/{name}: one VIP's table as shares, what its backends get of new flows. */
export interface MaglevSharesView {
  name: string;
  m: number;
  hash_seed: number;
  /** Every backend of the VIP in the datapath's plan, with the table's slots it holds (0: no new flows). */
  backends: Array<{ address: string; slots: number }>;
}
