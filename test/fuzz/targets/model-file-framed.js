// Fuzz target: model files behind valid framing. The input is a safetensors file without
// its 8-byte header length, with a NUL byte between the header JSON and the data (a NUL
// cannot occur in JSON text); the target puts the length back. Mutations of the header
// (the tensors' entries and, inside it, the model's class and options in the
// 'performer-attention' metadata) then reach the parsing of the options, the
// constructors, loadParameters and a forward pass instead of stopping at a header length
// that no longer fits. The checks are model-file's.
'use strict';
const { fuzz: fuzzModelFile } = require('./model-file');

/** The safetensors file of a framed input (inverse of unframe). */
function frame(content) {
  const bytes = Buffer.from(content.buffer, content.byteOffset, content.length);
  const nul = bytes.indexOf(0);
  const header = nul < 0 ? bytes : bytes.subarray(0, nul);
  const data = nul < 0 ? Buffer.alloc(0) : bytes.subarray(nul + 1);
  const out = Buffer.alloc(8 + header.length + data.length);
  out.writeBigUInt64LE(BigInt(header.length), 0);
  header.copy(out, 8);
  data.copy(out, 8 + header.length);
  return out;
}

/** The framed input of a safetensors file (what this target's corpus holds). */
function unframe(file) {
  const bytes = Buffer.from(file);
  const length = Number(bytes.readBigUInt64LE(0));
  return Buffer.concat([bytes.subarray(8, 8 + length), Buffer.from([0]), bytes.subarray(8 + length)]);
}

function fuzz(data) {
  fuzzModelFile(frame(data));
}

module.exports = { fuzz, frame, unframe };
