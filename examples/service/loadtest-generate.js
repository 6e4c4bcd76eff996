// Load test of the generation routes (npm run loadtest -- --generate): starts the service
// as a child process, sends one short warm-up generation, then for each client count runs
// that many streaming clients for a fixed time, each looping POST /generate with a
// Python-like prompt and reading the Server-Sent Events as they arrive. Per request: the
// time to the first token and the gaps between tokens; per case: the server's peak RSS and
// the mean sessions per batched step (from /metrics). Prints a markdown table and writes
// JSON to results/loadtest/.
//   node examples/service/loadtest.js --generate [--clients 1,8,32] [--duration 10]
//        [--max-new-tokens 64] [--redis redis://host:port] [--out results/loadtest]
// Requests still streaming when a case's time is up are aborted (the clients disconnect),
// so every case ends on time.
'use strict';
const path = require('node:path');

const { startServer, stopServer } = require('./child-server');
const { fmt, runInfo, writeReport } = require('./loadtest');
const { sample } = require('./metrics');

const root = path.resolve(__dirname, '..', '..');

// Byte-level prompts for the model in lm/ (trained on Python source).
const PROMPTS = ['def main():\n    ', 'import os\nimport sys\n\n', 'class Node:\n    def __init__(self, value):\n', 'for i in range(len(items)):\n    if ', 'return sorted(values, key=lambda x: '];

function parseArgs(argv) {
  const args = { clients: [1, 8, 32], duration: 10, maxNewTokens: 64, redis: undefined, out: path.join(root, 'results', 'loadtest') };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--generate') {
      i--; // a switch: the one that chose this load test
      continue;
    }
    if (value === undefined) throw new RangeError(`${flag}: missing value`);
    if (flag === '--clients') args.clients = value.split(',').map(Number);
    else if (flag === '--duration') args.duration = Number(value);
    else if (flag === '--max-new-tokens') args.maxNewTokens = Number(value);
    else if (flag === '--redis') args.redis = value;
    else if (flag === '--out') args.out = path.resolve(value);
    else throw new RangeError(`unknown flag ${flag} (known with --generate: --clients, --duration, --max-new-tokens, --redis, --out)`);
  }
  for (const n of args.clients) if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`--clients: expected positive integers, received ${args.clients.join(',')}`);
  if (!(args.duration > 0)) throw new RangeError(`--duration: expected seconds > 0, received ${args.duration}`);
  if (!Number.isSafeInteger(args.maxNewTokens) || args.maxNewTokens < 1) throw new RangeError(`--max-new-tokens: expected a positive integer, received ${args.maxNewTokens}`);
  return args;
}

/** Splits a growing SSE text into events: feed(chunk) -> [{ event, data }] completed so far. */
function sseReader() {
  let text = '';
  return (chunk) => {
    text += chunk;
    const blocks = text.split('\n\n');
    text = blocks.pop(); // an event not yet whole
    return blocks
      .filter((block) => block.trim() !== '')
      .map((block) => {
        const lines = block.split('\n');
        const event = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'message';
        const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        return { event, data: JSON.parse(data) };
      });
  };
}

/**
 * One streamed generation; resolves (never rejects) with what the client saw:
 * { status, tokens, firstTokenMs, gapsMs, outcome: 'done' | 'cut' | 'error', error? }.
 */
async function generateOnce(url, body, signal) {
  const started = performance.now();
  const seen = { status: 0, tokens: 0, firstTokenMs: null, gapsMs: [], outcome: 'cut' };
  let last;
  try {
    const res = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
    seen.status = res.status;
    if (res.status !== 200) return { ...seen, outcome: 'error', error: `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}` };
    const feed = sseReader();
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      for (const { event, data } of feed(decoder.decode(chunk, { stream: true }))) {
        const now = performance.now();
        if (event === 'token') {
          if (seen.tokens === 0) seen.firstTokenMs = now - started;
          else seen.gapsMs.push(now - last);
          last = now;
          seen.tokens++;
        } else if (event === 'done') {
          seen.outcome = 'done';
          seen.reason = data.reason;
        } else if (event === 'error') {
          return { ...seen, outcome: 'error', error: `event: error ${data.message}` };
        }
      }
    }
    if (seen.outcome !== 'done' && !signal.aborted) return { ...seen, outcome: 'error', error: 'stream ended without done' };
    return seen;
  } catch (error) {
    if (signal.aborted) return seen; // the case's time is up: cut
    return { ...seen, outcome: 'error', error: `${error.name}: ${error.message}` };
  }
}

async function metricsText(url) {
  return (await fetch(`${url}/metrics`)).text();
}

/** Nearest-rank percentile of unsorted numbers; null for none. */
function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function runCase(url, clients, args) {
  const before = await metricsText(url);
  const controller = new AbortController();
  const { signal } = controller;
  const results = [];
  // Peak RSS of this case: the server's resident memory, read every 250 ms.
  let peakRss = sample(before, 'process_resident_memory_bytes');
  const watcher = setInterval(async () => {
    const rss = sample(await metricsText(url).catch(() => ''), 'process_resident_memory_bytes');
    if (rss !== undefined) peakRss = Math.max(peakRss, rss);
  }, 250);
  const started = performance.now();
  const timer = setTimeout(() => controller.abort(), args.duration * 1000);
  let seed = 0;
  const client = async (c) => {
    for (let n = 0; !signal.aborted; n++) {
      const body = { prompt: PROMPTS[(c + n) % PROMPTS.length], maxNewTokens: args.maxNewTokens, temperature: 0.8, topK: 40, seed: seed++ };
      const r = await generateOnce(url, body, signal);
      results.push(r);
      // A refused request (503 + Retry-After) waits a little instead of spinning.
      if (r.outcome === 'error' && !signal.aborted) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  clearTimeout(timer);
  const seconds = (performance.now() - started) / 1000;

  // The clients are gone: wait for the server to drop their sessions.
  const cut = performance.now();
  let after = await metricsText(url);
  while (sample(after, 'generate_active_sessions') > 0 && performance.now() - cut < 10000) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    after = await metricsText(url);
  }
  const idleAfterMs = performance.now() - cut;
  clearInterval(watcher);
  const delta = (name, labels) => sample(after, name, labels) - sample(before, name, labels);

  const errors = results.filter((r) => r.outcome === 'error');
  const tokens = results.reduce((sum, r) => sum + r.tokens, 0);
  const firstTokens = results.map((r) => r.firstTokenMs).filter((ms) => ms !== null);
  const gaps = results.flatMap((r) => r.gapsMs);
  const steps = delta('generate_step_sessions_count');
  return {
    clients,
    durationSeconds: seconds,
    budgetSeconds: args.duration,
    maxNewTokens: args.maxNewTokens,
    requests: results.length,
    completed: results.filter((r) => r.outcome === 'done').length,
    cut: results.filter((r) => r.outcome === 'cut').length,
    errors: errors.length,
    errorSamples: [...new Set(errors.map((r) => r.error))].slice(0, 5),
    tokens,
    tokensPerSecond: tokens / seconds,
    timeToFirstTokenMs: { p50: percentile(firstTokens, 50), p99: percentile(firstTokens, 99) },
    tokenGapMs: { p50: percentile(gaps, 50), p99: percentile(gaps, 99) },
    peakRssBytes: peakRss,
    peakRssSinceStartBytes: sample(after, 'process_resident_memory_max_bytes'),
    steps,
    sessionsPerStep: steps > 0 ? delta('generate_step_sessions_sum') / steps : null,
    stepMs: steps > 0 ? (delta('generate_step_duration_seconds_sum') / steps) * 1000 : null,
    serverTokens: delta('generate_tokens_total'),
    disconnects: delta('generate_rejected_total', { reason: 'disconnect' }),
    overloaded: delta('generate_rejected_total', { reason: 'overload' }),
    idleAfterMs,
  };
}

function table(cases) {
  const lines = [
    '| clients | requests | tokens | tokens/s | first token p50 ms | p99 ms | token gap p50 ms | p99 ms | sessions per step | step ms | peak RSS MB | errors |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of cases) {
    lines.push(
      `| ${c.clients} | ${c.completed}${c.cut ? ` (+${c.cut} cut)` : ''} | ${c.tokens} | ${fmt(c.tokensPerSecond, 0)} | ` +
        `${fmt(c.timeToFirstTokenMs.p50, 0)} | ${fmt(c.timeToFirstTokenMs.p99, 0)} | ${fmt(c.tokenGapMs.p50)} | ${fmt(c.tokenGapMs.p99)} | ` +
        `${fmt(c.sessionsPerStep)} | ${fmt(c.stepMs, 2)} | ${fmt(c.peakRssBytes / 2 ** 20, 0)} | ${c.errors} |`,
    );
  }
  return lines.join('\n');
}

async function main(argv) {
  const args = parseArgs(argv);
  const started = Date.now();
  const { child, url } = await startServer(args.redis ? ['--redis', args.redis] : []);
  const cases = [];
  let health;
  let serverExit;
  try {
    health = await (await fetch(`${url}/health`)).json();
    if (!health.generation) throw new Error('the service has no language model: generation is off');
    const warm = await generateOnce(url, { prompt: PROMPTS[0], maxNewTokens: 4 }, new AbortController().signal);
    if (warm.outcome !== 'done') throw new Error(`warm-up generation failed: ${warm.error}`);
    for (const clients of args.clients) {
      process.stderr.write(`generate, ${clients} clients: ${args.duration} s ... `);
      const c = await runCase(url, clients, args);
      process.stderr.write(`${c.completed} requests, ${c.tokens} tokens${c.errors ? `, ${c.errors} errors: ${c.errorSamples.join('; ')}` : ''}\n`);
      cases.push(c);
    }
  } finally {
    serverExit = await stopServer(child);
    // SIGKILL: the drain did not end within stopServer's grace time.
    if (serverExit !== 0) process.stderr.write(`server exit: ${serverExit} (a drain ends with 0)\n`);
  }
  const report = {
    ...runInfo(),
    store: args.redis ? 'redis' : 'memory',
    generation: health.generation,
    durationSeconds: args.duration,
    maxNewTokens: args.maxNewTokens,
    wallSeconds: (Date.now() - started) / 1000,
    serverExit,
    cases,
  };
  const file = writeReport(args.out, 'loadtest-generate', report);
  console.log(table(cases));
  console.log(
    `\n${report.store} store, ${args.maxNewTokens} new tokens per request, ${args.duration} s per case; ${report.cpus} CPUs (${report.cpuModel}), ` +
      `${report.backend.isa || ''} kernels; wall ${report.wallSeconds.toFixed(0)} s`,
  );
  console.log(`JSON: ${path.relative(root, file)}`);
}

module.exports = { main, parseArgs };
