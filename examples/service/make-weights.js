#!/usr/bin/env node
// Writes the service's model: a TransformerEncoder with seeded random weights (the same
// seed gives the same file, bit for bit), saved with writeModel (parameters, plus class
// and options in the metadata) so that the server rebuilds it from the file alone.
//   node examples/service/make-weights.js [out.safetensors] [--model-dim 256] [--heads 4]
//        [--layers 2] [--ff-dim 1024] [--seed 1]
// A trained model converted with fromPyTorch()/fromBert(), loaded into a TransformerEncoder
// and saved with writeModel() is served the same way.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { TransformerEncoder, writeModel } = require('../..');

const DEFAULT_FILE = path.join(__dirname, 'model.safetensors');
const DEFAULT_CONFIG = { numLayers: 2, modelDim: 256, numHeads: 4, ffDim: 1024, activation: 'gelu', seed: 1 };

/** Writes the encoder of `config` (TransformerEncoder options) to `file`; returns `config`. */
function makeWeights(file = DEFAULT_FILE, config = DEFAULT_CONFIG) {
  const encoder = new TransformerEncoder(config);
  const bytes = writeModel(encoder);
  // Write then rename, so a reader never sees half a file.
  const partial = `${file}.${process.pid}.partial`;
  fs.writeFileSync(partial, bytes);
  fs.renameSync(partial, file);
  return config;
}

function main(argv) {
  const flags = { '--model-dim': 'modelDim', '--heads': 'numHeads', '--layers': 'numLayers', '--ff-dim': 'ffDim', '--seed': 'seed' };
  const config = { ...DEFAULT_CONFIG };
  let file = DEFAULT_FILE;
  for (let i = 0; i < argv.length; i++) {
    if (flags[argv[i]]) {
      const value = Number(argv[++i]);
      if (!Number.isSafeInteger(value)) throw new RangeError(`${argv[i - 1]}: expected an integer, received ${argv[i]}`);
      config[flags[argv[i - 1]]] = value;
    } else if (argv[i].startsWith('--')) {
      throw new RangeError(`unknown flag ${argv[i]} (known: ${Object.keys(flags).join(', ')})`);
    } else {
      file = path.resolve(argv[i]);
    }
  }
  const written = makeWeights(file, config);
  console.log(`wrote ${file} (${fs.statSync(file).size} bytes): ${JSON.stringify(written)}`);
}

if (require.main === module) main(process.argv.slice(2));

module.exports = { makeWeights, DEFAULT_FILE, DEFAULT_CONFIG };
