/**
 * Child process of the store's kill -9 test: writes a burst of changes to a
 * file store and acknowledges each one on stdout ("REVISION NAME") only after
 * its commit returned, exactly as the API answers only after commit. The
 * parent SIGKILLs it mid-burst and checks that every acknowledged write
 * survived.
 *
 * Usage: node store-writer.js DB_PATH COUNT
 */
import { writeSync } from 'node:fs';
import { openStore } from '../../src/store/store.js';

const [path, countText] = process.argv.slice(2);
if (path === undefined || countText === undefined) {
  process.stderr.write('usage: store-writer DB_PATH COUNT\n');
  process.exit(2);
}
const count = Number(countText);
const store = openStore(path, { maxVips: 1 << 17, maxBackends: 1 << 17 });
// Continue numbering after a previous (killed) run on the same file.
const start = store.read((tx) => tx.snapshot().vips.length);

/** A distinct VIP address per index, inside the benchmarking range 198.18.0.0/15. */
function address(i: number): string {
  return `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 255}.${i & 255}`;
}

for (let i = start; i < start + count; i++) {
  const name = `vip-${i}`;
  const { revision } = store.write('kill-test', 'create-vip', (tx) => {
    tx.createVip({ name, address: address(i), port: 80, protocol: 'tcp' });
    tx.createBackend(name, { address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` });
  });
  // writeSync: the acknowledgement is in the pipe before the next write starts.
  writeSync(1, `${revision} ${name}\n`);
}
store.close();
