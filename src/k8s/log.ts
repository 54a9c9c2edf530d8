/**
 * The logger every part of the Kubernetes mode takes: the informers, the
 * sync, the health-check node ports, the Lease and LB-IPAM. Its own module
 * so that a part that only logs depends on nothing else.
 */

/** The subset of pino's Logger the Kubernetes mode uses. */
export interface K8sLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: K8sLogger = { debug() {}, info() {}, warn() {}, error() {} };
