/**
 * Records idle established TCP flows through the lab's xdp_lb, run inside
 * the load balancer's namespace (its fib reaches the backends, as the
 * attached program's does):
 *
 *   node dist/test/lib/idle-flows.js '{"pinRoot":"...","vip":"198.19.0.40","port":80,"srcNet":"10.201.0","count":2000}'
 *
 * Each flow is a SYN and an ACK through BPF_PROG_TEST_RUN on a program
 * instance of this process that shares the daemon's pinned maps and config,
 * so the flows land in the lab's conntrack as a real handshake's would. The
 * frames go nowhere (no live frames). Prints {"flows": [[src, sport], ...]}.
 */
import { LbDatapath } from '../../src/datapath/lb.js';
import { XDP_REDIRECT, XDP_TX } from '../../src/datapath/native.js';
import { LAB_SIZES } from '../../src/lab/ferryd.js';
import { frame, TCP_ACK, TCP_SYN } from './packet.js';

/** Balanced and forwarded: XDP_TX, or XDP_REDIRECT here (the test run's ingress is lo, the backends are on eth0). */
const FORWARDED = new Set([XDP_TX, XDP_REDIRECT]);

export interface IdleFlowsSpec {
  pinRoot: string;
  vip: string;
  port: number;
  /** The first three octets of the sources, e.g. "10.201.0". */
  srcNet: string;
  count: number;
}

function main(): void {
  const spec = JSON.parse(process.argv[2] ?? '{}') as IdleFlowsSpec;
  const dp = LbDatapath.open({ pinRoot: spec.pinRoot, sizes: LAB_SIZES });
  try {
    const flows: Array<[string, number]> = [];
    for (let i = 0; i < spec.count; i++) {
      const src = `${spec.srcNet}.${1 + (i % 250)}`;
      const sport = 20000 + i;
      for (const tcpFlags of [TCP_SYN, TCP_ACK]) {
        const r = dp.nat.progTestRun(dp.progFd, { data: frame({ src, dst: spec.vip, proto: 'tcp', sport, dport: spec.port, tcpFlags }) });
        if (!FORWARDED.has(r.retval)) throw new Error(`idle flow ${src}:${sport}: xdp_lb answered ${r.retval}, not XDP_TX or XDP_REDIRECT`);
      }
      flows.push([src, sport]);
    }
    console.log(JSON.stringify({ flows }));
  } finally {
    dp.close();
  }
}

main();
