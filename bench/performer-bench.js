#!/usr/bin/env node
'use strict';
// performer-bench: FAVOR+ (Performer) against exact softmax attention on this
// machine. Prints tables (ms, GFLOP/s, % of the measured FMA peak, peak extra
// memory, speed-up), writes a JSON report and an SVG chart to ./results.
//   npm run bench -- --help        (or: npx performer-bench --help)
// Every measurement runs in a fresh child process (bench/lib/worker.js) so that
// its peak memory is its own; this process only plans, prints and writes.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { parseArgs, UsageError, HELP } = require('./lib/args');
const { SUITE_FUNCTIONS } = require('./lib/suites');
const { machineInfo, sourceInfo } = require('./lib/environment');
const { writeChart } = require('./lib/chart');
const fmt = require('./lib/format');

/** Fraction of all CPUs busy over the next `ms` milliseconds (Linux /proc/stat), or null. */
async function cpuBusy(ms) {
  const read = () => {
    try {
      const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
      const idle = f[3] + (f[4] || 0);
      return { idle, total: f.reduce((a, b) => a + b, 0) };
    } catch {
      return null;
    }
  };
  const a = read();
  if (!a) return null;
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = read();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : null;
}

function timestamp(d = new Date()) {
  return d.toISOString().replace(/\..*$/, '').replace(/:/g, '-');
}

async function main(argv) {
  let opts;
  try {
    opts = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`performer-bench: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const started = Date.now();
  // Tables go to stdout, unless stdout carries the JSON report.
  const print = (s) => (opts.json === '-' ? process.stderr : process.stdout).write(`${s}\n`);
  const progress = (s) => {
    if (!opts.quiet) process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${s}\n`);
  };

  let lib;
  try {
    lib = require('..');
  } catch (e) {
    process.stderr.write(
      `performer-bench: cannot load performer-attention (${e.message.split('\n')[0]}); build it first: npm run build\n`,
    );
    return 1;
  }
  if (opts.isa) {
    try {
      lib.setBackend({ isa: opts.isa });
    } catch (e) {
      process.stderr.write(`performer-bench: --isa ${opts.isa}: ${e.message}\n`);
      return 2;
    }
  }
  const backend = lib.backendInfo();
  const defaultThreads = backend.threads;
  const threadList = opts.threads ?? [defaultThreads];
  const machine = machineInfo();
  const skipped = [];
  const failures = [];
  const report0 = { notes: [] };

  // Other processes competing for the CPUs make every timing noisy: look before starting.
  machine.cpuBusyBeforeRun = await cpuBusy(500);
  if (machine.cpuBusyBeforeRun !== null && machine.cpuBusyBeforeRun > 0.15) {
    const note = `other processes kept ${(100 * machine.cpuBusyBeforeRun).toFixed(0)}% of the CPUs busy just before the run: timings will be noisy`;
    progress(`note: ${note}`);
    report0.notes.push(note);
  }

  // The reference for "% of peak": independent FMAs in registers, same ISA and thread count.
  // The best of three short measurements: a peak is what the machine can do, and
  // a time-sliced vCPU or a busy neighbour only ever lowers a reading.
  const measurePeak = (t) => {
    let best = null;
    for (let i = 0; i < 3; i++) {
      const p = lib.measureFmaPeak({ isa: backend.isa, threads: t, milliseconds: opts.peakMs });
      if (!best || p.gflops > best.gflops) best = p;
    }
    return best;
  };
  const peaks = new Map();
  for (const t of [...new Set([1, ...threadList])].sort((a, b) => a - b)) {
    progress(`measuring the ${backend.isa} FMA peak on ${t} thread(s) ...`);
    peaks.set(t, measurePeak(t));
  }
  const ctx = {
    opts,
    backend,
    defaultThreads,
    threadList,
    progress,
    peakFor: (t) => {
      if (!peaks.has(t)) peaks.set(t, measurePeak(t));
      return peaks.get(t).gflops;
    },
    skip: (what, why) => skipped.push({ what, why }),
    fail: (what) => {
      failures.push(what);
      process.stderr.write(`performer-bench: failed: ${what}\n`);
    },
  };

  print(`performer-bench — performer-attention ${require('../package.json').version}`);
  print(`machine: ${machine.cpu}, ${machine.logicalCpus} logical CPUs, ${fmt.bytes(machine.totalMemoryBytes)}, ${machine.platform}, Node ${machine.node}`);
  const source = sourceInfo();
  if (source) print(`source: commit ${source.commit}${source.nativeOrLibModified ? ' (lib/ or native/ modified since)' : ''}`);
  print(`kernels: ${backend.isa} (available: ${backend.available.join(', ')}); default pool: ${defaultThreads} thread(s)`);
  print(
    `measured ${backend.isa} FMA peak: ` +
      [...peaks.entries()].map(([t, p]) => `${t} thread${t > 1 ? 's' : ''} ${fmt.sig(p.gflops)} GFLOP/s`).join(', ') +
      ` (per thread: ${[...peaks.values()].pop().perThread.map((x) => fmt.sig(x)).join(', ')})`,
  );
  print('');

  const report = {
    tool: 'performer-bench',
    version: require('../package.json').version,
    date: new Date(started).toISOString(),
    command: ['performer-bench', ...argv].join(' '),
    options: opts,
    machine,
    source,
    backend,
    peaks: [...peaks.entries()].map(([threads, p]) => ({ threads, isa: p.isa, gflops: p.gflops, perThread: p.perThread })),
    costModel: {
      favor: '2*Lq*d*m + 2*Lk*d*m + 2*Lk*m*(Dv+1) + 2*Lq*m*(Dv+1) flops per (batch, head), causal the same; (Lq+Lk)*m exps',
      exact: '2*Lq*Lk*(d+Dv) flops per (batch, head), causal: 2*pairs*(d+Dv) with pairs = L(L+1)/2; pairs exps',
    },
    suites: {},
    notes: report0.notes,
    skipped,
    failures,
    files: {},
  };

  const charts = [];
  for (const suite of opts.suites) {
    progress(`suite ${suite}`);
    const result = await SUITE_FUNCTIONS[suite](ctx);
    report.suites[suite] = result.data;
    print(`== ${result.title} ==`);
    print(result.text);
    print('');
    if (result.charts) charts.push(...result.charts);
  }
  // The default run compares with onnxruntime-node when it is installed, and says so when it is not.
  if (opts.autoOnnx && report.suites.sweep && opts.exact) {
    progress('onnxruntime comparison (short; --no-onnx to leave it out)');
    const result = await SUITE_FUNCTIONS.onnx(ctx, { sweepRows: report.suites.sweep.rows });
    if (result) {
      report.suites.onnx = result.data;
      print(`== ${result.title} ==`);
      print(result.text);
      print('');
    }
  }

  const outDir = path.resolve(opts.out);
  const stem = `performer-bench-${timestamp(new Date(started))}`;
  const needDir = opts.json !== '-' || (opts.chart && charts.length > 0);
  if (needDir) fs.mkdirSync(outDir, { recursive: true });
  if (opts.chart) {
    for (const c of charts) {
      const file = path.join(outDir, `${stem}-${c.name}.svg`);
      const subtitle = `${backend.isa}, ${threadList.join('/')} thread(s), batch ${opts.batch}, heads ${opts.heads}, d ${opts.dim}, m ${opts.features}; ${machine.cpu}`;
      const r = writeChart(c.series, file, { title: c.title, subtitle });
      if (r.skipped) {
        skipped.push({ what: `chart ${c.name}`, why: r.skipped });
      } else {
        report.files[`chart-${c.name}`] = r.file;
        for (const n of r.notes) report.notes.push(`chart ${c.name}: ${n}`);
      }
    }
  } else {
    skipped.push({ what: 'charts', why: '--no-chart' });
  }
  report.elapsedSeconds = (Date.now() - started) / 1000;
  report.machine.loadAverageAtEnd = os.loadavg();
  let jsonFile = null;
  if (opts.json === '-') {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    jsonFile = opts.json ? path.resolve(opts.json) : path.join(outDir, `${stem}.json`);
    report.files.json = jsonFile;
    fs.mkdirSync(path.dirname(jsonFile), { recursive: true });
    fs.writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  }
  for (const n of report.notes) print(`note: ${n}`);
  for (const s of skipped) print(`skipped: ${s.what}: ${s.why}`);
  if (jsonFile) print(`JSON: ${jsonFile}`);
  for (const [k, f] of Object.entries(report.files)) if (k.startsWith('chart-')) print(`chart: ${f}`);
  print(`done in ${fmt.duration(Date.now() - started)}${failures.length ? `, ${failures.length} failure(s)` : ''}`);
  return failures.length ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`performer-bench: ${e && e.stack ? e.stack : e}\n`);
      process.exitCode = 1;
    },
  );
}

module.exports = { main };
