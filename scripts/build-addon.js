#!/usr/bin/env node
// Builds the addon with node-gyp against the headers of the Node.js that runs this
// script (found from process.execPath), so the build never downloads headers.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const nodeDir = path.resolve(path.dirname(process.execPath), '..');
const header = path.join(nodeDir, 'include', 'node', 'node_api.h');
if (!fs.existsSync(header)) {
  console.error(
    `performer-attention: cannot build the native addon: Node.js headers not found at ${header}.\n` +
      'Install the headers that match this Node.js (for example the distribution\'s nodejs-dev / ' +
      'libnode-dev package, or an official Node.js build, which ships them), then run npm install again.',
  );
  process.exit(1);
}
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const args = [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`, `--jobs=${Math.max(1, require('node:os').availableParallelism())}`];
const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (result.error) throw result.error;
process.exit(result.status === null ? 1 : result.status);
