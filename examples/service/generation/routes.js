// The generation routes, added to the service when it has a language model:
//   POST   /generate                 start a session: its id, then its tokens as Server-Sent Events
//   POST   /sessions/:id/generate    continue a session (here or on any replica sharing the store)
//   DELETE /sessions/:id             204, 404, or 409 while it generates
// Stream: `event: session` {id, position}, one `event: token` {index, token, text?} per
// token, then `event: done` {reason: length | stop | deadline | disconnect, tokens, position};
// `event: error` {message} if the session could not go on. Errors before the stream starts
// are JSON answers like the rest of the service (400, 404, 409, 503 + Retry-After).
'use strict';
const { randomUUID } = require('node:crypto');

const { HttpError, isLibraryInputError } = require('../input');
const { readGenerateBody } = require('./request');
const { SessionBusy } = require('./stores');

/**
 * @param {import('fastify').FastifyInstance} app
 * @param {{ lm, store, scheduler, limits: { numTokens, maxPromptTokens, maxNewTokens },
 *           timeoutMs: number, retryAfterSeconds: number, persistEvery: number,
 *           route: { onRequest, bodyLimit: number },  the routes' admission hook and body limit
 *           onReject: (reason: string) => void, onTokens: (n: number) => void }} g
 */
function registerGeneration(app, g) {
  const { lm, store, scheduler } = g;
  const c = lm.config;
  // Learned positions end; rotary ones are a formula and go on.
  const positionLimit = c.positions === 'rotary' ? Infinity : c.positions === 'axial' ? c.axialShape.reduce((a, b) => a * b, 1) : c.maxSeqLen;

  async function generate(request, reply, existing) {
    const input = readGenerateBody(request.body, g.limits, existing !== null);
    if (scheduler.full()) {
      g.onReject('overload');
      throw new HttpError(503, `overloaded: ${scheduler.active} sessions generating, this server's limit; retry later`, { 'retry-after': String(g.retryAfterSeconds) });
    }
    const owner = randomUUID();
    const id = existing ?? randomUUID();
    let state;
    let sampler;
    let logits = null;
    if (existing === null) {
      await store.create(id, owner);
      state = lm.createStateSync();
    } else {
      let record;
      try {
        record = await store.acquire(id, owner);
      } catch (error) {
        if (error instanceof SessionBusy) throw new HttpError(409, error.message);
        throw error;
      }
      if (record === null) throw new HttpError(404, `session ${id}: no such session here (never created, deleted, or expired)`);
      state = lm.loadState(record.state);
      logits = record.logits;
      sampler = record.sampler;
    }
    try {
      sampler = lm.sampler(input.sampling ?? sampler ?? {});
      // Checked here so that no session reaches the end of its positions inside a batch.
      const end = state.position + input.prompt.length + input.maxNewTokens;
      if (end > positionLimit) {
        throw new HttpError(400, `session ${id}: ${state.position} tokens + ${input.prompt.length} of prompt + ${input.maxNewTokens} new go past the model's ${positionLimit} learned positions`);
      }
    } catch (error) {
      await store.release(id, owner);
      if (isLibraryInputError(error)) throw new HttpError(400, error.message.replace(/^PerformerLM\.sampler options\.?/, 'sampling: '));
      throw error;
    }
    return stream(request, reply, { id, owner, state, sampler, logits, input });
  }

  async function stream(request, reply, s) {
    const controller = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableEnded) controller.abort(Object.assign(new Error('client disconnected'), { kind: 'disconnect' }));
    };
    reply.raw.once('close', onClose);
    const timer = setTimeout(() => controller.abort(Object.assign(new Error('deadline'), { kind: 'deadline' })), g.timeoutMs);
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    const send = (event, data) => {
      if (!raw.destroyed) raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    send('session', { id: s.id, position: s.state.position });

    let unsaved = 0;
    // The lease outlives the request however rarely it saves: renewed a few times per lease.
    let renewed = Date.now();
    const save = () => {
      unsaved = 0;
      renewed = Date.now();
      return store.save(s.id, s.owner, { state: s.state.serialize(), logits: s.logits, sampler: s.sampler.state() });
    };
    const renew = () => {
      if (Date.now() - renewed < store.leaseMs / 3) return undefined;
      renewed = Date.now();
      return store.renew(s.id, s.owner);
    };
    const job = {
      state: s.state,
      sampler: s.sampler,
      prompt: s.input.prompt,
      logits: s.logits,
      maxNewTokens: s.input.maxNewTokens,
      stopTokens: s.input.stopTokens,
      signal: controller.signal,
      persist: (state, sampler, logits) => {
        s.logits = logits;
        return ++unsaved >= g.persistEvery ? save() : renew();
      },
      onToken: (token, index) => {
        g.onTokens(1);
        send('token', token < 128 ? { index, token, text: String.fromCharCode(token) } : { index, token });
      },
    };
    try {
      const result = await scheduler.submit(job);
      if (unsaved > 0 && s.logits !== null) await save();
      const reason = result.reason === 'aborted' ? controller.signal.reason?.kind ?? 'aborted' : result.reason;
      if (reason === 'deadline' || reason === 'disconnect') g.onReject(reason);
      send('done', { reason, tokens: result.tokens, position: s.state.position, session: s.id });
    } catch (error) {
      request.log.error({ err: error }, 'generation failed');
      send('error', { message: error.name === 'LeaseLost' ? error.message : 'internal error: the session stopped; continue it from its last token' });
    } finally {
      clearTimeout(timer);
      raw.removeListener('close', onClose);
      await store.release(s.id, s.owner).catch((error) => request.log.error({ err: error }, 'lease release failed'));
      raw.end();
    }
  }

  // Admitted from their headers (a body counts while it uploads), bodies of a prompt's size.
  app.post('/generate', g.route, (request, reply) => generate(request, reply, null));
  app.post('/sessions/:id/generate', g.route, (request, reply) => generate(request, reply, request.params.id));
  // A DELETE needs no body: one sent is read up to the same small limit, then ignored.
  app.delete('/sessions/:id', { bodyLimit: g.route.bodyLimit }, async (request, reply) => {
    const { id } = request.params;
    const result = await store.delete(id);
    if (result === 'missing') throw new HttpError(404, `session ${id}: no such session here (never created, deleted, or expired)`);
    if (result === 'busy') throw new HttpError(409, `session ${id} is generating; delete it when that request ends`);
    return reply.code(204).send();
  });
}

module.exports = { registerGeneration };
