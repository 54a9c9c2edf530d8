/**
 * The Kubernetes mode as GET /v1/kubernetes shows it, /metrics reads it and
 * ferryctl prints it.
 */
import type { LbIpamView } from './lbipam.js';

/** A Service (namespace/name) the mode does not serve, or serves in part, and why. */
export interface SkippedEntry {
  service: string;
  reason: string;
}

export interface InformerView {
  lists: number;
  watches: number;
  events: number;
  bookmarks: number;
  /** 410 Gone answers (each followed by a re-list). */
  gone: number;
  errors: number;
  synced: boolean;
  objects: number;
  resource_version: string;
}

/** What GET /v1/kubernetes shows (and /metrics reads). */
export interface KubernetesView {
  node_name: string;
  proxy_name: string | null;
  credentials: 'kubeconfig' | 'in-cluster';
  server: string;
  ready: boolean;
  synced: boolean;
  /** Services in the watch cache. */
  services: number;
  informers: { services: InformerView; endpoint_slices: InformerView; nodes: InformerView };
  sync: {
    events: number;
    batches: number;
    transactions: number;
    failed_transactions: number;
    services_written: number;
    last_batch: {
      services: number;
      written: number;
      transactions: number;
      revision: number;
      ms: number;
      refused: number;
      failed_transactions: number;
    } | null;
  };
  cluster_ips: {
    /** ClusterIP × port entries of the latest list. */
    entries: number;
    /** What programs them; null = nothing yet (the list is only kept). */
    consumer: string | null;
    consumer_stats: Record<string, number>;
    last_error: string | null;
  };
  nat: {
    /** Whether ferryd programs the kernel's NAT (kubernetes.nat.enabled). */
    enabled: boolean;
    /** Addresses × ports with endpoints in the nftables table. */
    entries: number;
    last_error: string | null;
  };
  node_endpoints: {
    /** Pairs of other nodes' NodePorts to this node's endpoints. */
    entries: number;
    last_error: string | null;
  };
  health_check_node_ports: {
    requests: number;
    bind_failures: number;
    ports: Array<{
      service: string;
      port: number;
      local_endpoints: number;
      listeners: Array<{ address: string; listening: boolean; error: string | null }>;
      conflict: string | null;
    }>;
  };
  skipped: SkippedEntry[];
  ignored: SkippedEntry[];
  /** The LoadBalancer IP allocator; null when kubernetes.lb_ipam is not enabled. */
  lb_ipam: LbIpamView | null;
}
