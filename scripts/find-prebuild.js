// The prebuilt binary in prebuilds/ that fits this process, by node-gyp-build's own
// matching rules (platform-arch folder, then runtime, Node-API and libc tags), or null.
// Unlike node-gyp-build's resolve(), it does not look at build/: the loader and the
// install script decide themselves where a local build comes in the order.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function list(dir) {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function findPrebuild(packageRoot) {
  let ngb;
  try {
    ngb = require('node-gyp-build');
  } catch {
    return null; // only needed for prebuilds; a source build works without it
  }
  const dir = path.join(packageRoot, 'prebuilds');
  const tuple = list(dir)
    .map(ngb.parseTuple)
    .filter(ngb.matchTuple(process.env.npm_config_platform || os.platform(), process.env.npm_config_arch || os.arch()))
    .sort(ngb.compareTuples)[0];
  if (!tuple) return null;
  const runtime = 'node';
  const winner = list(path.join(dir, tuple.name))
    .map(ngb.parseTags)
    .filter(ngb.matchTags(runtime, process.versions.modules))
    .sort(ngb.compareTags(runtime))[0];
  return winner ? path.join(dir, tuple.name, winner.file) : null;
}

module.exports = { findPrebuild };
