/**
 * The parts of the Kubernetes objects Ferry reads, as the API server sends
 * them in JSON (list items and watch events alike). Only the fields the
 * translation uses are declared; anything else is carried along untouched.
 * Field names and defaults are the API's (core/v1 Service and Node,
 * discovery.k8s.io/v1 EndpointSlice).
 */

export interface ObjectMeta {
  name: string;
  /** Absent for cluster-scoped objects (Nodes). */
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** Any object the API server lists and watches. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export type K8sProtocol = 'TCP' | 'UDP' | 'SCTP';
export type IpFamily = 'IPv4' | 'IPv6';

export interface ServicePort {
  /** Required when a Service has more than one port; matches the EndpointSlice port of the same name. */
  name?: string;
  /** Default TCP. */
  protocol?: K8sProtocol;
  port: number;
  /** A number, or the name of a container port (resolved per endpoint through the EndpointSlice ports). Default: port. */
  targetPort?: number | string;
  nodePort?: number;
  appProtocol?: string;
}

export interface ServiceSpec {
  /** Default ClusterIP. */
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  selector?: Record<string, string>;
  /** "None" for a headless Service. */
  clusterIP?: string;
  /** One per family, primary first. */
  clusterIPs?: string[];
  ipFamilies?: IpFamily[];
  ipFamilyPolicy?: 'SingleStack' | 'PreferDualStack' | 'RequireDualStack';
  ports?: ServicePort[];
  externalIPs?: string[];
  externalName?: string;
  loadBalancerSourceRanges?: string[];
  loadBalancerClass?: string;
  /** Deprecated in the API but still used: the address a LoadBalancer Service asks for. */
  loadBalancerIP?: string;
  allocateLoadBalancerNodePorts?: boolean;
  /** Default Cluster. */
  externalTrafficPolicy?: 'Cluster' | 'Local';
  /** Default Cluster. */
  internalTrafficPolicy?: 'Cluster' | 'Local';
  /** Set by the API server for LoadBalancer Services with externalTrafficPolicy Local. */
  healthCheckNodePort?: number;
  /** Default None. */
  sessionAffinity?: 'None' | 'ClientIP';
  sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
}

export interface LoadBalancerIngress {
  ip?: string;
  hostname?: string;
  /** Proxy: the load balancer delivers to the node with its own destination; the IP is not programmed. */
  ipMode?: 'VIP' | 'Proxy';
}

export interface Service extends KubeObject {
  spec?: ServiceSpec;
  status?: { loadBalancer?: { ingress?: LoadBalancerIngress[] } };
}

export interface EndpointConditions {
  /** Nil means true (and for a terminating endpoint the API server always sets false). */
  ready?: boolean | null;
  /** Nil means the same as ready. */
  serving?: boolean | null;
  /** Nil means false. */
  terminating?: boolean | null;
}

export interface Endpoint {
  /** Consumers use the first; the API allows up to 100 of one family. */
  addresses: string[];
  conditions?: EndpointConditions;
  nodeName?: string;
  hostname?: string;
  zone?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
}

export interface EndpointPort {
  /** The Service port name this entry serves ("" or absent for an unnamed port). */
  name?: string | null;
  protocol?: K8sProtocol | null;
  /** The port the endpoints listen on (the resolved targetPort); nil = the port is not defined for these endpoints. */
  port?: number | null;
  appProtocol?: string | null;
}

export interface EndpointSlice extends KubeObject {
  addressType: IpFamily | 'FQDN';
  endpoints?: Endpoint[] | null;
  ports?: EndpointPort[] | null;
}

export interface NodeAddress {
  type: 'InternalIP' | 'ExternalIP' | 'Hostname' | 'InternalDNS' | 'ExternalDNS' | string;
  address: string;
}

export interface Node extends KubeObject {
  status?: { addresses?: NodeAddress[] };
}

/** The label joining an EndpointSlice to its Service. */
export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';
/** Services (and their slices) carrying this label are meant for the named proxy only. */
export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
/** A Service's own choice of external path (xdp or snat), over kubernetes.external_path. */
export const ANNOTATION_EXTERNAL_PATH = 'ferry.io/external-path';

/** "namespace/name" of a namespaced object, "name" of a cluster-scoped one. */
export function objectKey(o: KubeObject): string {
  const ns = o.metadata.namespace;
  return ns === undefined || ns === '' ? o.metadata.name : `${ns}/${o.metadata.name}`;
}
