/**
 * The ABI check every object's TypeScript mirror gets: each struct's size
 * and fields (name, offset, size) equal what the compiled object's BTF says.
 */
import assert from 'node:assert/strict';
import { loadNative } from '../../src/datapath/native.js';
import type { AnyStruct } from '../../src/datapath/struct.js';

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
