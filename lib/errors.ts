/** Errors in Node's style: the right class, a message naming the argument, a `code`. */

/** The `code` of the errors this package throws (see README, Errors). */
export type ErrorCode =
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_INVALID_STATE'
  | 'ERR_MEMORY_ALLOCATION_FAILED'
  | 'ABORT_ERR';

/** An Error with Node's `code` property. */
export interface CodedError extends Error {
  /** Node-style error code, for example `ERR_OUT_OF_RANGE`. */
  code: ErrorCode | string;
}

function withCode<E extends Error>(error: E, code: string): E & CodedError {
  Object.defineProperty(error, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  return error as E & CodedError;
}

export function typeError(message: string, code: ErrorCode = 'ERR_INVALID_ARG_TYPE'): TypeError & CodedError {
  return withCode(new TypeError(message), code);
}

export function rangeError(message: string, code: ErrorCode = 'ERR_OUT_OF_RANGE'): RangeError & CodedError {
  return withCode(new RangeError(message), code);
}

/** Node's AbortError: name 'AbortError', code 'ABORT_ERR', the signal's reason as `cause`. */
export function abortError(reason: unknown): Error & CodedError {
  const error = withCode(new Error('The operation was aborted', { cause: reason }), 'ABORT_ERR');
  Object.defineProperty(error, 'name', { value: 'AbortError', enumerable: false, writable: true, configurable: true });
  return error;
}

export function stateError(message: string): Error & CodedError {
  return withCode(new Error(message), 'ERR_INVALID_STATE');
}

/** A short description of what was received, for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an Array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  if (typeof value === 'object') {
    const name = (value as object).constructor?.name;
    return name && name !== 'Object' ? `an instance of ${name}` : 'an object';
  }
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`;
  if (typeof value === 'number') return `the number ${value}`;
  return `type ${typeof value} (${String(value)})`;
}
