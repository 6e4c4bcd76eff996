// What the fuzz targets accept as a clean failure, and the checks they share. A target
// throws a Finding (or lets any other error through) for anything else: Jazzer.js
// reports it with the input, and the corpus replay fails on it.
'use strict';

/** The `code`s of the library's documented errors (README, Errors). */
const LIBRARY_CODES = new Set([
  'ERR_INVALID_ARG_TYPE',
  'ERR_INVALID_ARG_VALUE',
  'ERR_OUT_OF_RANGE',
  'ERR_INVALID_STATE',
  'ERR_MEMORY_ALLOCATION_FAILED',
]);

/** A broken expectation of a fuzz target (the input is a finding). */
class Finding extends Error {
  constructor(message, cause) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'Finding';
  }
}

// Text that a message built from a value instead of a description would show.
const GARBLED = /\[object \w+\]|\[native code\]|function \w*\(/;

/**
 * Checks that `error` is one the library documents: a TypeError, RangeError or Error
 * (by name: errors made by the addon come from another realm) with a message and one of
 * the library's codes. A V8 error without a code ("Invalid typed array length", "Array
 * buffer allocation failed", a stack overflow) or a thrown non-Error is a finding.
 */
function checkLibraryError(error, what) {
  const isError = error instanceof Error || Object.prototype.toString.call(error) === '[object Error]';
  if (!isError) throw new Finding(`${what}: threw a non-Error (${typeof error}): ${String(error)}`);
  if (error instanceof Finding) throw error;
  if (!['TypeError', 'RangeError', 'Error'].includes(error.name)) {
    throw new Finding(`${what}: threw ${error.name}: ${error.message}`, error);
  }
  if (!LIBRARY_CODES.has(error.code)) {
    throw new Finding(`${what}: ${error.name} without a library error code (${String(error.code)}): ${error.message}`, error);
  }
  if (typeof error.message !== 'string' || error.message.trim() === '') throw new Finding(`${what}: ${error.name} without a message`, error);
  if (GARBLED.test(error.message)) throw new Finding(`${what}: garbled message: ${error.message}`, error);
}

/** Runs fn: { ok: true, value } or, for a documented error, { ok: false, error }. */
function attempt(fn, what) {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    checkLibraryError(error, what);
    return { ok: false, error };
  }
}

/** As attempt, for an async function. */
async function attemptAsync(fn, what) {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    checkLibraryError(error, what);
    return { ok: false, error };
  }
}

function check(condition, message) {
  if (!condition) throw new Finding(message);
}

/** Bitwise equality of two Float32Arrays (NaN payloads and -0 included). */
function sameBits(a, b) {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** A copy of a Float32Array at offset 0 (Uint32Array views need 4-byte alignment). */
function aligned(a) {
  return a.byteOffset % 4 === 0 ? a : a.slice();
}

/** Reads bytes of a fuzz input in order; past the end it yields zeros. */
class Bytes {
  constructor(data) {
    this.data = data;
    this.at = 0;
  }
  byte() {
    return this.at < this.data.length ? this.data[this.at++] : 0;
  }
  rest() {
    const out = this.data.subarray(Math.min(this.at, this.data.length));
    this.at = this.data.length;
    return out;
  }
}

module.exports = { Finding, GARBLED, LIBRARY_CODES, checkLibraryError, attempt, attemptAsync, check, sameBits, aligned, Bytes };
