/**
 * Builders of Kubernetes objects for the tests and the benchmark, shaped as
 * the API server sends them (only what Ferry reads, plus the labels the
 * EndpointSlice controller sets).
 */
import type {
  Endpoint,
  EndpointConditions,
  EndpointSlice,
  IpFamily,
  Node,
  Service,
  ServicePort,
  ServiceSpec,
} from '../../src/k8s/types.js';
import { LABEL_SERVICE_NAME } from '../../src/k8s/types.js';

export interface ServiceOpts extends ServiceSpec {
  namespace?: string;
  labels?: Record<string, string>;
  /** status.loadBalancer.ingress IPs. */
  ingress?: string[];
  ingressModes?: Array<'VIP' | 'Proxy' | undefined>;
}

export function service(name: string, o: ServiceOpts = {}): Service {
  const { namespace, labels, ingress, ingressModes, ...spec } = o;
  const s: Service = {
    metadata: { name, namespace: namespace ?? 'default', ...(labels ? { labels } : {}) },
    spec: { type: 'ClusterIP', ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 80 }], ...spec },
  };
  if (ingress !== undefined) {
    s.status = { loadBalancer: { ingress: ingress.map((ip, i) => ({ ip, ...(ingressModes?.[i] ? { ipMode: ingressModes[i] } : {}) })) } };
  }
  return s;
}

export function port(p: number, o: Partial<ServicePort> = {}): ServicePort {
  return { port: p, protocol: 'TCP', ...o };
}

export interface EndpointOpts extends EndpointConditions {
  node?: string;
}

/** An endpoint: an address, or [address, {conditions, node}]. */
export type EndpointArg = string | readonly [string, EndpointOpts];

export interface SliceOpts {
  namespace?: string;
  /** The Service it belongs to (kubernetes.io/service-name); default: the slice name up to its last "-". */
  service?: string;
  addressType?: IpFamily | 'FQDN';
  ports?: Array<{ name?: string; port: number | null; protocol?: 'TCP' | 'UDP' | 'SCTP' }>;
  labels?: Record<string, string>;
}

export function slice(name: string, endpoints: readonly EndpointArg[], o: SliceOpts = {}): EndpointSlice {
  const svcName = o.service ?? name.replace(/-[^-]*$/, '');
  const eps: Endpoint[] = endpoints.map((e) => {
    const [address, opts] = typeof e === 'string' ? [e, {} as EndpointOpts] : e;
    const { node, ...conditions } = opts;
    const ep: Endpoint = { addresses: [address], conditions: { ready: true, ...conditions } };
    if (conditions.ready === false && conditions.serving === undefined) ep.conditions!.serving = false;
    if (node !== undefined) ep.nodeName = node;
    return ep;
  });
  return {
    metadata: { name, namespace: o.namespace ?? 'default', labels: { [LABEL_SERVICE_NAME]: svcName, ...o.labels } },
    addressType: o.addressType ?? 'IPv4',
    endpoints: eps,
    ports: (o.ports ?? [{ name: 'http', port: 80, protocol: 'TCP' }]).map((p) => ({
      name: p.name ?? '',
      port: p.port,
      protocol: p.protocol ?? 'TCP',
    })),
  };
}

export function node(name: string, addresses: Array<[string, string]>): Node {
  return { metadata: { name }, status: { addresses: addresses.map(([type, address]) => ({ type, address })) } };
}
