#!/usr/bin/env node
// The package's install step: use the prebuilt binary when one fits this platform and
// loads, otherwise build from source with node-gyp (scripts/build-addon.js, against the
// running Node.js's headers). `npm install --build-from-source` or
// PERFORMER_ATTENTION_BUILD_FROM_SOURCE=1 always builds.
'use strict';
const path = require('node:path');
const { findPrebuild } = require('./find-prebuild.js');

const root = path.resolve(__dirname, '..');
const env = process.env;
const forced =
  env.npm_config_build_from_source === 'true' ||
  env.npm_config_build_from_source === 'performer-attention' ||
  (env.PERFORMER_ATTENTION_BUILD_FROM_SOURCE && env.PERFORMER_ATTENTION_BUILD_FROM_SOURCE !== '0');

if (!forced) {
  const prebuild = findPrebuild(root);
  if (prebuild) {
    try {
      require(prebuild);
      process.exit(0);
    } catch (error) {
      // For example a C library older than the one the prebuild was linked against.
      console.warn(`performer-attention: the prebuilt binary ${prebuild} does not load here (${error.message}); building from source.`);
    }
  }
}
if (forced) {
  // The loader prefers a prebuild to build/Release: once a source build was asked for
  // and has succeeded (build-addon.js exits on failure), drop the shipped prebuilds.
  process.on('exit', (code) => {
    if (code === 0) require('node:fs').rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
  });
}
require('./build-addon.js');
