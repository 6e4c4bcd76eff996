// Fuzz target: the HTTP service's request parsing (examples/service: server.js's body
// parsers and hooks, input.js's JSON / binary / shape readers) through
// buildServer(...).inject(), with a real TransformerEncoder behind it.
//
// Input: a request as text. Lines up to the first empty line are "name: value":
//   type: <content-type>     query: <query string>     <header>: <value>
// and everything after the empty line is the body (bytes). Without an empty line the
// whole input is a JSON body. Example:
//   type: application/octet-stream
//   query: shape=2,4&full=1
//
//   <32 bytes of float32>
//
// A clean outcome is a 400 with a message, or a 200 whose inference received exactly
// what the request says: the numbers of the JSON body, or the float32 bytes of the
// binary body in the shape its query / x-shape says (read here by the documented
// grammar 'seq,modelDim' or 'batch,seq,modelDim'), within the server's limits, and an
// answer of the shapes the request asked for.
'use strict';
const { check, Finding, GARBLED } = require('../oracle');

const { buildServer } = require('../../../examples/service/server.js');
const { loadModel } = require('../../../examples/service/model.js');
const { file } = require('../models');

// Small limits, so that inputs of a few hundred bytes reach every limit check.
const LIMITS = { maxSeqLen: 8, maxBatch: 3, maxTokens: 12, jsonBodyLimit: 1024 };
// Headers the harness leaves to inject (it sets them from the payload) or that would
// describe another request.
const RESERVED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'expect', 'content-type']);

let calls = [];
const ready = (async () => {
  const model = await loadModel(file('encoder'));
  const forward = model.forward;
  model.forward = (x, options) => {
    calls.push({ x: { data: Float32Array.from(x.data), shape: [...x.shape] }, attention: options.attention });
    return forward(x, options);
  };
  const app = buildServer({ model, ...LIMITS, maxConcurrent: 1, maxQueue: 1, logger: false });
  await app.ready();
  return { app, D: model.modelDim };
})();

/** The request an input describes. */
function parseRequest(data) {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
  const split = buf.indexOf('\n\n');
  if (split < 0) return { type: 'application/json', query: '', headers: {}, body: buf };
  const request = { type: undefined, query: '', headers: {}, body: buf.subarray(split + 2) };
  for (const line of buf.toString('latin1', 0, split).split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    // Only what HTTP can carry: a token name and printable ASCII (inject refuses others).
    if (!/^[a-z0-9-]+$/.test(name) || !/^[\x20-\x7e]*$/.test(value)) continue;
    if (name === 'type') request.type = value;
    else if (name === 'query') request.query = value.replace(/[#\s]/g, '');
    else if (!RESERVED.has(name)) request.headers[name] = value;
  }
  return request;
}

// The shape grammar of the service's documentation, read strictly.
function documentedShape(text) {
  if (typeof text !== 'string' || !/^\s*\d+\s*(,\s*\d+\s*){1,2}$/.test(text)) return null;
  return text.split(',').map((s) => Number(s.trim()));
}

function expectedJson(body) {
  const { sequence } = body;
  if (Array.isArray(sequence)) return { values: sequence.flat(2), batched: Array.isArray(sequence[0]?.[0]) };
  return { values: sequence.data, batched: sequence.shape.length === 3 };
}

async function fuzz(data) {
  const { app, D } = await ready;
  const request = parseRequest(data);
  const headers = { ...request.headers };
  if (request.type !== undefined) headers['content-type'] = request.type;
  calls = [];
  const response = await app.inject({
    method: 'POST',
    url: request.query ? `/encode?${request.query}` : '/encode',
    headers,
    payload: request.body,
  });
  const status = response.statusCode;
  if (status === 400) {
    const body = response.json();
    check(typeof body.message === 'string' && body.message.length > 0, `400 without a message: ${response.body}`);
    check(!GARBLED.test(body.message), `400 with a garbled message: ${body.message}`);
    check(calls.length === 0 || /values too large/.test(body.message), `400 after an inference: ${body.message}`);
    return;
  }
  if (status !== 200) throw new Finding(`status ${status}: ${response.body.slice(0, 300)}`);

  // A 200: exactly one inference, on what the request says, within the limits.
  check(calls.length === 1, `${calls.length} inferences for one request`);
  const { x } = calls[0];
  const [B, L, Dx] = x.shape;
  check(x.shape.length === 3 && Dx === D, `inference shape ${JSON.stringify(x.shape)}`);
  check(B >= 1 && L >= 1 && B <= LIMITS.maxBatch && L <= LIMITS.maxSeqLen && B * L <= LIMITS.maxTokens, `shape ${x.shape} past the limits`);
  check(x.data.length === B * L * D && x.data.every(Number.isFinite), 'inference input has the wrong length or non-finite values');
  const binary = /^application\/octet-stream\b/i.test(request.type || '');
  let batched;
  if (binary) {
    const params = new URLSearchParams(request.query);
    const text = params.get('shape') ?? request.headers['x-shape'];
    const shape = documentedShape(text);
    if (shape === null) throw new Finding(`accepted the shape ${JSON.stringify(text)}, which is not 'seq,modelDim' or 'batch,seq,modelDim'`);
    const full = shape.length === 3 ? shape : [1, ...shape];
    check(JSON.stringify(full) === JSON.stringify(x.shape), `shape ${JSON.stringify(text)} read as ${JSON.stringify(x.shape)}`);
    const sent = new Float32Array(request.body.length / 4);
    for (let i = 0; i < sent.length; i++) sent[i] = request.body.readFloatLE(4 * i);
    check(Buffer.from(sent.buffer).equals(Buffer.from(x.data.buffer)), 'the inference input differs from the body');
    batched = shape.length === 3;
  } else {
    let body;
    try {
      body = JSON.parse(request.body.toString('utf8'));
    } catch (error) {
      throw new Finding(`200 for a body that is not JSON (${error.message})`);
    }
    const expected = expectedJson(body);
    check(expected.values.length === x.data.length, `JSON body of ${expected.values.length} numbers read as ${x.data.length}`);
    check(expected.values.every((v, i) => typeof v === 'number' && Math.fround(v) === x.data[i]), 'the inference input differs from the JSON numbers');
    batched = expected.batched;
  }

  // The answer: the embedding [B, D] (batched) or [D], and with `full` the whole output.
  const pooled = batched ? [B, D] : [D];
  const whole = batched ? [B, L, D] : [L, D];
  if (/application\/octet-stream/.test(headers.accept || '')) {
    const shape = response.headers['x-shape'].split(',').map(Number);
    check([pooled, whole].some((s) => JSON.stringify(s) === JSON.stringify(shape)), `answer x-shape ${shape} for input ${x.shape}`);
    check(response.rawPayload.length === shape.reduce((a, b) => a * b, 1) * 4, 'binary answer length does not match its x-shape');
  } else {
    const answer = response.json();
    check(JSON.stringify(answer.shape) === JSON.stringify(pooled), `answer shape ${JSON.stringify(answer.shape)} for input ${x.shape}`);
    if (answer.output !== undefined) check(JSON.stringify(answer.outputShape) === JSON.stringify(whole), `answer outputShape ${JSON.stringify(answer.outputShape)}`);
  }
}

module.exports = { fuzz, parseRequest, documentedShape, LIMITS };
