#!/usr/bin/env node
// ferryctl: Ferry's command line client (built into dist/ by `npm run build`).
import '../dist/src/cli/ferryctl.js';
