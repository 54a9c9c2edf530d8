#!/usr/bin/env node
// ferryd: the Ferry daemon (built into dist/ by `npm run build`).
import '../dist/src/daemon/ferryd.js';
