// Generation in the example service (examples/service/generation): streamed tokens equal
// PerformerLM.generate's, greedy and sampled; sessions continue across requests with the
// same tokens; concurrent sessions share batched steps and still get their own tokens;
// stop tokens, DELETE, 404/409/503, deadlines, disconnects and every bad body. The memory
// store here; test/service-redis.test.ts runs replicas over Redis.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import type { FastifyInstance } from 'fastify';

import { only, parseSse, streamTokens, type SseEvent } from './helpers/sse';

interface LM {
  generate(prompt: ArrayLike<number>, options: Record<string, unknown>): AsyncGenerator<number>;
  config: { numTokens: number };
  quantize(format: 'int8' | 'bf16'): LM;
}
const dist = require('../dist') as { PerformerLM: { fromPerformerPytorch(weights: string, config: unknown): LM } };
const { buildServer } = require('../examples/service/server.js') as { buildServer(options: Record<string, unknown>): FastifyInstance };
const { loadModel } = require('../examples/service/model.js') as { loadModel(file: string): Promise<unknown> };
const { makeWeights } = require('../examples/service/make-weights.js') as { makeWeights(file: string, config: Record<string, unknown>): unknown };
const { MemorySessionStore } = require('../examples/service/generation/stores.js') as {
  MemorySessionStore: (new (options: { ttlMs: number; leaseMs: number }) => { close(): Promise<void> }) & { prototype: { renew(id: string, owner: string): Promise<void> } };
};
const { sample } = require('../examples/service/metrics.js') as { sample(text: string, name: string, labels?: Record<string, string>): number | undefined };

const SERVICE = path.join(__dirname, '..', 'examples', 'service');
const lm = dist.PerformerLM.fromPerformerPytorch(path.join(SERVICE, 'lm', 'model.safetensors'), require(path.join(SERVICE, 'lm', 'config.json')));
let encoder: unknown;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  // The encoder routes are not under test: a small encoder written here.
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pa-generate-')), 'encoder.safetensors');
  makeWeights(file, { numLayers: 1, modelDim: 16, numHeads: 2, ffDim: 32, activation: 'gelu', seed: 3 });
  encoder = await loadModel(file);
});
afterAll(async () => {
  for (const close of closers) await close();
});

async function serve(options: Record<string, unknown> = {}, leaseMs = 10_000, model: LM = lm): Promise<string> {
  const store = new MemorySessionStore({ ttlMs: 60_000, leaseMs });
  const app = buildServer({ model: encoder, generator: { lm: model, store }, ...options });
  closers.push(async () => {
    await app.close();
    await store.close();
  });
  return app.listen({ port: 0, host: '127.0.0.1' });
}

async function post(url: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; events: SseEvent[]; json?: Record<string, unknown>; headers: Headers }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), ...init });
  const text = await r.text();
  if (r.headers.get('content-type')?.startsWith('text/event-stream')) return { status: r.status, events: parseSse(text), headers: r.headers };
  return { status: r.status, events: [], json: JSON.parse(text) as Record<string, unknown>, headers: r.headers };
}

async function expected(prompt: string | number[], options: Record<string, unknown>, model: LM = lm): Promise<number[]> {
  const tokens: number[] = [];
  const ids = typeof prompt === 'string' ? Buffer.from(prompt) : prompt;
  for await (const t of model.generate(ids, options)) tokens.push(t);
  return tokens;
}

let url: string;
beforeAll(async () => {
  url = await serve();
});

test('POST /generate streams the tokens generate() picks, greedy and sampled, then done', async () => {
  for (const options of [{}, { temperature: 0.9, seed: 3, topK: 40 }]) {
    const r = await post(`${url}/generate`, { prompt: 'def main():\n', maxNewTokens: 24, ...options });
    expect(r.status).toBe(200);
    expect(r.events[0].event).toBe('session');
    expect(r.events[0].data.position).toBe(0);
    expect(streamTokens(r.events)).toEqual(await expected('def main():\n', { maxNewTokens: 24, ...options }));
    const done = only(r.events, 'done');
    expect(done).toMatchObject({ reason: 'length', tokens: 24, position: 12 + 24, session: r.events[0].data.id });
    const texts = r.events.filter((e) => e.event === 'token').map((e) => e.data.text);
    expect(texts).toEqual(streamTokens(r.events).map((t) => String.fromCharCode(t)));
  }
});

test('a session continues where it stopped (its own sampler too): 12 + 12 tokens equal 24 in one go', async () => {
  const options = { temperature: 0.8, seed: 5 };
  const first = await post(`${url}/generate`, { prompt: [100, 101, 102, 32], maxNewTokens: 12, ...options });
  const id = first.events[0].data.id as string;
  const second = await post(`${url}/sessions/${id}/generate`, { maxNewTokens: 12 });
  expect(second.status).toBe(200);
  expect(second.events[0].data).toEqual({ id, position: 16 });
  expect([...streamTokens(first.events), ...streamTokens(second.events)]).toEqual(await expected([100, 101, 102, 32], { maxNewTokens: 24, ...options }));
  // A prompt in the middle and new sampling options are taken too.
  const third = await post(`${url}/sessions/${id}/generate`, { prompt: 'x = ', maxNewTokens: 4 });
  expect(only(third.events, 'done')).toMatchObject({ reason: 'length', tokens: 4, position: 28 + 4 + 4 });
});

test('concurrent sessions are stepped together and each gets the tokens of its own generate()', async () => {
  const prompts = ['import os', 'class A:', 'x', 'for i in range(10):', '# a comment', 'def f', 'return', 'print('];
  const results = await Promise.all(prompts.map((p, i) => post(`${url}/generate`, { prompt: p, maxNewTokens: 40, temperature: 1, seed: i })));
  for (const [i, r] of results.entries()) expect(streamTokens(r.events)).toEqual(await expected(prompts[i], { maxNewTokens: 40, temperature: 1, seed: i }));
  const metrics = await (await fetch(`${url}/metrics`)).text();
  const steps = sample(metrics, 'generate_step_sessions_count')!;
  const single = sample(metrics, 'generate_step_sessions_bucket', { le: '1' })!;
  expect(steps - single).toBeGreaterThan(10); // most steps of this test advanced several sessions
});

test('stop tokens end the stream after the first one', async () => {
  const all = await expected('def main():\n', { maxNewTokens: 30 });
  const stop = all[5];
  const r = await post(`${url}/generate`, { prompt: 'def main():\n', maxNewTokens: 30, stopTokens: [stop] });
  expect(streamTokens(r.events)).toEqual(all.slice(0, all.indexOf(stop) + 1));
  expect(only(r.events, 'done').reason).toBe('stop');
});

test('DELETE ends a session: 204, then 404 for it everywhere; 409 while it generates', async () => {
  const r = await post(`${url}/generate`, { prompt: 'a', maxNewTokens: 2 });
  const id = r.events[0].data.id as string;
  const running = post(`${url}/sessions/${id}/generate`, { maxNewTokens: 800 });
  await new Promise((resolve) => setTimeout(resolve, 100));
  expect((await fetch(`${url}/sessions/${id}`, { method: 'DELETE' })).status).toBe(409);
  const busy = await post(`${url}/sessions/${id}/generate`, { maxNewTokens: 2 });
  expect(busy.status).toBe(409);
  expect(busy.json!.message).toMatch(/generating in another request/);
  await running;
  expect((await fetch(`${url}/sessions/${id}`, { method: 'DELETE' })).status).toBe(204);
  expect((await fetch(`${url}/sessions/${id}`, { method: 'DELETE' })).status).toBe(404);
  const gone = await post(`${url}/sessions/${id}/generate`, { maxNewTokens: 2 });
  expect(gone.status).toBe(404);
  expect(gone.json!.message).toMatch(/no such session/);
});

test('beyond maxSessions generating at once: 503 with Retry-After', async () => {
  const small = await serve({ maxSessions: 1 });
  const running = post(`${small}/generate`, { prompt: 'a', maxNewTokens: 600 });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const refused = await post(`${small}/generate`, { prompt: 'b', maxNewTokens: 2 });
  expect(refused.status).toBe(503);
  expect(refused.headers.get('retry-after')).toBe('1');
  expect(only((await running).events, 'done').reason).toBe('length');
});

// A POST whose body arrives in pieces: the headers and `first` bytes now, the rest on
// `finish()`; `response` resolves with the status and text when the answer arrives.
function slowPost(base: string, route: string, body: Buffer, first: number) {
  const { port } = new URL(base);
  const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: route, headers: { 'content-type': 'application/json', 'content-length': String(body.length) } });
  req.on('error', () => undefined); // the answer is what is checked
  const response = new Promise<{ status: number; text: string }>((resolve) => {
    req.on('response', (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
  });
  req.write(body.subarray(0, first));
  return { response, finish: () => req.end(body.subarray(first)) };
}

async function admitted(base: string): Promise<number> {
  return ((await (await fetch(`${base}/health`)).json()) as { generation: { admitted: number } }).generation.admitted;
}

test('generation requests count from their headers: beyond maxSessions, uploads included, 503 before the body is read', async () => {
  const at = await serve({ maxSessions: 2 });
  const body = Buffer.from(JSON.stringify({ prompt: 'def ', maxNewTokens: 2 }));
  const uploads = [0, 1].map(() => slowPost(at, '/generate', body, 5));
  while ((await admitted(at)) < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  // No session generates yet: only the uploads hold the limit.
  const refused = await post(`${at}/generate`, { prompt: 'x', maxNewTokens: 1 });
  expect(refused.status).toBe(503);
  expect(refused.headers.get('retry-after')).toBe('1');
  expect(refused.json!.message).toMatch(/overloaded: 2 generation requests in progress/);
  for (const u of uploads) u.finish();
  for (const u of uploads) expect((await u.response).status).toBe(200);
  while ((await admitted(at)) > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  expect((await post(`${at}/generate`, { prompt: 'x', maxNewTokens: 1 })).status).toBe(200);
  const metrics = await (await fetch(`${at}/metrics`)).text();
  expect(sample(metrics, 'generate_rejected_total', { reason: 'overload' })).toBe(1);
});

test('a generation body over its small limit is refused from its content-length; an unknown route is refused before its body', async () => {
  const at = await serve({ maxPromptTokens: 64 });
  const health = (await (await fetch(`${at}/health`)).json()) as { generation: { bodyLimit: number } };
  expect(health.generation.bodyLimit).toBe(16 * 64 + 16 * 1024);
  // Both answered while 4 MiB are still to be sent: nothing of them is buffered.
  const big = slowPost(at, '/generate', Buffer.alloc(4 * 1024 * 1024, 0x20), 10);
  const tooLarge = await big.response;
  expect(tooLarge.status).toBe(400);
  expect(JSON.parse(tooLarge.text).message).toMatch(/body larger than this server's limit of 17408 bytes for a generation request \(a prompt of at most 64 tokens\)/);
  for (const route of ['/nothing-here', '/health', '/sessions/x']) {
    const unknown = slowPost(at, route, Buffer.alloc(4 * 1024 * 1024, 0x20), 10);
    const answer = await unknown.response;
    expect({ route, status: answer.status }).toEqual({ route, status: 404 });
    expect(JSON.parse(answer.text).message).toMatch(new RegExp(`no route POST ${route} on this server \\(routes: GET /health, .*POST /generate`));
  }
});

test('a deadline or a disconnect ends the stream; the session keeps every token streamed and continues', async () => {
  const slow = await serve({ timeoutMs: 300 });
  const r = await post(`${slow}/generate`, { prompt: 'def ', maxNewTokens: 1000 });
  const done = only(r.events, 'done');
  expect(done.reason).toBe('deadline');
  const streamed = streamTokens(r.events);
  expect(streamed.length).toBe(done.tokens);
  expect(done.position).toBe(4 + streamed.length);
  const id = r.events[0].data.id as string;
  const more = await post(`${slow}/sessions/${id}/generate`, { maxNewTokens: 5 });
  expect([...streamed, ...streamTokens(more.events)]).toEqual(await expected('def ', { maxNewTokens: streamed.length + 5 }));

  const controller = new AbortController();
  const response = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'def ', maxNewTokens: 1000 }), signal: controller.signal });
  const reader = response.body!.getReader();
  let text = '';
  while (!/event: token/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
  const sid = parseSse(text.slice(0, text.indexOf('\n\n') + 2))[0].data.id as string;
  controller.abort();
  let after: Awaited<ReturnType<typeof post>>;
  do {
    await new Promise((resolve) => setTimeout(resolve, 50));
    after = await post(`${url}/sessions/${sid}/generate`, { maxNewTokens: 3 });
  } while (after.status === 409); // until the server has seen the disconnect
  const position = after.events[0].data.position as number;
  expect(position).toBeGreaterThan(4);
  expect(position).toBeLessThan(4 + 1000);
  const whole = await expected('def ', { maxNewTokens: position - 4 + 3 });
  expect(streamTokens(after.events)).toEqual(whole.slice(position - 4));
  const metrics = await (await fetch(`${url}/metrics`)).text();
  expect(sample(metrics, 'generate_rejected_total', { reason: 'disconnect' })).toBeGreaterThanOrEqual(1);
});

test('bad bodies get a 400 naming the field; nothing is created', async () => {
  const cases: [unknown, RegExp][] = [
    [[1, 2], /body: expected a JSON object/],
    [{ maxNewTokens: 3 }, /prompt: required/],
    [{ prompt: 'a' }, /maxNewTokens: required/],
    [{ prompt: 'a', maxNewTokens: 0 }, /maxNewTokens: expected an integer from 1 to 1024, received number 0/],
    [{ prompt: 'a', maxNewTokens: 2, temprature: 1 }, /body: unknown field "temprature"/],
    [{ prompt: 'é', maxNewTokens: 2 }, /prompt: byte 0 is 195, not a token of this byte-level model \(ids 0 to 127\)/],
    [{ prompt: [1, 128], maxNewTokens: 2 }, /prompt\[1\]: expected a token id from 0 to 127, received number 128/],
    [{ prompt: 'a', maxNewTokens: 2, stopTokens: 'x' }, /stopTokens: expected an array of token ids/],
    [{ prompt: 'a', maxNewTokens: 2, temperature: -1 }, /sampling: temperature/],
    [{ prompt: 'a', maxNewTokens: 2, topK: 5 }, /sampling: .*temperature 0 \(greedy\)/],
  ];
  for (const [body, message] of cases) {
    const r = await post(`${url}/generate`, body);
    expect(r.status).toBe(400);
    expect(r.json!.message).toMatch(message);
  }
  const health = (await (await fetch(`${url}/health`)).json()) as { generation: { store: string; weights: string } };
  expect(health.generation.store).toBe('memory');
  expect(health.generation.weights).toBe('float32');
});

test('a model with int8 weights streams the tokens its own generate() picks, and says so in /health', async () => {
  const int8 = dist.PerformerLM.fromPerformerPytorch(path.join(SERVICE, 'lm', 'model.safetensors'), require(path.join(SERVICE, 'lm', 'config.json'))).quantize('int8');
  const at = await serve({}, 10_000, int8);
  const options = { temperature: 0.8, seed: 5, topK: 20 };
  const r = await post(`${at}/generate`, { prompt: 'import ', maxNewTokens: 16, ...options });
  expect(r.status).toBe(200);
  expect(streamTokens(r.events)).toEqual(await expected('import ', { maxNewTokens: 16, ...options }, int8));
  const health = (await (await fetch(`${at}/health`)).json()) as { generation: { weights: string } };
  expect(health.generation.weights).toBe('int8');
});

test('a request longer than the lease keeps it (renewed while it runs) and ends normally', async () => {
  const short = await serve({}, 100);
  const renew = jest.spyOn(MemorySessionStore.prototype, 'renew');
  let r: Awaited<ReturnType<typeof post>>;
  let renewed: string[];
  try {
    r = await post(`${short}/generate`, { prompt: 'def ', maxNewTokens: 1000 });
    renewed = renew.mock.calls.map(([session]) => session);
  } finally {
    renew.mockRestore();
  }
  // Precondition: the request outlived its lease twice over. The server renews a lease once
  // a third of it has passed, so 6 renewals of this session's lease span 2 leases at least.
  const id = r.events[0].data.id as string;
  expect(renewed.filter((session) => session === id).length).toBeGreaterThanOrEqual(6);
  expect(only(r.events, 'done')).toMatchObject({ reason: 'length', tokens: 1000 });
  const more = await post(`${short}/sessions/${r.events[0].data.id as string}/generate`, { maxNewTokens: 1 });
  expect(more.events[0].data.position).toBe(1004);
});

test('close() does not wait for a connection that never sent a request', async () => {
  const store = new MemorySessionStore({ ttlMs: 60_000, leaseMs: 10_000 });
  const app = buildServer({ model: encoder, generator: { lm, store } });
  const address = new URL(await app.listen({ port: 0, host: '127.0.0.1' }));
  const socket = net.connect(Number(address.port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const closed = new Promise((resolve) => socket.once('close', resolve));
  await app.close(); // without closing it, this would wait for its headers timeout
  await closed;
  expect(socket.destroyed).toBe(true);
  await store.close();
});
