#!/usr/bin/env node
// Starts the encoder service (npm run example:service).
//   node examples/service/main.js [--port 3000] [--host 127.0.0.1] [--weights file.safetensors]
//        [--max-concurrent N] [--max-queue N] [--max-seq-len N] [--timeout-ms N] [--log-level info]
// Environment: PORT, HOST, WEIGHTS work too. Generates the default weights file when it is
// missing (make-weights.js). SIGTERM / SIGINT: stop accepting, finish the requests in
// flight (up to --drain-ms), exit 0; a second signal exits at once.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const { makeWeights, DEFAULT_FILE } = require('./make-weights');
const { loadModel } = require('./model');
const { buildServer } = require('./server');

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
};

function parseArgs(argv) {
  const args = {
    port: Number(process.env.PORT || 3000),
    host: process.env.HOST || '127.0.0.1',
    weights: process.env.WEIGHTS || DEFAULT_FILE,
    drainMs: 30000,
    logLevel: 'warn',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = FLAGS[argv[i]];
    if (!flag || argv[i + 1] === undefined) throw new RangeError(`unknown flag or missing value: ${argv[i]} (known: ${Object.keys(FLAGS).join(', ')})`);
    args[flag[0]] = flag[1](argv[i + 1]);
  }
  return args;
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
  const app = buildServer({
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
      () => {
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
