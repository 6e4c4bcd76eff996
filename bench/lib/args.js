'use strict';
// Command-line flags of performer-bench. parseArgs() throws a UsageError (exit
// code 2) for an unknown flag or a bad value; nothing is guessed.

const SUITES = ['sweep', 'crossover', 'overhead', 'concurrency', 'million', 'sampling', 'onnx', 'numpy'];
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
  all           every suite above
  --onnx, --numpy    add those suites to the others
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

/** "256,1024" or "256..16384" (doubling) or a mix; sorted, duplicates removed. */
function parseSeqList(text, flag = '--seq') {
  if (typeof text !== 'string' || text.trim() === '') throw new UsageError(`${flag}: expected a list of lengths, received nothing`);
  const out = new Set();
  for (const part of text.split(',')) {
    if (part.trim() === '') throw new UsageError(`${flag}: empty item in "${text}"`);
    const range = part.split('..');
    if (range.length === 1) {
      out.add(parseLength(part, flag));
    } else if (range.length === 2) {
      const a = parseLength(range[0], flag);
      const b = parseLength(range[1], flag);
      if (a > b) throw new UsageError(`${flag}: range "${part}" goes down (${a} > ${b})`);
      for (let L = a; L <= b; L *= 2) out.add(L);
    } else {
      throw new UsageError(`${flag}: bad range "${part}"`);
    }
  }
  return [...out].sort((x, y) => x - y);
}

function parseInteger(text, flag, min = 1, max = Number.MAX_SAFE_INTEGER) {
  if (text === undefined) throw new UsageError(`${flag}: missing value`);
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: expected an integer, received "${text}"`);
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(`${flag}: expected an integer from ${min} to ${max}, received ${text}`);
  }
  return v;
}

function parsePositiveNumber(text, flag) {
  if (text === undefined) throw new UsageError(`${flag}: missing value`);
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v <= 0) throw new UsageError(`${flag}: expected a positive number, received "${text}"`);
  return v;
}

function parseEnum(text, flag, allowed) {
  if (text === undefined) throw new UsageError(`${flag}: missing value`);
  if (!allowed.includes(text)) throw new UsageError(`${flag}: expected one of ${allowed.join(', ')}, received "${text}"`);
  return text;
}

function parseModes(text) {
  switch (text) {
    case undefined:
    case 'true':
    case 'yes':
    case '1':
    case 'causal':
      return ['causal'];
    case 'false':
    case 'no':
    case '0':
    case 'bidirectional':
      return ['bidirectional'];
    case 'both':
      return ['bidirectional', 'causal'];
    default:
      throw new UsageError(`--causal: expected both, true or false, received "${text}"`);
  }
}

function parseSuites(text) {
  if (text === undefined || text.trim() === '') throw new UsageError('--suite: missing value');
  const out = [];
  for (const name of text.split(',').map((s) => s.trim())) {
    if (name === 'all') out.push(...SUITES);
    else if (SUITES.includes(name)) out.push(name);
    else throw new UsageError(`--suite: expected one of ${[...SUITES, 'all'].join(', ')}, received "${name}"`);
  }
  return [...new Set(out)];
}

// Flags that take a value; optional: the value may be left out (a bare flag).
const WITH_VALUE = new Set([
  '--seq', '--batch', '--heads', '--dim', '--features', '--kernel', '--threads', '--isa', '--repeats',
  '--target-ms', '--budget', '--seed', '--peak-ms', '--out', '--suite',
]);
const OPTIONAL_VALUE = new Set(['--json', '--causal']);
const BARE = new Set(['--no-exact', '--no-chart', '--quiet', '--onnx', '--no-onnx', '--numpy', '--help', '-h']);

/** Parses argv (without node and the script). Throws UsageError. */
function parseArgs(argv) {
  const o = defaults();
  const extraSuites = [];
  const seen = new Set();
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let value;
    const eq = flag.startsWith('--') ? flag.indexOf('=') : -1;
    if (eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    if (!WITH_VALUE.has(flag) && !OPTIONAL_VALUE.has(flag) && !BARE.has(flag)) {
      if (!flag.startsWith('-')) throw new UsageError(`unexpected argument "${flag}" (flags start with --; see --help)`);
      throw new UsageError(`unknown flag ${flag} (see --help)`);
    }
    if (seen.has(flag) && flag !== '--suite') throw new UsageError(`${flag} given twice`);
    seen.add(flag);
    if (BARE.has(flag) && value !== undefined) throw new UsageError(`${flag} takes no value, received "${value}"`);
    if (WITH_VALUE.has(flag) && value === undefined) {
      value = argv[i + 1];
      if (value === undefined || (value.startsWith('--') && value.length > 2)) throw new UsageError(`${flag}: missing value`);
      i++;
    }
    if (OPTIONAL_VALUE.has(flag) && value === undefined) {
      const next = argv[i + 1];
      if (next !== undefined && (!next.startsWith('-') || next === '-')) {
        value = next;
        i++;
      }
    }
    switch (flag) {
      case '--seq':
        o.seq = parseSeqList(value);
        break;
      case '--batch':
        o.batch = parseInteger(value, flag, 1, 1 << 20);
        break;
      case '--heads':
        o.heads = parseInteger(value, flag, 1, 1 << 20);
        break;
      case '--dim':
        o.dim = parseInteger(value, flag, 1, 1 << 16);
        break;
      case '--features':
        o.features = parseInteger(value, flag, 1, 1 << 20);
        break;
      case '--kernel':
        o.kernel = parseEnum(value, flag, KERNELS);
        break;
      case '--causal':
        o.modes = parseModes(value);
        break;
      case '--threads':
        o.threads = [...new Set(value.split(',').map((t) => parseInteger(t.trim(), flag, 1, 1024)))];
        break;
      case '--isa':
        o.isa = parseEnum(value, flag, ISAS);
        break;
      case '--repeats':
        o.repeats = parseInteger(value, flag, 1, 100000);
        break;
      case '--target-ms':
        o.targetMs = parsePositiveNumber(value, flag);
        break;
      case '--budget':
        o.budget = parsePositiveNumber(value, flag);
        break;
      case '--seed':
        o.seed = parseInteger(value, flag, 0, Number.MAX_SAFE_INTEGER);
        break;
      case '--peak-ms':
        o.peakMs = parseInteger(value, flag, 1, 60000);
        break;
      case '--out':
        o.out = value;
        break;
      case '--json':
        o.json = value === undefined ? '' : value;
        break;
      case '--suite':
        o.suites = [...new Set([...(o.suites ?? []), ...parseSuites(value)])];
        break;
      case '--no-exact':
        o.exact = false;
        break;
      case '--no-chart':
        o.chart = false;
        break;
      case '--quiet':
        o.quiet = true;
        break;
      case '--onnx':
        extraSuites.push('onnx');
        break;
      case '--no-onnx':
        o.autoOnnx = false;
        break;
      case '--numpy':
        extraSuites.push('numpy');
        break;
      case '--help':
      case '-h':
        o.help = true;
        break;
    }
  }
  if (o.suites !== null || extraSuites.includes('onnx')) o.autoOnnx = false;
  if (seen.has('--onnx') && seen.has('--no-onnx')) throw new UsageError('--onnx and --no-onnx contradict each other');
  const base = o.suites ?? ['sweep'];
  o.suites = SUITES.filter((s) => base.includes(s) || extraSuites.includes(s));
  return o;
}

module.exports = { parseArgs, parseSeqList, parseLength, UsageError, HELP, SUITES, KERNELS };
