/**
 * ferryd's configuration: YAML, validated against a JSON schema with every
 * error naming the path of the bad key, defaults filled from the schema
 * (config/ferry.yaml documents the same values; a test keeps them equal),
 * and environment overrides FERRY_<PATH> with "__" between levels.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import { parseDocument } from 'yaml';

export type XdpModeName = 'native' | 'generic' | 'auto';

export interface InterfaceConfig {
  name: string;
  mode: XdpModeName;
  generic_fallback: boolean;
}

export interface FerryConfig {
  state_dir: string;
  bpf: {
    pin_root: string;
    max_vips: number;
    max_backends: number;
    conntrack_entries: number;
    max_policy_rules: number;
    events_ring_bytes: number;
  };
  interfaces: InterfaceConfig[];
  datapath: {
    encap_source_v4: string | null;
    encap_source_v6: string | null;
    gateway_mac: string | null;
    skip_fib: boolean;
    drain_seconds: number;
    reconcile_interval_seconds: number;
    events_flow_sample: number;
    events_per_second: number;
  };
  api: {
    socket: string;
    socket_mode: string;
    listen: string | null;
    tokens_file: string | null;
    tls_cert: string | null;
    tls_key: string | null;
    body_limit: number;
  };
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
const CIDR6 = '^[0-9a-fA-F:.]+/\\d{1,3}$';

/** The config schema; `default`s are the documented defaults. */
export const CONFIG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
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
        events_ring_bytes: { type: 'integer', minimum: 4096, maximum: 1073741824, default: 1048576 },
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
        drain_seconds: { type: 'integer', minimum: 0, maximum: 86400, default: 300 },
        reconcile_interval_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: 30 },
        events_flow_sample: { type: 'integer', minimum: 0, maximum: 4294967295, default: 0 },
        events_per_second: { type: 'integer', minimum: 0, maximum: 1000000, default: 1000 },
      },
    },
    api: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        socket: { type: 'string', pattern: '^/', default: '/run/ferry/ferry.sock' },
        socket_mode: { type: 'string', pattern: '^0?[0-7]{3}$', default: '0660' },
        listen: nullableString('^(\\[[0-9a-fA-F:.]+\\]|[0-9.]+|[A-Za-z0-9.-]+):\\d{1,5}$'),
        tokens_file: nullableString('^/'),
        tls_cert: nullableString('^/'),
        tls_key: nullableString('^/'),
        body_limit: { type: 'integer', minimum: 1024, maximum: 67108864, default: 1048576 },
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
  constructor(readonly source: string, readonly problems: string[]) {
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

/** Semantic checks the schema cannot express. */
function crossChecks(c: FerryConfig): string[] {
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
  for (const [key, text] of [['encap_source_v4', c.datapath.encap_source_v4], ['encap_source_v6', c.datapath.encap_source_v6]] as const) {
    if (!text) continue;
    const prefix = Number(text.split('/')[1]);
    const bits = key === 'encap_source_v4' ? 32 : 128;
    if (prefix > bits || (key === 'encap_source_v6' && prefix < 96)) {
      out.push(`/datapath/${key}: prefix length must be ${key === 'encap_source_v4' ? '0..32' : '96..128 (the last 32 bits vary per flow)'}`);
    }
  }
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

/** Parses and validates a config text. `source` names it in errors. */
export function parseConfig(text: string, source: string, env: NodeJS.ProcessEnv = {}): FerryConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) throw new ConfigError(source, doc.errors.map((e) => e.message.split('\n')[0]!));
  const parsed: unknown = doc.toJS() ?? {};
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(source, ['/: the top level must be a mapping of keys']);
  }
  const raw = parsed as Record<string, unknown>;
  const envProblems = applyEnv(raw, env);
  if (envProblems.length) throw new ConfigError(source, envProblems);
  if (!validate(raw)) throw new ConfigError(source, (validate.errors ?? []).map(describe));
  const config = raw as unknown as FerryConfig;
  const problems = crossChecks(config);
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
