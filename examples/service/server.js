// The HTTP encoder service: buildServer(options) returns a Fastify instance (not yet
// listening) serving
//   POST /encode   a sequence [seq, modelDim] or a batch [batch, seq, modelDim], as JSON or as
//                  float32 bytes; answers the mean-pooled embedding and, with full, the whole output
//   GET  /health   status, model config, limits and requests admitted
//   GET  /metrics  Prometheus text
// and, given a language model (options.generator), generation sessions streamed as
// Server-Sent Events: POST /generate, POST /sessions/:id/generate, DELETE /sessions/:id
// (generation/routes.js; every active session advances in one batched step).
// Inference runs through the library's Promise API only, at most maxConcurrent at once
// with at most maxQueue waiting; beyond that 503 + Retry-After. A client that disconnects
// cancels its inference (AbortSignal); `app.close()` drains the requests in flight.
'use strict';
const http = require('node:http');
const os = require('node:os');
const Fastify = require('fastify');

const { HttpError, isLibraryInputError, readBinaryBody, readBinaryParams, readJsonBody, ATTENTION } = require('./input');
const { Limiter } = require('./limiter');
const { Metrics } = require('./metrics');
const { GenerationScheduler } = require('./generation/scheduler');
const { registerGeneration } = require('./generation/routes');

const MiB = 1024 * 1024;

const DEFAULTS = {
  model: undefined, // required: { config, modelDim, forward, pendingCalls } (see model.js)
  maxConcurrent: os.availableParallelism(), // inferences at once
  maxQueue: undefined, // requests waiting for a slot; default 2 * maxConcurrent
  maxSeqLen: 16384, // rows per sequence
  maxBatch: 8, // sequences per request
  maxTokens: undefined, // batch * seq per request; default maxSeqLen
  jsonBodyLimit: 16 * MiB, // JSON is ~10x the size of float32 bytes: use binary for long sequences
  binaryBodyLimit: undefined, // default maxTokens * modelDim * 4 bytes
  timeoutMs: 120000, // deadline of one request, queue time included: 504 after it
  uploadTimeoutMs: 60000, // a request (headers and body) must arrive within this: 408 after it
  drainLimit: 64 * MiB, // after a 400 for a body over the limit, bytes of it read and discarded
  // (so that the client, still uploading, receives the answer) before the connection closes
  retryAfterSeconds: 1, // the Retry-After of a 503
  defaultAttention: 'favor',
  logger: false, // Fastify's logger option
  // Generation (POST /generate, /sessions/:id/...): only with a language model.
  generator: undefined, // { lm: PerformerLM, store } (store: see generation/stores.js)
  maxSessions: 64, // sessions generating at once (one batched step advances them all); 503 beyond
  maxNewTokens: 1024, // per request
  maxPromptTokens: 4096, // per request
  generateBodyLimit: undefined, // bytes of a generation request's JSON body; default 16 per
  // prompt token (a token id or an escaped byte of text) + 16 KiB for the other fields
  persistEvery: undefined, // tokens between saves of a session; default 1 with a shared store
  // (Redis: a replica that dies loses only its step in flight), else only at the end
};

function readOptions(options) {
  if (options === null || typeof options !== 'object') throw new TypeError(`options: expected an object, received ${options}`);
  for (const key of Object.keys(options)) {
    if (!(key in DEFAULTS)) throw new TypeError(`options: unknown option '${key}' (known: ${Object.keys(DEFAULTS).join(', ')})`);
  }
  const o = { ...DEFAULTS };
  for (const [key, value] of Object.entries(options)) if (value !== undefined) o[key] = value;
  const { model } = o;
  if (!model || typeof model.forward !== 'function' || !Number.isInteger(model.modelDim) || typeof model.pendingCalls !== 'function') {
    throw new TypeError('options.model: expected { config, modelDim, forward(), pendingCalls() } (see loadModel in model.js)');
  }
  o.maxQueue ??= 2 * o.maxConcurrent;
  o.maxTokens ??= o.maxSeqLen;
  o.binaryBodyLimit ??= o.maxTokens * model.modelDim * 4;
  o.generateBodyLimit ??= 16 * o.maxPromptTokens + 16 * 1024;
  if (o.generator !== undefined) {
    const { lm, store } = o.generator;
    if (!lm || typeof lm.stepBatch !== 'function' || !store || typeof store.acquire !== 'function') {
      throw new TypeError('options.generator: expected { lm: PerformerLM, store } (see generation/stores.js)');
    }
    o.persistEvery ??= store.shared ? 1 : Number.MAX_SAFE_INTEGER;
    if (!Number.isSafeInteger(o.persistEvery) || o.persistEvery < 1) throw new RangeError(`options.persistEvery: expected a positive integer, received ${o.persistEvery}`);
  }
  for (const key of ['maxConcurrent', 'maxSeqLen', 'maxBatch', 'maxTokens', 'jsonBodyLimit', 'binaryBodyLimit', 'timeoutMs', 'uploadTimeoutMs', 'drainLimit', 'retryAfterSeconds', 'maxSessions', 'maxNewTokens', 'maxPromptTokens', 'generateBodyLimit']) {
    if (!Number.isSafeInteger(o[key]) || o[key] < 1) throw new RangeError(`options.${key}: expected a positive integer, received ${o[key]}`);
  }
  if (!Number.isSafeInteger(o.maxQueue) || o.maxQueue < 0) throw new RangeError(`options.maxQueue: expected an integer >= 0, received ${o.maxQueue}`);
  if (!ATTENTION.includes(o.defaultAttention)) throw new RangeError(`options.defaultAttention: expected 'favor' or 'softmax', received ${o.defaultAttention}`);
  return o;
}

/** Mean over the rows of each sequence, accumulated in double: [B, L, D] -> [B, D]. */
function meanPool({ data, shape: [B, L, D] }) {
  const out = new Float32Array(B * D);
  const sum = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    sum.fill(0);
    for (let i = 0; i < L; i++) {
      const row = (b * L + i) * D;
      for (let j = 0; j < D; j++) sum[j] += data[row + j];
    }
    for (let j = 0; j < D; j++) out[b * D + j] = sum[j] / L;
  }
  return out;
}

// Float32Array -> nested arrays of numbers of `shape`.
function nested(data, shape) {
  if (shape.length === 1) return Array.from(data);
  const step = data.length / shape[0];
  const out = new Array(shape[0]);
  for (let i = 0; i < shape[0]; i++) out[i] = nested(data.subarray(i * step, (i + 1) * step), shape.slice(1));
  return out;
}

// A library error about the input, in the client's terms: finite values can still overflow
// float32 inside the model (the library names the layer; the client needs the cause).
function clientMessage(message) {
  if (/overflow|not finite|infinity|NaN/i.test(message)) {
    return 'input: values too large for this model: its computation overflowed float32; scale the input down';
  }
  return `input: ${message}`;
}

// Admission from the headers: a request counts from its first byte, while its body is still
// uploading, to the end of its answer; past `full()` it gets `refuse()` (a 503) before its
// body is read. So the bodies in memory are bounded in number, each by its route's limit.
function admission(full, refuse) {
  const a = {
    count: 0,
    onRequest: async (request, reply) => {
      if (full(a.count)) throw refuse(a.count);
      a.count++;
      let counted = true;
      const leave = () => {
        if (counted) a.count--;
        counted = false;
      };
      reply.raw.once('finish', leave);
      reply.raw.once('close', leave);
    },
  };
  return a;
}

function buildServer(options) {
  const o = readOptions(options);
  const { model } = o;
  const limits = {
    modelDim: model.modelDim,
    maxSeqLen: o.maxSeqLen,
    maxBatch: o.maxBatch,
    maxTokens: o.maxTokens,
    defaultAttention: o.defaultAttention,
  };
  const limiter = new Limiter(o.maxConcurrent, o.maxQueue);
  const metrics = new Metrics({ pendingCalls: () => model.pendingCalls(), limiter });
  const overloaded = () => {
    metrics.reject('overload');
    return new HttpError(503, `overloaded: ${limiter.active} inferences running and ${limiter.waiting.length} waiting; retry later`, {
      'retry-after': String(o.retryAfterSeconds),
    });
  };

  // /encode requests admitted: at most maxConcurrent + maxQueue bodies are in memory at once.
  const encodes = admission((count) => count >= o.maxConcurrent + o.maxQueue || limiter.full(), overloaded);
  let generations; // the same for generation requests, given a language model (below)

  const app = Fastify({
    logger: o.logger,
    bodyLimit: o.jsonBodyLimit,
    return503OnClosing: true,
    // A slow upload may not hold a connection (and its buffered body) forever: Node answers
    // 408 once a request is not in whole after uploadTimeoutMs (checked this often).
    requestTimeout: o.uploadTimeoutMs,
    // (Node takes the timeout at the server's construction too.)
    http: { requestTimeout: o.uploadTimeoutMs, connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(o.uploadTimeoutMs / 4))) },
    connectionTimeout: o.uploadTimeoutMs + o.timeoutMs,
  });
  app.removeContentTypeParser('text/plain');
  // JSON.parse makes a "__proto__" key an own property (no prototype is touched), which the
  // body checks then name as an unknown field: a message in the client's terms.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body.length === 0) return done(new HttpError(400, 'body: empty; send a JSON object such as {"sequence": [[...], ...]}'));
    try {
      done(null, JSON.parse(body));
    } catch (error) {
      done(new HttpError(400, `body: not valid JSON (${error.message})`));
    }
  });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: o.binaryBodyLimit }, (request, body, done) =>
    done(null, body),
  );

  app.setErrorHandler((error, request, reply) => {
    let status = error.statusCode;
    let message = error.message;
    if (error instanceof HttpError) {
      reply.headers(error.headers);
    } else if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || error.code === 'FST_ERR_CTP_EMPTY_TYPE') {
      // Every bad body is a 400 with a message (not 415/413), so clients have one rule.
      status = 400;
      const type = request.headers['content-type'];
      const accepted = 'send application/json or application/octet-stream (float32 little-endian)';
      message = type === undefined || type === '' ? `content-type header missing: ${accepted}` : `content-type ${JSON.stringify(type)} is not accepted: ${accepted}`;
    } else if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      status = 400;
      const binary = /octet-stream/.test(request.headers['content-type'] || '');
      if (request.routeOptions.url !== '/encode') message = `body larger than this server's limit of ${o.generateBodyLimit} bytes for a generation request (a prompt of at most ${o.maxPromptTokens} tokens)`;
      else message = `body larger than this server's limit of ${binary ? o.binaryBodyLimit : o.jsonBodyLimit} bytes${binary ? '' : ' for JSON (send long sequences as application/octet-stream float32)'}`;
      drainRest(request, reply);
    } else if (!(status >= 400 && status < 500)) {
      request.log.error({ err: error }, 'request failed');
      status = 500;
      message = 'internal error';
    }
    reply.code(status).send({ statusCode: status, error: http.STATUS_CODES[status], message });
  });

  // The client of a body over the limit is usually still uploading: answer, then read and
  // discard the rest (up to drainLimit bytes) instead of closing under it, which would make
  // the client see a broken pipe instead of the 400.
  function drainRest(request, reply) {
    // (Removing the header would not do: the response would still close the connection.)
    reply.header('connection', 'keep-alive');
    const raw = request.raw;
    if (raw.complete) return;
    let drained = 0;
    const count = (chunk) => {
      drained += chunk.length;
      if (drained > o.drainLimit) {
        raw.removeListener('data', count);
        raw.socket?.destroy();
      }
    };
    raw.on('data', count);
    raw.resume();
  }

  // A request no route serves is refused from its headers: its body is never read (Node
  // discards it), whatever its size. The message lists the routes as they are registered.
  const routes = [];
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) if (method !== 'HEAD') routes.push(`${method} ${route.url}`);
  });
  app.addHook('onRequest', async (request) => {
    if (request.is404) {
      throw new HttpError(404, `no route ${request.method} ${request.url.split('?')[0]} on this server (routes: ${routes.join(', ')})`);
    }
  });

  app.addHook('onResponse', async (request, reply) => {
    metrics.observe(request.method, request.routeOptions.url || 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
  });
  app.addHook('onClose', async () => metrics.stop());
  // Draining: answers still to come close their connection, else a keep-alive client
  // would hold the server open after its last response.
  let closing = false;
  // Node closes idle keep-alive connections on close, but not a connection that has never
  // sent a request (fetch opens one ahead after a stream it aborted): those would hold the
  // drain until its deadline. Connections with no request in flight are closed here.
  const sockets = new Set();
  const busy = new Set();
  app.server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  app.server.on('request', (request, response) => {
    busy.add(request.socket);
    response.once('close', () => busy.delete(request.socket));
  });
  app.addHook('preClose', async () => {
    closing = true;
    for (const socket of sockets) if (!busy.has(socket)) socket.destroy();
  });
  app.addHook('onSend', async (request, reply) => {
    if (closing) reply.header('connection', 'close');
  });

  app.get('/health', async () => ({
    status: 'ok',
    ...(o.generator !== undefined && { generation: { model: o.generator.lm.config, weights: o.generator.lm.weightFormat, store: o.generator.store.shared ? 'shared' : 'memory', maxSessions: o.maxSessions, maxNewTokens: o.maxNewTokens, maxPromptTokens: o.maxPromptTokens, bodyLimit: o.generateBodyLimit, admitted: generations.count } }),
    model: model.config,
    attention: ATTENTION,
    limits: { ...limits, maxConcurrent: o.maxConcurrent, maxQueue: o.maxQueue, jsonBodyLimit: o.jsonBodyLimit, binaryBodyLimit: o.binaryBodyLimit, timeoutMs: o.timeoutMs },
    active: limiter.active,
    queued: limiter.waiting.length,
    admitted: encodes.count,
  }));

  app.get('/metrics', async (request, reply) => {
    reply.type(metrics.contentType);
    return metrics.render();
  });

  if (o.generator !== undefined) {
    const { lm, store } = o.generator;
    // Generation requests admitted, from their headers to the end of their stream: at most
    // maxSessions, uploading or generating (a prompt's body is at most generateBodyLimit).
    generations = admission(
      (count) => count >= o.maxSessions,
      (count) => {
        metrics.generationRejections.inc({ reason: 'overload' });
        return new HttpError(503, `overloaded: ${count} generation requests in progress, this server's limit; retry later`, { 'retry-after': String(o.retryAfterSeconds) });
      },
    );
    const scheduler = new GenerationScheduler({
      lm,
      maxActive: o.maxSessions,
      onStep: (rows, ms) => {
        metrics.batchRows.observe(rows);
        metrics.stepSeconds.observe(ms / 1000);
      },
    });
    metrics.addGeneration(scheduler);
    registerGeneration(app, {
      lm,
      store,
      scheduler,
      limits: { numTokens: lm.config.numTokens, maxPromptTokens: o.maxPromptTokens, maxNewTokens: o.maxNewTokens },
      timeoutMs: o.timeoutMs,
      retryAfterSeconds: o.retryAfterSeconds,
      persistEvery: o.persistEvery,
      route: { onRequest: generations.onRequest, bodyLimit: o.generateBodyLimit },
      onReject: (reason) => metrics.generationRejections.inc({ reason }),
      onTokens: (n) => metrics.generatedTokens.inc(n),
    });
  }

  app.post('/encode', {
    // Refuse before reading the body: when the queue is full, and when a binary
    // request's shape is wrong or does not match its Content-Length.
    onRequest: encodes.onRequest,
    preParsing: async (request, reply, payload) => {
      if (/^application\/octet-stream\b/i.test(request.headers['content-type'] || '')) {
        const params = readBinaryParams(request.query, request.headers, limits);
        const length = request.headers['content-length'];
        const [B, L, D] = params.shape;
        if (length !== undefined && Number(length) !== B * L * D * 4) {
          throw new HttpError(400, `body: shape [${params.shape.join(', ')}] needs ${B * L * D * 4} bytes (${B * L * D} float32), content-length says ${length}`);
        }
        request.binaryParams = params;
      } else if (Object.keys(request.query || {}).length > 0) {
        throw new HttpError(400, `query: parameters are for binary bodies; a JSON body carries its options itself (received ?${Object.keys(request.query).join('&')})`);
      }
      return payload;
    },
    handler: async (request, reply) => {
      const input = request.binaryParams ? readBinaryBody(request.body, request.binaryParams) : readJsonBody(request.body, limits);

      // One signal for the whole request: the client going away or the deadline.
      const controller = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableEnded) controller.abort(Object.assign(new Error('client disconnected'), { kind: 'disconnect' }));
      };
      reply.raw.once('close', onClose);
      if (request.raw.socket && request.raw.socket.destroyed) onClose(); // gone while the body was parsed
      const timer = setTimeout(
        () => controller.abort(Object.assign(new Error(`deadline of ${o.timeoutMs} ms exceeded`), { kind: 'deadline' })),
        o.timeoutMs,
      );
      const { signal } = controller;
      let output;
      try {
        const slot = limiter.acquire(signal);
        if (slot === null) throw overloaded();
        const release = await slot;
        try {
          output = await model.forward(input.tensor, { attention: input.attention, signal });
        } finally {
          release();
        }
      } catch (error) {
        if (signal.aborted) {
          const kind = signal.reason.kind;
          metrics.reject(kind);
          if (kind === 'deadline') throw new HttpError(504, `inference did not finish within the server's deadline of ${o.timeoutMs} ms`);
          return reply.code(499).send(); // the client is gone: nothing reaches it
        }
        if (isLibraryInputError(error)) throw new HttpError(400, clientMessage(error.message));
        throw error;
      } finally {
        clearTimeout(timer);
        reply.raw.removeListener('close', onClose);
      }

      const [B, L, D] = output.shape;
      const embedding = meanPool(output);
      const binary = /application\/octet-stream/.test(request.headers.accept || '');
      if (binary) {
        const data = input.full ? output.data : embedding;
        const shape = input.full ? [B, L, D] : [B, D];
        reply.type('application/octet-stream').header('x-shape', (input.batched ? shape : shape.slice(1)).join(','));
        reply.header('x-attention', input.attention);
        return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      }
      const result = {
        attention: input.attention,
        shape: input.batched ? [B, D] : [D],
        embedding: input.batched ? nested(embedding, [B, D]) : Array.from(embedding),
      };
      if (input.full) {
        result.outputShape = input.batched ? [B, L, D] : [L, D];
        result.output = nested(output.data, result.outputShape);
      }
      return result;
    },
  });

  return app;
}

module.exports = { buildServer, meanPool, DEFAULTS };
