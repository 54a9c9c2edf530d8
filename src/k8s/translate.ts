/**
 * Kubernetes → Ferry: pure translation of Services, their EndpointSlices
 * and this node's Node object into Ferry's desired state. No I/O, no clock:
 * the same objects always give the same output, in a deterministic order.
 *
 * Ownership. Every Service is its own store owner, `kubernetes:<ns>/<name>`
 * (the ResourceMeta.owner convention): its VIPs, their backends and its
 * source-range policy carry that owner, so the API shows each VIP labelled
 * with the Service it came from and refuses writes to it, and the sync can
 * replace one Service's resources (StoreTx.replaceState scoped to that
 * owner) without reading or rewriting the others. Names carry the
 * namespace/name too (`k8s.<ns>.<name>.<proto><port>.<address>`, shortened
 * with a hash when longer than 63 characters), so they are readable and
 * cannot collide across Services.
 *
 * What becomes what:
 *  - LoadBalancer ingress IPs (not hostnames, not ipMode Proxy) and
 *    externalIPs: one VIP per Service port × address, on the Service port;
 *  - NodePorts: one VIP per Service port × address of this node (types
 *    InternalIP and ExternalIP by default), on the node port;
 *  - ClusterIPs: not VIPs (no Maglev table per ClusterIP): entries of the
 *    `clusterIps` list for the socket-level load balancer, one per
 *    ClusterIP × Service port, with the backends' own ports;
 *  - the same LoadBalancer ingress IPs, externalIPs and node address ×
 *    NodePort, for sockets on this node: `localAddresses`, socket-LB entries
 *    like the ClusterIPs' (any targetPort, the ClusterIP's endpoints);
 *  - LoadBalancer + externalTrafficPolicy Local: a `healthCheckNodePorts`
 *    entry with the count of ready endpoints on this node.
 *
 * Port translation. Every node runs Ferry. A VIP's backends are its
 * endpoints with their own ports (the resolved targetPort) and where they
 * live: "local" on this node, else their node's address as host. xdp_lb
 * encapsulates the client's packet to the endpoint through its node, whose
 * tc_node_in decapsulates it and translates it to the endpoint's address
 * and port; the reply gets the VIP and port back on its way out of that
 * node and goes straight to the client (bpf/README.md). Other nodes'
 * addresses × NodePort reach this node's endpoints too: `nodeEndpoints`
 * lists those pairs for this node's programs. With external_path nat the
 * outside addresses go to the kernel's NAT instead (`nat`).
 * The `clusterIps` list is served at the socket: the socket-LB rewrites
 * address and port at connect time.
 *
 * Semantics (kube-proxy's):
 *  - endpoint conditions: ready (nil = true) → a backend; not ready but
 *    serving and terminating → 'draining' (existing flows only) while any
 *    ready endpoint is left, and 'active' when none is (serving-terminating
 *    endpoints are the fallback); neither ready nor serving → left out.
 *    The first address of an endpoint is used; FQDN slices are ignored.
 *  - externalTrafficPolicy Local: VIPs (LB, external, NodePort) take only
 *    endpoints on this node; internalTrafficPolicy Local does the same for
 *    the ClusterIP list.
 *  - sessionAffinity ClientIP: VIPs get source_affinity (Maglev on the
 *    source address, no timeout); the timeout (default 10800 s) is carried
 *    in the ClusterIP list.
 *  - loadBalancerSourceRanges: a policy `k8s.<ns>.<name>.source-ranges`
 *    referenced by the Service's LoadBalancer-ingress VIPs (not by its
 *    NodePort or external-IP VIPs, as in kube-proxy). Host bits are cleared;
 *    a family with no range is denied entirely (deny 0.0.0.0/0 or ::/0),
 *    so an IPv4-only list does not leave the IPv6 address open; invalid
 *    ranges are listed in `skipped` and left out (the rest still applies).
 *  - dual stack: each address family uses the EndpointSlices of its
 *    addressType; an address of a family the Service does not have is
 *    skipped.
 *  - Services without selectors: their EndpointSlices (whoever manages
 *    them) count like any other, joined by the kubernetes.io/service-name
 *    label.
 *  - ignored: headless Services (clusterIP None), ExternalName Services,
 *    and Services labelled service.kubernetes.io/service-proxy-name with
 *    any value other than the configured proxyName. An ignored Service's
 *    owner gets an empty desired state, so what it had goes away.
 */
import { createHash } from 'node:crypto';
import { backendAddressErrors } from '../model/validate.js';
import { canonicalIp, parseCidr } from '../net/addr.js';
import { LOCAL_HOST, type BackendSpec, type DesiredState, type PolicySpec, type Protocol, type VipWithBackends } from '../model/types.js';
import type { SkippedEntry } from '../model/kubernetes.js';
import type { NodeEndpoint } from '../datapath/node.js';
import {
  ANNOTATION_EXTERNAL_PATH,
  LABEL_SERVICE_NAME,
  LABEL_SERVICE_PROXY_NAME,
  objectKey,
  type EndpointSlice,
  type IpFamily,
  type Node,
  type Service,
  type ServicePort,
} from './types.js';

export interface TranslateConfig {
  /** The node this daemon runs on (externalTrafficPolicy Local, NodePort addresses). */
  nodeName: string;
  /** Our name for service.kubernetes.io/service-proxy-name; null = we serve only unlabelled Services. */
  proxyName?: string | null;
  /** Node address types NodePorts listen on; default InternalIP and ExternalIP. */
  nodePortAddressTypes?: readonly string[];
  /**
   * How outside addresses (LoadBalancer IPs, externalIPs, NodePorts) are
   * served: 'xdp' (default) as XDP VIPs, direct server return with the port
   * translated on the endpoint's node (bpf/node.bpf.c: every node runs
   * Ferry); 'snat' as XDP VIPs with source NAT (forwarding snat: replies
   * return through this node, the endpoint's node needs nothing); 'nat' by
   * the kernel's NAT (nftables), the fallback. A Service's annotation
   * ferry.io/external-path (xdp or snat) overrides it for that Service.
   */
  externalPath?: ExternalPath;
}

/** A backend of the socket-LB: its own address and port (the socket-LB translates ports). */
export interface SocketLbBackend {
  address: string;
  port: number;
}

/** One ClusterIP × Service port, for the socket-level load balancer. */
export interface ClusterIpEntry {
  /** "namespace/name" */
  service: string;
  /** The Service port's name ("" when unnamed). */
  portName: string;
  ip: string;
  port: number;
  protocol: Protocol;
  /** Sorted by address then port; empty = no usable endpoint (connections are refused). */
  backends: SocketLbBackend[];
  /** sessionAffinity ClientIP: how long a client stays on its backend. */
  affinityTimeoutSeconds?: number;
}

/** A health-check node port for a load balancer in front of the nodes (externalTrafficPolicy Local). */
export interface HealthCheckNodePort {
  service: string;
  port: number;
  /** Ready endpoints on this node: the responder answers 200 when > 0, 503 otherwise. */
  localEndpoints: number;
}

/** Something of a Service that Ferry does not serve, and why. */
/** Everything one Service becomes. */
export interface ServiceTranslation {
  /** "namespace/name" */
  key: string;
  /** The store owner of its resources: "kubernetes:namespace/name". */
  owner: string;
  /** Why the Service is not ours (then every list below is empty), or null. */
  ignored: string | null;
  /** This owner's resources (replaceState scope). */
  desired: DesiredState & { policies: PolicySpec[] };
  clusterIps: ClusterIpEntry[];
  /**
   * The Service's LoadBalancer ingress IPs, externalIPs and this node's
   * addresses × NodePort as socket-LB entries: sockets on this node reach
   * them with any targetPort, as a ClusterIP (its endpoints, affinity).
   */
  localAddresses: ClusterIpEntry[];
  /** Outside addresses served by the kernel's NAT (external_path nat), for nat.ts. */
  nat: NatEntry[];
  /**
   * Pairs this node's programs translate although no VIP of this node
   * names them: other nodes' addresses × NodePort, to this node's
   * endpoints (those nodes' XDP sends them here).
   */
  nodeEndpoints: NodeEndpoint[];
  healthCheckNodePorts: HealthCheckNodePort[];
  skipped: SkippedEntry[];
}

/**
 * A NodePort, LoadBalancer IP or externalIP whose endpoints listen on
 * another port: served by DNAT in the kernel (an nftables table of ferryd's)
 * instead of the XDP datapath, which keeps ports (direct server return).
 */
export interface NatEntry {
  service: string;
  address: string;
  port: number;
  protocol: Protocol;
  /** The endpoints with their own ports (externalTrafficPolicy Local: this node's only). */
  backends: SocketLbBackend[];
  /** externalTrafficPolicy Cluster: the source becomes the node's, so replies come back through it to be un-NATed. */
  masquerade: boolean;
  /** sessionAffinity ClientIP: the endpoint follows from the client's address (a hash), not a random pick. */
  affinity: boolean;
  /** loadBalancerSourceRanges of a LoadBalancer IP: the only sources let in ([] = none of this family); null: any. */
  sourceRanges: string[] | null;
}

export interface TranslationInput {
  services: readonly Service[];
  endpointSlices: readonly EndpointSlice[];
  /** This node (the one named by TranslateConfig.nodeName), if known. */
  node?: Node | undefined;
  /** Every node, this one included: where endpoints live. */
  nodes?: readonly Node[];
}

/** The translation of a whole cluster view. */
export interface Translation {
  /** By Service key, sorted. */
  services: Map<string, ServiceTranslation>;
  clusterIps: ClusterIpEntry[];
  localAddresses: ClusterIpEntry[];
  nat: NatEntry[];
  nodeEndpoints: NodeEndpoint[];
  healthCheckNodePorts: HealthCheckNodePort[];
  skipped: SkippedEntry[];
  ignored: SkippedEntry[];
}

export const OWNER_PREFIX = 'kubernetes:';
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
export const DEFAULT_NODEPORT_ADDRESS_TYPES: readonly string[] = ['InternalIP', 'ExternalIP'];
const MAX_NAME = 63;
const HASH_CHARS = 12;

/** The store owner of a Service's resources. */
export function ownerOf(serviceKey: string): string {
  return `${OWNER_PREFIX}${serviceKey}`;
}

/** The Service key of a Kubernetes owner string, or null for any other owner. */
export function serviceKeyOfOwner(owner: string | null): string | null {
  return owner !== null && owner.startsWith(OWNER_PREFIX) ? owner.slice(OWNER_PREFIX.length) : null;
}

/**
 * A valid resource name (NAME_PATTERN) from dot-joined parts: lower case,
 * characters outside [a-z0-9._-] replaced by "-", and when longer than 63
 * characters cut to 50 and suffixed with "-" and 12 hex digits of the
 * SHA-256 of the whole name (so distinct long names stay distinct).
 */
export function resourceName(parts: readonly string[]): string {
  let full = parts
    .join('.')
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, '-');
  if (!/^[a-z0-9]/.test(full)) full = `k${full}`;
  if (full.length <= MAX_NAME) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, HASH_CHARS);
  return `${full.slice(0, MAX_NAME - HASH_CHARS - 1)}-${hash}`;
}

/** "203-0-113-10", "2001-db8--10": an address as a name part. */
function addressLabel(address: string): string {
  return address.replace(/[.:]/g, '-');
}

export function vipName(namespace: string, name: string, protocol: Protocol, port: number, address: string): string {
  return resourceName(['k8s', namespace, name, `${protocol}${port}`, addressLabel(address)]);
}

export function sourceRangesPolicyName(namespace: string, name: string): string {
  return resourceName(['k8s', namespace, name, 'source-ranges']);
}

const familyOf = (address: string): IpFamily => (address.includes(':') ? 'IPv6' : 'IPv4');

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ------------------------------------------------------------------ endpoints

type EndpointState = 'ready' | 'terminating';

interface ResolvedEndpoint {
  address: string;
  port: number;
  state: EndpointState;
  local: boolean;
  /** The node it runs on, when the slice says. */
  nodeName: string | null;
}

/** Why a Service is not ours, or null. */
export function ignoredReason(svc: Service, cfg: TranslateConfig): string | null {
  const proxy = svc.metadata.labels?.[LABEL_SERVICE_PROXY_NAME];
  if (proxy !== undefined && proxy !== (cfg.proxyName ?? null)) {
    return `labelled ${LABEL_SERVICE_PROXY_NAME}=${proxy}: meant for another proxy`;
  }
  const spec = svc.spec ?? {};
  if (spec.type === 'ExternalName') return 'ExternalName Service: resolved by DNS, nothing to proxy';
  if (spec.clusterIP === 'None' || spec.clusterIPs?.[0] === 'None')
    return 'headless Service (clusterIP None): resolved by DNS, nothing to proxy';
  return null;
}

/** The families a Service serves: spec.ipFamilies, else those of its ClusterIPs, else IPv4. */
function serviceFamilies(svc: Service): IpFamily[] {
  const spec = svc.spec ?? {};
  if (spec.ipFamilies !== undefined && spec.ipFamilies.length > 0) return [...spec.ipFamilies];
  const ips = clusterIpsOf(svc);
  if (ips.length > 0) return [...new Set(ips.map(familyOf))];
  return ['IPv4'];
}

function clusterIpsOf(svc: Service): string[] {
  const spec = svc.spec ?? {};
  const list =
    spec.clusterIPs !== undefined && spec.clusterIPs.length > 0 ? spec.clusterIPs : spec.clusterIP !== undefined ? [spec.clusterIP] : [];
  return list.filter((ip) => ip !== '' && ip !== 'None');
}

const k8sProtocol = (sp: { protocol?: string | null }): string => sp.protocol ?? 'TCP';

/**
 * The endpoints serving one Service port in one family, each with the port
 * it listens on (from its slice's port of the same name and protocol),
 * deduplicated by address and port (a ready entry wins over a terminating
 * one, as during a slice handover). Sorted by address, then port.
 */
function resolveEndpoints(
  slices: readonly EndpointSlice[],
  sp: ServicePort,
  family: IpFamily,
  cfg: TranslateConfig,
  problems: Set<string>,
): ResolvedEndpoint[] {
  const byKey = new Map<string, ResolvedEndpoint>();
  const portName = sp.name ?? '';
  const protocol = k8sProtocol(sp);
  for (const slice of slices) {
    if (slice.addressType !== family) continue;
    const ep = (slice.ports ?? []).find((p) => (p.name ?? '') === portName && k8sProtocol(p) === protocol);
    if (ep === undefined || ep.port === undefined || ep.port === null) continue;
    const port = ep.port;
    for (const e of slice.endpoints ?? []) {
      const raw = e.addresses?.[0];
      if (raw === undefined) continue;
      const address = canonicalIp(raw);
      if (address === null || familyOf(address) !== family || !usableAddress(address)) {
        problems.add(`endpoint address ${JSON.stringify(raw)} in EndpointSlice ${slice.metadata.name} is not a usable ${family} address`);
        continue;
      }
      const c = e.conditions ?? {};
      const ready = c.ready ?? true;
      const serving = c.serving ?? ready;
      const terminating = c.terminating ?? false;
      // A terminating endpoint is never ready; it may still be serving (draining).
      let state: EndpointState;
      if (terminating) {
        if (!serving) continue;
        state = 'terminating';
      } else {
        if (!ready) continue;
        state = 'ready';
      }
      const key = `${address} ${port}`;
      const prev = byKey.get(key);
      if (prev !== undefined && prev.state === 'ready') continue;
      byKey.set(key, { address, port, state, local: e.nodeName === cfg.nodeName, nodeName: e.nodeName ?? null });
    }
  }
  return [...byKey.values()].sort((a, b) => compareStrings(a.address, b.address) || a.port - b.port);
}

/** Whether the store would take the address as a backend (and so as a VIP: the same ranges are refused). */
function usableAddress(address: string): boolean {
  return backendAddressErrors(address).length === 0;
}

/**
 * Ready endpoints take new flows and terminating ones drain; with no ready
 * endpoint left, the serving-terminating ones take new flows (fallback).
 */
function choose(eps: readonly ResolvedEndpoint[], localOnly: boolean): { active: ResolvedEndpoint[]; draining: ResolvedEndpoint[] } {
  const candidates = localOnly ? eps.filter((e) => e.local) : eps;
  const ready = candidates.filter((e) => e.state === 'ready');
  const terminating = candidates.filter((e) => e.state === 'terminating');
  return ready.length > 0 ? { active: ready, draining: terminating } : { active: terminating, draining: [] };
}

// ------------------------------------------------------------ source ranges

/** loadBalancerSourceRanges as a policy (null when the Service has none). */
function sourceRangesPolicy(svc: Service, problems: Set<string>): PolicySpec | null {
  const ranges = svc.spec?.loadBalancerSourceRanges ?? [];
  if (ranges.length === 0) return null;
  const allow = new Set<string>();
  for (const raw of ranges) {
    const cidr = normaliseRange(raw.trim());
    if (cidr === null) problems.add(`loadBalancerSourceRanges entry ${JSON.stringify(raw)} is not a CIDR; left out`);
    else allow.add(cidr);
  }
  const list = [...allow].sort(compareStrings);
  const deny: string[] = [];
  if (!list.some((c) => !c.includes(':'))) deny.push('0.0.0.0/0');
  if (!list.some((c) => c.includes(':'))) deny.push('::/0');
  return { name: sourceRangesPolicyName(svc.metadata.namespace ?? '', svc.metadata.name), allow: list, deny };
}

/** "10.0.0.1/8" → "10.0.0.0/8" (kube-proxy clears host bits too); null if not a CIDR (a bare address is not). */
function normaliseRange(text: string): string | null {
  if (!text.includes('/')) return null;
  const cidr = parseCidr(text, 'clear');
  return typeof cidr === 'string' ? null : cidr.text;
}

// --------------------------------------------------------------------- VIPs

interface VipSource {
  address: string;
  kind: 'LoadBalancer ingress IP' | 'externalIP' | 'node address';
}

function vipSources(
  svc: Service,
  node: Node | undefined,
  cfg: TranslateConfig,
  problems: Set<string>,
): { lb: VipSource[]; node: VipSource[] } {
  const spec = svc.spec ?? {};
  const lb: VipSource[] = [];
  if (spec.type === 'LoadBalancer') {
    for (const ing of svc.status?.loadBalancer?.ingress ?? []) {
      if (ing.ip === undefined || ing.ip === '') continue;
      if (ing.ipMode === 'Proxy') continue;
      lb.push({ address: ing.ip, kind: 'LoadBalancer ingress IP' });
    }
  }
  const external: VipSource[] = (spec.externalIPs ?? []).map((address) => ({ address, kind: 'externalIP' }));
  const nodeAddrs: VipSource[] = [];
  const types = cfg.nodePortAddressTypes ?? DEFAULT_NODEPORT_ADDRESS_TYPES;
  if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') {
    if (node === undefined) {
      if ((spec.ports ?? []).some((p) => p.nodePort !== undefined))
        problems.add(`node ${cfg.nodeName} is not known yet: NodePorts not served`);
    } else {
      for (const a of node.status?.addresses ?? [])
        if (types.includes(a.type)) nodeAddrs.push({ address: a.address, kind: 'node address' });
    }
  }
  return { lb: [...lb, ...external], node: nodeAddrs };
}

function protocolOf(sp: ServicePort): Protocol | null {
  const p = k8sProtocol(sp);
  return p === 'TCP' ? 'tcp' : p === 'UDP' ? 'udp' : null;
}

// ------------------------------------------------------------- translation

/**
 * A VIP's backend for an endpoint: on this node "local"; on another its
 * node's address as host, so that node translates (for a hostNetwork
 * endpoint that is its own address); an endpoint whose
 * node is not known is reached as its own host, which only works on the
 * VIP's port (it must decapsulate): on another port it is left out.
 */
function endpointBackend(
  e: ResolvedEndpoint,
  state: 'active' | 'draining',
  vipPort: number,
  family: IpFamily,
  nodes: ReadonlyMap<string, Node>,
  types: readonly string[],
  snat: boolean,
  what: string,
  problems: Set<string>,
): BackendSpec | null {
  const host = e.local ? LOCAL_HOST : e.nodeName === null ? null : nodeAddress(nodes.get(e.nodeName), family, types);
  // Without its node, source NAT sends to the endpoint by this node's routes (the pod network's).
  if (host === null && e.port !== vipPort && !snat) {
    problems.add(
      `${what} listens on ${e.port} and its node (${e.nodeName ?? 'none named'}) is not known with an ${family} address: left out`,
    );
    return null;
  }
  // Fields added in one order (not spread): objects of one shape share V8's hidden class.
  const b: BackendSpec = { address: e.address };
  if (host !== null) b.host = host;
  if (e.port !== vipPort) b.port = e.port;
  b.state = state;
  return b;
}

export type ExternalPath = 'xdp' | 'snat' | 'nat';

/** The Service's external path: its annotation (xdp or snat), else the node's. */
function externalPathOf(svc: Service, cfg: TranslateConfig, problems: Set<string>): ExternalPath {
  const fallback = cfg.externalPath ?? 'xdp';
  const own = svc.metadata.annotations?.[ANNOTATION_EXTERNAL_PATH];
  if (own === undefined) return fallback;
  if (own === 'xdp' || own === 'snat') return own;
  problems.add(`annotation ${ANNOTATION_EXTERNAL_PATH}=${JSON.stringify(own)} is not xdp or snat: ${fallback} applies`);
  return fallback;
}

/** A node's first address of the family among the types (in the types' order). */
function nodeAddress(node: Node | undefined, family: IpFamily, types: readonly string[]): string | null {
  for (const type of types) {
    for (const a of node?.status?.addresses ?? []) {
      if (a.type !== type) continue;
      const address = canonicalIp(a.address);
      if (address !== null && familyOf(address) === family) return address;
    }
  }
  return null;
}

/** Every address of the types of every node but this one, in the family. */
function otherNodeAddresses(nodes: ReadonlyMap<string, Node>, self: string, family: IpFamily, types: readonly string[]): string[] {
  const out: string[] = [];
  for (const [name, node] of nodes) {
    if (name === self) continue;
    for (const a of node.status?.addresses ?? []) {
      const address = types.includes(a.type) ? canonicalIp(a.address) : null;
      if (address !== null && familyOf(address) === family && usableAddress(address)) out.push(address);
    }
  }
  return [...new Set(out)].sort(compareStrings);
}

/**
 * Translates one Service with the EndpointSlices labelled for it. `node`
 * is this node; `nodes` every node by name (where endpoints live).
 */
export function translateService(
  svc: Service,
  slices: readonly EndpointSlice[],
  node: Node | undefined,
  cfg: TranslateConfig,
  nodes: ReadonlyMap<string, Node> = new Map(),
): ServiceTranslation {
  const key = objectKey(svc);
  const ns = svc.metadata.namespace ?? '';
  const out: ServiceTranslation = {
    key,
    owner: ownerOf(key),
    ignored: ignoredReason(svc, cfg),
    desired: { vips: [], policies: [] },
    clusterIps: [],
    localAddresses: [],
    nat: [],
    nodeEndpoints: [],
    healthCheckNodePorts: [],
    skipped: [],
  };
  const types = cfg.nodePortAddressTypes ?? DEFAULT_NODEPORT_ADDRESS_TYPES;
  if (out.ignored !== null) return out;
  const problems = new Set<string>();
  const spec = svc.spec ?? {};
  const families = serviceFamilies(svc);
  const sortedSlices = [...slices].sort((a, b) => compareStrings(a.metadata.name, b.metadata.name));
  const affinity = spec.sessionAffinity === 'ClientIP';
  const externalLocal = spec.externalTrafficPolicy === 'Local';
  const path = externalPathOf(svc, cfg, problems);
  const policy = spec.type === 'LoadBalancer' ? sourceRangesPolicy(svc, problems) : null;
  let policyUsed = false;
  const sources = vipSources(svc, node, cfg, problems);
  const seenEndpoints = new Set<string>();
  const endpointCache = new Map<string, ResolvedEndpoint[]>();
  const endpointsOf = (sp: ServicePort, family: IpFamily): ResolvedEndpoint[] => {
    const k = `${sp.name ?? ''}/${k8sProtocol(sp)}/${family}`;
    let eps = endpointCache.get(k);
    if (eps === undefined) {
      eps = resolveEndpoints(sortedSlices, sp, family, cfg, problems);
      endpointCache.set(k, eps);
    }
    return eps;
  };

  for (const sp of spec.ports ?? []) {
    const protocol = protocolOf(sp);
    const portLabel = `port ${sp.name ? `${sp.name} (${sp.port})` : sp.port}/${k8sProtocol(sp)}`;
    if (protocol === null) {
      problems.add(`${portLabel}: protocol ${k8sProtocol(sp)} is not supported`);
      continue;
    }
    const addVip = (src: VipSource, vipPort: number, isLb: boolean): void => {
      const address = canonicalIp(src.address);
      const what = `${src.kind} ${src.address} ${portLabel}`;
      if (address === null || !usableAddress(address)) {
        problems.add(`${what}: not a usable VIP address`);
        return;
      }
      const family = familyOf(address);
      if (!families.includes(family)) {
        problems.add(`${what}: the Service has no ${family} family`);
        return;
      }
      const endpointKey = `${address} ${vipPort}/${protocol}`;
      if (seenEndpoints.has(endpointKey)) return; // the same address listed twice (ingress and externalIPs)
      seenEndpoints.add(endpointKey);
      const all = endpointsOf(sp, family);
      const natEntry = (): NatEntry => ({
        service: key,
        address,
        port: vipPort,
        protocol,
        backends: choose(all, externalLocal).active.map((e) => ({ address: e.address, port: e.port })),
        masquerade: !externalLocal,
        affinity,
        // The policy the XDP VIP would carry: its allow list, this address's family only.
        sourceRanges: isLb && policy !== null ? policy.allow!.filter((c) => familyOf(c) === family) : null,
      });
      if (path === 'nat') {
        if (all.length > 0) out.nat.push(natEntry());
        return;
      }
      const { active, draining } = choose(all, externalLocal);
      const backends: BackendSpec[] = [];
      const taken = new Set<string>();
      for (const [list, state] of [
        [active, 'active'],
        [draining, 'draining'],
      ] as const) {
        for (const e of list) {
          if (taken.has(e.address)) continue; // one address on two ports: the first (ready) one
          const b = endpointBackend(e, state, vipPort, family, nodes, types, path === 'snat', `${what}: endpoint ${e.address}`, problems);
          if (b === null) continue;
          taken.add(e.address);
          backends.push(b);
        }
      }
      backends.sort((a, b) => compareStrings(a.address, b.address));
      const vip: VipWithBackends = {
        name: vipName(ns, svc.metadata.name, protocol, vipPort, address),
        address,
        port: vipPort,
        protocol,
        source_affinity: affinity,
        ...(path === 'snat' ? { forwarding: 'snat' } : {}),
        backends,
      };
      if (isLb && policy !== null) {
        vip.policies = [policy.name];
        policyUsed = true;
      }
      out.desired.vips.push(vip);
    };
    for (const src of sources.lb) addVip(src, sp.port, src.kind === 'LoadBalancer ingress IP');
    const nodePort = sp.nodePort !== undefined && sp.nodePort !== null && sp.nodePort > 0 ? sp.nodePort : null;
    if (nodePort !== null) {
      for (const src of sources.node) addVip(src, nodePort, false);
      // Other nodes send their NodePort's packets to this node's endpoints too (externalTrafficPolicy Cluster,
      // direct return: with source NAT they arrive translated already).
      if (path === 'xdp' && !externalLocal) {
        for (const family of families) {
          const mine = endpointsOf(sp, family).filter((e) => e.local);
          if (mine.length === 0) continue;
          for (const address of otherNodeAddresses(nodes, cfg.nodeName, family, types)) {
            for (const e of mine) out.nodeEndpoints.push({ vip: address, vipPort: nodePort, protocol, backend: e.address, port: e.port });
          }
        }
      }
    }
    // Socket-LB entries: any targetPort (the socket-LB translates ports), the ClusterIP's endpoints.
    const socketEntry = (address: string, port: number): ClusterIpEntry => {
      const { active } = choose(endpointsOf(sp, familyOf(address)), spec.internalTrafficPolicy === 'Local');
      const entry: ClusterIpEntry = {
        service: key,
        portName: sp.name ?? '',
        ip: address,
        port,
        protocol,
        backends: active.map((e) => ({ address: e.address, port: e.port })),
      };
      if (affinity) entry.affinityTimeoutSeconds = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS;
      return entry;
    };
    for (const ip of clusterIpsOf(svc)) {
      const address = canonicalIp(ip);
      if (address === null) {
        problems.add(`clusterIP ${JSON.stringify(ip)} is not an IP address`);
        continue;
      }
      out.clusterIps.push(socketEntry(address, sp.port));
    }
    // The same Service on its outside addresses, for this node's own sockets (no XDP on the way out).
    const local = new Set<string>();
    const addLocal = (src: VipSource, port: number): void => {
      const address = canonicalIp(src.address);
      if (address === null || !usableAddress(address) || !families.includes(familyOf(address))) return;
      if (local.has(`${address} ${port}`)) return;
      local.add(`${address} ${port}`);
      out.localAddresses.push(socketEntry(address, port));
    };
    for (const src of sources.lb) addLocal(src, sp.port);
    if (nodePort !== null) for (const src of sources.node) addLocal(src, nodePort);
  }
  if (policy !== null && policyUsed) out.desired.policies.push(policy);
  if (spec.type === 'LoadBalancer' && externalLocal && spec.healthCheckNodePort !== undefined && spec.healthCheckNodePort > 0) {
    out.healthCheckNodePorts.push({
      service: key,
      port: spec.healthCheckNodePort,
      localEndpoints: localReadyEndpoints(sortedSlices, families[0] ?? 'IPv4', cfg),
    });
  }
  out.desired.vips.sort((a, b) => compareStrings(a.name, b.name));
  out.skipped = [...problems].map((reason) => ({ service: key, reason }));
  return out;
}

/** Distinct ready endpoints of this node in the primary family, whatever their ports. */
function localReadyEndpoints(slices: readonly EndpointSlice[], family: IpFamily, cfg: TranslateConfig): number {
  const seen = new Set<string>();
  for (const s of slices) {
    if (s.addressType !== family) continue;
    for (const e of s.endpoints ?? []) {
      const c = e.conditions ?? {};
      const ready = (c.ready ?? true) && !(c.terminating ?? false);
      const address = e.addresses?.[0];
      if (ready && e.nodeName === cfg.nodeName && address !== undefined) seen.add(address);
    }
  }
  return seen.size;
}

/** "namespace/name" of the Service an EndpointSlice belongs to, or null when it carries no service-name label. */
export function sliceServiceKey(slice: EndpointSlice): string | null {
  const name = slice.metadata.labels?.[LABEL_SERVICE_NAME];
  if (name === undefined || name === '') return null;
  const ns = slice.metadata.namespace;
  return ns === undefined || ns === '' ? name : `${ns}/${name}`;
}

/** Translates a whole cluster view (every Service with its slices). */
export function translate(input: TranslationInput, cfg: TranslateConfig): Translation {
  const slicesBy = new Map<string, EndpointSlice[]>();
  for (const s of input.endpointSlices) {
    const k = sliceServiceKey(s);
    if (k === null) continue;
    const list = slicesBy.get(k);
    if (list) list.push(s);
    else slicesBy.set(k, [s]);
  }
  const services = [...input.services].sort((a, b) => compareStrings(objectKey(a), objectKey(b)));
  const out: Translation = {
    services: new Map(),
    clusterIps: [],
    localAddresses: [],
    nat: [],
    nodeEndpoints: [],
    healthCheckNodePorts: [],
    skipped: [],
    ignored: [],
  };
  const nodes = new Map((input.nodes ?? (input.node ? [input.node] : [])).map((n) => [n.metadata.name, n]));
  for (const svc of services) {
    const t = translateService(svc, slicesBy.get(objectKey(svc)) ?? [], input.node, cfg, nodes);
    out.services.set(t.key, t);
    out.clusterIps.push(...t.clusterIps);
    out.localAddresses.push(...t.localAddresses);
    out.nat.push(...t.nat);
    out.nodeEndpoints.push(...t.nodeEndpoints);
    out.healthCheckNodePorts.push(...t.healthCheckNodePorts);
    out.skipped.push(...t.skipped);
    if (t.ignored !== null) out.ignored.push({ service: t.key, reason: t.ignored });
  }
  return out;
}

/** Every owner's desired state merged into one (for display: `ferryctl`-style views, tests). */
export function mergedDesired(t: Translation): DesiredState & { policies: PolicySpec[] } {
  const out: DesiredState & { policies: PolicySpec[] } = { vips: [], policies: [] };
  for (const s of t.services.values()) {
    out.vips.push(...s.desired.vips);
    out.policies.push(...s.desired.policies);
  }
  return out;
}
