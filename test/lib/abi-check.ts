/**
 * The checks every object's TypeScript ABI mirror gets: each struct's size
 * and fields (name, offset, size) equal what the compiled object's BTF says,
 * and constants and enum orders equal the C headers'.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadNative } from '../../src/datapath/native.js';
import type { AnyStruct } from '../../src/datapath/struct.js';
import { packageRoot } from '../../src/paths.js';

export function assertStructsMatchBtf(objectPath: string, structs: readonly AnyStruct[]): void {
  const nat = loadNative();
  for (const s of structs) {
    const btf = nat.btfStructLayout(objectPath, s.cName);
    assert.equal(btf.size, s.size, `sizeof(struct ${s.cName})`);
    assert.deepEqual(
      btf.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size })),
      s.layout.map((f) => ({ name: f.name, offset: f.offset, size: f.size })),
      `fields of struct ${s.cName}`,
    );
  }
}

/** The text of bpf/lib/<name>. */
export const bpfHeader = (name: string): string => readFileSync(join(packageRoot(), 'bpf', 'lib', name), 'utf8');

/** The enumerators of a C enum, in order. */
export function cEnum(src: string, name: string): string[] {
  const m = new RegExp(`enum ${name} \\{([^}]*)\\}`, 's').exec(src);
  assert.ok(m, `enum ${name} found`);
  return m[1]!
    .split('\n')
    .map((l) => l.replace(/\/\*.*?\*\//g, '').trim())
    .filter((l) => l.length > 0)
    .map((l) => l.split(/[\s=,]/)[0]!);
}

/** The value of a #define (decimal, hex, shifts and ULL suffixes); a shift into bit 31 reads as unsigned. */
export function cDefine(src: string, name: string): number {
  const m = new RegExp(`#define ${name}\\s+([^\\n/]+)`).exec(src);
  assert.ok(m, `#define ${name} found`);
  const expr = m[1]!.trim().replace(/([0-9a-fA-F])(?:ULL|UL|U|LL|L)\b/g, '$1');
  assert.match(expr, /^[0-9a-fA-Fx()<\s]+$/, `${name} is a plain constant`);
  const v = Number(Function(`return (${expr});`)());
  return v < 0 ? v >>> 0 : v;
}
