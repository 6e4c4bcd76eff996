#!/usr/bin/env node
// clang-format over every C++ file of native/ with the tree's .clang-format.
//   node scripts/format-cxx.js          rewrite the files in place (npm run format)
//   node scripts/format-cxx.js --check  change nothing; list the files that differ, exit 1 if any
// The binary comes with the clang-format-node dev dependency, so every machine formats with
// the same clang-format version.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function cxxFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) return cxxFiles(p);
    return /\.(cc|h)$/.test(entry.name) ? [path.relative(root, p)] : [];
  });
}

function clangFormat() {
  const { getClangFormatPath } = require('clang-format-node');
  return getClangFormatPath(process.platform, process.arch);
}

// Files clang-format would change (relative paths, sorted).
function unformattedFiles(files = cxxFiles(path.join(root, 'native'))) {
  const child = spawnSync(clangFormat(), ['--dry-run', '--Werror', ...files], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (child.error) throw child.error;
  const named = new Set([...child.stderr.matchAll(/^(.+?):\d+:\d+: (?:error|warning)/gm)].map((m) => m[1]));
  if (child.status !== 0 && named.size === 0) throw new Error(`clang-format failed (status ${child.status}):\n${child.stderr}`);
  return [...named].sort();
}

function formatAll() {
  const files = cxxFiles(path.join(root, 'native'));
  const child = spawnSync(clangFormat(), ['-i', ...files], { cwd: root, encoding: 'utf8', stdio: 'inherit' });
  if (child.error) throw child.error;
  return child.status ?? 1;
}

module.exports = { cxxFiles, unformattedFiles };

if (require.main === module) {
  if (process.argv.includes('--check')) {
    const files = unformattedFiles();
    if (files.length > 0) {
      console.error(`clang-format would change ${files.length} file(s); run \`npm run format\`:\n${files.join('\n')}`);
      process.exit(1);
    }
    console.log('clang-format: every C++ file is formatted');
  } else {
    process.exit(formatAll());
  }
}
