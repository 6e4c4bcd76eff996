'use strict';
// Command-line flags of performer-bench (and, through parseFlagsOrExit, of the other
// bench scripts). node:util parseArgs splits argv into tokens; a table like FLAGS
// below says what each flag takes and where its value goes.
// parseArgs() throws a UsageError (exit code 2) for an unknown flag or a bad value,
// naming the flag, what it expects and what it received; nothing is guessed.

const util = require('node:util');

const SUITES = ['sweep', 'crossover', 'overhead', 'concurrency', 'million', 'sampling', 'onnx', 'numpy', 'torch'];
const KERNELS = ['softmax', 'softmax-hyperbolic', 'trig', 'relu', 'elu', 'exp', 'abs', 'softmax-opt', 'softmax-dense'];
const ISAS = ['scalar', 'avx2', 'avx512'];

class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UsageError';
  }
}

const HELP = `performer-bench: FAVOR+ (Performer) against exact softmax attention on this machine.

Usage: performer-bench [flags]            (npm run bench -- [flags] in the repository)

Shape (attention inputs are [batch, heads, seq, dim]):
  --seq LIST         sequence lengths: 256,1024 or 256..16384 (powers of two) or 64k, 2^20
                     (default 256..16384; each suite has its own default, see below)
  --batch N          batch size (default 1)
  --heads N          heads (default 8)
  --dim N            head dimension d = Dv (default 64)
  --features N       random features m (default 256)
  --kernel NAME      feature map: ${KERNELS.join(', ')} (default softmax)
  --causal [MODE]    both (default), true (causal only; also a bare --causal) or false
Machine:
  --threads N[,N]    native thread pool size(s) (default: the pool's default, all cores)
  --isa NAME         force a kernel set: ${ISAS.join(', ')} (default: the fastest available)
Method:
  --repeats N        timed runs per measurement (default: adapted to the run time, at least 3)
  --target-ms MS     measured time to aim for per configuration when adapting (default 1000)
  --budget S         skip exact attention where its extrapolated run time exceeds S seconds (default 10)
  --no-exact         FAVOR+ only
  --seed N           seed of the random inputs and features (default 1)
  --peak-ms MS       duration of each FMA peak measurement (the best of 3 is kept; default 300)
Output:
  --json [FILE]      write the JSON report to FILE ('-' for stdout; default: the results folder)
  --out DIR          results folder for the JSON report and the chart (default ./results)
  --no-chart         do not render the SVG chart
  --quiet            no progress lines on stderr
Extra measurements (--suite NAME[,NAME]; default sweep):
  sweep         the table: time, GFLOP/s, % of peak, memory, speed-up, per L (default L 256..16384)
  crossover     the L where FAVOR+ overtakes exact (default L 128..4096 in half octaves, extended until crossed)
  overhead      cost of a small synchronous and asynchronous call (L = 16, one head)
  concurrency   4 concurrent favorAttention calls against the same back to back; event-loop delay (default L 4096)
  million       one head at L = 2^20, bidirectional and causal (and the exact time extrapolated)
  sampling      time to sample the projection W (m x d)
  onnx          exact attention against onnxruntime-node (MatMul-Softmax-MatMul and MultiHeadAttention; default L 1024..8192)
  numpy         FAVOR+ and exact attention against numpy in python3 (default L 4096,16384; bidirectional)
  torch         FAVOR+ and exact attention against torch in python3 (default L 1024,4096; both modes; threads 1,2)
  all           every suite above
  --onnx, --numpy, --torch    add those suites to the others
  --no-onnx          without --suite, the sweep also compares exact attention with onnxruntime-node
                     at L = 1024..4096 when that package is installed; this turns that off
  -h, --help         this text
`;

function defaults() {
  return {
    suites: null,
    seq: null,
    batch: 1,
    heads: 8,
    dim: 64,
    features: 256,
    kernel: 'softmax',
    modes: ['bidirectional', 'causal'],
    threads: null,
    isa: null,
    repeats: null,
    targetMs: 1000,
    budget: 10,
    exact: true,
    seed: 1,
    peakMs: 300,
    json: null,
    out: 'results',
    chart: true,
    quiet: false,
    help: false,
    // The default run (no --suite, no --onnx) adds a short onnxruntime comparison when installed.
    autoOnnx: true,
  };
}

/** Parses one sequence length: 4096, 64k (= 65536), 1M (= 2^20), 2^20. */
function parseLength(token, flag) {
  const t = token.trim();
  let value;
  let m;
  if ((m = /^(\d+)\^(\d+)$/.exec(t))) value = Math.pow(Number(m[1]), Number(m[2]));
  else if ((m = /^(\d+)([kKmM])$/.exec(t))) value = Number(m[1]) * (m[2].toLowerCase() === 'k' ? 1024 : 1024 * 1024);
  else if (/^\d+$/.test(t)) value = Number(t);
  else throw new UsageError(`${flag}: expected a length like 4096, 64k or 2^20, received "${token}"`);
  if (!Number.isSafeInteger(value) || value < 1) throw new UsageError(`${flag}: lengths must be positive integers, received "${token}"`);
  return value;
}

/** A comma list, each item parsed by item() (which may return several values); duplicates removed. */
function parseList(text, flag, what, item) {
  if (typeof text !== 'string' || text.trim() === '') throw new UsageError(`${flag}: expected a list of ${what}, received nothing`);
  const out = new Set();
  for (const part of text.split(',')) {
    if (part.trim() === '') throw new UsageError(`${flag}: empty item in "${text}"`);
    for (const v of [].concat(item(part.trim(), flag))) out.add(v);
  }
  return [...out];
}

/** One length, or a doubling range a..b. */
function parseRange(part, flag) {
  const range = part.split('..');
  if (range.length > 2) throw new UsageError(`${flag}: bad range "${part}"`);
  const [a, b = a] = range.map((t) => parseLength(t, flag));
  if (a > b) throw new UsageError(`${flag}: range "${part}" goes down (${a} > ${b})`);
  const out = [];
  for (let L = a; L <= b; L *= 2) out.push(L);
  return out;
}

/** "256,1024" or "256..16384" (doubling) or a mix; sorted, duplicates removed. */
function parseSeqList(text, flag = '--seq') {
  return parseList(text, flag, 'lengths', parseRange).sort((x, y) => x - y);
}

function parseInteger(text, flag, min, max) {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: expected an integer, received "${text}"`);
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(`${flag}: expected an integer from ${min} to ${max}, received ${text}`);
  }
  return v;
}

function parsePositiveNumber(text, flag) {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v <= 0) throw new UsageError(`${flag}: expected a positive number, received "${text}"`);
  return v;
}

function parseEnum(text, flag, allowed) {
  if (!allowed.includes(text)) throw new UsageError(`${flag}: expected one of ${allowed.join(', ')}, received "${text}"`);
  return text;
}

const MODES = {
  causal: ['causal'],
  bidirectional: ['bidirectional'],
  both: ['bidirectional', 'causal'],
  ...Object.fromEntries(['true', 'yes', '1'].map((w) => [w, ['causal']])),
  ...Object.fromEntries(['false', 'no', '0'].map((w) => [w, ['bidirectional']])),
};

function parseModes(text = 'true', flag) {
  if (!Object.hasOwn(MODES, text)) throw new UsageError(`${flag}: expected both, true or false, received "${text}"`);
  return MODES[text];
}

function parseSuites(text, flag) {
  return parseList(text, flag, 'suites', (name) => (parseEnum(name, flag, [...SUITES, 'all']) === 'all' ? SUITES : name));
}

const integer = (min, max) => (text, flag) => parseInteger(text, flag, min, max);
const oneOf = (allowed) => (text, flag) => parseEnum(text, flag, allowed);

// Every flag: value(text, flag, o) parses a value into o[key ?? name] (a flag without
// value() takes none); optional: the value may be left out (then text is undefined);
// set: what a bare flag sets; repeat: may be given more than once.
const FLAGS = {
  seq: { value: parseSeqList },
  batch: { value: integer(1, 1 << 20) },
  heads: { value: integer(1, 1 << 20) },
  dim: { value: integer(1, 1 << 16) },
  features: { value: integer(1, 1 << 20) },
  kernel: { value: oneOf(KERNELS) },
  causal: { key: 'modes', optional: true, value: parseModes },
  threads: { value: (text, flag) => parseList(text, flag, 'thread counts', integer(1, 1024)) },
  isa: { value: oneOf(ISAS) },
  repeats: { value: integer(1, 100000) },
  'target-ms': { key: 'targetMs', value: parsePositiveNumber },
  budget: { value: parsePositiveNumber },
  seed: { value: integer(0, Number.MAX_SAFE_INTEGER) },
  'peak-ms': { key: 'peakMs', value: integer(1, 60000) },
  out: { value: (text) => text },
  json: { optional: true, value: (text = '') => text },
  suite: { key: 'suites', repeat: true, value: (text, flag, o) => [...new Set([...(o.suites ?? []), ...parseSuites(text, flag)])] },
  'no-exact': { set: { exact: false } },
  'no-chart': { set: { chart: false } },
  quiet: { set: { quiet: true } },
  onnx: { set: {} },
  'no-onnx': { set: { autoOnnx: false } },
  numpy: { set: {} },
  torch: { set: {} },
  help: { short: 'h', set: { help: true } },
};

/**
 * Parses argv against a table like FLAGS into o (which holds the defaults); returns
 * the flags seen. Throws UsageError. The other bench scripts use it with their own tables.
 */
function parseFlags(argv, flags, o) {
  // What node:util parseArgs is told: a flag with a required value is a string, the
  // others booleans (an optional value is picked up from the next token below). Not
  // strict: its errors do not name the flag in the project's format, and it refuses
  // values starting with '-' ("--budget -1"), which the checks below report precisely.
  const options = Object.fromEntries(
    Object.entries(flags).map(([name, f]) => [name, { type: f.value && !f.optional ? 'string' : 'boolean', ...(f.short && { short: f.short }) }]),
  );
  const { tokens } = util.parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  const seen = new Set();
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind === 'positional') throw new UsageError(`unexpected argument "${t.value}" (flags start with --; see --help)`);
    const flag = t.rawName ?? '--'; // a bare -- (option terminator) is no flag here either
    const spec = t.kind === 'option' && Object.hasOwn(flags, t.name) ? flags[t.name] : null;
    if (!spec) throw new UsageError(`unknown flag ${flag} (see --help)`);
    if (seen.has(flag) && !spec.repeat) throw new UsageError(`${flag} given twice`);
    seen.add(flag);
    let text = t.value;
    if (!spec.value) {
      if (text !== undefined) throw new UsageError(`${flag} takes no value, received "${text}"`);
      Object.assign(o, spec.set);
      continue;
    }
    if (spec.optional) {
      const next = tokens[i + 1];
      if (text === undefined && next?.kind === 'positional' && next.index === t.index + 1) text = tokens[++i].value;
    } else if (text === undefined || (!t.inlineValue && text.startsWith('--') && text.length > 2)) {
      throw new UsageError(`${flag}: missing value`);
    }
    o[spec.key ?? t.name] = spec.value(text, flag, o);
  }
  return seen;
}

/**
 * For a script's top level: parseFlags with -h/--help added, which prints the usage
 * line and exits 0; a UsageError is printed on stderr with exit code 2.
 */
function parseFlagsOrExit(program, usage, argv, flags, o) {
  try {
    parseFlags(argv, { ...flags, help: { short: 'h', set: { help: true } } }, o);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${program}: ${e.message}\n`);
    process.exit(2);
  }
  if (o.help) {
    process.stdout.write(`Usage: ${usage}\n`);
    process.exit(0);
  }
  return o;
}

/** Parses performer-bench's argv (without node and the script). Throws UsageError. */
function parseArgs(argv) {
  const o = defaults();
  const seen = parseFlags(argv, FLAGS, o);
  const extra = ['onnx', 'numpy', 'torch'].filter((s) => seen.has(`--${s}`));
  if (o.suites !== null || extra.includes('onnx')) o.autoOnnx = false;
  if (seen.has('--onnx') && seen.has('--no-onnx')) throw new UsageError('--onnx and --no-onnx contradict each other');
  const base = o.suites ?? ['sweep'];
  o.suites = SUITES.filter((s) => base.includes(s) || extra.includes(s));
  return o;
}

module.exports = { parseArgs, parseFlags, parseFlagsOrExit, parseSeqList, parseLength, parseList, integer, oneOf, UsageError, HELP, SUITES, KERNELS };
