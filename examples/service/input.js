// Reading an /encode request into a float32 tensor [batch, seq, modelDim], or a
// 400 whose message names the field and says what was expected and received.
// Two body formats:
//   application/json          {"sequence": [[...], ...] | [[[...]]] | {"data": [...], "shape": [...]},
//                               "attention"?: "favor" | "softmax", "full"?: boolean}
//   application/octet-stream  float32 little-endian, row-major; shape, attention and full
//                             in the query string (?shape=B,L,D&attention=softmax&full=1)
//                             or in the headers x-shape, x-attention, x-full.
'use strict';
const os = require('node:os');

const ATTENTION = ['favor', 'softmax'];

/** An error with the HTTP status it answers with; `message` goes to the client. */
class HttpError extends Error {
  constructor(statusCode, message, headers) {
    super(message);
    this.name = 'HttpError';
    this.statusCode = statusCode;
    this.headers = headers || {};
  }
}

const bad = (message) => new HttpError(400, message);

function describe(value) {
  if (value === null) return 'null';
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (Buffer.isBuffer(value)) return `${value.length} bytes`;
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`;
  return `${typeof value} ${String(value)}`;
}

/** Checks B, L, D against the model and the server's limits. */
function checkShape(shape, name, limits) {
  const [B, L, D] = shape;
  if (D !== limits.modelDim) {
    throw bad(`${name}: expected ${limits.modelDim} values per row (the model's dimension), received ${D}`);
  }
  if (L > limits.maxSeqLen) {
    throw bad(`${name}: sequence of ${L} rows is longer than this server's limit of ${limits.maxSeqLen}`);
  }
  if (B > limits.maxBatch) throw bad(`${name}: batch of ${B} sequences is larger than this server's limit of ${limits.maxBatch}`);
  if (B * L > limits.maxTokens) {
    throw bad(`${name}: ${B} x ${L} = ${B * L} rows in all, more than this server's limit of ${limits.maxTokens}`);
  }
}

function readShapeList(raw, name, limits) {
  if (!Array.isArray(raw) || (raw.length !== 2 && raw.length !== 3)) {
    throw bad(`${name}: expected [seq, modelDim] or [batch, seq, modelDim], received ${describe(raw)}`);
  }
  raw.forEach((d, i) => {
    if (!Number.isSafeInteger(d) || d < 1) throw bad(`${name}[${i}]: expected a positive integer, received ${describe(d)}`);
  });
  const batched = raw.length === 3;
  const shape = batched ? raw.slice() : [1, raw[0], raw[1]];
  checkShape(shape, name, limits);
  return { shape, batched };
}

function finiteAt(f32, name, index, value) {
  if (!Number.isFinite(f32[index])) {
    const what = typeof value === 'number' ? `${value}, which is not finite in float32` : describe(value);
    throw bad(`${name}: expected a finite number, received ${what}`);
  }
}

// Nested arrays: [L][D] or [B][L][D]. Every row must have modelDim numbers.
function readNested(sequence, limits) {
  const batched = Array.isArray(sequence[0]) && Array.isArray(sequence[0][0]);
  const items = batched ? sequence : [sequence];
  const B = items.length;
  const first = items[0];
  if (!Array.isArray(first) || first.length === 0) {
    throw bad(`sequence${batched ? '[0]' : ''}: expected at least one row of ${limits.modelDim} numbers, received ${describe(first)}`);
  }
  const L = first.length;
  const D = Array.isArray(first[0]) ? first[0].length : -1;
  if (D < 0) throw bad(`sequence${batched ? '[0]' : ''}[0]: expected an array of ${limits.modelDim} numbers, received ${describe(first[0])}`);
  checkShape([B, L, D], 'sequence', limits);
  const data = new Float32Array(B * L * D);
  let k = 0;
  for (let b = 0; b < B; b++) {
    const item = items[b];
    const itemName = batched ? `sequence[${b}]` : 'sequence';
    if (!Array.isArray(item) || item.length !== L) {
      throw bad(`${itemName}: expected ${L} rows like sequence[0] (a batch pads its sequences to one length), received ${describe(item)}`);
    }
    for (let i = 0; i < L; i++) {
      const row = item[i];
      if (!Array.isArray(row) || row.length !== D) {
        throw bad(`${itemName}[${i}]: expected an array of ${D} numbers, received ${describe(row)}`);
      }
      for (let j = 0; j < D; j++, k++) {
        const value = row[j];
        data[k] = typeof value === 'number' ? value : NaN;
        if (!Number.isFinite(data[k])) finiteAt(data, `${itemName}[${i}][${j}]`, k, value);
      }
    }
  }
  return { tensor: { data, shape: [B, L, D] }, batched };
}

// {data: number[], shape: [L, D] | [B, L, D]}
function readFlat(sequence, limits) {
  const extra = Object.keys(sequence).filter((key) => key !== 'data' && key !== 'shape');
  if (extra.length > 0) throw bad(`sequence: unknown field '${extra[0]}' (expected data and shape)`);
  const { shape, batched } = readShapeList(sequence.shape, 'sequence.shape', limits);
  const raw = sequence.data;
  const size = shape[0] * shape[1] * shape[2];
  if (!Array.isArray(raw) || raw.length !== size) {
    throw bad(`sequence.data: expected an array of ${size} numbers (shape [${sequence.shape.join(', ')}]), received ${describe(raw)}`);
  }
  const data = new Float32Array(size);
  for (let k = 0; k < size; k++) {
    const value = raw[k];
    data[k] = typeof value === 'number' ? value : NaN;
    if (!Number.isFinite(data[k])) finiteAt(data, `sequence.data[${k}]`, k, value);
  }
  return { tensor: { data, shape }, batched };
}

function readAttention(value, name, fallback) {
  if (value === undefined) return fallback;
  if (!ATTENTION.includes(value)) throw bad(`${name}: expected 'favor' or 'softmax', received ${describe(value)}`);
  return value;
}

function readFull(value, name) {
  if (value === undefined) return false;
  if (typeof value === 'boolean') return value;
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  throw bad(`${name}: expected a boolean (true/false, or 1/0 in a query string or header), received ${describe(value)}`);
}

const JSON_FIELDS = ['sequence', 'attention', 'full'];

function readJsonBody(body, limits) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw bad(`body: expected a JSON object {"sequence": ..., "attention"?: ..., "full"?: ...}, received ${describe(body)}`);
  }
  const extra = Object.keys(body).filter((key) => !JSON_FIELDS.includes(key));
  if (extra.length > 0) throw bad(`body: unknown field '${extra[0]}' (expected ${JSON_FIELDS.join(', ')})`);
  const { sequence } = body;
  let read;
  if (Array.isArray(sequence) && sequence.length > 0) read = readNested(sequence, limits);
  else if (sequence !== null && typeof sequence === 'object' && !Array.isArray(sequence)) read = readFlat(sequence, limits);
  else {
    throw bad(`sequence: expected rows [[...], ...], a batch [[[...]]] or {data, shape}, received ${describe(sequence)}`);
  }
  return {
    ...read,
    attention: readAttention(body.attention, 'attention', limits.defaultAttention),
    full: readFull(body.full, 'full'),
  };
}

const QUERY_FIELDS = ['shape', 'attention', 'full'];

// A field from the query string or its x- header; both at once must agree.
function param(query, headers, field) {
  const fromQuery = query[field];
  const fromHeader = headers[`x-${field}`];
  if (Array.isArray(fromQuery)) throw bad(`query ${field}: given more than once`);
  if (fromQuery !== undefined && fromHeader !== undefined && fromQuery !== fromHeader) {
    throw bad(`${field}: the query string says ${describe(fromQuery)} and the x-${field} header ${describe(fromHeader)}`);
  }
  return fromQuery !== undefined ? { value: fromQuery, name: `query ${field}` } : { value: fromHeader, name: `header x-${field}` };
}

// Spaces may stand around the numbers, not inside one: '1 6,4' is not [16, 4].
function parseShapeText(text, name, limits) {
  if (typeof text !== 'string' || !/^\s*\d+\s*(,\s*\d+\s*){1,2}$/.test(text)) {
    throw bad(`${name}: expected 'seq,modelDim' or 'batch,seq,modelDim' (for example ${limits.maxSeqLen},${limits.modelDim}), received ${describe(text)}`);
  }
  return readShapeList(text.split(',').map((d) => Number(d.trim())), name, limits);
}

/** Checks the query string of a binary request before its body is read (shape, limits). */
function readBinaryParams(query, headers, limits) {
  const extra = Object.keys(query || {}).filter((key) => !QUERY_FIELDS.includes(key));
  if (extra.length > 0) throw bad(`query: unknown parameter '${extra[0]}' (expected ${QUERY_FIELDS.join(', ')})`);
  const shape = param(query, headers, 'shape');
  if (shape.value === undefined) {
    throw bad(`shape: a binary body needs its shape in the query string (?shape=seq,modelDim or batch,seq,modelDim) or an x-shape header`);
  }
  const attention = param(query, headers, 'attention');
  const full = param(query, headers, 'full');
  return {
    ...parseShapeText(shape.value, shape.name, limits),
    attention: readAttention(attention.value, attention.name, limits.defaultAttention),
    full: readFull(full.value, full.name),
  };
}

const LITTLE_ENDIAN = os.endianness() === 'LE';

function readBinaryBody(body, params) {
  if (!Buffer.isBuffer(body)) throw bad(`body: expected float32 bytes, received ${describe(body)}`);
  const [B, L, D] = params.shape;
  const size = B * L * D;
  if (body.length !== size * 4) {
    throw bad(`body: shape [${params.shape.join(', ')}] needs ${size * 4} bytes (${size} float32), received ${body.length} bytes`);
  }
  let data;
  if (LITTLE_ENDIAN && body.byteOffset % 4 === 0) {
    data = new Float32Array(body.buffer, body.byteOffset, size); // a view: no copy
  } else {
    data = new Float32Array(size);
    for (let k = 0; k < size; k++) data[k] = body.readFloatLE(4 * k);
  }
  for (let k = 0; k < size; k++) {
    if (!Number.isFinite(data[k])) {
      const b = Math.floor(k / (L * D));
      const i = Math.floor(k / D) % L;
      throw bad(`body: element ${k} (batch ${b}, row ${i}, column ${k % D}) is ${data[k]}; inputs must be finite`);
    }
  }
  return { tensor: { data, shape: [B, L, D] }, batched: params.batched, attention: params.attention, full: params.full };
}

// The library's errors about its input (by name and code: errors made by the addon come
// from the main realm, where instanceof in a vm context such as jest's would fail).
const isLibraryInputError = (error) =>
  (error?.name === 'TypeError' || error?.name === 'RangeError') && /^ERR_(INVALID_ARG|OUT_OF_RANGE)/.test(String(error.code));

module.exports = { HttpError, describe, isLibraryInputError, readJsonBody, readBinaryParams, readBinaryBody, ATTENTION };
