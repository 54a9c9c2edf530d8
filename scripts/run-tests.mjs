// Runs every compiled node:test suite under dist/test, one file at a time
// (suites that load BPF programs or build network namespaces must not race).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const dir = 'dist/test';
const only = process.argv.slice(2);
// Only suites whose source still exists: a deleted test's stale build output must not run.
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js') && existsSync(join('test', f.replace(/\.js$/, '.ts'))))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', '--test-concurrency=1', '--test-timeout=300000', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
