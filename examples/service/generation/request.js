// Reading a generation request body (JSON) into what the scheduler needs, or a 400 that
// names the field:
//   { "prompt": [token ids] | "text",   required for POST /generate, optional to continue
//     "maxNewTokens": n,                required, 1 .. the server's limit
//     "temperature", "topK", "topP", "seed",   sampling (greedy by default); when continuing a
//                                       session without any of them, its own sampler goes on
//     "stopTokens": [token ids] }       the stream ends after any of them
// A text prompt is taken as UTF-8 bytes (byte-level models): every byte must be a token id.
'use strict';
const { HttpError, describe } = require('../input');

const FIELDS = ['prompt', 'maxNewTokens', 'temperature', 'topK', 'topP', 'seed', 'stopTokens'];
const SAMPLING = ['temperature', 'topK', 'topP', 'seed'];
const bad = (message) => new HttpError(400, message);

function readTokenArray(value, name, numTokens, maxLength) {
  if (!Array.isArray(value)) throw bad(`${name}: expected an array of token ids or a string, received ${describe(value)}`);
  if (value.length > maxLength) throw bad(`${name}: ${value.length} tokens, more than this server's limit of ${maxLength}`);
  value.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= numTokens) throw bad(`${name}[${i}]: expected a token id from 0 to ${numTokens - 1}, received ${describe(t)}`);
  });
  return Int32Array.from(value);
}

/**
 * @param {unknown} body
 * @param {{ numTokens: number, maxPromptTokens: number, maxNewTokens: number }} limits
 * @param {boolean} continuing  a session exists: the prompt may be empty
 */
function readGenerateBody(body, limits, continuing) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw bad(`body: expected a JSON object such as {"prompt": "def ", "maxNewTokens": 32}, received ${describe(body)}`);
  }
  for (const key of Object.keys(body)) {
    if (!FIELDS.includes(key)) throw bad(`body: unknown field ${JSON.stringify(key)} (known: ${FIELDS.join(', ')})`);
  }
  let prompt = new Int32Array(0);
  if (typeof body.prompt === 'string') {
    const bytes = Buffer.from(body.prompt, 'utf8');
    if (bytes.length > limits.maxPromptTokens) throw bad(`prompt: ${bytes.length} bytes, more than this server's limit of ${limits.maxPromptTokens} tokens`);
    const at = bytes.findIndex((b) => b >= limits.numTokens);
    if (at >= 0) throw bad(`prompt: byte ${at} is ${bytes[at]}, not a token of this byte-level model (ids 0 to ${limits.numTokens - 1}); send token ids instead`);
    prompt = Int32Array.from(bytes);
  } else if (body.prompt !== undefined) {
    prompt = readTokenArray(body.prompt, 'prompt', limits.numTokens, limits.maxPromptTokens);
  }
  if (prompt.length === 0 && !continuing) throw bad('prompt: required (token ids or a string) to start a session');
  const n = body.maxNewTokens;
  if (n === undefined) throw bad('maxNewTokens: required');
  if (!Number.isInteger(n) || n < 1 || n > limits.maxNewTokens) {
    throw bad(`maxNewTokens: expected an integer from 1 to ${limits.maxNewTokens}, received ${describe(n)}`);
  }
  const stopTokens = new Set(body.stopTokens === undefined ? [] : readTokenArray(body.stopTokens, 'stopTokens', limits.numTokens, limits.numTokens));
  const sampling = {};
  for (const key of SAMPLING) if (body[key] !== undefined) sampling[key] = body[key];
  return { prompt, maxNewTokens: n, stopTokens, sampling: Object.keys(sampling).length > 0 ? sampling : null };
}

module.exports = { readGenerateBody };
