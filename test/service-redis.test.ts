// Two replicas of the example service sharing sessions through a real redis-server (started
// here on a free port; `.ci/run` installs Debian's redis-server when it is missing): a
// session started on one continues on the other with the same tokens, two requests racing
// for one session get one stream and one 409, and a replica killed mid-session loses no
// streamed token: the session continues on the other once its lease expires.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { only, parseSse, streamTokens, type SseEvent } from './helpers/sse';

interface LM {
  generate(prompt: ArrayLike<number>, options: Record<string, unknown>): AsyncGenerator<number>;
}
const dist = require('../dist') as { PerformerLM: { fromPerformerPytorch(weights: string, config: unknown): LM } };
const { makeWeights } = require('../examples/service/make-weights.js') as { makeWeights(file: string, config: Record<string, unknown>): unknown };
const { startServer, stopServer } = require('../examples/service/child-server.js') as {
  startServer(flags: string[]): Promise<{ child: ChildProcess; url: string }>;
  stopServer(child: ChildProcess): Promise<unknown>;
};

const SERVICE = path.join(__dirname, '..', 'examples', 'service');
const lm = dist.PerformerLM.fromPerformerPytorch(path.join(SERVICE, 'lm', 'model.safetensors'), require(path.join(SERVICE, 'lm', 'config.json')));
const LEASE_MS = 1000;

const redisServer = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
if (redisServer === '') {
  throw new Error('redis-server is not installed: `apt-get install redis-server` (Debian), as .ci/run does when it is missing');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

let redis: ChildProcess;
let redisUrl: string;
let weights: string;
const replicaFlags = () => ['--redis', redisUrl, '--lease-ms', String(LEASE_MS), '--weights', weights];
const replicas: ChildProcess[] = [];
let a: string;
let b: string;

beforeAll(async () => {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-redis-'));
  redis = spawn(redisServer, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  redisUrl = `redis://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) break;
    if (i > 100) throw new Error('redis-server did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // A small encoder of its own: replicas starting together must not race to write the default.
  weights = path.join(dir, 'encoder.safetensors');
  makeWeights(weights, { numLayers: 1, modelDim: 16, numHeads: 2, ffDim: 32, activation: 'gelu', seed: 3 });
  const start = async () => {
    const s = await startServer(replicaFlags());
    replicas.push(s.child);
    return s.url;
  };
  [a, b] = await Promise.all([start(), start()]);
}, 60_000);

afterAll(async () => {
  await Promise.all(replicas.map((child) => stopServer(child)));
  redis?.kill('SIGTERM');
});

async function post(url: string, body: unknown): Promise<{ status: number; events: SseEvent[]; json?: Record<string, unknown> }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await r.text();
  if (r.headers.get('content-type')?.startsWith('text/event-stream')) return { status: r.status, events: parseSse(text) };
  return { status: r.status, events: [], json: JSON.parse(text) as Record<string, unknown> };
}

async function expected(prompt: string, options: Record<string, unknown>): Promise<number[]> {
  const tokens: number[] = [];
  for await (const t of lm.generate(Buffer.from(prompt), options)) tokens.push(t);
  return tokens;
}

test('a session started on one replica continues on the other with the same tokens', async () => {
  const options = { temperature: 0.9, seed: 21 };
  const first = await post(`${a}/generate`, { prompt: 'class Node:\n', maxNewTokens: 15, ...options });
  const id = first.events[0].data.id as string;
  const second = await post(`${b}/sessions/${id}/generate`, { maxNewTokens: 15 });
  expect(second.events[0].data).toEqual({ id, position: 12 + 15 });
  const third = await post(`${a}/sessions/${id}/generate`, { maxNewTokens: 10 });
  const all = [...streamTokens(first.events), ...streamTokens(second.events), ...streamTokens(third.events)];
  expect(all).toEqual(await expected('class Node:\n', { maxNewTokens: 40, ...options }));
  expect((await fetch(`${b}/sessions/${id}`, { method: 'DELETE' })).status).toBe(204);
  expect((await post(`${a}/sessions/${id}/generate`, { maxNewTokens: 1 })).status).toBe(404);
});

test('two requests racing for one session on two replicas: one streams, the other gets 409', async () => {
  const start = await post(`${a}/generate`, { prompt: 'x', maxNewTokens: 1 });
  const id = start.events[0].data.id as string;
  const [ra, rb] = await Promise.all([post(`${a}/sessions/${id}/generate`, { maxNewTokens: 200 }), post(`${b}/sessions/${id}/generate`, { maxNewTokens: 200 })]);
  expect([ra.status, rb.status].sort()).toEqual([200, 409]);
  const streamed = ra.status === 200 ? ra : rb;
  expect(only(streamed.events, 'done')).toMatchObject({ reason: 'length', position: 1 + 1 + 200 });
});

test('a replica killed mid-session loses no streamed token; the other continues after the lease', async () => {
  const victim = await startServer(replicaFlags());
  replicas.push(victim.child);
  const response = await fetch(`${victim.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'def run(', maxNewTokens: 1000 }) });
  const reader = response.body!.getReader();
  let text = '';
  while ((text.match(/event: token/g) ?? []).length < 20) text += new TextDecoder().decode((await reader.read()).value);
  victim.child.kill('SIGKILL');
  await new Promise((resolve) => victim.child.once('exit', resolve));
  const seen = parseSse(text.slice(0, text.lastIndexOf('\n\n') + 2));
  const id = seen[0].data.id as string;
  const received = streamTokens(seen);

  let after = await post(`${b}/sessions/${id}/generate`, { maxNewTokens: 10 });
  expect(after.status).toBe(409); // the dead replica's lease holds until it expires
  while (after.status === 409) {
    // Ends once the lease expires (a lease that never did would run into the test's timeout).
    await new Promise((resolve) => setTimeout(resolve, 100));
    after = await post(`${b}/sessions/${id}/generate`, { maxNewTokens: 10 });
  }
  const position = after.events[0].data.position as number;
  const kept = position - 8; // tokens the session holds after its prompt
  expect(kept).toBeGreaterThanOrEqual(received.length); // every streamed token was saved first
  const whole = await expected('def run(', { maxNewTokens: kept + 10 });
  expect(whole.slice(0, received.length)).toEqual(received);
  expect(streamTokens(after.events)).toEqual(whole.slice(kept));
}, 60_000);
