#!/usr/bin/env node
// `npm pack` / `npm publish` (prepack): builds the Node-API binary for this platform with
// prebuildify into prebuilds/<platform>-<arch>/, which the package ships and the loader
// tries before any local build. node-gyp gets the running Node.js's own headers
// (npm_config_nodedir) so nothing is downloaded.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const nodeDir = path.resolve(path.dirname(process.execPath), '..');
if (!fs.existsSync(path.join(nodeDir, 'include', 'node', 'node_api.h'))) {
  console.error(`scripts/prebuild.js: Node.js headers not found under ${nodeDir}/include/node`);
  process.exit(1);
}
// A prebuild left from an earlier pack must not be shipped for a different source.
fs.rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
const args = [
  require.resolve('prebuildify/bin.js'),
  '--napi',
  '--strip',
  // glibc in the name: a musl system finds no match and builds from source instead.
  '--tag-libc',
  // The Node-API build does not depend on the version: build against the running one,
  // whose headers are at hand, rather than prebuildify's default (the newest Node.js).
  `--target=node@${process.versions.node}`,
];
const result = spawnSync(process.execPath, args, {
  cwd: root,
  stdio: 'inherit',
  env: {
    ...process.env,
    npm_config_nodedir: nodeDir,
    JOBS: String(Math.max(1, os.availableParallelism())),
    // prebuildify runs node-gyp from node_modules/.bin; the package's own copy.
    PREBUILD_NODE_GYP: path.join(root, 'node_modules', '.bin', 'node-gyp'),
  },
});
if (result.error) throw result.error;
if (result.status !== 0) process.exit(result.status === null ? 1 : result.status);
// prebuildify moves build/Release's binary into prebuilds/: put a copy back so that a
// checkout keeps its local build after packing.
const built = fs.readdirSync(path.join(root, 'prebuilds', `${process.platform}-${process.arch}`))[0];
fs.copyFileSync(
  path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, built),
  path.join(root, 'build', 'Release', 'performer_attention.node'),
);
