// Writes api/openapi.json from the routes' schemas (run after `npm run build:ts`).
// test/unit/api/api.test.ts fails when the committed file differs from what this writes.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { openApiText } = await import(join(root, 'dist/src/api/openapi-doc.js'));
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const out = join(root, 'api/openapi.json');
writeFileSync(out, await openApiText(version));
console.log(`wrote ${out}`);
