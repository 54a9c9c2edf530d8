/**
 * Where Ferry's build outputs live, found from this module's own location
 * so that `dist/` works from a checkout and from an installed tree alike.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The folder holding Ferry's package.json. */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bpf'))) return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find Ferry's package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** A compiled BPF object, e.g. bpfObjectPath('xdp_lb'). */
export function bpfObjectPath(name: string): string {
  return join(packageRoot(), 'build', 'bpf', `${name}.bpf.o`);
}
