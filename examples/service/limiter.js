// At most `maxActive` inferences at once and at most `maxQueue` waiting for a slot;
// beyond that a request is refused at once (the server answers 503 + Retry-After),
// so memory stays bounded whatever the load.
'use strict';

class Limiter {
  constructor(maxActive, maxQueue) {
    this.maxActive = maxActive;
    this.maxQueue = maxQueue;
    this.active = 0;
    this.waiting = []; // { grant, refuse, signal, onAbort }, first come first served
  }

  /** True when a new request could neither run nor wait. */
  full() {
    return this.active >= this.maxActive && this.waiting.length >= this.maxQueue;
  }

  /**
   * Resolves to a release function once a slot is free; null at once when the queue is
   * full. Rejects with the signal's reason when it aborts while waiting.
   */
  acquire(signal) {
    if (this.active < this.maxActive) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxQueue) return null;
    return new Promise((grant, refuse) => {
      const entry = { grant, refuse, signal, onAbort: null };
      if (signal) {
        entry.onAbort = () => {
          const at = this.waiting.indexOf(entry);
          if (at >= 0) this.waiting.splice(at, 1);
          refuse(signal.reason);
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.waiting.push(entry);
    });
  }

  releaser() {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      const next = this.waiting.shift();
      if (next) {
        if (next.signal) next.signal.removeEventListener('abort', next.onAbort);
        this.active++;
        next.grant(this.releaser());
      }
    };
  }
}

module.exports = { Limiter };
