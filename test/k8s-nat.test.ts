/**
 * The kernel's NAT of the Kubernetes mode (src/k8s/nat.ts): the nft script
 * it renders, and the table as nftables holds it after real applies in a
 * network namespace of the test's own (ferrytest-nat-<pid>): replaced as a
 * whole, unchanged lists not re-applied, a refused script changing nothing,
 * removal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { NatTable, nftRunner, renderNat } from '../src/k8s/nat.js';
import type { NatEntry } from '../src/k8s/translate.js';

const NS = `ferrytest-nat-${process.pid}`;
const noNft = spawnSync('nft', ['--version']).status !== 0 ? 'nft is not installed' : process.getuid?.() !== 0 ? 'needs root' : undefined;
if (noNft) console.log(`# skipping kernel NAT tests: ${noNft}`);

const web: NatEntry = {
  service: 'default/web', address: '198.18.0.2', port: 30080, protocol: 'tcp', masquerade: true,
  backends: [{ address: '10.244.0.1', port: 8080 }, { address: '10.244.0.2', port: 8080 }],
};
const dns: NatEntry = {
  service: 'default/dns', address: 'fd00::2', port: 30053, protocol: 'udp', masquerade: false,
  backends: [{ address: 'fd00:244::1', port: 53 }],
};

describe('kernel NAT: the script', () => {
  it('one DNAT rule per entry with endpoints; a conntrack mark for the masqueraded; IPv6 as ip6', () => {
    const script = renderNat([web, dns, { ...web, address: '198.18.0.3', backends: [] }]);
    assert.match(script, /^table inet ferry_k8s\ndelete table inet ferry_k8s\ntable inet ferry_k8s \{/);
    assert.ok(script.includes('ip daddr 198.18.0.2 tcp dport 30080 ct mark set 0x4652 dnat ip to numgen random mod 2 map { 0 : 10.244.0.1 . 8080, 1 : 10.244.0.2 . 8080 }'), script);
    assert.ok(script.includes('ip6 daddr fd00::2 udp dport 30053 dnat ip6 to numgen random mod 1 map { 0 : fd00:244::1 . 53 }'), script);
    assert.ok(!script.includes('198.18.0.3'), 'an entry without endpoints has no rule');
    assert.ok(script.includes('ct mark 0x4652 masquerade'));
  });
});

describe('kernel NAT: applied in a namespace', { skip: noNft }, () => {
  const list = (): string => execFileSync('nsenter', [`--net=/run/netns/${NS}`, '--', 'nft', 'list', 'table', 'inet', 'ferry_k8s'], { encoding: 'utf8' });
  before(() => {
    spawnSync('ip', ['netns', 'del', NS]);
    execFileSync('ip', ['netns', 'add', NS]);
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', NS]);
  });

  it('replaces the table as a whole, skips unchanged lists, keeps the last good table when nft refuses, removes it', () => {
    let runs = 0;
    const run = nftRunner(NS);
    const table = new NatTable((script) => {
      runs++;
      run(script);
    });
    table.apply([web, dns]);
    assert.equal(table.entries, 2);
    let text = list();
    assert.match(text, /ip daddr 198\.18\.0\.2 tcp dport 30080 ct mark set 0x00004652 dnat ip to numgen random mod 2 map \{ 0 : 10\.244\.0\.1 \. 8080, 1 : 10\.244\.0\.2 \. 8080 \}/);
    assert.match(text, /ip6 daddr fd00::2 udp dport 30053 dnat ip6 to numgen random mod 1 map \{ 0 : fd00:244::1 \. 53 \}/);
    table.apply([web, dns]);
    assert.equal(runs, 1, 'an unchanged list is not applied again');
    table.apply([web]);
    text = list();
    assert.ok(!text.includes('fd00::2'), 'the table holds exactly the new list');
    assert.throws(() => table.apply([{ ...web, address: '198.18.0.999' }]), /^Error: nft: /);
    assert.match(table.lastError ?? '', /^nft: /);
    assert.equal(table.failed, true);
    assert.match(list(), /198\.18\.0\.2 tcp dport 30080/, 'a refused script changes nothing (one transaction)');
    table.apply([web]);
    assert.equal(table.failed, false);
    table.remove();
    assert.notEqual(spawnSync('nsenter', [`--net=/run/netns/${NS}`, '--', 'nft', 'list', 'table', 'inet', 'ferry_k8s']).status, 0, 'the table is gone');
  });
});
