/**
 * The lab's flood generator, run inside the client namespace:
 *
 *   node dist/src/lab/flood.js '{"kind":"syn"|"udp","vip":"198.19.0.40","port":80,"dstMac":"02:..","srcMac":"02:..",
 *                               "srcNet":"10.200.0.0/16","milliseconds":3000,"seed":1}'
 *
 * Sends TCP SYNs or UDP datagrams from random sources out of eth0 as fast as
 * the link takes them (the addon's packetFlood: AF_PACKET sendmmsg) and
 * prints {"sent","refused","seconds","per_second"}.
 */
import { loadNative } from '../datapath/native.js';
import { parseCidr, parseIp } from '../net/addr.js';

export interface FloodSpec {
  kind: 'syn' | 'udp';
  vip: string;
  port: number;
  dstMac: string;
  srcMac: string;
  /** Where the random sources come from (IPv4 CIDR). */
  srcNet: string;
  milliseconds: number;
  seed: number;
}

export interface FloodResult {
  sent: number;
  refused: number;
  seconds: number;
  per_second: number;
}

const mac = (text: string): Buffer => Buffer.from(text.split(':').map((h) => parseInt(h, 16)));

function main(): void {
  const spec = JSON.parse(process.argv[2] ?? '{}') as FloodSpec;
  const vip = parseIp(spec.vip);
  const net = parseCidr(spec.srcNet);
  if (typeof vip === 'string' || vip.family !== 4) throw new Error(`flood: vip must be an IPv4 address (${String(vip)})`);
  if (typeof net === 'string' || net.family !== 4) throw new Error(`flood: srcNet must be an IPv4 CIDR (${String(net)})`);
  const r = loadNative().packetFlood({
    ifname: 'eth0',
    dstMac: mac(spec.dstMac),
    srcMac: mac(spec.srcMac),
    dstIp: vip.bytes,
    dstPort: spec.port,
    proto: spec.kind === 'syn' ? 'tcp' : 'udp',
    srcNet: net.network,
    srcPrefix: net.prefix,
    milliseconds: spec.milliseconds,
    seed: spec.seed,
  });
  const seconds = r.ns / 1e9;
  const out: FloodResult = {
    sent: r.sent,
    refused: r.refused,
    seconds: Math.round(seconds * 1000) / 1000,
    per_second: Math.round(r.sent / seconds),
  };
  console.log(JSON.stringify(out));
}

main();
