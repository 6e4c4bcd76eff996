#!/usr/bin/env node
// `npm test`: the jest suite of the public API, then the C++ tests (ctest), then
// the C++ tests again built with AddressSanitizer + UndefinedBehaviorSanitizer.
// Ends with one line "N passed, N failed" counting both.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'build', 'test-results');
fs.mkdirSync(outDir, { recursive: true });
const jestJson = path.join(outDir, 'jest.json');
const nativeJson = path.join(outDir, 'native.json');
const sanitizeJson = path.join(outDir, 'native-sanitize.json');
for (const file of [jestJson, nativeJson, sanitizeJson]) fs.rmSync(file, { force: true });

// The README and demo tests run the built package: compile the TypeScript first.
const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], {
  cwd: root,
  stdio: 'inherit',
});
if (tsc.status !== 0) {
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const jestBin = require.resolve('jest/bin/jest');
const jest = spawnSync(process.execPath, [jestBin, '--json', `--outputFile=${jestJson}`, ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
});
const native = spawnSync(process.execPath, [path.join(__dirname, 'run-native-tests.js'), '--counts-file', nativeJson], {
  cwd: root,
  stdio: 'inherit',
});

const sanitized = spawnSync(
  process.execPath,
  [path.join(__dirname, 'run-native-tests.js'), '--sanitize', '--counts-file', sanitizeJson],
  { cwd: root, stdio: 'inherit' },
);

let passed = 0;
let failed = 0;
if (fs.existsSync(jestJson)) {
  const report = JSON.parse(fs.readFileSync(jestJson, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  // A test file that fails to load has no test results: count it as a failure.
  failed += report.numRuntimeErrorTestSuites;
} else {
  failed += 1;
}
for (const file of [nativeJson, sanitizeJson]) {
  if (fs.existsSync(file)) {
    const counts = JSON.parse(fs.readFileSync(file, 'utf8'));
    passed += counts.passed;
    failed += counts.failed;
  } else {
    failed += 1;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(jest.status === 0 && native.status === 0 && sanitized.status === 0 && failed === 0 ? 0 : 1);
