// Continuous batching of generation sessions: every active session advances by one token
// per step, all of them in one stepBatch call (the weights are read once per step, not once
// per session). Sessions join and leave between steps; a new session's prompt goes through
// in its own pass (one prompt per step, so a long prompt delays the others by one pass).
//
// Per token the order is: sample from the session's last logits, step the batch (the state
// absorbs the token), persist the session, then hand the token to the client. So a token a
// client has seen is always part of the saved session, and a session stopped at any point
// (limit, stop token, abort, deadline, a replica killed) can be continued from its store.
'use strict';

class GenerationScheduler {
  /**
   * @param {{ lm: import('../../..').PerformerLM, maxActive: number, maxBatch?: number,
   *           onStep?: (rows: number, ms: number) => void }} options
   */
  constructor({ lm, maxActive, maxBatch = 64, onStep = () => {} }) {
    this.lm = lm;
    this.maxActive = maxActive;
    this.maxBatch = maxBatch;
    this.onStep = onStep;
    this.jobs = [];
    this.running = null; // the loop's promise while jobs exist
  }

  get active() {
    return this.jobs.length;
  }

  full() {
    return this.jobs.length >= this.maxActive;
  }

  /**
   * Runs one generation job; resolves to { reason: 'length' | 'stop' | 'aborted', tokens }
   * when it leaves the batch. `job`:
   *   state       PerformerLMState (not used by anything else meanwhile)
   *   sampler     TokenSampler
   *   prompt      Int32Array absorbed first (may be empty when `logits` is given)
   *   logits      Float32Array: the last logits of the state when there is no prompt
   *   maxNewTokens, stopTokens (Set), signal (AbortSignal)
   *   persist(state, sampler, logits) -> Promise: saves the session after each token
   *   onToken(token, index) -> void: called once the token is persisted
   * A rejected persist or onToken ends the job with that error.
   */
  submit(job) {
    return new Promise((resolve, reject) => {
      this.jobs.push({ ...job, produced: 0, written: Promise.resolve(), resolve, reject, done: false, ready: job.prompt.length === 0 });
      this.running ??= this.loop().finally(() => {
        this.running = null;
      });
    });
  }

  async loop() {
    while (this.jobs.length > 0) {
      this.dropAborted();
      const fresh = this.jobs.find((j) => !j.ready);
      if (fresh !== undefined) await this.prefill(fresh);
      const batch = this.jobs.filter((j) => j.ready && !j.done).slice(0, this.maxBatch);
      if (batch.length > 0) await this.step(batch);
      // Round robin when more sessions are ready than one step takes.
      if (this.jobs.length > this.maxBatch) this.jobs.push(...this.jobs.splice(0, batch.length));
    }
  }

  dropAborted() {
    for (const job of this.jobs) if (!job.done && job.signal?.aborted) this.finish(job, 'aborted');
  }

  async prefill(job) {
    try {
      job.logits = await this.lm.step(job.prompt, job.state, { signal: job.signal });
      job.ready = true;
      await job.persist(job.state, job.sampler, job.logits);
    } catch (error) {
      if (error?.name === 'AbortError') this.finish(job, 'aborted');
      else this.fail(job, error);
    }
  }

  async step(batch) {
    const tokens = Int32Array.from(batch, (job) => job.sampler.next(job.logits));
    const started = performance.now();
    let out;
    try {
      out = await this.lm.stepBatch(batch.map((job) => job.state), tokens);
    } catch (error) {
      for (const job of batch) this.fail(job, error);
      return;
    }
    this.onStep(batch.length, performance.now() - started);
    const V = out.shape[1];
    batch.forEach((job, row) => {
      const token = tokens[row];
      const index = job.produced++;
      job.logits = out.data.slice(row * V, (row + 1) * V);
      // The state's bytes are taken now (serialize is synchronous); the write may finish
      // while the next step runs, and the token goes out once it has.
      const saved = job.persist(job.state, job.sampler, job.logits);
      job.written = job.written.then(() => saved).then(() => job.onToken(token, index));
      job.written.catch((error) => this.fail(job, error));
      if (job.stopTokens.has(token)) this.finish(job, 'stop');
      else if (job.produced >= job.maxNewTokens) this.finish(job, 'length');
    });
  }

  finish(job, reason) {
    if (job.done) return;
    job.done = true;
    this.jobs.splice(this.jobs.indexOf(job), 1);
    job.written.then(
      () => job.resolve({ reason, tokens: job.produced }),
      (error) => job.reject(error),
    );
  }

  fail(job, error) {
    if (job.done) return;
    job.done = true;
    const at = this.jobs.indexOf(job);
    if (at >= 0) this.jobs.splice(at, 1);
    job.reject(error);
  }
}

module.exports = { GenerationScheduler };
