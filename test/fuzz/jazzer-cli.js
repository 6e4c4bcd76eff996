#!/usr/bin/env node
// The Jazzer.js command line (`jazzer`) with the fuzzer addon made loadable first (see
// load-jazzer.js). scripts/fuzz.js runs this; libFuzzer modes that start processes of
// their own (-merge=1) start it again as it was started.
'use strict';
require('./load-jazzer');
require('@jazzer.js/core/dist/cli.js');
