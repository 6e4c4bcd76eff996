#!/usr/bin/env node
// Builds the C++ tests of the core and kernels with CMake and runs them with ctest.
// Prints the ctest summary; exits non-zero on any failure. With --counts-file F,
// writes {"passed": n, "failed": n} to F for scripts/run-tests.js. With --sanitize,
// builds them with AddressSanitizer and UndefinedBehaviorSanitizer (in its own folder).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const sanitize = process.argv.includes('--sanitize');
const buildDir = path.join(root, 'build', sanitize ? 'native-tests-sanitize' : 'native-tests');
const countsIndex = process.argv.indexOf('--counts-file');
const countsFile = countsIndex > 0 ? process.argv[countsIndex + 1] : null;
const jobs = String(Math.max(1, os.availableParallelism()));

function run(command, args, capture = false) {
  const result = spawnSync(command, args, { cwd: root, stdio: capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', encoding: 'utf8' });
  if (result.error) {
    console.error(`run-native-tests: cannot run ${command}: ${result.error.message} (is CMake installed?)`);
    process.exit(1);
  }
  return result;
}

const configure = run('cmake', [
  '-S', '.', '-B', buildDir, '-DPA_NATIVE_TESTS=ON',
  sanitize ? '-DCMAKE_BUILD_TYPE=RelWithDebInfo' : '-DCMAKE_BUILD_TYPE=Release',
  `-DPA_SANITIZE=${sanitize ? 'ON' : 'OFF'}`,
]);
if (configure.status !== 0) process.exit(configure.status ?? 1);
const build = run('cmake', ['--build', buildDir, '--parallel', jobs]);
if (build.status !== 0) process.exit(build.status ?? 1);
const ctest = run('ctest', ['--test-dir', buildDir, '--output-on-failure'], true);
process.stdout.write(ctest.stdout);

// ctest's summary: "100% tests passed, 0 tests failed out of 5"
const match = /(\d+)% tests passed, (\d+) tests? failed out of (\d+)/.exec(ctest.stdout);
const total = match ? Number(match[3]) : 0;
const failed = match ? Number(match[2]) : 1;
if (countsFile) fs.writeFileSync(countsFile, JSON.stringify({ passed: total - failed, failed }));
process.exit(ctest.status === 0 && match ? 0 : 1);
