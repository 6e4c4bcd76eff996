#!/usr/bin/env node
// Probes the service's upload limits as a hostile client would, against a child server:
//  1. oversize: N POSTs of a JSON body over the limit with Node's fetch; counts how many
//     received the 400 and how many failed instead (EPIPE, reset);
//  2. slow uploads: N clients each trickle a body just under the limit; counts 503s and
//     samples the server's resident memory (/metrics) while they upload.
//   node examples/service/probe-uploads.js [--clients 20] [--mib 12] [--max-concurrent 2] [--max-queue 4]
//        [--route encode|generate|unknown] [--max-sessions N]
// --route generate trickles JSON bodies of --mib MiB to POST /generate (the server has its
// language model), --route unknown to a path no route serves; both with the oversize probe.
'use strict';
const http = require('node:http');

const { startServer, stopServer } = require('./child-server');
const { sample } = require('./metrics');

const PATHS = { encode: '/encode', generate: '/generate', unknown: '/no-such-route' };

function parseArgs(argv) {
  const args = { clients: 20, mib: 12, maxConcurrent: 2, maxQueue: 4, route: 'encode', maxSessions: undefined };
  const flags = { '--clients': 'clients', '--mib': 'mib', '--max-concurrent': 'maxConcurrent', '--max-queue': 'maxQueue', '--route': 'route', '--max-sessions': 'maxSessions' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = flags[argv[i]];
    if (key === undefined || argv[i + 1] === undefined) throw new RangeError(`unknown flag or missing value: ${argv[i]} (known: ${Object.keys(flags).join(', ')})`);
    args[key] = key === 'route' ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!Object.hasOwn(PATHS, args.route)) throw new RangeError(`--route: expected one of ${Object.keys(PATHS).join(', ')}, received ${args.route}`);
  return args;
}

async function rss(url) {
  return sample(await (await fetch(`${url}/metrics`)).text(), 'process_resident_memory_bytes');
}

async function oversize(url, path, tries, bytes) {
  const body = Buffer.alloc(bytes, 0x20); // whitespace: valid JSON framing does not matter, the size does
  const outcome = { answered4xx: 0, failed: 0, other: 0, errors: {} };
  for (let i = 0; i < tries; i++) {
    try {
      const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      await res.arrayBuffer();
      if (res.status >= 400 && res.status < 500) outcome.answered4xx++;
      else outcome.other++;
    } catch (error) {
      outcome.failed++;
      const code = error.cause?.code ?? error.code ?? error.name;
      outcome.errors[code] = (outcome.errors[code] ?? 0) + 1;
    }
  }
  return outcome;
}

// One client sending `bytes` in 256 KiB pieces (a tenth of a smaller body) every 100 ms (a
// slow link: about 2.5 MiB/s):
// float32 rows to /encode, else a JSON object (a long prompt) to `route`.
function trickle(url, route, bytes, modelDim, onSent) {
  const { hostname, port } = new URL(url);
  let path = PATHS[route];
  let type = 'application/json';
  if (route === 'encode') {
    const rows = Math.floor(bytes / (4 * modelDim));
    bytes = rows * 4 * modelDim;
    path += `?shape=${rows},${modelDim}`;
    type = 'application/octet-stream';
  }
  // Zeros (float32 0) for /encode, else 'a's: the text of a prompt. Small bodies go in 10 pieces.
  const piece = Buffer.alloc(Math.min(256 * 1024, Math.ceil(bytes / 10)), route === 'encode' ? 0 : 0x61);
  const first = Buffer.from(piece);
  if (route !== 'encode') first.write('{"maxNewTokens": 1, "prompt": "');
  return new Promise((resolve) => {
    const req = http.request({ hostname, port, method: 'POST', path, headers: { 'content-type': type, 'content-length': String(bytes) } });
    let sent = 0;
    let timer = null;
    const finish = (result) => {
      clearInterval(timer);
      req.destroy();
      resolve(result);
    };
    req.on('response', (res) => {
      res.resume();
      finish({ status: res.statusCode });
    });
    req.on('error', (error) => finish({ error: error.code ?? error.message }));
    timer = setInterval(() => {
      if (sent >= bytes) return;
      const n = Math.min(piece.length, bytes - sent);
      req.write((sent === 0 ? first : piece).subarray(0, n));
      sent += n;
      if (sent >= bytes) onSent();
    }, 100);
  });
}

async function slowUploads(url, route, clients, bytes) {
  const modelDim = (await (await fetch(`${url}/health`)).json()).limits.modelDim;
  const before = await rss(url);
  let peak = before;
  let uploadPeak = before; // until the first body is complete and its inference can start
  let uploading = true;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const now = await rss(url);
      peak = Math.max(peak, now);
      if (uploading) uploadPeak = Math.max(uploadPeak, now);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const results = await Promise.all(
    Array.from({ length: clients }, () =>
      trickle(url, route, bytes, modelDim, () => (uploading = false)),
    ),
  );
  sampling = false;
  await sampler;
  const statuses = {};
  for (const r of results) {
    const key = r.status ?? r.error;
    statuses[key] = (statuses[key] ?? 0) + 1;
  }
  const mb = (bytes) => +(bytes / 2 ** 20).toFixed(1);
  return { rssBeforeMB: mb(before), rssUploadPeakMB: mb(uploadPeak), rssPeakMB: mb(peak), statuses };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const flags = ['--max-concurrent', String(args.maxConcurrent), '--max-queue', String(args.maxQueue)];
  if (args.maxSessions !== undefined) flags.push('--max-sessions', String(args.maxSessions));
  const { child, url } = await startServer(flags);
  const path = PATHS[args.route];
  try {
    const over = await oversize(url, path, args.clients, 20 * 2 ** 20);
    console.log(`oversize: ${args.clients} POSTs of 20 MiB JSON to ${path} with fetch: ${over.answered4xx} answered 4xx, ${over.failed} failed ${JSON.stringify(over.errors)}, ${over.other} other`);
    // For /encode just under the binary limit (which is larger): each body is a whole upload the server would buffer.
    const slow = await slowUploads(url, args.route, args.clients, Math.round(args.mib * 2 ** 20));
    console.log(
      `slow uploads to ${path}: ${args.clients} clients x ${args.mib} MiB in pieces every 100 ms, maxConcurrent ${args.maxConcurrent} + maxQueue ${args.maxQueue}: ` +
        `answers ${JSON.stringify(slow.statuses)}; server RSS ${slow.rssBeforeMB} MB before, ${slow.rssUploadPeakMB} MB at most while uploading, ` +
        `${slow.rssPeakMB} MB at most while encoding the admitted requests`,
    );
  } finally {
    await stopServer(child);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
