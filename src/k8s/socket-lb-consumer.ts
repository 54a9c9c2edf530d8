/**
 * The socket-level load balancer as the Kubernetes mode's ClusterIP
 * consumer: opened and attached by ferryd at start (its links are pinned, so
 * the programs keep translating while ferryd restarts), fed the whole
 * ClusterIP list after every change, closed (not detached) at stop.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { isCgroup2, SocketLb } from '../datapath/socket-lb.js';
import type { ClusterIpConsumer } from './mode.js';

/** Where cgroup v2 is mounted: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup. */
export function cgroup2Root(): string {
  for (const dir of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) if (isCgroup2(dir)) return dir;
  throw new Error('no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup: mount one, or set kubernetes.socket_lb.cgroup');
}

export interface SocketLbConsumer extends ClusterIpConsumer {
  readonly socketLb: SocketLb;
}

/**
 * Opens the socket-LB under pinRoot/socklb and attaches it to `cgroup`
 * (null: the cgroup v2 root, i.e. every process on the node). Throws with
 * the reason when either fails; nothing stays attached then.
 */
export function openSocketLbConsumer(pinRoot: string, cgroup: string | null): SocketLbConsumer {
  const path = cgroup ?? cgroup2Root();
  if (!existsSync(path)) throw new Error(`socket-LB: cgroup ${path} does not exist`);
  const socketLb = SocketLb.open({ pinRoot: join(pinRoot, 'socklb'), cgroupPath: path });
  try {
    socketLb.attach(path);
  } catch (err) {
    socketLb.close();
    throw new Error(`socket-LB: cannot attach to cgroup ${path}: ${(err as Error).message}`);
  }
  return {
    name: 'socket-lb',
    socketLb,
    apply: (all, changes) => {
      socketLb.apply(all, changes);
    },
    stats: () => {
      const s = socketLb.stats();
      return { services: s.services, backends: s.backends, applies: s.applies, ...s.counters };
    },
    close: () => socketLb.close(),
  };
}
