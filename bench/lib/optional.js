'use strict';
// Optional packages the benchmark uses when they are installed: onnxruntime-node (the
// comparison) and protobufjs (writes the models it runs). Looked up from the benchmark's
// own folder first, then from the current directory (a project that installed both).
const path = require('node:path');

function resolveFrom(name) {
  const bases = [path.join(__dirname, '..', '..'), process.cwd()];
  for (const base of bases) {
    try {
      return require.resolve(name, { paths: [base] });
    } catch {
      // try the next base
    }
  }
  return null;
}

const INSTALL = 'ONNXRUNTIME_NODE_INSTALL=skip npm install --no-save onnxruntime-node protobufjs';

/** An optional package's exports; throws, saying how to install it, when it is missing. */
function requireOptional(name) {
  const file = resolveFrom(name);
  if (!file) throw new Error(`${name} is not installed (optional; to compare with onnxruntime: ${INSTALL})`);
  return require(file);
}

/** { ort, version } or { error } (with how to install it). */
function loadOnnxRuntime() {
  const file = resolveFrom('onnxruntime-node');
  if (!file) {
    return {
      error: `onnxruntime-node is not installed (optional; to compare, install it without its GPU download: ${INSTALL})`,
    };
  }
  if (!resolveFrom('protobufjs')) {
    return { error: `protobufjs, which writes the models for onnxruntime, is not installed (${INSTALL})` };
  }
  try {
    const ort = require(file);
    let version = ort.env && ort.env.versions ? ort.env.versions.node || ort.env.versions.common : undefined;
    if (!version) {
      try {
        version = require(path.join(path.dirname(require.resolve('onnxruntime-node/package.json', { paths: [path.dirname(file)] })), 'package.json')).version;
      } catch {
        version = 'unknown';
      }
    }
    return { ort, version };
  } catch (e) {
    return { error: `onnxruntime-node is installed but failed to load: ${e.message}` };
  }
}

module.exports = { resolveFrom, requireOptional, loadOnnxRuntime };
