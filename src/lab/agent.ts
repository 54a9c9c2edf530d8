/**
 * Work that must happen inside one of the lab's namespaces (interface
 * indexes, netlink and XDP attachment are per network namespace). The lab
 * runs it as `nsenter --net=… node dist/src/lab/agent.js COMMAND ARGS`;
 * attachments are pinned bpf links or tc filters, so they outlive this process.
 * (xdp_lb itself is attached by ferryd, which the lab runs in the lb namespace.)
 *
 *   decap  PIN_ROOT IFNAME VIP[,VIP]   attach tc_decap on ingress for these VIPs
 *   pass   PIN_PATH IFNAME             attach xdp_pass through a link pinned at PIN_PATH
 *   xdp    PROG_PIN LINK_PIN IFNAME    attach a pinned XDP program (native) through a link pinned at
 *                                      LINK_PIN; whoever holds the link pin can swap the program
 *                                      (linkUpdate) from any namespace
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { VIP_ADDR_F_ECHO, VipAddrKey, VipAddrMeta } from '../datapath/abi.js';
import { dpAddr } from '../datapath/addr.js';
import { loadNative } from '../datapath/native.js';
import { bpfObjectPath } from '../paths.js';

function attachDecap(pinRoot: string, ifname: string, vips: string[]): void {
  const nat = loadNative();
  mkdirSync(pinRoot, { recursive: true });
  const obj = nat.openObject(bpfObjectPath('decap'), { pinRoot });
  try {
    obj.load();
    const addrs = obj.mapFd('ferry_decap_addrs');
    for (const v of vips) {
      const a = dpAddr(v);
      nat.mapUpdate(
        addrs,
        VipAddrKey.encode({ addr: a.bytes, family: a.family, pad: Buffer.alloc(3) }),
        VipAddrMeta.encode({ flags: VIP_ADDR_F_ECHO }),
        0,
      );
    }
    nat.tcAttach(obj.programFd('tc_decap'), nat.ifNameToIndex(ifname), 'ingress');
  } finally {
    obj.close();
  }
}

function attachPass(pinPath: string, ifname: string): void {
  const nat = loadNative();
  const obj = nat.openObject(bpfObjectPath('lab'));
  try {
    obj.load();
    const link = nat.xdpAttach(obj.programFd('xdp_pass'), nat.ifNameToIndex(ifname), 'native');
    mkdirSync(dirname(pinPath), { recursive: true });
    nat.objPin(link, pinPath);
    nat.closeFd(link);
  } finally {
    obj.close();
  }
}

function attachPinned(progPin: string, linkPin: string, ifname: string): void {
  const nat = loadNative();
  const prog = nat.objGet(progPin);
  try {
    const link = nat.xdpAttach(prog, nat.ifNameToIndex(ifname), 'native');
    mkdirSync(dirname(linkPin), { recursive: true });
    nat.objPin(link, linkPin);
    nat.closeFd(link);
  } finally {
    nat.closeFd(prog);
  }
}

function main(argv: string[]): void {
  const [cmd, a, b, c] = argv;
  if (cmd === 'decap' && a && b && c) return attachDecap(a, b, c.split(','));
  if (cmd === 'pass' && a && b) return attachPass(a, b);
  if (cmd === 'xdp' && a && b && c) return attachPinned(a, b, c);
  throw new Error(
    `usage: agent.js decap PIN_ROOT IFNAME VIPS | pass PIN_PATH IFNAME | xdp PROG_PIN LINK_PIN IFNAME (got ${argv.join(' ')})`,
  );
}

try {
  main(process.argv.slice(2));
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
}
