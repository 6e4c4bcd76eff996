// Fuzz target: loadState behind valid framing. The input is what a serialized state
// holds between its 8-byte prefix and its checksum (u32 header length, header JSON,
// arrays); the target adds 'PAST', version 1 and a correct CRC-32, so every mutation
// reaches the header and array checks and the state's use after loading. The seeds are
// real states of the models with the frame taken off. See ../decoding.js for the checks.
'use strict';
const { checkState } = require('../decoding');

const CRC_TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** The serialized state around `content` (inverse of unframe). */
function frame(content) {
  const out = Buffer.alloc(8 + content.length + 4);
  out.write('PAST', 0, 'latin1');
  out.writeUInt16LE(1, 4);
  Buffer.from(content.buffer, content.byteOffset, content.length).copy(out, 8);
  out.writeUInt32LE(crc32(out.subarray(0, 8 + content.length)), 8 + content.length);
  return out;
}

/** The content of a serialized state (what this target's corpus holds). */
function unframe(state) {
  return Buffer.from(state).subarray(8, state.length - 4);
}

function fuzz(data) {
  checkState(frame(data));
}

module.exports = { fuzz, frame, unframe, crc32 };
