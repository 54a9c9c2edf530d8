/**
 * Health checks through the direct-server-return path, in the lab with the
 * real ferryd: a check with `dsr: true` leaves the load balancer
 * encapsulated to the VIP (bpf/hc.bpf.c on ferryd's interface), the
 * backend's tc_decap unwraps it, the server answers from the VIP straight
 * back, and the reply reaches the check's socket. What a DSR check sees that
 * a direct one does not: the lab's UDP servers listen on the VIP address
 * only (a direct check is refused), and a backend that lost the VIP (or its
 * decap) still answers on its own address (a direct check passes).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../../../src/cli/client.js';
import { Counter } from '../../../src/datapath/abi.js';
import { HC_STRUCTS } from '../../../src/datapath/hc.js';
import { PerCpuArray } from '../../../src/datapath/maps.js';
import { loadNative } from '../../../src/datapath/native.js';
import { nsRun } from '../../../src/lab/exec.js';
import { LbLab } from '../../../src/lab/lblab.js';
import type { LabHost } from '../../../src/lab/topology.js';
import type { BackendHealth, HealthCheckSpec } from '../../../src/model/health.js';
import { bpfObjectPath } from '../../../src/paths.js';
import { assertStructsMatchBtf } from '../../lib/abi-check.js';
import { bpfUnavailable } from '../../lib/harness.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping DSR health-check tests: ${skip}`);

const VIP4 = '198.19.0.60';
const VIP6 = '2001:db8:f::60';
/** Fast checks: a verdict within about a second. */
const FAST = { interval_ms: 200, timeout_ms: 150, rise: 2, fall: 2 } as const;
const WAIT_MS = 8000;

const DECAP_CNT_DONE = 1;

describe('DSR health-check ABI', { skip }, () => {
  it('the hc structs match the BTF of bpf/hc.bpf.o', () => {
    const obj = bpfObjectPath('hc');
    assert.ok(existsSync(obj), `${obj} is built`);
    assertStructsMatchBtf(obj, HC_STRUCTS);
  });
});

describe('health checks through the DSR path (lab, real ferryd)', { skip }, () => {
  let lab: LbLab;
  let be1: LabHost;
  let be2: LabHost;

  type Listed = { address: string; health: BackendHealth };
  const health = async (vip: string): Promise<Record<string, BackendHealth>> => {
    const page = await lab.api.get<{ items: Listed[] }>(`/v1/vips/${vip}/backends`);
    return Object.fromEntries(page.items.map((b) => [b.address, b.health]));
  };
  const statusOf = async (vip: string): Promise<Record<string, string>> =>
    Object.fromEntries(Object.entries(await health(vip)).map(([a, h]) => [a, h.status]));
  /** Polls the API until `want` holds; fails with the last health seen. */
  const until = async (what: string, vip: string, want: (s: Record<string, BackendHealth>) => boolean): Promise<void> => {
    let last: Record<string, BackendHealth> = {};
    let ok = false;
    const poll = async (): Promise<void> => {
      last = await health(vip);
      ok = want(last);
    };
    const started = Date.now();
    while (!ok && Date.now() - started < WAIT_MS) {
      await poll();
      if (!ok) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(ok, `${what}: timed out after ${WAIT_MS} ms; health ${JSON.stringify(last)}`);
  };
  const setCheck = (vip: string, check: HealthCheckSpec) => lab.updateVip(vip, { health_check: check });
  /** Packets a backend's tc_decap unwrapped for a local VIP. */
  const decapped = (b: LabHost): bigint => {
    const nat = loadNative();
    const fd = nat.objGet(join(lab.lab.bpfRoot, b.name, 'ferry_decap_counters'));
    try {
      return new PerCpuArray(nat, fd, 'ferry_decap_counters', Counter, nat.numPossibleCpus()).sum(DECAP_CNT_DONE).packets;
    } finally {
      nat.closeFd(fd);
    }
  };

  before(async () => {
    lab = await LbLab.start({ backends: 2, vips: [VIP4, VIP6] });
    [be1, be2] = lab.lab.backends as [LabHost, LabHost];
  });
  after(() => {
    lab?.stop();
  });

  it('UDP: a direct check cannot reach a server bound to the VIP; through the tunnel it can', async () => {
    const udp: HealthCheckSpec = { type: 'udp', send: 'health?', expect_reply: 'health?', ...FAST };
    await lab.createVip({
      name: 'dns4',
      address: VIP4,
      port: 53,
      protocol: 'udp',
      health_check: { ...udp, dsr: false },
      backends: [{ address: be1.addr4 }, { address: be2.addr4 }],
    });
    await until('both down checked directly', 'dns4', (h) => Object.values(h).every((x) => x.status === 'down'));
    const direct = await health('dns4');
    assert.equal(direct[be1.addr4]?.last_error, 'connection refused', JSON.stringify(direct));

    const before1 = decapped(be1);
    const before2 = decapped(be2);
    await setCheck('dns4', { ...udp, dsr: true });
    await until('both up through the tunnel', 'dns4', (h) => Object.values(h).every((x) => x.status === 'up' && x.last_error === null));
    // Only checks ran (no client traffic): the backends' decap counted them.
    assert.ok(decapped(be1) > before1, 'be1 decapsulated the checks');
    assert.ok(decapped(be2) > before2, 'be2 decapsulated the checks');
    const vip = await lab.api.get<{ health_check: HealthCheckSpec }>('/v1/vips/dns4');
    assert.equal(vip.health_check.dsr, true);
    // The daemon's metrics count the packets the tunnel carried and the replies translated back.
    const metrics = (await lab.api.request<string>('GET', '/metrics')).raw.toString();
    const value = (result: string): number =>
      Number(new RegExp(`^ferry_health_dsr_packets_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    assert.ok(value('encap') > 0, metrics);
    assert.ok(value('reply') > 0, metrics);
    assert.equal(value('no_target'), 0);
  });

  it('HTTP over IPv6: a backend that lost the VIP fails the DSR check while a direct check still passes', async () => {
    const http: HealthCheckSpec = { type: 'http', path: '/', expect_body: 'be', ...FAST, dsr: true };
    await lab.createVip({
      name: 'web6',
      address: VIP6,
      port: 80,
      protocol: 'tcp',
      health_check: http,
      backends: [{ address: be1.addr6 }, { address: be2.addr6 }],
    });
    await until('both up through the tunnel', 'web6', (h) => Object.values(h).every((x) => x.status === 'up'));

    nsRun(be2.ns, 'ip', ['-6', 'addr', 'del', `${VIP6}/128`, 'dev', 'lo']);
    try {
      await until('be2 down', 'web6', (h) => h[be2.addr6]?.status === 'down' && h[be1.addr6]?.status === 'up');
      const h = await health('web6');
      assert.match(h[be2.addr6]?.last_error ?? '', /timeout|refused|unreachable/, JSON.stringify(h[be2.addr6]));
      // The same server passes a direct check: only the DSR path is broken.
      await lab.api.request('PUT', `/v1/vips/web6/backends/${be2.addr6}`, {
        body: { address: be2.addr6, health_check: { ...http, dsr: false } },
      });
      await until('be2 up checked directly', 'web6', (x) => x[be2.addr6]?.status === 'up');
    } finally {
      lab.lab.addVipOnBackend(be2, VIP6);
    }
    // Back to the VIP's DSR check, with the VIP restored: stays up.
    await lab.api.request('PUT', `/v1/vips/web6/backends/${be2.addr6}`, { body: { address: be2.addr6 } });
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await statusOf('web6'), { [be1.addr6]: 'up', [be2.addr6]: 'up' });
  });

  it('TCP over IPv4: a stopped server fails the DSR check and returns after a restart', async () => {
    await lab.createVip({
      name: 'tcp4',
      address: VIP4,
      port: 80,
      protocol: 'tcp',
      health_check: { type: 'tcp', ...FAST, dsr: true },
      backends: [{ address: be1.addr4 }, { address: be2.addr4 }],
    });
    await until('both up', 'tcp4', (h) => Object.values(h).every((x) => x.status === 'up'));
    await lab.stopServer(be1);
    try {
      await until('be1 down', 'tcp4', (h) => h[be1.addr4]?.status === 'down');
      // The RST came from the VIP and was handed to the socket as the backend's: "refused", not a timeout.
      assert.equal((await health('tcp4'))[be1.addr4]?.last_error, 'connection refused');
    } finally {
      await lab.startServer(be1);
    }
    await until('be1 back', 'tcp4', (h) => h[be1.addr4]?.status === 'up');
  });

  it('a backend of the other family cannot be checked through the tunnel, and says so', async () => {
    await lab.createVip({
      name: 'mixed4',
      address: VIP4,
      port: 7,
      protocol: 'tcp',
      health_check: { type: 'tcp', ...FAST, dsr: true },
      backends: [{ address: be1.addr4 }, { address: be2.addr6 }],
    });
    await until(
      'the IPv6 backend down, the IPv4 one up',
      'mixed4',
      (h) => h[be2.addr6]?.status === 'down' && h[be1.addr4]?.status === 'up',
    );
    assert.match(
      (await health('mixed4'))[be2.addr6]?.last_error ?? '',
      /IPv6 and VIP .* IPv4: a check cannot take the tunnel across families/,
    );
  });

  it('refuses a non-boolean dsr with a schema error and changes nothing', async () => {
    await assert.rejects(
      lab.api.request('PUT', '/v1/vips/tcp4', {
        body: { name: 'tcp4', address: VIP4, port: 80, protocol: 'tcp', health_check: { type: 'tcp', dsr: 'yes' } },
      }),
      (err: unknown) =>
        err instanceof ApiError && err.problem.status === 400 && /\/health_check\/dsr: must be of type boolean/.test(err.message),
    );
    const vip = await lab.api.get<{ health_check: HealthCheckSpec }>('/v1/vips/tcp4');
    assert.equal(vip.health_check.dsr, true);
  });
});
