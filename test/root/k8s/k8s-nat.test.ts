/**
 * The kernel's NAT of the Kubernetes mode (src/k8s/nat.ts): the nft script
 * it renders, and the table as nftables holds it after real applies in a
 * network namespace of the test's own (ferrytest-nat-<pid>): written whole
 * once, then changed entry by entry (one entry's change touches only its
 * chains and elements), unchanged lists not re-applied, a refused script
 * changing nothing, lists queued while nft runs, removal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { NatTable, conntrackFlushes, conntrackRunner, nftHasTable, nftRunner, renderNat } from '../../../src/k8s/nat.js';
import type { NatEntry } from '../../../src/k8s/translate.js';

const NS = `ferrytest-nat-${process.pid}`;
const noNft =
  spawnSync('nft', ['--version']).status !== 0
    ? 'nft is not installed'
    : spawnSync('conntrack', ['--version']).status !== 0
      ? 'conntrack is not installed'
      : process.getuid?.() !== 0
        ? 'needs root'
        : undefined;
if (noNft) console.log(`# skipping kernel NAT tests: ${noNft}`);

const web: NatEntry = {
  service: 'default/web',
  address: '198.18.0.2',
  port: 30080,
  protocol: 'tcp',
  masquerade: true,
  affinity: false,
  sourceRanges: null,
  backends: [
    { address: '10.244.0.1', port: 8080 },
    { address: '10.244.0.2', port: 8080 },
  ],
};
const dns: NatEntry = {
  service: 'default/dns',
  address: 'fd00::2',
  port: 30053,
  protocol: 'udp',
  masquerade: false,
  affinity: true,
  sourceRanges: null,
  backends: [{ address: 'fd00:244::1', port: 53 }],
};
const guarded: NatEntry = {
  ...web,
  service: 'default/lb',
  address: '198.19.0.9',
  port: 443,
  sourceRanges: ['192.0.2.0/24', '198.51.100.0/24'],
};
const closed6: NatEntry = { ...dns, service: 'default/lb', address: 'fd00::9', port: 443, protocol: 'tcp', sourceRanges: [] };

describe('kernel NAT: the script', () => {
  it('a chain per entry, found through a verdict map: DNAT, a mark bit for the masqueraded, a hash for affinity, source ranges first', () => {
    const empty = { ...web, address: '198.18.0.3', backends: [] };
    const script = renderNat([web, dns, guarded, closed6, empty]);
    assert.match(script, /^table inet ferry_k8s\ndelete table inet ferry_k8s\ntable inet ferry_k8s \{/);
    const has = (re: RegExp): void => assert.match(script, re);
    const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    // A rule inside a chain of the entry's own; an element of a verdict map going to such a chain.
    const rule = (chain: string, text: string) => new RegExp(`^  chain ${chain}_[0-9a-f]{16} \\{\\n(    .*\\n)*?    ${esc(text)}$`, 'm');
    const elem = (map: string, el: string, chain: string) =>
      new RegExp(`^  map ${map} \\{[^\\n]*elements = \\{[^\\n]*${esc(el)} : goto ${chain}_[0-9a-f]{16}`, 'm');
    has(/ip daddr \. meta l4proto \. th dport vmap @nat4/);
    has(/ip6 daddr \. meta l4proto \. th dport vmap @ranges6/);
    has(elem('nat4', '198.18.0.2 . tcp . 30080', 'svc'));
    // A rule per endpoint: the first takes 1 in 2, the last the rest; the mark bit first, for every connection.
    has(rule('svc', 'ct mark set ct mark | 0x10000000'));
    has(rule('svc', 'numgen random mod 2 == 0 meta l4proto tcp dnat ip to 10.244.0.1:8080'));
    has(rule('svc', 'meta l4proto tcp dnat ip to 10.244.0.2:8080'));
    has(rule('svc', 'meta l4proto udp dnat ip6 to [fd00:244::1]:53'));
    has(elem('ranges4', '198.19.0.9 . tcp . 443', 'src'));
    has(rule('src', 'ip saddr != { 192.0.2.0/24, 198.51.100.0/24 } drop'));
    has(elem('ranges6', 'fd00::9 . tcp . 443', 'src'));
    has(rule('src', 'drop'));
    has(/ct mark & 0x10000000 == 0x10000000 masquerade/);
    // externalTrafficPolicy Local: only an endpoint reaching its own Service is masqueraded (hairpin).
    has(new RegExp(`^    ${esc('ip6 saddr fd00:244::1 ct mark set ct mark | 0x10000000')}$`, 'm'));
    assert.ok(!/ip saddr \{ 10\.244\.0\.1/.test(script), 'Cluster entries need no hairpin rule');
    has(elem('nat4', '198.18.0.3 . tcp . 30080', 'svc'));
    assert.ok(!/dnat ip to numgen random mod 0/.test(script), 'an entry without endpoints has no DNAT rule: its packets pass');
    assert.ok(!script.includes('map {'), 'no anonymous map: each costs the kernel a scan of the table to name it');
  });

  it('endpoint i of n takes 1 in n - i of what reaches its rule (1 in n overall); with affinity, the clients hashing to i', () => {
    const four = { ...web, backends: [1, 2, 3, 4].map((k) => ({ address: `10.244.0.${k}`, port: 8080 })) };
    const lines = (e: NatEntry) =>
      renderNat([e])
        .split('\n')
        .filter((l) => l.includes('dnat'))
        .map((l) => l.trim());
    assert.deepEqual(lines(four), [
      'numgen random mod 4 == 0 meta l4proto tcp dnat ip to 10.244.0.1:8080',
      'numgen random mod 3 == 0 meta l4proto tcp dnat ip to 10.244.0.2:8080',
      'numgen random mod 2 == 0 meta l4proto tcp dnat ip to 10.244.0.3:8080',
      'meta l4proto tcp dnat ip to 10.244.0.4:8080',
    ]);
    assert.deepEqual(lines({ ...four, affinity: true }).slice(0, 2), [
      'jhash ip saddr mod 4 seed 0x4652 == 0 meta l4proto tcp dnat ip to 10.244.0.1:8080',
      'jhash ip saddr mod 4 seed 0x4652 == 1 meta l4proto tcp dnat ip to 10.244.0.2:8080',
    ]);
    // Many endpoints: one map lookup instead of a long walk for each new connection.
    const many = { ...web, backends: Array.from({ length: 17 }, (_, k) => ({ address: `10.244.1.${k}`, port: 80 })) };
    assert.equal(lines(many).length, 1);
    assert.match(
      lines(many)[0]!,
      /^meta l4proto tcp dnat ip to numgen random mod 17 map \{ 0 : 10\.244\.1\.0 \. 80, .* 16 : 10\.244\.1\.16 \. 80 \}$/,
    );
  });
});

describe('kernel NAT: UDP conntrack flushes', () => {
  const udp4: NatEntry = {
    ...web,
    service: 'default/dns',
    port: 30053,
    protocol: 'udp',
    backends: [
      { address: '10.244.0.1', port: 53 },
      { address: '10.244.0.2', port: 53 },
    ],
  };
  it('an endpoint that left, a Service that got its first endpoint, a Service gone; TCP never', () => {
    const base = ['-D', '-p', 'udp', '--orig-dst', '198.18.0.2', '--orig-port-dst', '30053'];
    assert.deepEqual(
      conntrackFlushes(
        [udp4, web],
        [
          { ...udp4, backends: [udp4.backends[0]!] },
          { ...web, backends: [] },
        ],
      ),
      [[...base, '--reply-src', '10.244.0.2', '--reply-port-src', '53']],
    );
    assert.deepEqual(conntrackFlushes([{ ...udp4, backends: [] }], [udp4]), [base], 'flows that passed un-NATed');
    assert.deepEqual(conntrackFlushes([], [udp4]), [base]);
    assert.deepEqual(
      conntrackFlushes([udp4], []),
      udp4.backends.map((b) => [...base, '--reply-src', b.address, '--reply-port-src', '53']),
    );
    assert.deepEqual(conntrackFlushes([dns], [{ ...dns, backends: [] }])[0]?.slice(0, 3), ['-D', '-f', 'ipv6']);
    assert.deepEqual(conntrackFlushes([udp4], [udp4]), []);
  });
});

describe('kernel NAT: applied in a namespace', { skip: noNft }, () => {
  const list = (): string =>
    execFileSync('nsenter', [`--net=/run/netns/${NS}`, '--', 'nft', 'list', 'table', 'inet', 'ferry_k8s'], { encoding: 'utf8' });
  before(() => {
    spawnSync('ip', ['netns', 'del', NS]);
    execFileSync('ip', ['netns', 'add', NS]);
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', NS]);
  });

  it('writes the table once, then only what changed; skips unchanged lists; keeps the last good table when nft refuses; removes it', async () => {
    let runs = 0;
    const scripts: string[] = [];
    const run = nftRunner(NS);
    const table = new NatTable(async (script) => {
      runs++;
      scripts.push(script);
      await run(script);
    }, conntrackRunner(NS));
    await table.apply([web, dns, guarded, closed6]);
    assert.equal(table.entries, 4);
    let text = list();
    assert.match(text, /ct mark set ct mark \| 0x10000000\n\s+numgen random mod 2 0 meta l4proto tcp dnat ip to 10\.244\.0\.1:8080\n/);
    assert.match(text, /\n\s+meta l4proto tcp dnat ip to 10\.244\.0\.2:8080\n/);
    assert.match(text, /meta l4proto udp dnat ip6 to \[fd00:244::1\]:53/);
    assert.match(text, /ip saddr != \{ 192\.0\.2\.0\/24, 198\.51\.100\.0\/24 \} drop/);
    assert.match(text, /198\.18\.0\.2 \. tcp \. 30080 : goto svc_/);
    await table.apply([web, dns, guarded, closed6]);
    assert.equal(runs, 1, 'an unchanged list is not applied again');
    await table.apply([{ ...web, backends: [...web.backends] }, dns, guarded, closed6]);
    assert.equal(runs, 1, 'nor is an entry equal to the one applied, given as another object');
    // One entry changed: only its chain is rewritten, in a script that names nothing else.
    const moved = { ...web, backends: [web.backends[0]!] };
    await table.apply([moved, dns, guarded, closed6]);
    assert.equal(runs, 2);
    assert.doesNotMatch(scripts[1]!, /delete table|fd00|198\.19\.0\.9/, scripts[1]);
    assert.match(scripts[1]!, /^flush chain inet ferry_k8s svc_/m);
    assert.match(list(), /ct mark set ct mark \| 0x10000000\n\s+meta l4proto tcp dnat ip to 10\.244\.0\.1:8080\n\s+\}/);
    assert.deepEqual(table.stats, { full: 1, incremental: 1 });
    await table.apply([web, dns, guarded, closed6]);
    runs = 1;
    // Lists given while nft runs: the last one wins, the one in between is never applied.
    const a = table.apply([web, dns]);
    const b = table.apply([dns]);
    const c = table.apply([web]);
    await Promise.all([a, b, c]);
    assert.equal(runs, 3, 'the first run, then only the latest pending list');
    text = list();
    assert.ok(!text.includes('fd00::2') && text.includes('198.18.0.2'), 'the table holds exactly the latest list');
    await assert.rejects(table.apply([{ ...web, address: '198.18.0.999' }]), /^Error: nft: /);
    assert.match(table.lastError ?? '', /^nft: /);
    assert.equal(table.failed, true);
    assert.match(list(), /198\.18\.0\.2 \. tcp \. 30080 : goto svc_/, 'a refused script changes nothing (one transaction)');
    await table.apply([web]);
    assert.equal(table.failed, false);
    assert.equal(runs, 5, 'after a refusal the table is written whole again');
    table.invalidate();
    await table.apply([web]);
    assert.equal(runs, 6, 'after invalidate() the same list is written again');
    const present = () => nftHasTable(NS);
    assert.equal(await table.lost(present), false, 'the table is there');
    execFileSync('nsenter', [`--net=/run/netns/${NS}`, '--', 'nft', 'flush', 'ruleset']);
    assert.equal(await table.lost(present), true, 'a flushed ruleset is noticed');
    await table.apply([web]);
    assert.equal(runs, 7, 'and the list written again');
    assert.match(list(), /198\.18\.0\.2 \. tcp \. 30080 : goto svc_/);
    await table.remove();
    assert.notEqual(
      spawnSync('nsenter', [`--net=/run/netns/${NS}`, '--', 'nft', 'list', 'table', 'inet', 'ferry_k8s']).status,
      0,
      'the table is gone',
    );
    await table.remove();
  });

  it('a UDP flow DNATed to an endpoint that leaves is deleted from conntrack; others stay', async () => {
    const ct = (...args: string[]) => spawnSync('nsenter', [`--net=/run/netns/${NS}`, '--', 'conntrack', ...args], { encoding: 'utf8' });
    const flow = (sport: number, backend: string) =>
      ct(
        '-I',
        '-p',
        'udp',
        '-s',
        '192.0.2.1',
        '-d',
        '198.18.0.2',
        '--sport',
        String(sport),
        '--dport',
        '30053',
        '-r',
        backend,
        '-q',
        '192.0.2.1',
        '--reply-port-src',
        '53',
        '--reply-port-dst',
        String(sport),
        '-t',
        '60',
      );
    const flows = (): string => ct('-L', '-p', 'udp').stdout;
    const udp4: NatEntry = {
      ...web,
      port: 30053,
      protocol: 'udp',
      backends: [
        { address: '10.244.0.1', port: 53 },
        { address: '10.244.0.2', port: 53 },
      ],
    };
    const table = new NatTable(nftRunner(NS), conntrackRunner(NS));
    await table.apply([udp4]);
    assert.equal(flow(5001, '10.244.0.1').status, 0, 'a flow to the first endpoint');
    assert.equal(flow(5002, '10.244.0.2').status, 0, 'and one to the second');
    assert.match(flows(), /sport=5001/);
    await table.apply([{ ...udp4, backends: [udp4.backends[0]!] }]);
    const left = flows();
    assert.match(left, /sport=5001/, 'the flow of the endpoint that stays');
    assert.doesNotMatch(left, /sport=5002/, 'the flow of the endpoint that left is gone');
    await table.remove();
  });
});
