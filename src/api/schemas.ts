/**
 * Shared JSON schemas: registered with app.addSchema (so routes $ref them and
 * the OpenAPI document lists them under components.schemas, by $id) and with
 * the API's ajv instances. Request schemas are strict (additionalProperties
 * false, formats for addresses); response schemas are plain (fast-json-stringify
 * drops anything not listed, e.g. the store's datapath ids).
 *
 * Semantic rules (multicast/loopback VIPs, CIDR host bits, Maglev primes,
 * duplicates, references) are the store's: they answer 422/409, not 400.
 */
import { MAGLEV_MAX_M, MAGLEV_PRIMES } from '../maglev/index.js';
import {
  ALL_DOWN_MODES, HEALTH_CHECK_TYPES, HEALTH_DEFAULTS, HEALTH_LIMITS,
} from '../model/health.js';
import { FORWARDINGS, MAX_WEIGHT, NAME_PATTERN } from '../model/types.js';

export type JsonSchema = Record<string, unknown>;

export const ref = (id: string): JsonSchema => ({ $ref: `${id}#` });

/** Largest lists accepted in one body; the store enforces the real capacities. */
const MAX_RULES = 4096;
const MAX_ITEMS = 100_000;

export const nameSchema: JsonSchema = {
  type: 'string', pattern: NAME_PATTERN, description: 'Lower-case name, [a-z0-9][a-z0-9._-]{0,62}.',
};
export const ipSchema: JsonSchema = {
  type: 'string', maxLength: 45, anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }], description: 'IPv4 or IPv6 address.',
};
const cidrSchema: JsonSchema = {
  type: 'string', maxLength: 49, format: 'cidr', description: 'IPv4 or IPv6 prefix, address/length (a bare address is a host).',
};
const cidrList: JsonSchema = { type: 'array', maxItems: MAX_RULES, items: cidrSchema };
const revision: JsonSchema = { type: 'integer', minimum: 0 };

const rateLimit: JsonSchema = {
  $id: 'RateLimit',
  type: ['object', 'null'],
  description: 'Per-VIP new-flow rate limit (token bucket); null for none.',
  additionalProperties: false,
  required: ['new_flows_per_sec', 'burst'],
  properties: {
    new_flows_per_sec: { type: 'integer', minimum: 1, maximum: 4294967295, description: 'New flows per second admitted.' },
    burst: { type: 'integer', minimum: 0, maximum: 4294967295, description: 'Flows admitted at once above the rate.' },
  },
};

const HEALTH_STATUSES = ['up', 'down', 'unknown', 'unchecked'];
const nullableText = (max: number, description: string): JsonSchema => ({ type: ['string', 'null'], maxLength: max, description });

/** One schema for the VIP's check and a backend's override (all_down on a backend is a 422 saying why). */
const healthCheck: JsonSchema = {
  $id: 'HealthCheck',
  type: ['object', 'null'],
  description: 'Health check of a VIP\'s backends, or of one backend (replacing its VIP\'s as a whole); null or absent: none. '
    + 'A backend goes down after `fall` consecutive failures and comes back after `rise` consecutive passes; '
    + 'a backend without a verdict yet (new, or after a daemon restart) is in service.',
  additionalProperties: false,
  required: ['type'],
  properties: {
    type: { type: 'string', enum: [...HEALTH_CHECK_TYPES], description: 'tcp: connect; http/https: GET; udp: request and reply; none: no check (in service).' },
    port: { type: ['integer', 'null'], minimum: 1, maximum: 65535, description: 'Port checked on the backend\'s address; null or absent: the VIP\'s port (required for all-port VIPs).' },
    interval_ms: { type: 'integer', minimum: HEALTH_LIMITS.intervalMs[0], maximum: HEALTH_LIMITS.intervalMs[1], description: `Between the starts of two checks, ms (default ${HEALTH_DEFAULTS.interval_ms}).` },
    timeout_ms: { type: 'integer', minimum: HEALTH_LIMITS.timeoutMs[0], maximum: HEALTH_LIMITS.timeoutMs[1], description: `A check not done by then fails, ms; at most interval_ms (default ${HEALTH_DEFAULTS.timeout_ms}).` },
    rise: { type: 'integer', minimum: HEALTH_LIMITS.count[0], maximum: HEALTH_LIMITS.count[1], description: `Consecutive passes to come back (default ${HEALTH_DEFAULTS.rise}).` },
    fall: { type: 'integer', minimum: HEALTH_LIMITS.count[0], maximum: HEALTH_LIMITS.count[1], description: `Consecutive failures to go down (default ${HEALTH_DEFAULTS.fall}).` },
    path: { type: 'string', maxLength: HEALTH_LIMITS.text, description: 'http/https: path of the GET (default "/").' },
    host: nullableText(HEALTH_LIMITS.host, 'http/https: Host header and TLS server name (default: the backend\'s address). Certificates are not verified.'),
    expect_status: { type: 'string', maxLength: 7, description: `http/https: accepted status, "200" or a range "200-399" (default "${HEALTH_DEFAULTS.expect_status}").` },
    expect_body: nullableText(HEALTH_LIMITS.text, 'http/https: text the body must contain (first 256 KiB).'),
    send: { type: 'string', maxLength: HEALTH_LIMITS.datagram, description: 'udp: the datagram sent, as text (this or send_hex).' },
    send_hex: { type: 'string', maxLength: HEALTH_LIMITS.datagram * 2, description: 'udp: the datagram sent, as hex bytes.' },
    expect_reply: nullableText(HEALTH_LIMITS.text, 'udp: text the reply must contain; without it any reply passes.'),
    dsr: {
      type: 'boolean',
      description: 'Send the check through the direct-server-return path: to the VIP, encapsulated to the backend as client traffic is, '
        + 'so it also covers the backend\'s decapsulation and its VIP address (default false: the backend\'s own address). '
        + 'The backend must be of the VIP\'s address family and reached through an interface ferryd attaches to.',
    },
    all_down: {
      type: 'string', enum: [...ALL_DOWN_MODES],
      description: 'VIP only. When every backend that takes new flows is down: keep (default) leaves them all in the table (fail open); drop takes them out and new flows are dropped (no_backend).',
    },
  },
};

const backendHealth: JsonSchema = {
  $id: 'BackendHealth', type: 'object',
  description: 'Runtime health (not stored; rebuilt by checking after a restart). unknown: no verdict yet, in service; unchecked: no check.',
  required: ['status', 'since', 'last_check', 'last_error', 'last_duration_ms'],
  properties: {
    status: { type: 'string', enum: HEALTH_STATUSES },
    since: { type: ['string', 'null'], format: 'date-time', description: 'When the status was entered.' },
    last_check: { type: ['string', 'null'], format: 'date-time', description: 'When the last check finished.' },
    last_error: { type: ['string', 'null'], description: 'Why the last check failed; null if it passed.' },
    last_duration_ms: { type: ['number', 'null'], description: 'Duration of the last check.' },
  },
};

const healthEvent: JsonSchema = {
  $id: 'HealthEvent', type: 'object', description: 'A backend going down or coming back.',
  required: ['id', 'time', 'vip', 'backend', 'from', 'to', 'reason'],
  properties: {
    id: { type: 'integer', description: 'Increases with time.' },
    time: { type: 'string', format: 'date-time' },
    vip: { type: 'string' },
    backend: { type: 'string' },
    from: { type: 'string', enum: HEALTH_STATUSES },
    to: { type: 'string', enum: HEALTH_STATUSES },
    reason: { type: ['string', 'null'] },
  },
};

const vipProps: Record<string, JsonSchema> = {
  name: nameSchema,
  address: ipSchema,
  port: { type: 'integer', minimum: 0, maximum: 65535, description: '0 = every port of the protocol.' },
  protocol: { type: 'string', enum: ['tcp', 'udp'] },
  encap: { type: 'string', enum: ['ipip'], description: 'Encapsulation towards backends (default ipip: IPIP, IP6IP6, 4in6, 6in4 by family).' },
  forwarding: {
    type: 'string', enum: [...FORWARDINGS],
    description: 'dsr (default): encapsulated, backends answer clients directly. snat: source NAT to the backend\'s address and port, '
      + 'for backends that cannot decapsulate; replies return through this host.',
  },
  allow: { ...cidrList, description: 'Source prefixes allowed; when any is set, other sources are dropped.' },
  deny: { ...cidrList, description: 'Source prefixes dropped.' },
  policies: { type: 'array', maxItems: 64, items: nameSchema, description: 'Names of policies whose rules add to this VIP\'s.' },
  rate_limit: ref('RateLimit'),
  maglev_m: {
    type: ['integer', 'null'], minimum: 1, maximum: MAGLEV_MAX_M,
    description: `Maglev table size, one of ${MAGLEV_PRIMES.join(', ')}; null or absent: chosen from the backend count.`,
  },
  source_affinity: { type: 'boolean', description: 'Hash addresses only: all connections of a client reach one backend.' },
  health_check: ref('HealthCheck'),
};

const backendProps: Record<string, JsonSchema> = {
  address: ipSchema,
  weight: { type: 'integer', minimum: 0, maximum: MAX_WEIGHT, description: 'Relative share of new flows; 0 = none. Default 100.' },
  state: { type: 'string', enum: ['active', 'draining', 'disabled'], description: 'active (default): new and existing flows; draining: existing only; disabled: none.' },
  port: {
    type: 'integer', minimum: 0, maximum: 65535,
    description: 'The port it listens on when not the VIP\'s: its host translates (needs host), or this host with forwarding snat. 0 or absent: the VIP\'s port.',
  },
  host: {
    type: ['string', 'null'], maxLength: 64,
    description: 'Where it runs when it is not its own host: "local" (this host) or the address of its host (the next hop; a node running Ferry translates). Absent or null: it decapsulates itself.',
  },
  health_check: ref('HealthCheck'),
};

const policyProps: Record<string, JsonSchema> = { name: nameSchema, allow: cidrList, deny: cidrList };

const strict = (id: string, description: string, properties: Record<string, JsonSchema>, required: string[]): JsonSchema => ({
  $id: id, type: 'object', description, additionalProperties: false, required, properties,
});

const meta: Record<string, JsonSchema> = {
  created_revision: revision,
  updated_revision: revision,
  owner: { type: ['string', 'null'], description: 'null for API resources; "kubernetes:NS/NAME" for those the Kubernetes mode owns (read-only here).' },
};

const record = (
  id: string, description: string, properties: Record<string, JsonSchema>, optional: Record<string, JsonSchema> = {},
): JsonSchema => ({
  $id: id, type: 'object', description, required: Object.keys(properties), properties: { ...properties, ...optional },
});

const page = (id: string, item: string): JsonSchema => ({
  $id: id, type: 'object', required: ['items', 'next'],
  properties: {
    items: { type: 'array', items: ref(item) },
    next: { type: ['string', 'null'], description: 'Cursor of the next page (pass as ?cursor=); null on the last page.' },
  },
});

const write = (id: string, key: string, item: string, what: string): JsonSchema => ({
  $id: id, type: 'object', required: ['revision', key],
  description: `Answer to a write of a ${what}: the revision now live (committed and applied) and the ${what} as stored (for DELETE: as it was).`,
  properties: { revision, [key]: ref(item) },
});

const str = { type: 'string' };
const int = { type: 'integer' };
const num = { type: 'number' };
const strList = { type: 'array', items: str };

const informer: JsonSchema = {
  type: 'object',
  required: ['synced', 'objects', 'resource_version', 'lists', 'watches', 'events', 'bookmarks', 'gone', 'errors'],
  properties: {
    synced: { type: 'boolean', description: 'Listed at least once.' },
    objects: { type: 'integer', description: 'Objects in the cache.' },
    resource_version: { type: 'string', description: 'The resourceVersion the watch resumes from.' },
    lists: int, watches: int, events: { type: 'integer', description: 'Changes delivered to the sync.' },
    bookmarks: int, gone: { type: 'integer', description: '410 Gone answers (each followed by a re-list).' },
    errors: { type: 'integer', description: 'Failed lists and watches (retried with backoff).' },
  },
};

const skippedList = (description: string): JsonSchema => ({
  type: 'array', description,
  items: { type: 'object', required: ['service', 'reason'], properties: { service: { type: 'string', description: 'namespace/name' }, reason: str } },
});

const kubernetes: JsonSchema = {
  $id: 'Kubernetes', type: 'object',
  description: 'The Kubernetes mode: watch and sync state, the ClusterIP list, health-check node ports, and what is not served and why.',
  required: [
    'node_name', 'proxy_name', 'credentials', 'server', 'ready', 'synced', 'services', 'informers', 'sync', 'cluster_ips',
    'nat', 'node_endpoints', 'health_check_node_ports', 'skipped', 'ignored', 'lb_ipam',
  ],
  properties: {
    node_name: str,
    proxy_name: { type: ['string', 'null'], description: 'The service.kubernetes.io/service-proxy-name served; null: only unlabelled Services.' },
    credentials: { type: 'string', enum: ['kubeconfig', 'in-cluster'] },
    server: { type: 'string', description: 'The API server\'s URL.' },
    ready: { type: 'boolean', description: 'Every informer listed and the first batch is written (as /readyz).' },
    synced: { type: 'boolean', description: 'Every informer listed at least once.' },
    services: { type: 'integer', description: 'Services in the watch cache.' },
    informers: {
      type: 'object', required: ['services', 'endpoint_slices', 'nodes'],
      properties: { services: informer, endpoint_slices: informer, nodes: informer },
    },
    sync: {
      type: 'object', required: ['events', 'batches', 'transactions', 'failed_transactions', 'services_written', 'last_batch'],
      properties: {
        events: int, batches: int,
        transactions: { type: 'integer', description: 'Store transactions that committed a change.' },
        failed_transactions: { type: 'integer', description: 'Transactions refused as a whole (requeued, retried).' },
        services_written: int,
        last_batch: {
          type: ['object', 'null'],
          required: ['services', 'written', 'transactions', 'revision', 'ms', 'refused', 'failed_transactions'],
          properties: { services: int, written: int, transactions: int, revision: int, ms: num, refused: int, failed_transactions: int },
        },
      },
    },
    cluster_ips: {
      type: 'object', required: ['entries', 'consumer', 'consumer_stats', 'last_error'],
      properties: {
        entries: { type: 'integer', description: 'ClusterIP × port entries in the latest list (the socket-LB\'s input).' },
        consumer: { type: ['string', 'null'], description: 'What programs them; null: the list is only kept.' },
        consumer_stats: { type: 'object', additionalProperties: num },
        last_error: { type: ['string', 'null'] },
      },
    },
    nat: {
      type: 'object', required: ['enabled', 'entries', 'last_error'],
      description: 'The kernel\'s NAT (nftables table inet ferry_k8s) for NodePorts, LoadBalancer IPs and externalIPs (kubernetes.external_path nat).',
      properties: {
        enabled: { type: 'boolean' },
        entries: { type: 'integer', description: 'Addresses × ports with endpoints in the table.' },
        last_error: { type: ['string', 'null'], description: 'Why the last update failed (retried); null when it applied.' },
      },
    },
    node_endpoints: {
      type: 'object', required: ['entries', 'last_error'],
      description: 'Pairs this node\'s port-translation programs hold for frontends that are no VIP here: other nodes\' addresses × NodePort to this node\'s endpoints.',
      properties: {
        entries: int,
        last_error: { type: ['string', 'null'], description: 'Why the last write failed (retried with the next batch); null when it applied.' },
      },
    },
    health_check_node_ports: {
      type: 'object', required: ['requests', 'bind_failures', 'ports'],
      properties: {
        requests: int,
        bind_failures: { type: 'integer', description: 'Failed binds (each retried with backoff).' },
        ports: {
          type: 'array',
          items: {
            type: 'object', required: ['service', 'port', 'local_endpoints', 'listeners', 'conflict'],
            properties: {
              service: str, port: int,
              local_endpoints: { type: 'integer', description: 'Ready endpoints on this node: 200 when > 0, else 503.' },
              listeners: {
                type: 'array',
                items: {
                  type: 'object', required: ['address', 'listening', 'error'],
                  properties: { address: str, listening: { type: 'boolean' }, error: { type: ['string', 'null'] } },
                },
              },
              conflict: { type: ['string', 'null'], description: 'Another Service holds this port; this one is not served.' },
            },
          },
        },
      },
    },
    skipped: skippedList('What is not served and why: translation limits (e.g. port translation) and store refusals.'),
    ignored: skippedList('Services that are not ours: headless, ExternalName, another service-proxy-name.'),
    lb_ipam: {
      type: ['object', 'null'],
      description: 'LoadBalancer IP allocation from pools (kubernetes.lb_ipam), run by the node holding the Lease; null when not enabled.',
      required: ['leader', 'holder', 'lease', 'transitions', 'load_balancer_class', 'pools', 'services', 'pending', 'writes', 'conflicts', 'errors', 'last_error'],
      properties: {
        leader: { type: 'boolean', description: 'This node holds the Lease and writes the Services\' status.' },
        holder: { type: ['string', 'null'], description: 'The Lease\'s holder as last read ("" = released; null = not read yet).' },
        lease: { type: 'string', description: '"namespace/name" of the Lease.' },
        transitions: { type: 'integer', description: 'Times this node became the leader.' },
        load_balancer_class: { type: ['string', 'null'], description: 'The spec.loadBalancerClass served; null: Services without one.' },
        pools: {
          type: 'array',
          items: {
            type: 'object', required: ['name', 'addresses', 'allocated'],
            properties: { name: str, addresses: { type: 'array', items: str }, allocated: { type: 'integer', description: 'Addresses given out.' } },
          },
        },
        services: { type: 'integer', description: 'Served Services (type LoadBalancer, the class above).' },
        pending: skippedList('Served Services missing an address, and why (pool exhausted, asked-for address taken or outside the pools).'),
        writes: { type: 'integer', description: 'Service status writes by this node.' },
        conflicts: { type: 'integer', description: 'Writes refused because the Service changed meanwhile (redone from the newer version).' },
        errors: { type: 'integer', description: 'Failed status writes (retried with backoff).' },
        last_error: { type: ['string', 'null'], description: 'The last failed status write, else the last failed Lease request while it is the latest; null: none.' },
      },
    },
  },
};

const nullableStr: JsonSchema = { type: ['string', 'null'] };

const bgp: JsonSchema = {
  $id: 'Bgp', type: 'object',
  description: 'The BGP announcement of this host\'s VIPs through BIRD: every VIP address, announced or why not; the sessions; the host drain.',
  required: ['router_id', 'local_as', 'drained', 'announced', 'prefixes', 'neighbors', 'bird'],
  properties: {
    router_id: str,
    local_as: int,
    drained: {
      type: ['object', 'null'], required: ['since', 'reason'],
      description: 'Set by PUT /v1/bgp/drain (ferryctl drain-host): every VIP withdrawn until DELETE; null: not drained.',
      properties: { since: { type: 'string', format: 'date-time' }, reason: nullableStr },
    },
    announced: { type: 'integer', description: 'Addresses announced now.' },
    prefixes: {
      type: 'array',
      items: {
        type: 'object', required: ['prefix', 'announced', 'reason', 'vips', 'serving'],
        properties: {
          prefix: str,
          announced: { type: 'boolean' },
          reason: {
            type: ['string', 'null'], enum: ['no active backend', 'host drained', 'outside bgp.prefixes', 'address of this host', null],
            description: 'Why it is not announced; null when it is.',
          },
          vips: { type: 'integer', description: 'VIPs on this address.' },
          serving: { type: 'integer', description: 'Those with an active backend (up, weight > 0).' },
        },
      },
    },
    neighbors: {
      type: 'array',
      items: {
        type: 'object', required: ['protocol', 'address', 'as', 'state', 'session', 'established', 'since', 'info'],
        properties: {
          protocol: { type: 'string', description: 'BIRD\'s protocol name.' },
          address: str, as: int,
          state: { ...nullableStr, description: 'BIRD\'s protocol state (up, start, down); null: BIRD not asked yet or unreachable.' },
          session: { ...nullableStr, description: 'Established, Active, Connect, Idle, ...' },
          established: { type: 'boolean' },
          since: nullableStr,
          info: { ...nullableStr, description: 'BIRD\'s last error on the session.' },
        },
      },
    },
    bird: {
      type: 'object',
      required: ['config', 'socket', 'reachable', 'in_sync', 'reloads', 'failed_reloads', 'last_reload_at', 'last_error'],
      properties: {
        config: { type: 'string', description: 'The config file ferryd writes for BIRD.' },
        socket: { type: 'string', description: 'BIRD\'s control socket.' },
        reachable: { type: 'boolean', description: 'BIRD answered on its socket.' },
        in_sync: { type: 'boolean', description: 'BIRD has loaded the current file.' },
        reloads: int, failed_reloads: int,
        last_reload_at: nullableStr,
        last_error: { ...nullableStr, description: 'Why the last reload failed (retried); null when it succeeded.' },
      },
    },
  },
};

const maglevTables: JsonSchema = {
  $id: 'MaglevTables', type: 'object',
  description: 'This host\'s Maglev tables as hosts behind one router compare them: equal seed and checksums mean a flow gets the same backend on either.',
  required: ['version', 'revision', 'applied_revision', 'hash_seed', 'vips'],
  properties: {
    version: str, revision: int, applied_revision: int,
    hash_seed: { type: 'integer', description: 'The seed of the flow hash and the tables (datapath.hash_seed, else the store\'s own).' },
    vips: {
      type: 'array',
      items: {
        type: 'object', required: ['name', 'address', 'port', 'protocol', 'm', 'backends', 'checksum'],
        properties: {
          name: str, address: str, port: int, protocol: str,
          m: { type: 'integer', description: 'Table size.' },
          backends: { type: 'integer', description: 'Backends with slots (active, weight > 0).' },
          checksum: { type: 'string', description: 'Of M, the seed and each slotted backend\'s address and weight (not this host\'s ids).' },
        },
      },
    },
  },
};

const maglevShares: JsonSchema = {
  $id: 'MaglevShares', type: 'object',
  description: 'One VIP\'s Maglev table as slots per backend: a backend\'s share of new flows is its slots over m.',
  required: ['name', 'm', 'hash_seed', 'backends'],
  properties: {
    name: str, m: { type: 'integer', description: 'Table size.' }, hash_seed: int,
    backends: {
      type: 'array',
      items: {
        type: 'object', required: ['address', 'slots'],
        properties: { address: str, slots: { type: 'integer', description: 'Slots held; 0 for a draining, down or weight-0 backend.' } },
      },
    },
  },
};

const whoami: JsonSchema = {
  $id: 'Whoami', type: 'object', required: ['actor', 'writes'],
  properties: {
    actor: { type: 'string', description: 'As the audit log names this caller: api:local (unix socket) or api:token#N (the Nth token of api.tokens_file).' },
    writes: { type: 'boolean', description: 'The caller may write (a token not marked read in api.tokens_file, or the unix socket).' },
  },
};

const fleet: JsonSchema = {
  $id: 'Fleet', type: 'object',
  description: 'This host\'s view of the fleet store (fleet.etcd): what it mirrors, keys it could not apply, and every live member.',
  required: ['host', 'endpoints', 'prefix', 'connected', 'revision', 'cluster', 'hash_seed', 'last_error', 'rejected', 'members'],
  properties: {
    host: { type: 'string', description: 'This member\'s name (fleet.host_name).' },
    endpoints: { type: 'array', items: str },
    prefix: str,
    connected: { type: 'boolean', description: 'Watching etcd now; false: serving the last mirrored state, writes answer 503.' },
    revision: { type: 'integer', description: 'The etcd revision this host\'s store mirrors (0: never synced).' },
    cluster: nullableStr,
    hash_seed: { type: 'integer', description: 'The Maglev seed this host uses (the fleet\'s, unless datapath.hash_seed overrides it).' },
    last_error: nullableStr,
    rejected: {
      type: 'array', description: 'Keys this host could not apply; their old state (or none) stays.',
      items: { type: 'object', required: ['key', 'revision', 'reason'], properties: { key: str, revision: int, reason: str } },
    },
    members: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'api_url', 'version', 'revision', 'store_revision', 'applied_revision', 'hash_seed', 'tables', 'vips', 'updated'],
        properties: {
          name: str, api_url: nullableStr, version: str,
          revision: { type: 'integer', description: 'The etcd revision it mirrors.' },
          store_revision: int, applied_revision: int, hash_seed: int,
          tables: { type: 'string', description: 'A digest of its VIPs\' table checksums: equal on two members, same tables.' },
          vips: int, updated: str,
        },
      },
    },
  },
};

export const sharedSchemas: JsonSchema[] = [
  {
    $id: 'FieldError', type: 'object', required: ['field', 'reason'],
    properties: {
      field: { type: 'string', description: 'JSON pointer into the body ("/backends/2/weight"), or "query/NAME", "path/NAME", "header/NAME".' },
      reason: str,
    },
  },
  {
    $id: 'Problem', type: 'object', required: ['type', 'title', 'status'],
    description: 'RFC 9457 problem details (served as application/problem+json).',
    properties: {
      type: { type: 'string', description: 'https://ferry.invalid/problems/<type> or about:blank.' },
      title: str, status: int, detail: str,
      instance: { type: 'string', description: 'The request URL.' },
      errors: { type: 'array', items: ref('FieldError') },
    },
  },
  rateLimit,
  healthCheck,
  backendHealth,
  healthEvent,
  strict('VipSpec', 'A VIP as written (POST /v1/vips).', vipProps, ['name', 'address', 'port', 'protocol']),
  strict('VipReplace', 'A VIP as written to PUT /v1/vips/{name}: the name comes from the URL (if present it must match).', vipProps, ['address', 'port', 'protocol']),
  record('VipRecord', 'A stored VIP. health_check is present when configured, with every default filled.', {
    name: str, address: str, port: int, protocol: str, encap: str, allow: strList, deny: strList, policies: strList,
    rate_limit: {
      type: ['object', 'null'], required: ['new_flows_per_sec', 'burst'],
      properties: { new_flows_per_sec: int, burst: int },
    },
    maglev_m: { type: ['integer', 'null'] },
    source_affinity: { type: 'boolean' },
    backend_count: { type: 'integer', description: 'Backends of the VIP, any state.' },
    ...meta,
  }, { health_check: ref('HealthCheck'), forwarding: { type: 'string', enum: [...FORWARDINGS], description: 'Present when not dsr.' } }),
  strict('BackendSpec', 'A backend as written (POST /v1/vips/{name}/backends).', backendProps, ['address']),
  strict('BackendReplace', 'A backend as written to PUT .../backends/{address}: the address comes from the URL (if present it must match).', backendProps, []),
  record('BackendRecord', 'A stored backend. health_check is present when it overrides its VIP\'s check; GET answers add its runtime health.', { vip: str, address: str, weight: int, state: str, ...meta }, {
    port: { type: 'integer', description: 'Present when not the VIP\'s port.' },
    host: { type: 'string', description: 'Present when set: "local" or its host\'s address.' },
    health_check: ref('HealthCheck'),
    health: ref('BackendHealth'),
  }),
  strict('PolicySpec', 'A named set of source rules VIPs can reference (POST /v1/policies).', policyProps, ['name']),
  strict('PolicyReplace', 'A policy as written to PUT /v1/policies/{name}: the name comes from the URL (if present it must match).', policyProps, []),
  record('PolicyRecord', 'A stored policy.', { name: str, allow: strList, deny: strList, ...meta }),
  page('VipPage', 'VipRecord'),
  page('BackendPage', 'BackendRecord'),
  page('PolicyPage', 'PolicyRecord'),
  page('HealthEventPage', 'HealthEvent'),
  write('VipWrite', 'vip', 'VipRecord', 'VIP'),
  write('BackendWrite', 'backend', 'BackendRecord', 'backend'),
  write('PolicyWrite', 'policy', 'PolicyRecord', 'policy'),
  strict('VipWithBackends', 'A VIP with its backends, as in a desired state.', {
    ...vipProps,
    backends: { type: 'array', maxItems: MAX_ITEMS, items: ref('BackendSpec') },
  }, ['name', 'address', 'port', 'protocol']),
  strict('DesiredState', 'The whole desired state (PUT /v1/state, ferryctl apply -f).', {
    vips: { type: 'array', maxItems: MAX_ITEMS, items: ref('VipWithBackends') },
    policies: { type: 'array', maxItems: MAX_ITEMS, items: ref('PolicySpec') },
  }, ['vips']),
  {
    $id: 'StateChange', type: 'object', required: ['op', 'kind', 'name'],
    properties: {
      op: { type: 'string', enum: ['create', 'update', 'delete'] },
      kind: { type: 'string', enum: ['vip', 'backend', 'policy'] },
      name: { type: 'string', description: 'VIP name, "vip/address" for backends, policy name.' },
    },
  },
  {
    $id: 'StateResult', type: 'object', required: ['revision', 'dry_run', 'changes'],
    description: 'The diff of a declarative apply. dry_run true: nothing was changed and revision is the current one.',
    properties: { revision, dry_run: { type: 'boolean' }, changes: { type: 'array', items: ref('StateChange') } },
  },
  {
    $id: 'Status', type: 'object',
    required: ['version', 'revision', 'applied_revision', 'uptime_seconds', 'interfaces', 'maps', 'last_reconcile'],
    properties: {
      version: str,
      revision: { type: 'integer', description: 'Last revision committed in the store.' },
      applied_revision: { type: 'integer', description: 'Revision the datapath holds.' },
      uptime_seconds: num,
      interfaces: {
        type: 'array',
        items: { type: 'object', required: ['name', 'xdp_mode'], properties: { name: str, xdp_mode: str } },
      },
      maps: {
        type: 'array',
        items: { type: 'object', required: ['name', 'max_entries'], properties: { name: str, max_entries: int, used: int } },
      },
      last_reconcile: {
        type: 'object', required: ['changes', 'duration_ms'], properties: { changes: int, duration_ms: num },
        description: 'The last comparison of the maps with the store (start-up, the periodic pass, health changes): map entries it changed, i.e. drift repaired, and its time. Writes are not counted here.',
      },
    },
  },
  {
    $id: 'Stats', type: 'object', required: ['vips', 'drops'],
    properties: {
      vips: {
        type: 'array',
        items: {
          type: 'object',
          required: ['name', 'packets', 'bytes', 'new_flows', 'ct_hits', 'ct_misses', 'drops', 'backends'],
          properties: {
            name: str, packets: num, bytes: num, new_flows: num, ct_hits: num, ct_misses: num, drops: num,
            rate_pps: { type: 'number', description: 'Packets per second over the last sampling interval.' },
            backends: {
              type: 'array',
              items: {
                type: 'object', required: ['address', 'packets', 'bytes', 'new_flows'],
                properties: { address: str, packets: num, bytes: num, new_flows: num },
              },
            },
          },
        },
      },
      drops: { type: 'object', additionalProperties: num, description: 'Datapath drops by reason (packets).' },
      counters: {
        type: 'object', additionalProperties: num,
        description: 'Global datapath counters (packets): rx, passes by kind, tx, redirect, fib_fallback, icmp_echo, icmp_steered, ct_stale, events, events_suppressed, events_lost, fib_lookup, syn_unrecorded.',
      },
    },
  },
  {
    $id: 'Health', type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['ok'] } },
  },
  kubernetes,
  bgp,
  maglevTables,
  maglevShares,
  whoami,
  fleet,
];
