#!/usr/bin/env node
// Starts the encoder service (npm run example:service).
//   node examples/service/main.js [--port 3000] [--host 127.0.0.1] [--weights file.safetensors]
//        [--max-concurrent N] [--max-queue N] [--max-seq-len N] [--timeout-ms N] [--log-level info]
//        [--lm lm/model.safetensors] [--lm-config lm/config.json] [--no-lm] [--redis redis://host:port]
//        [--max-sessions N] [--max-new-tokens N] [--session-ttl-ms N] [--lease-ms N] [--persist-every N]
//        [--lm-quantize int8|bf16]
// Generation serves the language model in lm/ (a small byte-level PerformerLM trained with
// performer-pytorch on Python source) unless --lm names another checkpoint (its
// performer-pytorch config in --lm-config); --lm-quantize stores its linear weights as int8 or
// bf16 (every replica sharing a Redis store must use the same model and format). Sessions stay in memory, or in Redis with --redis:
// then any replica continues any session.
// Environment: PORT, HOST, WEIGHTS work too. Generates the default weights file when it is
// missing (make-weights.js). SIGTERM / SIGINT: stop accepting, finish the requests in
// flight (up to --drain-ms), exit 0; a second signal exits at once.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const { makeWeights, DEFAULT_FILE } = require('./make-weights');
const { loadModel } = require('./model');
const { buildServer } = require('./server');
const { MemorySessionStore, RedisSessionStore } = require('./generation/stores');
const { PerformerLM } = require('../..');

const FLAGS = {
  '--port': ['port', Number],
  '--host': ['host', String],
  '--weights': ['weights', String],
  '--max-concurrent': ['maxConcurrent', Number],
  '--max-queue': ['maxQueue', Number],
  '--max-seq-len': ['maxSeqLen', Number],
  '--timeout-ms': ['timeoutMs', Number],
  '--upload-timeout-ms': ['uploadTimeoutMs', Number],
  '--drain-ms': ['drainMs', Number],
  '--log-level': ['logLevel', String],
  '--lm': ['lm', String],
  '--lm-config': ['lmConfig', String],
  '--redis': ['redis', String],
  '--max-sessions': ['maxSessions', Number],
  '--max-new-tokens': ['maxNewTokens', Number],
  '--session-ttl-ms': ['sessionTtlMs', Number],
  '--lease-ms': ['leaseMs', Number],
  '--persist-every': ['persistEvery', Number],
  '--lm-quantize': ['lmQuantize', String],
};
const SWITCHES = { '--no-lm': 'noLm' };
const LM_DIR = path.join(__dirname, 'lm');

function parseArgs(argv) {
  const args = {
    port: Number(process.env.PORT || 3000),
    host: process.env.HOST || '127.0.0.1',
    weights: process.env.WEIGHTS || DEFAULT_FILE,
    drainMs: 30000,
    logLevel: 'warn',
    lm: path.join(LM_DIR, 'model.safetensors'),
    lmConfig: path.join(LM_DIR, 'config.json'),
    redis: process.env.REDIS_URL,
    sessionTtlMs: 3600000,
    leaseMs: 15000,
  };
  for (let i = 0; i < argv.length; i += 2) {
    if (SWITCHES[argv[i]]) {
      args[SWITCHES[argv[i]]] = true;
      i--;
      continue;
    }
    const flag = FLAGS[argv[i]];
    if (!flag || argv[i + 1] === undefined) throw new RangeError(`unknown flag or missing value: ${argv[i]} (known: ${[...Object.keys(FLAGS), ...Object.keys(SWITCHES)].join(', ')})`);
    args[flag[0]] = flag[1](argv[i + 1]);
  }
  return args;
}

// The language model and the session store of the generation routes.
async function loadGenerator(args) {
  const lm = PerformerLM.fromPerformerPytorch(path.resolve(args.lm), JSON.parse(fs.readFileSync(path.resolve(args.lmConfig), 'utf8')));
  if (args.lmQuantize !== undefined) lm.quantize(args.lmQuantize);
  const options = { ttlMs: args.sessionTtlMs, leaseMs: args.leaseMs };
  const store = args.redis ? new RedisSessionStore({ url: args.redis, ...options }) : new MemorySessionStore(options);
  if (args.redis) await store.connect();
  return { lm, store };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const weights = path.resolve(args.weights);
  if (!fs.existsSync(weights)) {
    if (weights !== DEFAULT_FILE) throw new Error(`${weights}: no such file`);
    makeWeights(weights);
    console.log(`generated ${weights} (seeded random weights)`);
  }
  const model = await loadModel(weights);
  const generator = args.noLm ? undefined : await loadGenerator(args);
  const app = buildServer({
    generator,
    maxSessions: args.maxSessions,
    maxNewTokens: args.maxNewTokens,
    persistEvery: args.persistEvery,
    model,
    maxConcurrent: args.maxConcurrent,
    maxQueue: args.maxQueue,
    maxSeqLen: args.maxSeqLen,
    timeoutMs: args.timeoutMs,
    uploadTimeoutMs: args.uploadTimeoutMs,
    logger: { level: args.logLevel },
  });
  const address = await app.listen({ port: args.port, host: args.host });
  // The load test reads this line to find the port.
  console.log(`listening on ${address} (model ${JSON.stringify(model.config)})`);

  let closing = false;
  const shutdown = (signal) => {
    if (closing) {
      console.log(`${signal} again: exiting without draining`);
      process.exit(1);
    }
    closing = true;
    console.log(`${signal}: draining requests in flight`);
    setTimeout(() => {
      console.error(`requests still running after ${args.drainMs} ms: exiting`);
      process.exit(1);
    }, args.drainMs).unref();
    app.close().then(
      async () => {
        await generator?.store.close();
        console.log('closed');
        process.exit(0);
      },
      (error) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
