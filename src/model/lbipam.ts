/** The LoadBalancer IP allocator as GET /v1/kubernetes shows it (`lb_ipam`), and /metrics reads it. */
export interface LbIpamView {
  /** This node runs the allocator (holds the Lease). */
  leader: boolean;
  /** The Lease's holder as this node last read it ("" = released, null = not read yet). */
  holder: string | null;
  /** "namespace/name" of the Lease. */
  lease: string;
  /** Times this node became the leader. */
  transitions: number;
  /** The spec.loadBalancerClass served; null = Services without one. */
  load_balancer_class: string | null;
  pools: Array<{ name: string; addresses: string[]; allocated: number }>;
  /** Served Services (type LoadBalancer, the class above). */
  services: number;
  /** Served Services missing an address, and why. */
  pending: Array<{ service: string; reason: string }>;
  /** Service status writes done by this node. */
  writes: number;
  /** Writes refused because the Service changed meanwhile (retried from the newer version). */
  conflicts: number;
  /** Failed status writes (retried). */
  errors: number;
  /** The last failed status write (until a pass succeeds), else the last failed Lease request (until one succeeds). */
  last_error: string | null;
}
