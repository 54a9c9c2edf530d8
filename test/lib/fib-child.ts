/**
 * Runs inside a test network namespace (nsenter --net) where the kernel's
 * fib has real answers: pushes frames through xdp_lb as if they arrived on
 * `in0`, and prints what came out as one JSON line for test/root/datapath/fib.test.ts.
 *
 *   node fib-child.js PIN_ROOT NEW_NEIGHBOUR_MAC
 */
import { execFileSync } from 'node:child_process';
import { LbHarness, GW_MAC } from './harness.js';
import { frame, parseEth, parseIp, TCP_SYN } from './packet.js';

const XDP_MD_SIZE = 24;

function ctxFor(ifindex: number, len: number): Buffer {
  const ctx = Buffer.alloc(XDP_MD_SIZE);
  ctx.writeUInt32LE(0, 0); // data
  ctx.writeUInt32LE(len, 4); // data_end
  ctx.writeUInt32LE(0, 8); // data_meta
  ctx.writeUInt32LE(ifindex, 12); // ingress_ifindex
  return ctx;
}

function main(): void {
  const pinRoot = process.argv[2]!;
  const h = new LbHarness(pinRoot);
  try {
    h.setConfig({ flags: 0, gwMac: GW_MAC }); // use bpf_fib_lookup
    h.vip({ id: 0, addr: '198.18.0.10', port: 80, proto: 'tcp', backends: [{ id: 1, addr: '198.18.2.2' }] });
    h.vip({ id: 1, addr: '198.18.0.11', port: 80, proto: 'tcp', backends: [{ id: 2, addr: '198.18.1.2' }] });
    // A pod with no route of its own, reached through its node (out0's neighbour).
    h.vip({ id: 2, addr: '198.18.0.12', port: 80, proto: 'tcp', backends: [{ id: 3, addr: '10.244.7.7', via: '198.18.2.2' }] });
    const nat = h.dp.nat;
    const in0 = nat.ifNameToIndex('in0');
    const out0 = nat.ifNameToIndex('out0');
    const run = (data: Buffer) => {
      const r = nat.progTestRun(h.dp.progFd, { data, dataOutSize: data.length + 256, ctxIn: ctxFor(in0, data.length) });
      const e = parseEth(r.data);
      const outerDst = [...parseIp(e.l3).dst].join('.');
      return { retval: r.retval, dst: e.dstMac.toString('hex'), src: e.srcMac.toString('hex'), len: r.data.length, outerDst };
    };
    const small = frame({
      src: '198.18.1.100',
      dst: '198.18.0.10',
      proto: 'tcp',
      dport: 80,
      tcpFlags: TCP_SYN,
      payload: Buffer.alloc(100),
    });
    const big = frame({
      src: '198.18.1.100',
      dst: '198.18.0.10',
      proto: 'tcp',
      dport: 80,
      tcpFlags: TCP_SYN,
      payload: Buffer.alloc(1400),
      df: true,
    });
    const viaNode = frame({ src: '198.18.1.100', dst: '198.18.0.12', proto: 'tcp', dport: 80, tcpFlags: TCP_SYN });
    const sameIf = frame({
      src: '198.18.1.100',
      dst: '198.18.0.11',
      proto: 'tcp',
      dport: 80,
      tcpFlags: TCP_SYN,
      payload: Buffer.alloc(100),
    });
    const before = h.dp.dropCounts().too_big.packets;
    const lookups = () => Number(h.dp.counterValues().fib_lookup.packets);
    const result = {
      in0,
      out0,
      redirect: run(small),
      tooBig: run(big),
      tx: run(sameIf),
      via: run(viaNode),
      tooBigDrops: Number(h.dp.dropCounts().too_big.packets - before),
      counters: Object.fromEntries(Object.entries(h.dp.counterValues()).map(([k, v]) => [k, Number(v.packets)])),
      cache: nexthopCache(h, () => run(sameIf), lookups),
    };
    console.log(JSON.stringify(result));
  } finally {
    h.close();
  }
}

/**
 * The next-hop cache: repeats are answered without a fib lookup; a changed
 * neighbour is seen once the entry expired (64 jiffies, 640 ms at most);
 * with the cache off every packet asks the fib.
 */
function nexthopCache(h: LbHarness, send: () => { dst: string }, lookups: () => number) {
  const l0 = lookups();
  for (let i = 0; i < 10; i++) send();
  const repeatLookups = lookups() - l0;
  const neighbour = (mac: string): void => {
    execFileSync('ip', ['neigh', 'replace', '198.18.1.2', 'lladdr', mac, 'dev', 'in0', 'nud', 'permanent']);
  };
  const oldMac = send().dst.match(/../g)!.join(':');
  const mac = process.argv[3]!.match(/../g)!.join(':');
  // "Right after" must be within the entry's shortest lifetime (64 jiffies: 64 ms at HZ 1000), measured from
  // the lookup that filled it; a loaded machine can take longer than that to run `ip`: then it is tried again.
  let rightAfter = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    neighbour(oldMac);
    execFileSync('sleep', ['1']); // the entry expired: the next packet fills it anew
    const filled = performance.now();
    send();
    neighbour(mac);
    rightAfter = send().dst;
    if (performance.now() - filled < 40) break;
  }
  execFileSync('sleep', ['1']);
  const later = send().dst;
  h.setConfig({ flags: 0, gwMac: GW_MAC, nexthopCache: false });
  const l1 = lookups();
  for (let i = 0; i < 10; i++) send();
  return { repeatLookups, rightAfter, later, uncachedLookups: lookups() - l1 };
}

main();
