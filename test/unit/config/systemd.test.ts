/**
 * The systemd unit verifies with systemd-analyze, and the install script
 * lays out a working tree (staged under a prefix so the host is untouched).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../../src/config/index.js';
import { packageRoot } from '../../../src/paths.js';

const unit = join(packageRoot(), 'systemd', 'ferry.service');
const analyze = spawnSync('systemd-analyze', ['--version']).status === 0;

describe('systemd', () => {
  it('ferry.service passes systemd-analyze verify', { skip: analyze ? false : 'systemd-analyze not installed' }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-unit-'));
    try {
      // verify checks that ExecStart exists: point it at a stand-in.
      const exe = join(dir, 'ferryd');
      writeFileSync(exe, '#!/bin/sh\n');
      chmodSync(exe, 0o755);
      const text = readFileSync(unit, 'utf8').replace('/usr/local/bin/ferryd', exe);
      writeFileSync(join(dir, 'ferry.service'), text);
      const r = spawnSync('systemd-analyze', ['verify', join(dir, 'ferry.service')], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr.trim(), '', 'no warnings');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it(
    "ferry-bird.service (BIRD beside ferryd) passes systemd-analyze verify, on ferryd's default paths",
    { skip: analyze ? false : 'systemd-analyze not installed' },
    () => {
      const birdUnit = join(packageRoot(), 'systemd', 'ferry-bird.service');
      const text = readFileSync(birdUnit, 'utf8');
      const defaults = parseConfig('{}', 'defaults').bgp;
      assert.ok(
        text.includes(`-c ${defaults.bird_config} -s ${defaults.bird_socket}`),
        'ExecStart uses bgp.bird_config and bgp.bird_socket',
      );
      assert.ok(text.includes(`ConditionPathExists=${defaults.bird_config}`));
      const dir = mkdtempSync(join(tmpdir(), 'ferry-unit-'));
      try {
        const exe = join(dir, 'bird');
        writeFileSync(exe, '#!/bin/sh\n');
        chmodSync(exe, 0o755);
        writeFileSync(join(dir, 'ferry-bird.service'), text.replaceAll('/usr/sbin/birdc', exe).replaceAll('/usr/sbin/bird', exe));
        const r = spawnSync('systemd-analyze', ['verify', join(dir, 'ferry-bird.service')], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stderr.trim(), '', 'no warnings');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('has an exposure score of at most 3.0 (systemd-analyze security)', { skip: analyze ? false : 'systemd-analyze not installed' }, () => {
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', unit], { encoding: 'utf8' });
    const m = /Overall exposure level for ferry\.service: (\d+\.\d)/.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    console.log(`# systemd-analyze security: exposure ${m[1]}`);
    assert.ok(Number(m[1]) <= 3.0, `exposure ${m[1]}`);
  });

  it('declares what the issue asks of it', () => {
    const text = readFileSync(unit, 'utf8');
    for (const line of [
      'Type=notify',
      'WatchdogSec=',
      'Restart=on-failure',
      'StateDirectory=ferry',
      'RuntimeDirectory=ferry',
      'ConfigurationDirectory=ferry',
      'CAP_BPF',
      'CAP_NET_ADMIN',
      'CAP_PERFMON',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'NoNewPrivileges=yes',
      'LimitMEMLOCK=',
    ])
      assert.ok(text.includes(line), line);
  });

  it('install-system lays out ferryd, ferryctl, the config and the unit under a prefix', () => {
    const prefix = mkdtempSync(join(tmpdir(), 'ferry-install-'));
    try {
      execFileSync('bash', [join(packageRoot(), 'scripts', 'install-system.sh'), '--prefix', prefix], { stdio: 'pipe' });
      for (const f of [
        'usr/local/bin/ferryd',
        'usr/local/bin/ferryctl',
        'etc/ferry/ferry.yaml',
        'etc/systemd/system/ferry.service',
        'etc/systemd/system/ferry-bird.service',
        'opt/ferry/dist/src/daemon/ferryd.js',
        'opt/ferry/native/build/Release/ferry_native.node',
        'opt/ferry/build/bpf/xdp_lb.bpf.o',
      ]) {
        assert.ok(existsSync(join(prefix, f)), f);
      }
      // The installed ferryd answers --check against the installed config.
      const out = execFileSync(
        'node',
        [join(prefix, 'opt/ferry/bin/ferryd.js'), '--check', '--config', join(prefix, 'etc/ferry/ferry.yaml')],
        { encoding: 'utf8' },
      );
      assert.match(out, /is valid/);
    } finally {
      rmSync(prefix, { recursive: true, force: true });
    }
  });
});
