// What the decoding-state targets check for one serialized state: every model's
// loadState either refuses it with a documented error or returns a state that
// describes itself consistently and can be used: it serializes to bytes that load
// again to the same bytes, and one decoding step returns finite values or a
// documented error.
'use strict';
const { attempt, check } = require('./oracle');
const { decodingModels } = require('./models');

function checkState(bytes) {
  for (const { name, model, step } of decodingModels()) {
    const loaded = attempt(() => model.loadState(bytes), `${name}.loadState`);
    if (!loaded.ok) continue;
    const state = loaded.value;
    check(Number.isSafeInteger(state.batch) && state.batch >= 1, `${name}: batch ${state.batch}`);
    check(Number.isSafeInteger(state.position) && state.position >= 0, `${name}: position ${state.position}`);
    if (typeof state.recomputes === 'number') check(state.recomputes >= 0, `${name}: ${state.recomputes} recomputes`);
    if (state.tokens !== undefined && state.tokens !== null) {
      check(state.tokens.length === state.position, `${name}: ${state.tokens.length} tokens of history at position ${state.position}`);
    }
    // Serialized again, it is canonical: loading and serializing once more changes nothing.
    const once = Buffer.from(state.serialize());
    const twice = Buffer.from(model.loadState(once).serialize());
    check(once.equals(twice), `${name}: serialize(loadState(serialize(state))) differs from serialize(state)`);
    // It decodes on.
    const position = state.position;
    const out = attempt(() => step(state), `${name} step after loadState`);
    if (out.ok) {
      const values = out.value.data ?? out.value;
      check(values.every(Number.isFinite), `${name}: step after loadState returned non-finite values without an error`);
      check(state.position === position + 1, `${name}: position ${position} -> ${state.position} after one token`);
    }
  }
}

module.exports = { checkState };
