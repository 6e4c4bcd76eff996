// Fuzz target: readSafetensors on arbitrary bytes (the whole input is the file).
// A clean outcome is a documented error, or tensors that agree with themselves: every
// data length is the product of the shape, the `include` option changes what is
// converted but never whether the file is valid, and writing the tensors back
// (writeSafetensors) and reading them again gives the same names, shapes, bits and
// metadata.
'use strict';
const { readSafetensors, writeSafetensors } = require('../../../dist');
const { attempt, check, sameBits, aligned, Finding } = require('../oracle');

const CONVERSION = /only F32, F16, BF16, F64, I8 convert to float32/;

function fuzz(data) {
  const full = attempt(() => readSafetensors(data), 'readSafetensors');
  // Left-out tensors are still checked: the file is valid or not whatever is converted.
  const none = attempt(() => readSafetensors(data, { include: () => false }), 'readSafetensors include none');
  if (none.ok) {
    check(Object.keys(none.value.tensors).length === 0, 'include none: tensors were converted');
    // With everything converted, only a dtype that does not convert may fail.
    if (!full.ok && !(full.error.name === 'TypeError' && CONVERSION.test(full.error.message))) {
      throw new Finding(`valid with include: () => false, but a full read fails: ${full.error.message}`, full.error);
    }
  } else if (full.ok) {
    throw new Finding(`a full read succeeds but include: () => false fails: ${none.error.message}`, none.error);
  } else {
    check(full.error.message === none.error.message, `different errors with and without include: '${full.error.message}' / '${none.error.message}'`);
  }
  if (!full.ok) return;

  const { tensors, metadata } = full.value;
  for (const [name, t] of Object.entries(tensors)) {
    check(t.data instanceof Float32Array || Object.prototype.toString.call(t.data) === '[object Float32Array]', `${name}: data is not a Float32Array`);
    check(Array.isArray(t.shape) && Object.isFrozen(t.shape), `${name}: shape is not a frozen array`);
    check(t.shape.every((d) => Number.isSafeInteger(d) && d >= 0), `${name}: bad shape ${JSON.stringify(t.shape)}`);
    check(t.data.length === t.shape.reduce((a, b) => a * b, 1), `${name}: ${t.data.length} values for shape ${JSON.stringify(t.shape)}`);
  }
  for (const [key, value] of Object.entries(metadata)) check(typeof value === 'string', `metadata '${key}' is not a string`);

  // Round trip through writeSafetensors ('__metadata__' may not be a tensor name: the
  // reader never returns it as one). The writer takes the library's tensors, whose
  // dimensions are positive: tensors with a 0 dimension (which the format allows) stay out.
  check(!Object.prototype.hasOwnProperty.call(tensors, '__metadata__'), "'__metadata__' read as a tensor");
  const written = Object.fromEntries(Object.entries(tensors).filter(([, t]) => !t.shape.includes(0)));
  const again = readSafetensors(writeSafetensors(written, metadata));
  check(
    JSON.stringify(Object.keys(again.tensors).sort()) === JSON.stringify(Object.keys(written).sort()),
    'round trip changed the tensor names',
  );
  for (const [name, t] of Object.entries(written)) {
    const u = again.tensors[name];
    check(JSON.stringify(u.shape) === JSON.stringify(t.shape), `${name}: round trip changed the shape`);
    check(sameBits(aligned(u.data), aligned(t.data)), `${name}: round trip changed the values`);
  }
  check(JSON.stringify(Object.entries(again.metadata).sort()) === JSON.stringify(Object.entries(metadata).sort()), 'round trip changed the metadata');
}

module.exports = { fuzz };
