// Runs the compiled node:test suites, one file at a time (suites that load
// BPF programs or build network namespaces must not race).
//   node scripts/run-tests.mjs [--unit] [name ...]
// Suites live in test/unit/<module>/ (no root needed) and test/root/<module>/
// (BPF, network namespaces: root). --unit runs only the first; names select
// suites whose path contains one of them (e.g. `store`, `k8s/`, `root/`).
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const only = args.filter((a) => a !== '--unit');
const groups = unitOnly ? ['unit'] : ['unit', 'root'];

/** Every *.test.js under dir, as paths relative to dist/test. */
function suites(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true })
    .filter((f) => f.endsWith('.test.js'))
    .map((f) => relative('dist/test', join(dir, f)));
}

const files = groups
  .flatMap((g) => suites(join('dist/test', g)))
  // Only suites whose source still exists: a deleted test's stale build output must not run.
  .filter((f) => existsSync(join('test', f.replace(/\.js$/, '.ts'))))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => join('dist/test', f));
if (files.length === 0) {
  console.error(`no test files found under dist/test/{${groups.join(',')}}${only.length ? ` matching ${only.join(', ')}` : ''}`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', '--test-concurrency=1', '--test-timeout=300000', ...files], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
