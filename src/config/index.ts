/**
 * ferryd's configuration: YAML, validated against a JSON schema with every
 * error naming the path of the bad key, defaults filled from the schema
 * (config/ferry.yaml documents the same values; a test keeps them equal),
 * and environment overrides FERRY_<PATH> with "__" between levels.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import { parseDocument } from 'yaml';
import { parsePools } from '../k8s/ipam.js';
import { canonicalIp, isIp, parseCidr } from '../net/addr.js';

export type XdpModeName = 'native' | 'generic' | 'auto';

export interface InterfaceConfig {
  name: string;
  mode: XdpModeName;
  generic_fallback: boolean;
}

export type FerryMode = 'standalone' | 'kubernetes';

/** Node address types NodePort VIPs may use. */
export const NODE_ADDRESS_TYPES = ['InternalIP', 'ExternalIP'] as const;

export interface KubernetesConfig {
  /** A kubeconfig file; null = the pod's service account (KUBERNETES_SERVICE_HOST/PORT). */
  kubeconfig: string | null;
  /** This node's name; null in the file = the NODE_NAME environment variable (resolved by parseConfig). */
  node_name: string | null;
  /** The service.kubernetes.io/service-proxy-name value this proxy serves; null = only unlabelled Services. */
  proxy_name: string | null;
  drain_seconds: number;
  batch_delay_ms: number;
  batch_quiet_ms: number;
  batch_max_events: number;
  resync_seconds: number;
  node_port_address_types: Array<(typeof NODE_ADDRESS_TYPES)[number]>;
  health_check_addresses: string[];
  /** NodePorts and other outside addresses whose endpoints listen on another port: DNAT in an nftables table. */
  nat: { enabled: boolean };
  /**
   * How outside addresses reach endpoints: xdp (direct return, every node runs Ferry), snat (XDP source NAT:
   * replies return through this node, endpoints' nodes need nothing) or nat (the kernel's NAT). A Service may
   * choose for itself with the annotation ferry.io/external-path (xdp or snat).
   */
  external_path: 'xdp' | 'snat' | 'nat';
  /** ClusterIPs through the socket-level load balancer (cgroup sock_addr programs). */
  socket_lb: {
    enabled: boolean;
    /** The cgroup v2 directory whose processes (and descendants') are served; null = the hierarchy's root. */
    cgroup: string | null;
  };
  /** LoadBalancer IP allocation from pools, run by the node holding a Lease (src/k8s/lbipam.ts). */
  lb_ipam: LbIpamConfig;
}

export interface LbIpamConfig {
  enabled: boolean;
  /** Addresses: CIDRs or "first-last" ranges; checked by parsePools (src/k8s/ipam.ts). */
  pools: Array<{ name: string; addresses: string[] }>;
  /** The spec.loadBalancerClass served; null = Services without a class. */
  load_balancer_class: string | null;
  lease: {
    namespace: string;
    name: string;
    duration_seconds: number;
    renew_deadline_seconds: number;
    retry_period_seconds: number;
  };
}

/** A BGP peer of this host (a router): one BIRD protocol. */
export interface BgpNeighbor {
  address: string;
  as: number;
  port: number;
  /** TCP MD5 signature shared with the router; null = none. */
  password: string | null;
  /** eBGP multihop TTL when the router is not on a directly connected network; null = directly connected. */
  multihop: number | null;
}

/**
 * Announcing VIPs by BGP through BIRD 2 (src/bgp): ferryd writes BIRD's
 * whole config (`bird_config`) and has BIRD reload it (`birdc configure`
 * on `bird_socket`) whenever the set of announced VIP addresses changes.
 */
/**
 * One configuration for several hosts (src/fleet): the API's VIPs, backends
 * and policies live under one etcd prefix that every host mirrors into its
 * own store; a write through any host goes to etcd first. No endpoints: a
 * host of its own.
 */
export interface FleetConfig {
  etcd: {
    /** etcd client URLs, e.g. http://10.0.0.5:2379; empty: not a fleet member. */
    endpoints: string[];
    /** The key prefix of this fleet (several fleets may share one etcd). */
    prefix: string;
    dial_timeout_ms: number;
  };
  /** This host's name among the members; null: the system's host name. */
  host_name: string | null;
  /** The URL other members and `ferryctl fleet status` reach this host's API at; null: not published. */
  api_url: string | null;
  /** How long a member's record outlives its last keep-alive. */
  member_ttl_seconds: number;
  /** How long a write waits for etcd before answering 503. */
  write_timeout_ms: number;
}

export interface BgpConfig {
  enabled: boolean;
  bird_config: string;
  bird_socket: string;
  birdc: string;
  /** BIRD's router id (an IPv4 address); null = this host's first IPv4 address on the first interface. */
  router_id: string | null;
  local_as: number;
  neighbors: BgpNeighbor[];
  hold_time_seconds: number;
  connect_retry_seconds: number;
  /** MULTI_EXIT_DISC on every announced VIP; null = none. */
  med: number | null;
  /** "ASN:VALUE" standard communities and "ASN:X:Y" large communities added to every announced VIP. */
  communities: string[];
  /** Next hop of announced IPv4 / IPv6 VIPs; null = this host (BIRD's next hop self). */
  next_hop_v4: string | null;
  next_hop_v6: string | null;
  /** Only VIP addresses inside these CIDRs are announced; [] = all. This host's own addresses never are. */
  prefixes: string[];
  /** A BIRD config file the rendered one includes (site-specific filters, BFD, ...); null = none. */
  include: string | null;
  /** How often BIRD's sessions are read for the API and /metrics. */
  status_interval_seconds: number;
}

export interface FerryConfig {
  mode: FerryMode;
  state_dir: string;
  bpf: {
    pin_root: string;
    max_vips: number;
    max_backends: number;
    conntrack_entries: number;
    max_policy_rules: number;
    maglev_slots: number;
    events_ring_bytes: number;
    snat_entries: number;
  };
  interfaces: InterfaceConfig[];
  datapath: {
    encap_source_v4: string | null;
    encap_source_v6: string | null;
    gateway_mac: string | null;
    skip_fib: boolean;
    nexthop_cache: boolean;
    record_tcp_flows: 'on_syn' | 'after_handshake';
    drain_seconds: number;
    reconcile_interval_seconds: number;
    events_flow_sample: number;
    events_per_second: number;
    /** This host's address for source NAT (VIPs with forwarding snat); null: the first interface's. */
    snat_source_v4: string | null;
    snat_source_v6: string | null;
    /** Ports source NAT takes, "MIN-MAX": keep them out of net.ipv4.ip_local_port_range. */
    snat_ports: string;
    /** The Maglev and flow hash seed; null = the store's own (random at creation). Hosts behind one ECMP router share one. */
    hash_seed: number | null;
  };
  api: {
    socket: string;
    socket_mode: string;
    listen: string | null;
    tokens_file: string | null;
    tls_cert: string | null;
    tls_key: string | null;
    tls_min_version: 'TLSv1.2' | 'TLSv1.3';
    body_limit: number;
    request_timeout_seconds: number;
    rate_limit: { max: number; window_seconds: number };
    probe_listen: string | null;
  };
  kubernetes: KubernetesConfig;
  bgp: BgpConfig;
  fleet: FleetConfig;
  log: {
    level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
    pretty: boolean;
  };
}

const nullableString = (pattern?: string) => ({
  type: ['string', 'null'],
  default: null,
  ...(pattern ? { pattern } : {}),
});

const CIDR4 = '^(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}$';
const HOST_PORT = '^(\\[[0-9a-fA-F:.]+\\]|[0-9.]+|[A-Za-z0-9.-]+):\\d{1,5}$';
/** A Kubernetes object name (DNS subdomain, RFC 1123). */
const K8S_NAME = '^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$';
/** A Kubernetes label value. */
const LABEL_VALUE = '^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$';
const CIDR6 = '^[0-9a-fA-F:.]+/\\d{1,3}$';

/** The config schema; `default`s are the documented defaults. */
export const CONFIG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    mode: { enum: ['standalone', 'kubernetes'], default: 'standalone' },
    state_dir: { type: 'string', minLength: 1, default: '/var/lib/ferry' },
    bpf: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        pin_root: { type: 'string', pattern: '^/', default: '/sys/fs/bpf/ferry' },
        max_vips: { type: 'integer', minimum: 1, maximum: 65536, default: 1024 },
        max_backends: { type: 'integer', minimum: 1, maximum: 1048576, default: 65536 },
        conntrack_entries: { type: 'integer', minimum: 1024, maximum: 100000000, default: 1000000 },
        max_policy_rules: { type: 'integer', minimum: 1, maximum: 1048576, default: 65536 },
        maglev_slots: { type: 'integer', minimum: 1024, maximum: 268435456, default: 4194304 },
        events_ring_bytes: { type: 'integer', minimum: 4096, maximum: 1073741824, default: 1048576 },
        snat_entries: { type: 'integer', minimum: 1024, maximum: 100000000, default: 262144 },
      },
    },
    interfaces: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: {
          name: { type: 'string', pattern: '^[^\\s/]{1,15}$' },
          mode: { enum: ['native', 'generic', 'auto'], default: 'native' },
          generic_fallback: { type: 'boolean', default: false },
        },
      },
    },
    datapath: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        encap_source_v4: nullableString(CIDR4),
        encap_source_v6: nullableString(CIDR6),
        gateway_mac: nullableString('^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$'),
        skip_fib: { type: 'boolean', default: false },
        nexthop_cache: { type: 'boolean', default: true },
        record_tcp_flows: { type: 'string', enum: ['on_syn', 'after_handshake'], default: 'on_syn' },
        drain_seconds: { type: 'integer', minimum: 0, maximum: 86400, default: 300 },
        reconcile_interval_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: 30 },
        events_flow_sample: { type: 'integer', minimum: 0, maximum: 4294967295, default: 0 },
        events_per_second: { type: 'integer', minimum: 0, maximum: 1000000, default: 1000 },
        snat_source_v4: nullableString('^(\\d{1,3}\\.){3}\\d{1,3}$'),
        snat_source_v6: nullableString('^[0-9a-fA-F:.]+$'),
        snat_ports: { type: 'string', pattern: '^\\d{1,5}-\\d{1,5}$', default: '61000-65535' },
        hash_seed: { type: ['integer', 'null'], minimum: 0, maximum: 4294967295, default: null },
      },
    },
    api: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        socket: { type: 'string', pattern: '^/', default: '/run/ferry/ferry.sock' },
        socket_mode: { type: 'string', pattern: '^0?[0-7]{3}$', default: '0660' },
        listen: nullableString(HOST_PORT),
        tokens_file: nullableString('^/'),
        tls_cert: nullableString('^/'),
        tls_key: nullableString('^/'),
        tls_min_version: { enum: ['TLSv1.2', 'TLSv1.3'], default: 'TLSv1.2' },
        body_limit: { type: 'integer', minimum: 1024, maximum: 67108864, default: 1048576 },
        request_timeout_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: 30 },
        rate_limit: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            max: { type: 'integer', minimum: 0, maximum: 1000000, default: 600 },
            window_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: 10 },
          },
        },
        probe_listen: nullableString(HOST_PORT),
      },
    },
    kubernetes: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        kubeconfig: nullableString('^/'),
        node_name: nullableString(K8S_NAME),
        proxy_name: nullableString(LABEL_VALUE),
        drain_seconds: { type: 'integer', minimum: 0, maximum: 86400, default: 30 },
        batch_delay_ms: { type: 'integer', minimum: 0, maximum: 60000, default: 200 },
        batch_quiet_ms: { type: 'integer', minimum: 0, maximum: 60000, default: 10 },
        batch_max_events: { type: 'integer', minimum: 1, maximum: 1000000, default: 10000 },
        resync_seconds: { type: 'integer', minimum: 0, maximum: 86400, default: 600 },
        node_port_address_types: {
          type: 'array',
          uniqueItems: true,
          items: { enum: [...NODE_ADDRESS_TYPES] },
          default: [...NODE_ADDRESS_TYPES],
        },
        health_check_addresses: {
          type: 'array',
          uniqueItems: true,
          maxItems: 16,
          items: { type: 'string', minLength: 2, maxLength: 45 },
          default: ['0.0.0.0', '::'],
        },
        nat: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: { enabled: { type: 'boolean', default: true } },
        },
        external_path: { enum: ['xdp', 'snat', 'nat'], default: 'xdp' },
        socket_lb: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            enabled: { type: 'boolean', default: true },
            cgroup: nullableString('^/'),
          },
        },
        lb_ipam: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            enabled: { type: 'boolean', default: false },
            pools: {
              type: 'array',
              maxItems: 256,
              default: [],
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['name', 'addresses'],
                properties: {
                  name: { type: 'string', pattern: K8S_NAME, maxLength: 63 },
                  addresses: { type: 'array', minItems: 1, maxItems: 1024, items: { type: 'string', minLength: 3, maxLength: 100 } },
                },
              },
            },
            load_balancer_class: nullableString('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?(/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$'),
            lease: {
              type: 'object',
              additionalProperties: false,
              default: {},
              properties: {
                namespace: { type: 'string', pattern: '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$', default: 'kube-system' },
                name: { type: 'string', pattern: K8S_NAME, maxLength: 253, default: 'ferry-lb-ipam' },
                duration_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: 15 },
                renew_deadline_seconds: { type: 'number', exclusiveMinimum: 0, maximum: 3600, default: 10 },
                retry_period_seconds: { type: 'number', exclusiveMinimum: 0, maximum: 600, default: 2 },
              },
            },
          },
        },
      },
    },
    bgp: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        enabled: { type: 'boolean', default: false },
        bird_config: { type: 'string', pattern: '^/', default: '/var/lib/ferry/bird.conf' },
        bird_socket: { type: 'string', pattern: '^/', default: '/run/ferry-bird/bird.ctl' },
        birdc: { type: 'string', minLength: 1, default: 'birdc' },
        router_id: nullableString('^(\\d{1,3}\\.){3}\\d{1,3}$'),
        local_as: { type: 'integer', minimum: 1, maximum: 4294967295, default: 65001 },
        neighbors: {
          type: 'array',
          maxItems: 64,
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['address', 'as'],
            properties: {
              address: { type: 'string', minLength: 2, maxLength: 45 },
              as: { type: 'integer', minimum: 1, maximum: 4294967295 },
              port: { type: 'integer', minimum: 1, maximum: 65535, default: 179 },
              password: {
                type: ['string', 'null'],
                pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]{1,80}$',
                description: 'printable ASCII without quote or backslash',
                default: null,
              },
              multihop: { type: ['integer', 'null'], minimum: 1, maximum: 255, default: null },
            },
          },
        },
        hold_time_seconds: { type: 'integer', minimum: 3, maximum: 65535, default: 9 },
        connect_retry_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: 5 },
        med: { type: ['integer', 'null'], minimum: 0, maximum: 4294967295, default: null },
        communities: {
          type: 'array',
          uniqueItems: true,
          maxItems: 32,
          default: [],
          items: { type: 'string', pattern: '^\\d{1,10}:\\d{1,10}(:\\d{1,10})?$' },
        },
        next_hop_v4: nullableString('^(\\d{1,3}\\.){3}\\d{1,3}$'),
        next_hop_v6: nullableString('^[0-9a-fA-F:.]+$'),
        prefixes: { type: 'array', uniqueItems: true, maxItems: 256, default: [], items: { type: 'string', minLength: 3, maxLength: 49 } },
        include: nullableString('^/[^"\\\\]*$'),
        status_interval_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: 5 },
      },
    },
    fleet: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        etcd: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            endpoints: {
              type: 'array',
              uniqueItems: true,
              maxItems: 16,
              default: [],
              items: { type: 'string', pattern: '^https?://[^\\s/]+$' },
            },
            prefix: { type: 'string', pattern: '^/([A-Za-z0-9._-]+/)*$', maxLength: 200, default: '/ferry/' },
            dial_timeout_ms: { type: 'integer', minimum: 100, maximum: 60000, default: 3000 },
          },
        },
        host_name: nullableString('^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
        api_url: nullableString('^https?://[^\\s/]+$'),
        member_ttl_seconds: { type: 'integer', minimum: 2, maximum: 3600, default: 10 },
        write_timeout_ms: { type: 'integer', minimum: 100, maximum: 120000, default: 5000 },
      },
    },
    log: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'], default: 'info' },
        pretty: { type: 'boolean', default: false },
      },
    },
  },
} as const;

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`invalid configuration ${source}:\n  ${problems.join('\n  ')}`);
  }
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true });
const validate = ajv.compile(CONFIG_SCHEMA);

/** "/api/listen: must match ..." with the offending key named. */
function describe(e: ErrorObject): string {
  const path = e.instancePath || '/';
  if (e.keyword === 'additionalProperties') {
    return `${path === '/' ? '' : path}/${String(e.params['additionalProperty'])}: unknown key`;
  }
  if (e.keyword === 'required') return `${path === '/' ? '' : path}/${String(e.params['missingProperty'])}: is required`;
  if (e.keyword === 'enum') return `${path}: must be one of ${(e.params['allowedValues'] as unknown[]).join(', ')}`;
  return `${path}: ${e.message ?? 'is invalid'}`;
}

const NODE_NAME_RE = new RegExp(K8S_NAME);

/**
 * The Kubernetes mode's checks. The node name comes from the file or from
 * NODE_NAME (the DaemonSet's downward API); credentials from a kubeconfig
 * or, without one, the pod's service account, which needs the variables
 * every pod gets (KUBERNETES_SERVICE_HOST/PORT).
 */
function kubernetesChecks(c: FerryConfig, env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  const k = c.kubernetes;
  k.health_check_addresses.forEach((a, n) => {
    if (!isIp(a)) out.push(`/kubernetes/health_check_addresses/${n}: ${JSON.stringify(a)} is not an IP address`);
  });
  out.push(...lbIpamChecks(k.lb_ipam));
  if (k.external_path === 'nat' && !k.nat.enabled) {
    out.push(
      '/kubernetes/external_path: "nat" serves outside addresses through the kernel\'s NAT, which /kubernetes/nat/enabled turns off',
    );
  }
  if (c.mode !== 'kubernetes') return out;
  if (k.node_name === null) {
    const fromEnv = env['NODE_NAME'];
    if (fromEnv === undefined || fromEnv === '') {
      out.push(
        '/kubernetes/node_name: required in kubernetes mode: set it, or NODE_NAME (in a DaemonSet, from the downward API: spec.nodeName)',
      );
    } else if (!NODE_NAME_RE.test(fromEnv)) {
      out.push(`/kubernetes/node_name: NODE_NAME=${JSON.stringify(fromEnv)} is not a valid node name`);
    } else {
      k.node_name = fromEnv;
    }
  }
  if (k.kubeconfig === null && (!env['KUBERNETES_SERVICE_HOST'] || !env['KUBERNETES_SERVICE_PORT'])) {
    out.push(
      '/kubernetes/kubeconfig: not set, and not running in a pod (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset): ' +
        'give the path of a kubeconfig, or run ferryd in the cluster with a service account',
    );
  }
  return out;
}

/** The allocator's pools parse and do not overlap; the Lease's times are in client-go's order. */
function lbIpamChecks(l: LbIpamConfig): string[] {
  const at = '/kubernetes/lb_ipam';
  const out: string[] = [];
  out.push(...parsePools(l.pools, `${at}/pools`).problems);
  if (l.enabled && l.pools.length === 0) out.push(`${at}/pools: the allocator is enabled but has no pool to give addresses from`);
  const t = l.lease;
  if (t.renew_deadline_seconds >= t.duration_seconds) {
    out.push(
      `${at}/lease/renew_deadline_seconds: must be below duration_seconds (${t.duration_seconds}): a leader must step down before another may take over`,
    );
  }
  if (t.retry_period_seconds >= t.renew_deadline_seconds) {
    out.push(
      `${at}/lease/retry_period_seconds: must be below renew_deadline_seconds (${t.renew_deadline_seconds}): a leader renews several times within its deadline`,
    );
  }
  return out;
}

/** The ports range "MIN-MAX" of /datapath/snat_ports (checked by snatChecks). */
export function snatPortRange(text: string): { min: number; max: number } {
  const [min, max] = text.split('-').map(Number) as [number, number];
  return { min, max };
}

function snatChecks(c: FerryConfig): string[] {
  const out: string[] = [];
  const { min, max } = snatPortRange(c.datapath.snat_ports);
  if (!(min >= 1024 && min <= max && max <= 65535)) {
    out.push(`/datapath/snat_ports: ${c.datapath.snat_ports} must be MIN-MAX with 1024 <= MIN <= MAX <= 65535`);
  }
  if (c.datapath.snat_source_v4 !== null && !isIp(c.datapath.snat_source_v4, 4)) {
    out.push(`/datapath/snat_source_v4: ${c.datapath.snat_source_v4} is not an IPv4 address`);
  }
  if (c.datapath.snat_source_v6 !== null && !isIp(c.datapath.snat_source_v6, 6)) {
    out.push(`/datapath/snat_source_v6: ${c.datapath.snat_source_v6} is not an IPv6 address`);
  }
  return out;
}

const U16 = 65535;
const U32 = 4294967295;

/** The BGP section's checks: addresses and CIDRs parse, communities fit their fields, a session to speak with. */
function bgpChecks(c: FerryConfig): string[] {
  const out: string[] = [];
  const b = c.bgp;
  const seen = new Set<string>();
  b.neighbors.forEach((n, i) => {
    const ip = canonicalIp(n.address);
    if (ip === null) out.push(`/bgp/neighbors/${i}/address: ${JSON.stringify(n.address)} is not an IP address`);
    else if (seen.has(ip)) out.push(`/bgp/neighbors/${i}/address: ${ip} is listed twice`);
    else seen.add(ip);
  });
  if (b.router_id !== null && !isIp(b.router_id, 4)) out.push(`/bgp/router_id: ${b.router_id} is not an IPv4 address`);
  if (b.next_hop_v4 !== null && !isIp(b.next_hop_v4, 4)) out.push(`/bgp/next_hop_v4: ${b.next_hop_v4} is not an IPv4 address`);
  if (b.next_hop_v6 !== null && !isIp(b.next_hop_v6, 6)) out.push(`/bgp/next_hop_v6: ${b.next_hop_v6} is not an IPv6 address`);
  b.communities.forEach((text, i) => {
    const parts = text.split(':').map(Number);
    const ok = parts.length === 2 ? parts.every((p) => p <= U16) : parts.every((p) => p <= U32);
    if (!ok)
      out.push(
        `/bgp/communities/${i}: ${text}: a standard community is ASN:VALUE with both <= ${U16}, a large one ASN:X:Y with each <= ${U32}`,
      );
  });
  b.prefixes.forEach((text, i) => {
    const r = parseCidr(text);
    if (typeof r === 'string') out.push(`/bgp/prefixes/${i}: ${r}`);
  });
  if (b.enabled && b.neighbors.length === 0) out.push('/bgp/neighbors: bgp is enabled but names no neighbor to announce the VIPs to');
  return out;
}

/** Semantic checks the schema cannot express. */
function crossChecks(c: FerryConfig, env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  if (c.api.listen && !c.api.tokens_file) out.push('/api/listen: a TCP listener needs /api/tokens_file (bearer tokens)');
  if ((c.api.tls_cert === null) !== (c.api.tls_key === null)) out.push('/api/tls_cert, /api/tls_key: give both or neither');
  if ((c.api.tls_cert || c.api.tls_key) && !c.api.listen) out.push('/api/tls_cert: TLS applies to the TCP listener; set /api/listen');
  const names = new Set<string>();
  c.interfaces.forEach((i, n) => {
    if (names.has(i.name)) out.push(`/interfaces/${n}/name: ${i.name} is listed twice`);
    names.add(i.name);
  });
  const ring = c.bpf.events_ring_bytes;
  if ((ring & (ring - 1)) !== 0) out.push('/bpf/events_ring_bytes: must be a power of 2 (e.g. 1048576)');
  for (const [key, text] of [
    ['encap_source_v4', c.datapath.encap_source_v4],
    ['encap_source_v6', c.datapath.encap_source_v6],
  ] as const) {
    if (!text) continue;
    const prefix = Number(text.split('/')[1]);
    const bits = key === 'encap_source_v4' ? 32 : 128;
    if (prefix > bits || (key === 'encap_source_v6' && prefix < 96)) {
      out.push(
        `/datapath/${key}: prefix length must be ${key === 'encap_source_v4' ? '0..32' : '96..128 (the last 32 bits vary per flow)'}`,
      );
    }
  }
  if (c.api.probe_listen !== null && c.api.probe_listen === c.api.listen) out.push('/api/probe_listen: must differ from /api/listen');
  out.push(...snatChecks(c));
  out.push(...bgpChecks(c));
  out.push(...kubernetesChecks(c, env));
  return out;
}

/** Applies FERRY_A__B=value overrides; values are YAML scalars ("8080", "true", "null"). */
export function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('FERRY_') || value === undefined || name === 'FERRY_NATIVE_ADDON' || name === 'FERRY_LIBBPF_DEBUG') continue;
    const path = name.slice('FERRY_'.length).toLowerCase().split('__');
    if (path.some((p) => p.length === 0)) {
      problems.push(`${name}: malformed variable name`);
      continue;
    }
    let node = raw;
    for (const key of path.slice(0, -1)) {
      const next = node[key];
      if (next === undefined || next === null) node[key] = {};
      else if (typeof next !== 'object' || Array.isArray(next)) {
        problems.push(`${name}: /${path.join('/')} is not inside an object`);
        node = {};
        break;
      }
      node = node[key] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = parseDocument(value).toJS() as unknown;
  }
  return problems;
}

/**
 * Parses and validates a config text. `source` names it in errors. `env`
 * supplies FERRY_* overrides and, in kubernetes mode, NODE_NAME and the
 * in-cluster variables (see kubernetesChecks).
 */
export function parseConfig(text: string, source: string, env: NodeJS.ProcessEnv = {}): FerryConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0)
    throw new ConfigError(
      source,
      doc.errors.map((e) => e.message.split('\n')[0]!),
    );
  const parsed: unknown = doc.toJS() ?? {};
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(source, ['/: the top level must be a mapping of keys']);
  }
  const raw = parsed as Record<string, unknown>;
  const envProblems = applyEnv(raw, env);
  if (envProblems.length) throw new ConfigError(source, envProblems);
  if (!validate(raw)) throw new ConfigError(source, (validate.errors ?? []).map(describe));
  const config = raw as unknown as FerryConfig;
  const problems = crossChecks(config, env);
  if (problems.length) throw new ConfigError(source, problems);
  return config;
}

/** Reads a config file (missing file: a clear error). */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): FerryConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`cannot read: ${(err as Error).message}`]);
  }
  return parseConfig(text, path, env);
}

/** The defaults: an empty document validated. */
export function defaultConfig(): FerryConfig {
  return parseConfig('{}', 'defaults');
}
