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
// The package's own node-gyp in a checkout (a devDependency); in an installed package,
// the node-gyp that npm bundles and names in npm_config_node_gyp while it runs scripts.
function findNodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  }
  console.error(
    'performer-attention: cannot build the native addon: node-gyp not found. There is no prebuilt binary for ' +
      `${process.platform}-${process.arch}, so it must be built from source: run the install through npm ` +
      '(which bundles node-gyp), or `npm install -g node-gyp` and set npm_config_node_gyp to its bin/node-gyp.js.',
  );
  process.exit(1);
}
const nodeGyp = findNodeGyp();
const args = [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`, `--jobs=${Math.max(1, require('node:os').availableParallelism())}`];
const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (result.error) throw result.error;
if (result.status !== 0) {
  console.error(
    'performer-attention: building the native addon from source failed (output above).\n' +
      `There is no prebuilt binary for ${process.platform}-${process.arch} (or it did not load), so it needs a C++17 ` +
      'compiler (g++ or clang++), make and python3 on PATH. Install them (Debian/Ubuntu: apt-get install g++ make python3) ' +
      'and run `npm rebuild performer-attention`.',
  );
}
process.exit(result.status === null ? 1 : result.status);
