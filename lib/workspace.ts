/**
 * The temporaries of layer passes, kept between calls by length so that repeated
 * passes of the same shapes touch no fresh pages (a fresh page costs more than the
 * arithmetic on it). Bounded: the least recently used lengths go first.
 */

let limitBytes = 256 * 1024 * 1024;
const cache = new Map<number, Float32Array[]>();
let cachedBytes = 0;

/** @internal A cached array of exactly `length` floats, if one is free. */
export function takeCached(length: number): Float32Array | undefined {
  const list = cache.get(length);
  const buffer = list?.pop();
  if (buffer === undefined) return undefined;
  if (list!.length === 0) cache.delete(length);
  cachedBytes -= buffer.byteLength;
  return buffer;
}

function trim(): void {
  for (const [length, list] of cache) {
    if (cachedBytes <= limitBytes) break;
    while (list.length > 0 && cachedBytes > limitBytes) cachedBytes -= list.pop()!.byteLength;
    if (list.length === 0) cache.delete(length);
  }
}

/** @internal Returns arrays a finished pass no longer uses. */
export function giveBack(buffers: Iterable<Float32Array>): void {
  for (const buffer of buffers) {
    if (buffer.byteLength > limitBytes) continue;
    const list = cache.get(buffer.length) ?? [];
    cache.delete(buffer.length); // re-inserted: most recently used last
    cache.set(buffer.length, list);
    list.push(buffer);
    cachedBytes += buffer.byteLength;
  }
  trim();
}

/** @internal */
export function workspaceStats(): { bytes: number; limitBytes: number } {
  return { bytes: cachedBytes, limitBytes };
}

/** @internal Sets the bound (0 keeps nothing between calls). */
export function setWorkspaceLimit(bytes: number): void {
  limitBytes = bytes;
  trim();
}
