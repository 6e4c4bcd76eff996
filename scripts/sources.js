// Prints one group of native/sources.json, space-separated, for binding.gyp's
// command expansion: node scripts/sources.js core
'use strict';
const sources = require('../native/sources.json');
const group = process.argv[2];
if (!Array.isArray(sources[group])) {
  console.error(`scripts/sources.js: unknown source group "${group}"`);
  process.exit(1);
}
process.stdout.write(sources[group].join(' '));
