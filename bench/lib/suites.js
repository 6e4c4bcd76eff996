'use strict';
// The measurements performer-bench makes. Each suite takes the run context and
// returns { title, text, data, charts? }: text is printed, data goes into the
// JSON report, charts are rendered to SVG.
//
// This module only maps suite names to their modules in ./suites/ (shared helpers
// in ./suites/common.js), in the order they run.
const { sweep } = require('./suites/sweep');
const { crossover } = require('./suites/crossover');
const { overhead } = require('./suites/overhead');
const { concurrency } = require('./suites/concurrency');
const { million } = require('./suites/million');
const { sampling } = require('./suites/sampling');
const { onnx } = require('./suites/onnx');
const { numpy } = require('./suites/numpy');
const { torch } = require('./suites/torch');

const SUITE_FUNCTIONS = { sweep, crossover, overhead, concurrency, million, sampling, onnx, numpy, torch };

module.exports = { SUITE_FUNCTIONS };
