#!/usr/bin/env node
// Load test of the encoder service (npm run loadtest). For each sequence length and
// attention kind: start the server as a child process on a free port, send one small
// warm-up request, time one request of the case alone, run autocannon for a fixed time (POST /encode with a float32 body of
// [seq, modelDim], a few connections), read event-loop delay and peak RSS from /metrics,
// stop the server with SIGTERM. Prints a markdown table and writes JSON to results/loadtest/.
//   node examples/service/loadtest.js [--duration 10] [--connections 2]
//        [--lengths 512,4096,16384] [--attention favor,softmax] [--out results/loadtest]
// Requests still running when a case's time is up are cut (their inference is cancelled),
// so every case stops by itself, however slow; at most 6 x (2 duration + 2) s in all.
// With --generate, the load test of the generation routes instead (loadtest-generate.js).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const autocannon = require('autocannon');

const { startServer, stopServer } = require('./child-server');
const { sample } = require('./metrics');

const root = path.resolve(__dirname, '..', '..');

function parseArgs(argv) {
  const args = { duration: 10, connections: 2, lengths: [512, 4096, 16384], attention: ['favor', 'softmax'], out: path.join(root, 'results', 'loadtest') };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new RangeError(`${flag}: missing value`);
    if (flag === '--duration') args.duration = Number(value);
    else if (flag === '--connections') args.connections = Number(value);
    else if (flag === '--lengths') args.lengths = value.split(',').map(Number);
    else if (flag === '--attention') args.attention = value.split(',');
    else if (flag === '--out') args.out = path.resolve(value);
    else throw new RangeError(`unknown flag ${flag} (known: --duration, --connections, --lengths, --attention, --out)`);
  }
  return args;
}

// Seeded float32 rows, values in [-1, 1).
function sequenceBytes(seed, rows, modelDim) {
  const data = new Float32Array(rows * modelDim);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return Buffer.from(data.buffer);
}

async function post(url, body, shape, attention, signal) {
  const res = await fetch(`${url}/encode?shape=${shape.join(',')}&attention=${attention}`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/octet-stream' },
    signal,
  });
  if (res.status !== 200) throw new Error(`request: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

// The time of one request on an idle server, or null when it takes longer than `seconds`.
async function alone(url, body, shape, attention, seconds) {
  const started = performance.now();
  try {
    await post(url, body, shape, attention, AbortSignal.timeout(seconds * 1000));
    return performance.now() - started;
  } catch (error) {
    if (error.name === 'TimeoutError') return null;
    throw error;
  }
}

async function runCase(seq, attention, args) {
  const { child, url, model } = await startServer(['--max-seq-len', String(Math.max(...args.lengths))]);
  try {
    const modelDim = model.modelDim;
    await post(url, sequenceBytes(7, 512, modelDim), [512, modelDim], attention); // warm-up: code paths, workspaces
    const body = sequenceBytes(seq, seq, modelDim);
    const aloneMs = await alone(url, body, [seq, modelDim], attention, args.duration);
    const result = await autocannon({
      url: `${url}/encode?shape=${seq},${modelDim}&attention=${attention}`,
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body,
      connections: args.connections,
      duration: args.duration,
      timeout: args.duration + 30, // no request times out: the duration ends the case
    });
    // autocannon cut the requests still running: wait for the server to cancel them
    // (how long that takes is the cancellation latency under load).
    const cut = performance.now();
    let metrics = await (await fetch(`${url}/metrics`)).text();
    while (sample(metrics, 'encode_active_requests') + sample(metrics, 'encode_queued_requests') > 0 && performance.now() - cut < 10000) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      metrics = await (await fetch(`${url}/metrics`)).text();
    }
    const idleAfterMs = performance.now() - cut;
    const ok = result['2xx'];
    return {
      seq,
      attention,
      model,
      connections: args.connections,
      durationSeconds: result.duration,
      budgetSeconds: args.duration,
      aloneMs,
      completed: ok,
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
      requestsPerSecond: ok / result.duration,
      latencyMs: ok > 0 ? { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max } : null,
      eventLoopDelayMs: {
        p99: sample(metrics, 'nodejs_eventloop_delay_seconds', { quantile: '0.99' }) * 1000,
        max: sample(metrics, 'nodejs_eventloop_delay_max_seconds') * 1000,
      },
      peakRssBytes: sample(metrics, 'process_resident_memory_max_bytes'),
      cancelled: sample(metrics, 'encode_rejected_total', { reason: 'disconnect' }), // the timed-out lone request included
      idleAfterMs,
      overloaded: sample(metrics, 'encode_rejected_total', { reason: 'overload' }),
    };
  } finally {
    await stopServer(child);
  }
}

// What every report starts with: when, the command, the machine and the kernels used.
function runInfo() {
  return {
    date: new Date().toISOString(),
    command: `node examples/service/loadtest.js ${process.argv.slice(2).join(' ')}`.trim(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0] && os.cpus()[0].model,
    backend: require(root).backendInfo(),
  };
}

/** Writes `report` as JSON to `out`/`name`-<date>.json; returns the file's path. */
function writeReport(out, name, report) {
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, `${name}-${report.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  return file;
}

const fmt = (value, digits = 1) => (value === null || value === undefined || Number.isNaN(value) ? '—' : value.toFixed(digits));

function table(cases) {
  const lines = [
    '| seq | attention | one request alone, ms | requests/s | p50 ms | p99 ms | completed | event-loop p99 ms | peak RSS MB | idle after cut, ms |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of cases) {
    lines.push(
      `| ${c.seq} | ${c.attention === 'favor' ? 'FAVOR+' : 'exact'} | ${c.aloneMs === null ? `> ${c.budgetSeconds * 1000}` : fmt(c.aloneMs, 0)} | ${fmt(c.requestsPerSecond, c.requestsPerSecond < 10 ? 2 : 1)} | ` +
        `${c.latencyMs ? fmt(c.latencyMs.p50, 0) : `> ${c.budgetSeconds * 1000}`} | ${c.latencyMs ? fmt(c.latencyMs.p99, 0) : '—'} | ` +
        `${c.completed}${c.non2xx ? ` (+${c.non2xx} non-2xx)` : ''} | ${fmt(c.eventLoopDelayMs.p99)} | ${fmt(c.peakRssBytes / 2 ** 20, 0)} | ${fmt(c.idleAfterMs, 0)} |`,
    );
  }
  return lines.join('\n');
}

async function main() {
  if (process.argv.includes('--generate')) return require('./loadtest-generate').main(process.argv.slice(2));
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const cases = [];
  for (const seq of args.lengths) {
    for (const attention of args.attention) {
      process.stderr.write(`seq ${seq}, ${attention}: ${args.duration} s, ${args.connections} connections ... `);
      const c = await runCase(seq, attention, args);
      process.stderr.write(`${c.completed} requests\n`);
      cases.push(c);
    }
  }
  const report = {
    ...runInfo(),
    durationSeconds: args.duration,
    connections: args.connections,
    wallSeconds: (Date.now() - started) / 1000,
    cases,
  };
  const file = writeReport(args.out, 'loadtest', report);
  console.log(table(cases));
  console.log(`\n${args.connections} connections, ${args.duration} s per case, model ${JSON.stringify(cases[0].model)}; ${os.cpus().length} CPUs (${report.cpuModel}), ${report.backend.isa || ''} kernels; wall ${report.wallSeconds.toFixed(0)} s`);
  console.log(`JSON: ${path.relative(root, file)}`);
}

// Shared with loadtest-generate.js (set before main runs: it requires this module).
module.exports = { fmt, runInfo, writeReport };

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
