// Fuzz target: loadState of the decoding models (MultiHeadAttention, TransformerDecoder,
// DecoderLayer, two PerformerLMs) on arbitrary bytes, the whole input being the
// serialized state. Most mutations break the CRC-32 and stop at the checksum: this
// target fuzzes the framing (magic, version, lengths, checksum); decoding-state-framed
// reaches the header and the arrays behind it. See ../decoding.js for the checks.
'use strict';
const { checkState } = require('../decoding');

function fuzz(data) {
  checkState(data);
}

module.exports = { fuzz };
