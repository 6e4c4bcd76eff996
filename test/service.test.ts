// The HTTP encoder service of examples/service: good and bad requests, concurrency
// (results equal sequential ones bit for bit), overload (503 + Retry-After), the
// deadline (504), cancellation when the client disconnects, and a shutdown that
// drains the requests in flight. Runs the built package (dist/), as the example does.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import type { FastifyInstance } from 'fastify';

interface Tensor {
  data: Float32Array;
  shape: number[];
}
interface ForwardOptions {
  attention?: 'favor' | 'softmax';
  signal?: AbortSignal;
}
interface Model {
  config: Record<string, unknown>;
  modelDim: number;
  forward(x: Tensor, options: ForwardOptions): Promise<Tensor>;
  pendingCalls(): number;
}

const { buildServer } = require('../examples/service/server.js') as { buildServer(options: Record<string, unknown>): FastifyInstance };
const { loadModel } = require('../examples/service/model.js') as { loadModel(file: string): Promise<Model> };
const { makeWeights } = require('../examples/service/make-weights.js') as {
  makeWeights(file: string, config: Record<string, unknown>): Record<string, unknown>;
};
const { sample } = require('../examples/service/metrics.js') as {
  sample(text: string, name: string, labels?: Record<string, string>): number | undefined;
};

const SMALL = { numLayers: 2, modelDim: 32, numHeads: 2, ffDim: 64, activation: 'gelu', seed: 3 };
let model: Model;
let D: number;
const servers: FastifyInstance[] = [];

beforeAll(async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pa-service-')), 'model.safetensors');
  makeWeights(file, SMALL);
  model = await loadModel(file);
  D = model.modelDim;
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function serve(options: Record<string, unknown> = {}): Promise<FastifyInstance> {
  const app = buildServer({ model, maxSeqLen: 4096, ...options });
  servers.push(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return app;
}

// Seeded inputs (xorshift32), values in [-1, 1).
function randomSequence(seed: number, B: number, L: number): Tensor {
  let s = seed * 2654435761 || 1;
  const data = new Float32Array(B * L * D);
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return { data, shape: [B, L, D] };
}

function rows(x: Tensor, b = 0): number[][] {
  const [, L] = x.shape;
  return Array.from({ length: L }, (_, i) => Array.from(x.data.subarray((b * L + i) * D, (b * L + i + 1) * D)));
}

// The mean over rows of each sequence in double precision, rounded to float32.
function meanReference(y: Tensor): number[][] {
  const [B, L] = y.shape;
  return Array.from({ length: B }, (_, b) =>
    Array.from({ length: D }, (_, j) => {
      let sum = 0;
      for (let i = 0; i < L; i++) sum += y.data[(b * L + i) * D + j];
      return Math.fround(sum / L);
    }),
  );
}

interface Res {
  statusCode: number;
  headers: http.IncomingHttpHeaders;
  raw: Buffer;
  body: string;
  json(): any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

// One request over a fresh connection (no keep-alive), as a separate client would send it.
// (Real HTTP rather than app.inject(): its helper package does not load under jest on Node 20.)
function send(
  app: FastifyInstance,
  options: { method?: string; url?: string; payload?: string | Buffer; headers?: Record<string, string>; agent?: http.Agent },
  onRequest?: (req: http.ClientRequest) => void,
): Promise<Res> {
  const { method = 'POST', url = '/encode', payload, headers = {}, agent = false } = options;
  return new Promise((resolve, reject) => {
    const req = http.request({ port: portOf(app), method, path: url, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const body = raw.toString('utf8');
        resolve({ statusCode: res.statusCode!, headers: res.headers, raw, body, json: () => JSON.parse(body) });
      });
    });
    req.on('error', reject);
    req.end(payload);
    onRequest?.(req);
  });
}

function postJson(app: FastifyInstance, body: unknown, onRequest?: (req: http.ClientRequest) => void): Promise<Res> {
  return send(app, { payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } }, onRequest);
}

function postBinary(
  app: FastifyInstance,
  x: Tensor | Buffer,
  query: string,
  headers: Record<string, string> = {},
  onRequest?: (req: http.ClientRequest) => void,
): Promise<Res> {
  const payload = Buffer.isBuffer(x) ? x : Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength);
  return send(app, { url: `/encode${query}`, payload, headers: { 'content-type': 'application/octet-stream', ...headers } }, onRequest);
}

async function until(condition: () => boolean | Promise<boolean>, what: string, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function metric(app: FastifyInstance, name: string, labels?: Record<string, string>): Promise<number | undefined> {
  return sample((await send(app, { method: 'GET', url: '/metrics' })).body, name, labels);
}

// A model whose forward waits for `open()` before running the real one (an abort while
// waiting rejects at once, as the library's calls do), and records each call's outcome.
function gatedModel() {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const calls: { outcome?: string }[] = [];
  const gated: Model = {
    ...model,
    async forward(x, options) {
      const call: { outcome?: string } = {};
      calls.push(call);
      try {
        await new Promise<void>((resolve, reject) => {
          options.signal?.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })));
          gate.then(resolve);
        });
        const y = await model.forward(x, options);
        call.outcome = 'done';
        return y;
      } catch (error) {
        call.outcome = (error as Error).name;
        throw error;
      }
    },
  };
  return { model: gated, open, calls };
}

const portOf = (app: FastifyInstance) => (app.server.address() as AddressInfo).port;

test('GET /health reports the model and the limits; GET /metrics is Prometheus text', async () => {
  const app = await serve({ maxConcurrent: 2, maxQueue: 3 });
  const health = await send(app, { method: 'GET', url: '/health' });
  expect(health.statusCode).toBe(200);
  expect(health.json()).toMatchObject({ status: 'ok', model: { modelDim: D }, limits: { maxSeqLen: 4096, maxConcurrent: 2, maxQueue: 3 } });
  const metrics = await send(app, { method: 'GET', url: '/metrics' });
  expect(metrics.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  for (const name of ['nodejs_eventloop_delay_seconds', 'performer_native_pending_calls', 'process_resident_memory_max_bytes', 'encode_queued_requests']) {
    expect(metrics.body).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
  }
  expect(sample(metrics.body, 'http_requests_total', { method: 'GET', route: '/health', status: '200' })).toBe(1);
  expect(sample(metrics.body, 'performer_native_pending_calls')).toBe(0);
  // prom-client's exposition: its default Node.js metrics are there, each name is declared
  // once, and every sample belongs to the family declared just before it.
  const types = [...metrics.body.matchAll(/^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/gm)].map((m) => m[1]);
  expect(types).toEqual(expect.arrayContaining(['nodejs_heap_size_total_bytes', 'nodejs_gc_duration_seconds', 'process_resident_memory_bytes', 'http_requests_total']));
  expect(new Set(types).size).toBe(types.length);
  let family = '';
  for (const line of metrics.body.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue;
    const declared = /^# TYPE (\S+) /.exec(line);
    if (declared) {
      family = declared[1];
      continue;
    }
    const name = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|[+-]Inf|NaN|Nan)$/.exec(line)?.[1];
    expect([line, [family, `${family}_bucket`, `${family}_sum`, `${family}_count`].includes(name ?? '')]).toEqual([line, true]);
  }
  expect(metrics.body.match(/^process_resident_memory_bytes /gm)).toHaveLength(1);
  expect(sample(metrics.body, 'process_resident_memory_bytes')).toBeGreaterThan(0);
});

test('POST /encode: the embedding is the mean of the encoder output; full returns that output; JSON and binary agree bit for bit', async () => {
  const app = await serve();
  const x = randomSequence(1, 1, 37);
  for (const attention of ['favor', 'softmax'] as const) {
    const expected = await model.forward(x, { attention });
    const res = await postJson(app, { sequence: rows(x), attention, full: true });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ attention, shape: [D], outputShape: [37, D] });
    expect(body.embedding).toEqual(meanReference(expected)[0]);
    expect(body.output).toEqual(rows(expected));

    const flat = await postJson(app, { sequence: { data: Array.from(x.data), shape: [37, D] }, attention });
    expect(flat.json()).toEqual({ attention, shape: [D], embedding: body.embedding });

    const binary = await postBinary(app, x, `?shape=37,${D}&attention=${attention}`, { accept: 'application/octet-stream' });
    expect(binary.statusCode).toBe(200);
    expect(binary.headers['x-shape']).toBe(String(D));
    expect(Array.from(new Float32Array(new Uint8Array(binary.raw).buffer))).toEqual(body.embedding);

    const binaryFull = await postBinary(app, x, '', { 'x-shape': `37,${D}`, 'x-attention': attention, 'x-full': '1' });
    expect(binaryFull.json()).toEqual(body);
  }
  // FAVOR+ is the default and is not exact attention.
  const favor = (await postJson(app, { sequence: rows(x) })).json();
  expect(favor.attention).toBe('favor');
  expect(favor.embedding).not.toEqual((await postJson(app, { sequence: rows(x), attention: 'softmax' })).json().embedding);
});

test('POST /encode: a batch, nested or flat, answers one embedding per sequence', async () => {
  const app = await serve();
  const x = randomSequence(2, 3, 20);
  const expected = meanReference(await model.forward(x, { attention: 'favor' }));
  const nestedBatch = await postJson(app, { sequence: [rows(x, 0), rows(x, 1), rows(x, 2)] });
  expect(nestedBatch.json()).toEqual({ attention: 'favor', shape: [3, D], embedding: expected });
  const flat = await postJson(app, { sequence: { data: Array.from(x.data), shape: [3, 20, D] } });
  expect(flat.json()).toEqual(nestedBatch.json());
  const binary = await postBinary(app, x, `?shape=3,20,${D}`);
  expect(binary.json()).toEqual(nestedBatch.json());
});

test('every bad request gets a 4xx with a message naming what is wrong, and the server keeps serving', async () => {
  const row = Array.from({ length: D }, (_, j) => j / D);
  // Room for the 'too long' body (65 rows), not for 64 rows of longer numbers.
  const jsonBodyLimit = JSON.stringify({ sequence: Array(65).fill(row) }).length + 100;
  const tooBig = { sequence: Array(64).fill(row.map(() => Math.PI)) };
  expect(JSON.stringify(tooBig).length).toBeGreaterThan(jsonBodyLimit);
  const app = await serve({ maxSeqLen: 64, maxBatch: 2, jsonBodyLimit });
  const ok = randomSequence(3, 1, 4);
  const withValue = (value: number) => {
    const x = randomSequence(4, 1, 4);
    x.data[2 * D + 5] = value;
    return x;
  };
  const cases: [string, () => Promise<Res>, number, RegExp][] = [
    ['wrong model dimension', () => postJson(app, { sequence: [row.slice(1)] }), 400, new RegExp(`expected ${D} values per row.*received ${D - 1}`)],
    ['ragged rows', () => postJson(app, { sequence: [row, row.slice(2)] }), 400, /sequence\[1\]: expected an array of \d+ numbers, received an array of length/],
    ['ragged batch', () => postJson(app, { sequence: [[row, row], [row]] }), 400, /sequence\[1\]: expected 2 rows like sequence\[0\]/],
    ['a string element', () => postJson(app, { sequence: [row, [...row.slice(1), 'x']] }), 400, /sequence\[1\]\[\d+\]: expected a finite number, received the string "x"/],
    ['null element', () => postJson(app, { sequence: [[null, ...row.slice(1)]] }), 400, /sequence\[0\]\[0\]: expected a finite number, received null/],
    ['float32 overflow', () => postJson(app, { sequence: [[1e39, ...row.slice(1)]] }), 400, /sequence\[0\]\[0\]: expected a finite number, received 1e\+39, which is not finite in float32/],
    ['empty sequence', () => postJson(app, { sequence: [] }), 400, /sequence: expected rows/],
    ['no sequence', () => postJson(app, { attention: 'favor' }), 400, /sequence: expected rows .* received nothing/],
    ['not an object', () => postJson(app, [row]), 400, /body: expected a JSON object/],
    ['unknown field', () => postJson(app, { sequence: [row], pool: 'max' }), 400, /body: unknown field 'pool'/],
    ['bad attention', () => postJson(app, { sequence: [row], attention: 'linear' }), 400, /attention: expected 'favor' or 'softmax', received the string "linear"/],
    ['bad full', () => postJson(app, { sequence: [row], full: 'yes' }), 400, /full: expected a boolean/],
    ['flat data of the wrong length', () => postJson(app, { sequence: { data: row, shape: [2, D] } }), 400, new RegExp(`sequence.data: expected an array of ${2 * D} numbers`)],
    ['flat shape of rank 4', () => postJson(app, { sequence: { data: row, shape: [1, 1, 1, D] } }), 400, /sequence.shape: expected \[seq, modelDim\] or \[batch, seq, modelDim\]/],
    ['too long', () => postJson(app, { sequence: Array(65).fill(row) }), 400, /sequence of 65 rows is longer than this server's limit of 64/],
    ['batch too large', () => postJson(app, { sequence: [[row], [row], [row]] }), 400, /batch of 3 sequences is larger than this server's limit of 2/],
    ['invalid JSON', () => send(app, { payload: '{"sequence": [', headers: { 'content-type': 'application/json' } }), 400, /not valid JSON/],
    ['a __proto__ key', () => send(app, { payload: '{"__proto__": {"x": 1}}', headers: { 'content-type': 'application/json' } }), 400, /body: unknown field '__proto__'/],
    ['a constructor key', () => send(app, { payload: `{"sequence": [${JSON.stringify(row)}], "constructor": {"prototype": {}}}`, headers: { 'content-type': 'application/json' } }), 400, /body: unknown field 'constructor'/],
    ['empty JSON body', () => send(app, { payload: '', headers: { 'content-type': 'application/json' } }), 400, /body: empty; send a JSON object/],
    ['no content type', () => send(app, { payload: JSON.stringify({ sequence: [row] }) }), 400, /^content-type header missing: send application\/json or application\/octet-stream/],
    ['no body', () => send(app, {}), 400, /body: expected a JSON object/],
    ['query string with JSON', () => send(app, { url: '/encode?shape=1,2', payload: '{}', headers: { 'content-type': 'application/json' } }), 400, /query: parameters are for binary bodies/],
    ['wrong content type', () => send(app, { payload: 'hello', headers: { 'content-type': 'text/plain' } }), 400, /content-type "text\/plain" is not accepted: send application\/json or application\/octet-stream/],
    ['JSON body over the limit', () => postJson(app, tooBig), 400, new RegExp(`larger than this server's limit of ${jsonBodyLimit} bytes for JSON`)],
    ['binary: NaN', () => postBinary(app, withValue(NaN), `?shape=4,${D}`), 400, /element \d+ \(batch 0, row 2, column 5\) is NaN; inputs must be finite/],
    ['binary: Infinity', () => postBinary(app, withValue(-Infinity), `?shape=4,${D}`), 400, /is -Infinity; inputs must be finite/],
    ['binary: finite input that overflows inside the encoder', () => postBinary(app, Buffer.from(new Float32Array(4 * D).fill(3e38).buffer), `?shape=4,${D}`), 400, /^input: values too large for this model: its computation overflowed float32/],
    ['binary: no shape', () => postBinary(app, ok, ''), 400, /shape: a binary body needs its shape/],
    ['binary: bad shape text', () => postBinary(app, ok, '?shape=4x32'), 400, /query shape: expected 'seq,modelDim' or 'batch,seq,modelDim'/],
    ['binary: zero length', () => postBinary(app, ok, `?shape=0,${D}`), 400, /query shape\[0\]: expected a positive integer, received number 0/],
    ['binary: byte count', () => postBinary(app, ok, `?shape=5,${D}`), 400, new RegExp(`needs ${5 * D * 4} bytes .* content-length says ${4 * D * 4}`)],
    ['binary: odd byte count', () => postBinary(app, Buffer.alloc(4 * D * 4 + 3), `?shape=4,${D}`), 400, /content-length says/],
    ['binary: too long', () => postBinary(app, ok, `?shape=65,${D}`), 400, /longer than this server's limit of 64/],
    ['binary: unknown parameter', () => postBinary(app, ok, `?shape=4,${D}&pool=max`), 400, /query: unknown parameter 'pool'/],
    ['binary: query and header disagree', () => postBinary(app, ok, `?shape=4,${D}&attention=favor`, { 'x-attention': 'softmax' }), 400, /attention: the query string says .* and the x-attention header/],
    ['binary: bad full', () => postBinary(app, ok, `?shape=4,${D}&full=2`), 400, /query full: expected a boolean/],
  ];
  for (const [what, send, status, message] of cases) {
    const res = await send();
    expect({ what, status: res.statusCode }).toEqual({ what, status });
    expect({ what, message: res.json().message }).toEqual({ what, message: expect.stringMatching(message) });
    // In the client's terms: no names of the library's internals, no "undefined".
    expect({ what, message: res.json().message }).toEqual({ what, message: expect.not.stringMatching(/selfAttn|layers\.\d|projections|undefined/) });
  }
  const good = await postBinary(app, ok, `?shape=4,${D}`);
  expect(good.statusCode).toBe(200);
  expect(await metric(app, 'http_requests_total', { method: 'POST', route: '/encode', status: '400' })).toBe(cases.filter((c) => c[2] === 400).length);
  expect(await metric(app, 'performer_native_pending_calls')).toBe(0);
  const unknown = await send(app, { method: 'GET', url: '/nothing-here' });
  expect(unknown.statusCode).toBe(404);
});

// Starts a request whose body arrives in pieces: headers and `first` bytes now, the rest
// when `finish()` is called. Resolves `response` when the answer arrives (whether or not
// the upload is done) and `uploaded` when every byte was written (rejects on a socket error).
// The client keeps its connection alive, as browsers and fetch do: it does not tear the
// connection down itself when the answer comes before the end of its upload.
function slowUpload(app: FastifyInstance, headers: Record<string, string>, body: Buffer, first: number) {
  const agent = new http.Agent({ keepAlive: true });
  const req = http.request({ port: portOf(app), method: 'POST', path: '/encode', headers: { ...headers, 'content-length': String(body.length) }, agent });
  let socketError: Error | null = null;
  req.on('error', (error) => (socketError = error));
  req.on('close', () => agent.destroy());
  const response = new Promise<Res>((resolve) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        resolve({ statusCode: res.statusCode!, headers: res.headers, raw, body: raw.toString('utf8'), json: () => JSON.parse(raw.toString('utf8')) });
      });
    });
  });
  req.write(body.subarray(0, first));
  // Resolves once every byte went out; rejects when the connection fails or closes first.
  const finish = () =>
    new Promise<void>((resolve, reject) => {
      let done = false;
      req.end(body.subarray(first), () => {
        done = true;
        if (socketError) reject(socketError);
        else resolve();
      });
      req.on('error', reject);
      req.socket?.on('close', () => done || reject(new Error('the connection closed before the upload ended')));
    });
  return { req, response, finish, error: () => socketError };
}

test('a body over the limit: the client, still uploading, receives the 400 and finishes its upload', async () => {
  const app = await serve({ jsonBodyLimit: 64 * 1024 });
  const body = Buffer.alloc(4 * 1024 * 1024, 0x20);
  body[0] = 0x7b;
  const upload = slowUpload(app, { 'content-type': 'application/json' }, body, 1024);
  // The answer comes from the content-length alone, while 4 MiB are still to be sent...
  const res = await upload.response;
  expect(res.statusCode).toBe(400);
  expect(res.json().message).toMatch(/larger than this server's limit of 65536 bytes for JSON/);
  // ...and the connection stays open for the rest of the upload: no broken pipe.
  await upload.finish();
  expect(upload.error()).toBeNull();
  expect((await postJson(app, { sequence: rows(randomSequence(1, 1, 4)) })).statusCode).toBe(200);
  // Past drainLimit bytes the server stops reading and closes the connection.
  const capped = await serve({ jsonBodyLimit: 64 * 1024, drainLimit: 1024 * 1024 });
  const cut = slowUpload(capped, { 'content-type': 'application/json' }, body, 1024);
  expect((await cut.response).statusCode).toBe(400);
  await expect(cut.finish()).rejects.toThrow();
});

test('npm run example:service: SIGTERM to npm stops the server (no orphaned node process)', async () => {
  const root = path.resolve(__dirname, '..');
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pa-service-')), 'model.safetensors');
  makeWeights(file, { ...SMALL, numLayers: 1 });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const child = spawn(npm, ['run', '--silent', 'example:service', '--', '--port', '0', '--weights', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  let out = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await until(() => /listening on http:\/\/[\d.]+:\d+/.test(out), 'the service to listen', 30000);
  const port = Number(/listening on http:\/\/[\d.]+:(\d+)/.exec(out)![1]);
  const answers = () =>
    new Promise<boolean>((resolve) => {
      const req = http.get({ port, path: '/health', agent: false }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
    });
  expect(await answers()).toBe(true);
  child.kill('SIGTERM');
  await exited;
  // The node process under npm drained and exited too: nothing answers on its port.
  await until(async () => !(await answers()), 'the server to stop', 15000);
  expect(out).toMatch(/SIGTERM: draining/);
});

test('bodies being uploaded count against the limits: memory stays bounded by maxConcurrent + maxQueue bodies', async () => {
  const app = await serve({ maxConcurrent: 1, maxQueue: 1 });
  const payload = Buffer.from(JSON.stringify({ sequence: rows(randomSequence(2, 1, 64)) }));
  const uploads = [0, 1].map(() => slowUpload(app, { 'content-type': 'application/json' }, payload, 10));
  await until(async () => (await send(app, { method: 'GET', url: '/health' })).json().admitted === 2, 'two uploads admitted');
  // A third upload is refused before its body is read, though no inference runs yet.
  const third = await postJson(app, { sequence: rows(randomSequence(3, 1, 4)) });
  expect(third.statusCode).toBe(503);
  expect(third.json().message).toMatch(/overloaded/);
  await Promise.all(uploads.map((u) => u.finish()));
  expect((await Promise.all(uploads.map((u) => u.response))).map((r) => r.statusCode)).toEqual([200, 200]);
  await until(async () => (await send(app, { method: 'GET', url: '/health' })).json().admitted === 0, 'uploads answered');
  expect((await postJson(app, { sequence: rows(randomSequence(4, 1, 4)) })).statusCode).toBe(200);
});

test('an upload that stalls past uploadTimeoutMs is answered 408 and leaves the limits', async () => {
  const app = await serve({ maxConcurrent: 1, maxQueue: 0, uploadTimeoutMs: 300 });
  const payload = Buffer.from(JSON.stringify({ sequence: rows(randomSequence(5, 1, 8)) }));
  const stalled = slowUpload(app, { 'content-type': 'application/json' }, payload, 10);
  const res = await stalled.response;
  expect(res.statusCode).toBe(408);
  await until(async () => (await send(app, { method: 'GET', url: '/health' })).json().admitted === 0, 'the stalled upload to leave');
  expect((await postJson(app, { sequence: rows(randomSequence(6, 1, 4)) })).statusCode).toBe(200);
});

test('a burst of concurrent requests over HTTP gives the same bits as the same requests one at a time', async () => {
  const app = await serve({ maxConcurrent: 2, maxQueue: 16 });
  const requests = Array.from({ length: 12 }, (_, i) => ({
    sequence: rows(randomSequence(10 + i, 1, 16 + 9 * i)),
    attention: i % 3 === 0 ? 'softmax' : 'favor',
    full: i % 4 === 0,
  }));
  const sequential = [];
  for (const body of requests) sequential.push(await postJson(app, body));
  const concurrent = await Promise.all(requests.map((body) => postJson(app, body)));
  expect(concurrent.map((r) => r.statusCode)).toEqual(requests.map(() => 200));
  expect(concurrent.map((r) => r.body)).toEqual(sequential.map((r) => r.body));
  expect(await metric(app, 'encode_active_requests')).toBe(0);
});

test('overload: beyond maxConcurrent running and maxQueue waiting, requests get 503 with Retry-After', async () => {
  const { model: gated, open, calls } = gatedModel();
  const app = await serve({ model: gated, maxConcurrent: 1, maxQueue: 1, retryAfterSeconds: 7 });
  const body = { sequence: rows(randomSequence(5, 1, 8)) };
  const responses = Array.from({ length: 6 }, () => postJson(app, body));
  await until(async () => (await metric(app, 'encode_rejected_total', { reason: 'overload' })) === 4, 'four refusals');
  expect(await metric(app, 'encode_active_requests')).toBe(1);
  expect(await metric(app, 'encode_queued_requests')).toBe(1);
  // Refused before its body is read: the queue is still full.
  const early = await postJson(app, body);
  expect(early.statusCode).toBe(503);
  expect(early.headers['retry-after']).toBe('7');
  expect(early.json().message).toMatch(/overloaded: 1 inferences running and 1 waiting/);
  open();
  const results = await Promise.all(responses);
  const statuses = results.map((r) => r.statusCode).sort();
  expect(statuses).toEqual([200, 200, 503, 503, 503, 503]);
  for (const r of results.filter((r) => r.statusCode === 503)) expect(r.headers['retry-after']).toBe('7');
  expect(calls.map((c) => c.outcome)).toEqual(['done', 'done']);
  // Capacity is back.
  expect((await postJson(app, body)).statusCode).toBe(200);
});

test('a request over its deadline gets 504 and its inference is cancelled', async () => {
  const { model: gated, open, calls } = gatedModel();
  const app = await serve({ model: gated, timeoutMs: 30 });
  const res = await postJson(app, { sequence: rows(randomSequence(6, 1, 8)) });
  expect(res.statusCode).toBe(504);
  expect(res.json().message).toMatch(/deadline of 30 ms/);
  open();
  await until(() => calls[0].outcome !== undefined, 'the call to settle');
  expect(calls[0].outcome).toBe('AbortError');
});

test('a client that disconnects cancels its running inference and leaves the queue', async () => {
  const { model: gated, open, calls } = gatedModel();
  const app = await serve({ model: gated, maxConcurrent: 1, maxQueue: 4, maxSeqLen: 16384 });
  // Exact attention over 16384 rows (about a second here): long enough to be cut short.
  const long = randomSequence(7, 1, 16384);
  const clients: http.ClientRequest[] = [];
  const outcomes = [0, 1].map(() =>
    postBinary(app, long, `?shape=16384,${D}&attention=softmax`, {}, (req) => clients.push(req)).catch((error: Error) => error.message),
  );
  await until(async () => calls.length === 1 && (await metric(app, 'encode_queued_requests')) === 1, 'one running, one queued');
  // The first call starts the real inference (microtasks run before the sockets' close events).
  open();
  for (const client of clients) client.destroy();
  expect(await Promise.all(outcomes)).toEqual(['socket hang up', 'socket hang up']);
  await until(async () => (await metric(app, 'encode_rejected_total', { reason: 'disconnect' })) === 2, 'both cancellations');
  expect(calls).toEqual([{ outcome: 'AbortError' }]); // the queued one never ran
  expect(await metric(app, 'encode_active_requests')).toBe(0);
  expect(await metric(app, 'encode_queued_requests')).toBe(0);
  await until(async () => (await metric(app, 'performer_native_pending_calls')) === 0, 'the native queue to empty');
  expect((await postJson(app, { sequence: rows(randomSequence(8, 1, 8)) })).statusCode).toBe(200);
});

test('close() stops accepting connections and drains the requests in flight', async () => {
  const { model: gated, open, calls } = gatedModel();
  const app = await serve({ model: gated, maxConcurrent: 1, maxQueue: 4 });
  const inputs = [randomSequence(20, 1, 12), randomSequence(21, 1, 30)];
  // Keep-alive connections: the server must still close them once their answer is sent.
  const agent = new http.Agent({ keepAlive: true });
  const inFlight = inputs.map((x) =>
    send(app, { payload: JSON.stringify({ sequence: rows(x) }), headers: { 'content-type': 'application/json' }, agent }),
  );
  await until(async () => calls.length === 1 && (await metric(app, 'encode_queued_requests')) === 1, 'one running, one waiting');
  let closed = false;
  const port = portOf(app);
  const closing = app.close().then(() => (closed = true));
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(closed).toBe(false);
  const refused = new Promise((resolve) => http.get({ port, path: '/health', agent: false }, resolve).on('error', resolve));
  expect(await refused).toMatchObject({ code: 'ECONNREFUSED' });
  open();
  const results = await Promise.all(inFlight);
  expect(results.map((r) => r.statusCode)).toEqual([200, 200]);
  for (const [i, x] of inputs.entries()) expect(results[i].json().embedding).toEqual(meanReference(await model.forward(x, { attention: 'favor' }))[0]);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([closing, new Promise((resolve) => (timer = setTimeout(resolve, 5000)))]);
  clearTimeout(timer);
  expect(closed).toBe(true);
  expect(results.map((r) => r.headers.connection)).toEqual(['close', 'close']);
  agent.destroy();
  expect(calls.map((c) => c.outcome)).toEqual(['done', 'done']);
});
