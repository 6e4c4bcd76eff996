#!/usr/bin/env node
// Coverage-guided fuzzing of the parsers of untrusted bytes with Jazzer.js (libFuzzer).
// Targets are test/fuzz/targets/<name>.js; their seed corpora test/fuzz/corpus/<name>/.
// See docs/fuzzing.md.
//
//   npm run fuzz -- <target|all> [--seconds N]   fuzz (default 600 s a target); new corpus
//                                               entries go to build/fuzz/corpus/<target>/,
//                                               findings to build/fuzz/findings/<target>/
//   npm run fuzz -- <target> --runs N            stop after N executions (however long
//                                               they take, unless --seconds is given too)
//   npm run fuzz -- <target> --replay [file...]  run the committed corpus (or the files)
//                                               once, without Jazzer; fails on a finding
//   npm run fuzz -- <target> --coverage          the corpus once, instrumented: line and
//                                               branch coverage of the library's files
//   npm run fuzz -- <target> --merge             add the inputs of build/fuzz/corpus/<target>/
//                                               that reach new coverage to the committed corpus
//   npm run fuzz -- --list
// Other options: --seed N (libFuzzer's seed), --timeout-ms N (one input; default 10000),
// --rss-limit-mb N (default 2048), --work-corpus DIR (instead of build/fuzz/corpus/<target>),
// --json (a last line of JSON with the numbers), --quiet (libFuzzer's output only on a
// failure), and after `--`, flags for libFuzzer itself. Exit status: 0 without a finding.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const fuzzDir = path.join(root, 'test', 'fuzz');
const buildDir = path.join(root, 'build', 'fuzz');

/** The targets; `sync: false` for a target that returns a Promise. */
const TARGETS = {
  safetensors: { sync: true },
  'model-file': { sync: true },
  'model-file-framed': { sync: true },
  'decoding-state': { sync: true },
  'decoding-state-framed': { sync: true },
  service: { sync: false },
};

function usage(message) {
  if (message) console.error(`fuzz: ${message}`);
  console.error('usage: npm run fuzz -- <target|all> [--seconds N | --runs N | --replay [file...] | --coverage | --merge] [--seed N] [--json] [-- libFuzzer flags]');
  console.error(`targets: ${Object.keys(TARGETS).join(', ')}`);
  process.exit(2);
}

function parseArgs(argv) {
  const dash = argv.indexOf('--');
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const o = { targets: [], files: [], libfuzzer: dash < 0 ? [] : argv.slice(dash + 1), seconds: undefined, timeoutMs: 10000, rssLimitMb: 2048 };
  const number = (i, name) => {
    const value = Number(own[i]);
    if (!Number.isSafeInteger(value) || value < 0) usage(`${name}: expected a non-negative integer, received ${own[i]}`);
    return value;
  };
  for (let i = 0; i < own.length; i++) {
    const a = own[i];
    if (a === '--seconds') o.seconds = number(++i, a);
    else if (a === '--runs') o.runs = number(++i, a);
    else if (a === '--seed') o.seed = number(++i, a);
    else if (a === '--timeout-ms') o.timeoutMs = number(++i, a);
    else if (a === '--rss-limit-mb') o.rssLimitMb = number(++i, a);
    else if (a === '--work-corpus') o.workCorpus = path.resolve(own[++i] ?? usage(`${a}: expected a directory`));
    else if (a === '--replay') o.mode = 'replay';
    else if (a === '--coverage') o.mode = 'coverage';
    else if (a === '--merge') o.mode = 'merge';
    else if (a === '--json') o.json = true;
    else if (a === '--quiet') o.quiet = true;
    else if (a === '--list') {
      console.log(Object.keys(TARGETS).join('\n'));
      process.exit(0);
    } else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (o.targets.length === 0) o.targets = a === 'all' ? Object.keys(TARGETS) : [a];
    else o.files.push(path.resolve(a));
  }
  if (o.targets.length === 0) usage('no target');
  for (const t of o.targets) if (!(t in TARGETS)) usage(`unknown target '${t}'`);
  o.mode ??= 'fuzz';
  return o;
}

const seedCorpus = (target) => path.join(fuzzDir, 'corpus', target);
let workCorpusOverride;
const workCorpus = (target) => workCorpusOverride ?? path.join(buildDir, 'corpus', target);
const findingsDir = (target) => path.join(buildDir, 'findings', target);
const listFiles = (dir) => (fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => !f.startsWith('.')).map((f) => path.join(dir, f)) : []);

// ---- replay: the corpus through the target, in this process, without Jazzer ----
async function replay(target, o) {
  const files = o.files.length > 0 ? o.files.flatMap((f) => (fs.statSync(f).isDirectory() ? listFiles(f) : [f])) : listFiles(seedCorpus(target));
  const { fuzz } = require(path.join(fuzzDir, 'targets', `${target}.js`));
  const failures = [];
  const started = Date.now();
  for (const file of files) {
    const name = path.relative(root, file);
    const t = Date.now();
    try {
      await fuzz(fs.readFileSync(file));
    } catch (error) {
      failures.push({ file: name, error: `${error.name}: ${error.message}` });
      if (!o.quiet) console.error(`${name}: ${error.stack}`);
      continue;
    }
    // What libFuzzer reports as a timeout or an out-of-memory is a failure here too.
    const ms = Date.now() - t;
    const rssMb = process.memoryUsage().rss / 2 ** 20;
    if (ms > o.timeoutMs) failures.push({ file: name, error: `slow: ${ms} ms, more than --timeout-ms ${o.timeoutMs}` });
    if (rssMb > o.rssLimitMb) failures.push({ file: name, error: `memory: rss ${rssMb.toFixed(0)} MB, more than --rss-limit-mb ${o.rssLimitMb}` });
  }
  const summary = { target, mode: 'replay', inputs: files.length, seconds: (Date.now() - started) / 1000, failures };
  console.error(`replay ${target}: ${files.length} inputs, ${failures.length} failing, ${summary.seconds.toFixed(1)} s`);
  return { ok: failures.length === 0, summary };
}

// ---- Jazzer.js runs ----
function jazzer(target, args, libfuzzer, o) {
  const cli = path.join(fuzzDir, 'jazzer-cli.js');
  const full = [
    cli,
    path.join(fuzzDir, 'targets', `${target}.js`),
    ...args,
    // Instrument the library (dist/) and the service example, not the targets or node_modules.
    '-i', path.join(root, 'dist') + path.sep,
    '-i', path.join(root, 'examples', 'service') + path.sep,
    `--timeout=${o.timeoutMs}`,
    ...(TARGETS[target].sync ? ['--sync'] : []),
    '--',
    ...libfuzzer,
  ];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, full, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const keep = (chunk) => {
      log += chunk;
      if (log.length > 4e6) log = log.slice(-2e6);
      if (!o.quiet) process.stderr.write(chunk);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('close', (status, signal) => resolve({ status, signal, log }));
  });
}

// libFuzzer's numbers: the last status line and the final stats.
function stats(log) {
  const lines = log.split('\n');
  const status = lines.filter((l) => /^#\d+\s+\w+\s+cov: /.test(l)).pop() || '';
  const grab = (re, text = status) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : null;
  };
  return {
    executions: grab(/stat::number_of_executed_units: (\d+)/, log) ?? grab(/^#(\d+)/),
    execPerSec: grab(/stat::average_exec_per_sec:\s+(\d+)/, log) ?? grab(/exec\/s: (\d+)/),
    cov: grab(/cov: (\d+)/),
    ft: grab(/ft: (\d+)/),
    corpus: grab(/corp: (\d+)\//),
    newUnits: grab(/stat::new_units_added: (\d+)/, log),
    peakRssMb: grab(/stat::peak_rss_mb: (\d+)/, log) ?? grab(/rss: (\d+)Mb/),
    seconds: grab(/Done \d+ runs in (\d+) second/, log),
  };
}

async function fuzz(target, o) {
  fs.mkdirSync(workCorpus(target), { recursive: true });
  fs.mkdirSync(findingsDir(target), { recursive: true });
  const before = new Set(listFiles(findingsDir(target)));
  const dict = path.join(fuzzDir, 'dict', `${target}.dict`);
  const flags = [
    `-artifact_prefix=${findingsDir(target)}${path.sep}`,
    `-rss_limit_mb=${o.rssLimitMb}`,
    '-print_final_stats=1',
    ...(fs.existsSync(dict) ? [`-dict=${dict}`] : []),
    ...(o.runs !== undefined ? [`-runs=${o.runs}`] : []),
    // --runs alone decides on the count; else 600 s by default.
    ...(o.seconds !== undefined || o.runs === undefined ? [`-max_total_time=${o.seconds ?? 600}`] : []),
    ...(o.seed !== undefined ? [`-seed=${o.seed}`] : []),
    ...o.libfuzzer,
  ];
  const started = Date.now();
  // New entries go to the first corpus directory: the work corpus, not the committed one.
  const run = await jazzer(target, [workCorpus(target), seedCorpus(target)], flags, o);
  const findings = listFiles(findingsDir(target)).filter((f) => !before.has(f)).map((f) => path.relative(root, f));
  const summary = { target, mode: 'fuzz', status: run.status, signal: run.signal, wallSeconds: (Date.now() - started) / 1000, ...stats(run.log), findings };
  const ok = run.status === 0 && findings.length === 0;
  if (!ok && o.quiet) process.stderr.write(run.log.slice(-20000));
  console.error(
    `fuzz ${target}: ${summary.executions} executions in ${summary.wallSeconds.toFixed(1)} s ` +
      `(${summary.execPerSec} exec/s), cov ${summary.cov} ft ${summary.ft}, corpus ${summary.corpus}, ` +
      `peak rss ${summary.peakRssMb} MB, ${findings.length === 0 && run.status === 0 ? 'no findings' : `FINDING (exit ${run.status}${run.signal ? `, ${run.signal}` : ''}): ${findings.join(', ')}`}`,
  );
  return { ok, summary };
}

async function coverage(target, o) {
  const dir = path.join(buildDir, 'coverage', target);
  fs.rmSync(dir, { recursive: true, force: true });
  const corpora = [seedCorpus(target), ...(fs.existsSync(workCorpus(target)) ? [workCorpus(target)] : [])];
  const run = await jazzer(
    target,
    [...corpora, '--mode=regression', '--coverage', `--coverage_directory=${dir}`, '--coverage_reporters=json-summary', '--coverage_reporters=text'],
    o.libfuzzer,
    { ...o, quiet: true },
  );
  const file = path.join(dir, 'coverage-summary.json');
  if (run.status !== 0 || !fs.existsSync(file)) {
    process.stderr.write(run.log.slice(-20000));
    return { ok: false, summary: { target, mode: 'coverage', status: run.status } };
  }
  const report = JSON.parse(fs.readFileSync(file, 'utf8'));
  const files = {};
  for (const [name, s] of Object.entries(report)) {
    if (name === 'total') continue;
    files[path.relative(root, name)] = { lines: s.lines.pct, branches: s.branches.pct, functions: s.functions.pct };
  }
  console.error(`coverage ${target} (${corpora.map((c) => path.relative(root, c)).join(' + ')}): lines ${report.total.lines.pct}%, branches ${report.total.branches.pct}% of the instrumented files it loads`);
  for (const [name, s] of Object.entries(files)) console.error(`  ${name.padEnd(44)} lines ${String(s.lines).padStart(6)}%  branches ${String(s.branches).padStart(6)}%`);
  console.error(`  (report: ${path.relative(root, dir)})`);
  return { ok: true, summary: { target, mode: 'coverage', total: { lines: report.total.lines.pct, branches: report.total.branches.pct }, files } };
}

async function merge(target, o) {
  const before = listFiles(seedCorpus(target)).length;
  const run = await jazzer(target, [seedCorpus(target), workCorpus(target)], ['-merge=1', `-rss_limit_mb=${o.rssLimitMb}`, ...o.libfuzzer], o);
  const added = listFiles(seedCorpus(target)).length - before;
  console.error(`merge ${target}: ${added} inputs added to ${path.relative(root, seedCorpus(target))}`);
  return { ok: run.status === 0, summary: { target, mode: 'merge', added } };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.workCorpus !== undefined) {
    if (o.targets.length !== 1) usage('--work-corpus takes one target');
    workCorpusOverride = o.workCorpus;
  }
  const modes = { fuzz, replay, coverage, merge };
  const results = [];
  for (const target of o.targets) results.push(await modes[o.mode](target, o));
  if (o.json) console.log(JSON.stringify(results.map((r) => r.summary)));
  process.exit(results.every((r) => r.ok) ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
