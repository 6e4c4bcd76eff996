// The benchmark program's own logic (bench/), on tiny sizes. No assertion here
// depends on how fast anything runs: timings never decide a test.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const benchDir = path.join(root, 'bench');
const cli = path.join(benchDir, 'performer-bench.js');

const cost = require(path.join(benchDir, 'lib', 'cost.js'));
const stats = require(path.join(benchDir, 'lib', 'stats.js'));
const format = require(path.join(benchDir, 'lib', 'format.js'));
const { findCrossover, describeCrossover } = require(path.join(benchDir, 'lib', 'crossover.js'));
const { parseArgs, parseSeqList, UsageError } = require(path.join(benchDir, 'lib', 'args.js'));
const protobuf = require('protobufjs');
const onnx = require(path.join(benchDir, 'lib', 'onnx.js'));
const { numpyEnv } = require(path.join(benchDir, 'lib', 'runner.js'));
const { chartSpec, renderSvg, writeChart } = require(path.join(benchDir, 'lib', 'chart.js'));
const { deriveRecord } = require(path.join(benchDir, 'lib', 'measure.js'));
const { summarizeSweep } = require(path.join(benchDir, 'lib', 'suites', 'sweep.js'));
const data = require(path.join(benchDir, 'lib', 'data.js'));

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'pa-bench-'));
}

function runCli(args: string[], options: { cwd?: string } = {}) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: options.cwd ?? root, timeout: 60000 });
}

// ---- reading the chart's SVG back

interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(text: string): string {
  const bad = /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/.exec(text);
  if (bad) throw new Error(`bare '&' in ${JSON.stringify(text)}`);
  return text.replace(/&(#x[0-9a-fA-F]+|#\d+|\w+);/g, (_, e: string) =>
    e[0] === '#' ? String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : Number(e.slice(1))) : ENTITIES[e],
  );
}

/** A strict reader for the XML subset an SVG writer emits; throws on anything not well-formed. */
function parseXml(xml: string): XmlNode {
  const document: XmlNode = { name: '#document', attrs: {}, children: [], text: '' };
  const stack = [document];
  const token = /<!--[\s\S]*?-->|<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/y;
  for (let at = 0; at < xml.length; at = token.lastIndex) {
    token.lastIndex = at;
    const m = token.exec(xml);
    if (!m) throw new Error(`not well-formed at ${at}: ${JSON.stringify(xml.slice(at, at + 60))}`);
    const [all, close, name, attrText, selfClose, text] = m;
    const top = stack[stack.length - 1];
    if (text !== undefined) {
      top.text += decodeEntities(text);
    } else if (all.startsWith('<!--')) {
      continue;
    } else if (close) {
      if (selfClose || attrText || top.name !== name) throw new Error(`</${name}> closes <${top.name}>`);
      stack.pop();
    } else {
      const attrs: Record<string, string> = {};
      for (const [, key, value] of attrText.matchAll(/([\w:.-]+)="([^"]*)"/g)) {
        if (key in attrs) throw new Error(`<${name}>: attribute ${key} twice`);
        attrs[key] = decodeEntities(value);
      }
      const node = { name, attrs, children: [], text: '' };
      top.children.push(node);
      if (!selfClose) stack.push(node);
    }
  }
  if (stack.length !== 1) throw new Error(`<${stack[stack.length - 1].name}> is never closed`);
  if (document.text.trim() !== '' || document.children.length !== 1) throw new Error('expected one root element');
  return document.children[0];
}

function descendants(node: XmlNode): XmlNode[] {
  return node.children.flatMap((c) => [c, ...descendants(c)]);
}

function classed(node: XmlNode, name: string, cls: string): XmlNode[] {
  return descendants(node).filter((n) => n.name === name && (n.attrs.class ?? '').split(' ').includes(cls));
}

/** A path's subpaths of [x, y] vertices; only M and L commands with finite numbers are accepted. */
function pathRuns(d: string): number[][][] {
  const num = '-?\\d+(?:\\.\\d+)?';
  const pair = `${num},${num}`;
  expect(d).toMatch(new RegExp(`^(?:M${pair}(?:L${pair})*)+$`));
  return d
    .split('M')
    .filter(Boolean)
    .map((run) => run.split('L').map((xy) => xy.split(',').map(Number)));
}

/** Centers of a series' circle markers, in drawing order. */
function markerCenters(group: XmlNode): number[][] {
  return classed(group, 'circle', 'marker').map((c) => [Number(c.attrs.cx), Number(c.attrs.cy)]);
}

function seriesGroups(svg: XmlNode): XmlNode[] {
  return classed(svg, 'g', 'series');
}

function texts(svg: XmlNode): string[] {
  return descendants(svg)
    .filter((n) => n.name === 'text')
    .map((n) => n.text);
}

describe('cost model (docs/benchmark.md)', () => {
  test('FAVOR+: 2 Lq d m + 2 Lk d m + 2 Lk m (Dv+1) + 2 Lq m (Dv+1) per (batch, head), causal the same', () => {
    const shape = { batch: 2, heads: 3, L: 10, headDim: 4, valueDim: 5, numFeatures: 6 };
    const perHead = 2 * 10 * 4 * 6 + 2 * 10 * 4 * 6 + 2 * 10 * 6 * 6 + 2 * 10 * 6 * 6;
    expect(cost.favorCost(shape)).toEqual({ flops: 6 * perHead, exps: 6 * 20 * 6 });
    expect(cost.favorCost({ ...shape, causal: true })).toEqual(cost.favorCost(shape));
    // The configuration: B 1, H 8, L 4096, d = Dv = 64, m = 256.
    const f = cost.favorCost({ batch: 1, heads: 8, L: 4096, headDim: 64, numFeatures: 256 });
    expect(f.flops).toBe(8 * (4 * 4096 * 64 * 256 + 4 * 4096 * 256 * 65));
  });

  test('different query and key lengths, and kernels with 2m features', () => {
    const s = { queryLength: 3, keyLength: 7, headDim: 2, valueDim: 1, numFeatures: 4 };
    expect(cost.favorCost(s).flops).toBe(2 * 3 * 2 * 4 + 2 * 7 * 2 * 4 + 2 * 7 * 4 * 2 + 2 * 3 * 4 * 2);
    expect(cost.featureCount(4, 'softmax-hyperbolic')).toBe(8);
    expect(cost.featureCount(4, 'trig')).toBe(8);
    expect(cost.featureCount(4, 'relu')).toBe(4);
    const h = cost.favorCost({ ...s, kernel: 'softmax-hyperbolic' });
    expect(h.flops).toBe(2 * 3 * 2 * 4 + 2 * 7 * 2 * 4 + 2 * 7 * 8 * 2 + 2 * 3 * 8 * 2);
    expect(h.exps).toBe(10 * 8);
  });

  test('exact: 2 Lq Lk (d + Dv); causal counts the attended pairs (bottom-right aligned)', () => {
    expect(cost.exactCost({ heads: 2, L: 8, headDim: 4, valueDim: 3 })).toEqual({ flops: 2 * 2 * 64 * 7, exps: 2 * 64 });
    expect(cost.attendedPairs(4, 4, true)).toBe(10); // 1 + 2 + 3 + 4
    expect(cost.attendedPairs(2, 4, true)).toBe(3 + 4);
    expect(cost.attendedPairs(4, 2, true)).toBe(0 + 0 + 1 + 2);
    expect(cost.attendedPairs(5, 3, false)).toBe(15);
    const L = 1000;
    const causal = cost.exactCost({ L, headDim: 64, causal: true }).flops;
    const full = cost.exactCost({ L, headDim: 64 }).flops;
    expect(causal / full).toBeCloseTo((L + 1) / (2 * L), 12);
  });

  test('input sizes, GFLOP/s, and bad shapes', () => {
    const io = cost.ioBytes({ batch: 1, heads: 2, L: 3, headDim: 4, valueDim: 5 });
    expect(io.total).toBe(4 * (6 * 4 + 6 * 4 + 6 * 5 + 6 * 5));
    expect(cost.gflops(2e9, 1000)).toBe(2);
    expect(() => cost.favorCost({ L: 4, headDim: 2 })).toThrow(RangeError);
    expect(() => cost.exactCost({ L: -1, headDim: 2 })).toThrow(RangeError);
  });
});

describe('statistics helpers', () => {
  test('median, quantiles and summary', () => {
    expect(stats.median([3, 1, 2])).toBe(2);
    expect(stats.median([4, 1, 3, 2])).toBe(2.5);
    expect(stats.quantile([10, 20, 30, 40, 50], 0.25)).toBe(20);
    expect(stats.quantile([1, 2], 0.75)).toBeCloseTo(1.75);
    const s = stats.summarize([5, 1, 4, 2, 3]);
    expect(s).toMatchObject({ n: 5, median: 3, min: 1, max: 5, mean: 3, p25: 2, p75: 4 });
    expect(s.spread).toBeCloseTo(1 / 3);
    expect(() => stats.median([])).toThrow(RangeError);
    expect(() => stats.quantile([1], 2)).toThrow(RangeError);
    expect(() => stats.median([1, NaN])).toThrow(TypeError);
  });

  test('repeats adapt to the run time: more for fast calls, at least 3', () => {
    expect(stats.chooseRepeats(1)).toBe(50);
    expect(stats.chooseRepeats(100)).toBe(10);
    expect(stats.chooseRepeats(5000)).toBe(3);
    expect(stats.chooseRepeats(0)).toBe(50);
    expect(stats.chooseRepeats(10, { targetMs: 100, min: 2, max: 5 })).toBe(5);
  });

  test('quadratic extrapolation and the scaling exponent', () => {
    expect(stats.extrapolate({ L: 1024, ms: 10 }, 4096)).toBe(160);
    expect(stats.extrapolate({ L: 1024, ms: 10 }, 4096, 1)).toBe(40);
    expect(stats.scalingExponent({ L: 1000, ms: 2 }, { L: 4000, ms: 32 })).toBeCloseTo(2);
  });
});

describe('table formatting', () => {
  test('columns are aligned, right by default, left on request; missing cells print as –', () => {
    const t = format.table(
      [{ title: 'L' }, { title: 'mode', align: 'left' }, { title: 'ms' }],
      [
        ['256', 'causal', '1.23'],
        ['16384', null, '12345'],
      ],
    );
    expect(t.split('\n')).toEqual(['    L  mode       ms', '-----  ------  -----', '  256  causal   1.23', '16384  –       12345']);
  });

  test('numbers, durations, sizes', () => {
    expect(format.sig(1.23456)).toBe('1.23');
    expect(format.sig(123456)).toBe('123456');
    expect(format.sig(0.000123)).toBe('0.000123');
    expect(format.sig(NaN)).toBe('–');
    expect(format.duration(0.25)).toBe('250 µs');
    expect(format.duration(12.34)).toBe('12.3 ms');
    expect(format.duration(4560)).toBe('4.56 s');
    expect(format.duration(3 * 3600e3)).toBe('3.00 h');
    expect(format.bytes(512)).toBe('0.500 KiB');
    expect(format.bytes(3 * 1024 * 1024)).toBe('3.00 MiB');
    expect(format.bytes(20 * 1024 ** 3)).toBe('20.0 GiB');
    expect(format.percent(64.4)).toBe('64%');
    expect(format.ratio(8.239)).toBe('8.24x');
  });
});

describe('crossover from measured points', () => {
  test('interpolates on log L against log(exact / FAVOR+)', () => {
    // ratio 0.5 at L = 256, 2 at L = 1024: log ratio crosses 0 halfway in log L, at 512.
    const c = findCrossover([
      { L: 1024, favorMs: 1, exactMs: 2 },
      { L: 256, favorMs: 2, exactMs: 1 },
    ]);
    expect(c.status).toBe('between');
    expect(c.L).toBeCloseTo(512, 6);
    expect(c.lower.L).toBe(256);
    expect(c.upper.L).toBe(1024);
    expect(describeCrossover(c)).toMatch(/^L ≈ 512 /);
  });

  test('takes the last crossing (FAVOR+ faster at every larger L), ignores unusable points', () => {
    const c = findCrossover([
      { L: 128, favorMs: 1, exactMs: 2 }, // noise: faster once at a small L
      { L: 256, favorMs: 2, exactMs: 1 },
      { L: 512, favorMs: 2, exactMs: 2 }, // a tie is not faster
      { L: 1024, favorMs: 1, exactMs: 4 },
      { L: 2048, favorMs: 1 },
    ]);
    expect(c.status).toBe('between');
    expect(c.lower.L).toBe(512);
    expect(c.upper.L).toBe(1024);
    expect(c.L).toBeCloseTo(512, 6); // the tie sits exactly at ratio 1
  });

  test('below, above, none', () => {
    expect(findCrossover([{ L: 64, favorMs: 1, exactMs: 3 }]).status).toBe('below');
    const above = findCrossover([
      { L: 64, favorMs: 3, exactMs: 1 },
      { L: 128, favorMs: 3, exactMs: 2 },
    ]);
    expect(above.status).toBe('above');
    expect(above.lower.L).toBe(128);
    expect(findCrossover([]).status).toBe('none');
    expect(describeCrossover({ status: 'none', L: null })).toMatch(/not measured/);
  });
});

describe('flag parsing', () => {
  test('defaults: sweep of L 256..16384 (chosen by the suite), both modes, adaptive repeats', () => {
    expect(parseArgs([])).toEqual({
      suites: ['sweep'], seq: null, batch: 1, heads: 8, dim: 64, features: 256, kernel: 'softmax', modes: ['bidirectional', 'causal'],
      threads: null, isa: null, repeats: null, targetMs: 1000, budget: 10, exact: true, seed: 1, peakMs: 300, json: null,
      out: 'results', chart: true, quiet: false, help: false, autoOnnx: true,
    });
  });

  test('lengths: lists, doubling ranges, k and 2^n', () => {
    expect(parseSeqList('256..2048')).toEqual([256, 512, 1024, 2048]);
    expect(parseSeqList('64k,1024,2^20,1M,1024')).toEqual([1024, 65536, 1048576]);
    expect(parseSeqList('100..500')).toEqual([100, 200, 400]);
  });

  test('every documented flag', () => {
    const o = parseArgs([
      '--seq', '32,64', '--batch', '2', '--heads=3', '--dim', '16', '--features', '32', '--kernel', 'softmax-hyperbolic',
      '--causal', '--threads', '1,2', '--repeats', '4', '--budget', '2.5', '--no-exact', '--no-chart', '--out', 'x',
      '--json', 'r.json', '--onnx', '--suite', 'overhead', '--isa', 'scalar', '--seed', '7', '--peak-ms', '20', '--quiet',
    ]);
    expect(o).toMatchObject({
      seq: [32, 64], batch: 2, heads: 3, dim: 16, features: 32, kernel: 'softmax-hyperbolic', modes: ['causal'],
      threads: [1, 2], repeats: 4, budget: 2.5, exact: false, chart: false, out: 'x', json: 'r.json',
      suites: ['overhead', 'onnx'], isa: 'scalar', seed: 7, peakMs: 20, quiet: true,
    });
    expect(parseArgs(['--target-ms', '0.5', '--budget=3', '--seed', '0', '-h'])).toMatchObject({ targetMs: 0.5, budget: 3, seed: 0, help: true });
    expect(parseArgs(['--help']).help).toBe(true);
  });

  test('--causal takes an optional mode: bare, both, true or false and their synonyms', () => {
    const modes = (...argv: string[]) => parseArgs(argv).modes;
    expect(modes('--causal')).toEqual(['causal']);
    expect(modes('--causal', '--quiet')).toEqual(['causal']);
    expect(modes('--causal', 'false')).toEqual(['bidirectional']);
    expect(modes('--causal=no')).toEqual(['bidirectional']);
    expect(modes('--causal', 'bidirectional')).toEqual(['bidirectional']);
    expect(modes('--causal', '1')).toEqual(['causal']);
    expect(modes('--causal', 'both')).toEqual(['bidirectional', 'causal']);
  });

  test('--json takes an optional file: bare means the results folder, - stdout', () => {
    expect(parseArgs(['--json']).json).toBe('');
    expect(parseArgs(['--causal', 'both', '--json']).json).toBe('');
    expect(parseArgs(['--json', '-']).json).toBe('-');
    expect(parseArgs(['--json=r.json']).json).toBe('r.json');
    expect(parseArgs(['--json', '--quiet'])).toMatchObject({ json: '', quiet: true });
    expect(parseArgs(['--json', 'r.json', '--quiet'])).toMatchObject({ json: 'r.json', quiet: true });
  });

  test('lists: duplicates removed, lengths sorted; suites in their fixed order, --suite repeatable', () => {
    expect(parseArgs(['--seq', '1024,64..128,64']).seq).toEqual([64, 128, 1024]);
    expect(parseArgs(['--threads', '2,1,2']).threads).toEqual([2, 1]);
    expect(parseArgs(['--suite', 'all']).suites).toEqual(['sweep', 'crossover', 'overhead', 'concurrency', 'million', 'sampling', 'onnx', 'numpy', 'torch']);
    expect(parseArgs(['--suite', 'numpy,overhead', '--suite', 'crossover']).suites).toEqual(['crossover', 'overhead', 'numpy']);
    expect(parseArgs(['--numpy']).suites).toEqual(['sweep', 'numpy']);
    expect(parseArgs(['--suite', 'million', '--numpy']).suites).toEqual(['million', 'numpy']);
    expect(parseArgs(['--torch']).suites).toEqual(['sweep', 'torch']);
    expect(parseArgs(['--suite', 'torch,numpy']).suites).toEqual(['numpy', 'torch']);
    expect(parseArgs(['--suite', 'million', '--torch', '--numpy'])).toMatchObject({ suites: ['million', 'numpy', 'torch'], autoOnnx: false });
  });

  test('the default run adds the short onnxruntime comparison unless a suite is chosen or --no-onnx', () => {
    expect(parseArgs([]).autoOnnx).toBe(true);
    expect(parseArgs(['--seq', '1024']).autoOnnx).toBe(true);
    expect(parseArgs(['--no-onnx']).autoOnnx).toBe(false);
    expect(parseArgs(['--suite', 'sweep']).autoOnnx).toBe(false);
    expect(parseArgs(['--onnx'])).toMatchObject({ autoOnnx: false, suites: ['sweep', 'onnx'] });
    expect(() => parseArgs(['--onnx', '--no-onnx'])).toThrow(/contradict/);
  });

  // The whole message: each names the flag, what it expects and what it received.
  test.each([
    [['--sequence', '5'], 'unknown flag --sequence (see --help)'],
    [['-x'], 'unknown flag -x (see --help)'],
    [['--'], 'unknown flag -- (see --help)'],
    [['seq'], 'unexpected argument "seq" (flags start with --; see --help)'],
    [['--json', 'a', 'b'], 'unexpected argument "b" (flags start with --; see --help)'],
    [['--heads', 'eight'], '--heads: expected an integer, received "eight"'],
    [['--heads', '-5'], '--heads: expected an integer, received "-5"'],
    [['--heads='], '--heads: expected an integer, received ""'],
    [['--heads', '0'], '--heads: expected an integer from 1 to 1048576, received 0'],
    [['--dim', '65537'], '--dim: expected an integer from 1 to 65536, received 65537'],
    [['--peak-ms', '60001'], '--peak-ms: expected an integer from 1 to 60000, received 60001'],
    [['--heads'], '--heads: missing value'],
    [['--heads', '--dim', '8'], '--heads: missing value'],
    [['--seq', '4096..1024'], '--seq: range "4096..1024" goes down (4096 > 1024)'],
    [['--seq', '1..2..4'], '--seq: bad range "1..2..4"'],
    [['--seq', 'abc'], '--seq: expected a length like 4096, 64k or 2^20, received "abc"'],
    [['--seq', '0'], '--seq: lengths must be positive integers, received "0"'],
    [['--seq', '64,,128'], '--seq: empty item in "64,,128"'],
    [['--seq='], '--seq: expected a list of lengths, received nothing'],
    [['--threads', '1,,2'], '--threads: empty item in "1,,2"'],
    [['--threads', '2,2000'], '--threads: expected an integer from 1 to 1024, received 2000'],
    [['--kernel', 'favor'], '--kernel: expected one of softmax, softmax-hyperbolic, trig, relu, elu, exp, abs, softmax-opt, softmax-dense, received "favor"'],
    [['--causal', 'maybe'], '--causal: expected both, true or false, received "maybe"'],
    [['--causal', 'toString'], '--causal: expected both, true or false, received "toString"'],
    [['--budget', '-1'], '--budget: expected a positive number, received "-1"'],
    [['--target-ms', 'soon'], '--target-ms: expected a positive number, received "soon"'],
    [['--suite', 'fast'], '--suite: expected one of sweep, crossover, overhead, concurrency, million, sampling, onnx, numpy, torch, all, received "fast"'],
    [['--suite='], '--suite: expected a list of suites, received nothing'],
    [['--isa', 'neon'], '--isa: expected one of scalar, avx2, avx512, received "neon"'],
    [['--no-exact=1'], '--no-exact takes no value, received "1"'],
    [['--heads', '2', '--heads=4'], '--heads given twice'],
    [['--json', '--json'], '--json given twice'],
  ])('rejects %j', (argv, message) => {
    let error: unknown;
    try {
      parseArgs(argv);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toBe(message);
  });
});

describe('ONNX models encoded with protobufjs from bench/lib/onnx.proto', () => {
  type Attr = { name: string; i?: bigint; ints?: bigint[] };
  type Node = { op_type: string; domain?: string; input?: string[]; output: string[]; attribute?: Attr[] };

  test('varints, negative int64 and floats follow the wire format', () => {
    const { ModelProto, AttributeProto } = onnx.onnxTypes();
    expect([...ModelProto.encode({ ir_version: 300 }).finish()]).toEqual([0x08, 0xac, 0x02]);
    expect([...ModelProto.encode({ ir_version: 0 }).finish()]).toEqual([0x08, 0]);
    const neg = AttributeProto.encode({ i: -1 }).finish();
    expect(neg.length).toBe(11); // tag + 10-byte varint
    const reader = protobuf.Reader.create(neg);
    expect(reader.uint32()).toBe((3 << 3) | 0);
    expect(BigInt(reader.uint64().toString())).toBe(2n ** 64n - 1n);
    const f = AttributeProto.encode({ f: 0.125 }).finish();
    expect(f[0]).toBe((2 << 3) | 5); // field 2, fixed32
    expect(new DataView(f.buffer, f.byteOffset + 1, 4).getFloat32(0, true)).toBe(0.125);
  });

  function nodes(bytes: Uint8Array) {
    const model = onnx.decodeModel(bytes);
    return {
      model,
      graph: model.graph,
      nodes: model.graph.node.map((n: Node) => {
        const attrs: Record<string, bigint | number[]> = {};
        for (const a of n.attribute ?? []) attrs[a.name] = a.i ?? (a.ints ?? []).map((x) => Number(x));
        return { op: n.op_type, domain: n.domain ?? '', inputs: n.input ?? [], outputs: n.output, attrs };
      }),
    };
  }

  test('MatMul-Softmax-MatMul graph: ops, opset, inputs and the causal mask', () => {
    const bi = nodes(onnx.matmulSoftmaxModel({ batch: 1, heads: 2, L: 4, headDim: 8 }));
    expect(bi.model.ir_version).toBe(8n);
    expect(bi.model.opset_import[0].version).toBe(17n);
    expect(bi.nodes.map((n: { op: string }) => n.op)).toEqual(['Transpose', 'MatMul', 'Mul', 'Softmax', 'MatMul']);
    expect(bi.nodes[0].attrs.perm).toEqual([0, 1, 3, 2]);
    expect(BigInt.asIntN(64, bi.nodes[3].attrs.axis as bigint)).toBe(-1n);
    expect(bi.graph.input.map((vi: { name: string }) => vi.name)).toEqual(['query', 'key', 'value']);
    const causal = nodes(onnx.matmulSoftmaxModel({ batch: 1, heads: 2, L: 4, headDim: 8, causal: true }));
    expect(causal.nodes.map((n: { op: string }) => n.op)).toEqual(['Transpose', 'MatMul', 'Mul', 'Add', 'Softmax', 'MatMul']);
    const mask = causal.graph.initializer.find((t: { name: string }) => t.name === 'causal_mask');
    const raw: Uint8Array = mask.raw_data;
    const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    expect([...values.slice(0, 4)]).toEqual([0, -Infinity, -Infinity, -Infinity]);
    expect([...values.slice(12, 16)]).toEqual([0, 0, 0, 0]);
  });

  test('MultiHeadAttention graph: com.microsoft domain, num_heads, unidirectional when causal', () => {
    const m = nodes(onnx.multiHeadAttentionModel({ batch: 1, heads: 4, L: 16, headDim: 8, causal: true }));
    expect(m.nodes).toHaveLength(1);
    expect(m.nodes[0]).toMatchObject({ op: 'MultiHeadAttention', domain: 'com.microsoft', inputs: ['query', 'key', 'value'] });
    expect(m.nodes[0].attrs).toEqual({ num_heads: 4n, unidirectional: 1n });
    const domains = m.model.opset_import.map((o: { domain?: string }) => o.domain ?? '');
    expect(domains).toEqual(['', 'com.microsoft']);
    const bi = nodes(onnx.multiHeadAttentionModel({ batch: 1, heads: 4, L: 16, headDim: 8 }));
    expect(bi.nodes[0].attrs).toEqual({ num_heads: 4n });
  });

  test('the [B, H, L, D] <-> [B, L, H*D] layout change round-trips', () => {
    const x = Float32Array.from({ length: 2 * 3 * 4 * 5 }, (_, i) => i);
    const bsd = data.toBSD(x, [2, 3, 4, 5]);
    expect(bsd[5]).toBe(x[4 * 5]); // b 0, l 0, head 1, d 0
    expect([...data.fromBSD(bsd, [2, 3, 4, 5])]).toEqual([...x]);
  });
});

describe('records, summaries, chart and child environments', () => {
  const config = { impl: 'favor', mode: 'bidirectional', L: 1024, batch: 1, heads: 2, headDim: 16, features: 32, kernel: 'softmax', threads: 2 };

  test('a record: median ms, GFLOP/s from the cost model, % of peak, memory against q, k, v, output', () => {
    const r = deriveRecord({ times: [3, 1, 2], firstMs: 5, extraBytes: 4096, outBytes: 131072, coresUsed: 1.5 }, config, 10);
    const flops = cost.favorCost({ ...config, numFeatures: 32 }).flops;
    expect(r.ms).toBe(2);
    expect(r.runs).toBe(3);
    expect(r.flops).toBe(flops);
    expect(r.gflops).toBeCloseTo(flops / 2e6);
    expect(r.pctPeak).toBeCloseTo((100 * flops) / 2e6 / 10);
    expect(r.ioBytes).toBe(4 * 2 * 1024 * 16 * 4);
    expect(r.extraOverIo).toBeCloseTo(4096 / r.ioBytes);
    const e = deriveRecord({ times: [4] }, { ...config, impl: 'exact', mode: 'causal' }, null);
    expect(e.flops).toBe(cost.exactCost({ ...config, causal: true }).flops);
    expect(e.pctPeak).toBeNull();
  });

  test('sweep summary: crossover and linearity from rows', () => {
    const row = (L: number, favorMs: number, exactMs: number | null) => ({
      threads: 2,
      mode: 'causal',
      L,
      favor: { L, ms: favorMs, extraBytes: 1000, ioBytes: 16 * L, extraOverIo: 1000 / (16 * L) },
      exact: exactMs === null ? { skipped: true, estimatedMs: 1e6 } : { L, ms: exactMs },
    });
    const s = summarizeSweep([row(1024, 2, 1), row(4096, 8, 16), row(16384, 32, null), row(65536, 136, null)], { opts: { exact: true } });
    expect(s.crossover).toHaveLength(1);
    expect(s.crossover[0]).toMatchObject({ mode: 'causal', status: 'between' });
    expect(s.crossover[0].L).toBeCloseTo(2048, 6);
    expect(s.linearity[0]).toMatchObject({ fromL: 4096, toL: 65536, linearRatio: 16, timeRatio: 17 });
    expect(s.linearity[0].extraOverIoAtLargest).toBeCloseTo(1000 / (16 * 65536));
  });

  test('chart: well-formed SVG of time against L on log-log axes, a line and markers per series, legend and labels', () => {
    const Ls = [256, 512, 1024, 2048];
    const series = [
      { name: 'FAVOR+ bidirectional', mode: 'bidirectional', points: Ls.map((L) => ({ L, ms: L / 512 })) },
      { name: 'exact <bidirectional> & "co"', mode: 'bidirectional', points: Ls.slice(0, 3).map((L) => ({ L, ms: (L * L) / 65536 })) },
      { name: 'exact causal, extrapolated', mode: 'causal', points: [{ L: 4096, ms: 128, estimated: true }, { L: 8192, ms: 512, estimated: true }] },
    ];
    const { svg: text, notes, plotted } = renderSvg(chartSpec(series, { title: 'Time & <L>', subtitle: 'avx2, 2 threads' }));
    expect(notes).toEqual([]);
    expect(plotted).toBe(9);
    expect(text).not.toMatch(/NaN|Infinity|undefined|null/);
    const svg = parseXml(text);
    expect(svg.name).toBe('svg');
    expect(svg.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    const [w, h] = [Number(svg.attrs.width), Number(svg.attrs.height)];
    expect(w).toBeGreaterThan(300);
    expect(h).toBeGreaterThan(200);
    expect(svg.attrs.viewBox).toBe(`0 0 ${svg.attrs.width} ${svg.attrs.height}`);
    // One group per series (names unescaped again by the reader), in order.
    const groups = seriesGroups(svg);
    expect(groups.map((g) => g.attrs['data-series'])).toEqual(series.map((s) => s.name));
    const frame = classed(svg, 'rect', 'frame')[0];
    const [fx, fy] = [Number(frame.attrs.x), Number(frame.attrs.y)];
    const [fw, fh] = [Number(frame.attrs.width), Number(frame.attrs.height)];
    for (const [i, g] of groups.slice(0, 2).entries()) {
      // A line through the markers, one vertex per point, inside the plot frame.
      const lines = classed(g, 'path', 'line');
      expect(lines).toHaveLength(1);
      const runs = pathRuns(lines[0].attrs.d);
      const centers = markerCenters(g);
      expect(runs).toEqual([centers]);
      expect(centers).toHaveLength(series[i].points.length);
      for (const [x, y] of centers) {
        expect(x).toBeGreaterThanOrEqual(fx);
        expect(x).toBeLessThanOrEqual(fx + fw);
        expect(y).toBeGreaterThanOrEqual(fy);
        expect(y).toBeLessThanOrEqual(fy + fh);
      }
      // x grows with L, y with time (upwards); L and time double at each step, so on log
      // axes the steps are equal.
      const dx = centers.slice(1).map((c, j) => c[0] - centers[j][0]);
      const dy = centers.slice(1).map((c, j) => c[1] - centers[j][1]);
      for (const step of dx) {
        expect(step).toBeGreaterThan(10);
        expect(step).toBeCloseTo(dx[0], 1);
      }
      for (const step of dy) {
        expect(step).toBeLessThan(-10);
        expect(step).toBeCloseTo(dy[0], 1);
      }
    }
    // The same L lands at the same x in every series; the exact times (L^2) rise twice as steeply.
    const [favor, exact] = groups.slice(0, 2).map(markerCenters);
    expect(exact.map((c) => c[0])).toEqual(favor.slice(0, 3).map((c) => c[0]));
    expect(exact[1][1] - exact[0][1]).toBeCloseTo(2 * (favor[1][1] - favor[0][1]), 1);
    // Extrapolated points: crosses, not joined.
    expect(classed(groups[2], 'path', 'line')).toHaveLength(0);
    expect(classed(groups[2], 'path', 'cross')).toHaveLength(2);
    // Title, axis titles, legend entries (colored as their lines), decade tick labels.
    const labels = texts(svg);
    for (const label of ['Time & <L>', 'avx2, 2 threads', 'sequence length L', 'time per call (ms, median)', ...series.map((s) => s.name)]) {
      expect(labels).toContain(label);
    }
    expect(labels).toEqual(expect.arrayContaining(['1000', '1', '10', '100']));
    const entries = classed(svg, 'g', 'legend-entry');
    expect(entries.map((e) => e.attrs['data-series'])).toEqual(series.map((s) => s.name));
    expect(entries[0].children[0].attrs.stroke).toBe(classed(groups[0], 'path', 'line')[0].attrs.stroke);
    expect(entries[1].children[0].attrs.stroke).not.toBe(entries[0].children[0].attrs.stroke);
    // Modes: the first solid, the next dashed.
    expect(classed(groups[0], 'path', 'line')[0].attrs['stroke-dasharray']).toBeUndefined();
    expect(entries[2].children.some((c) => c.name === 'path' && c.attrs.class === 'marker cross')).toBe(true);
  });

  test('chart: a single point, missing, zero and negative times are left out with a note, never NaN', () => {
    const gappy = [
      { L: 256, ms: 1 },
      { L: 512, ms: 2 },
      { L: 1024, ms: 0 },
      { L: 2048, ms: 8 },
      { L: 4096, ms: -1 },
      { L: 8192, ms: Number.NaN },
      { L: 16384, ms: 64 },
      { L: 32768, ms: 128 },
    ];
    const { svg: text, notes, plotted } = renderSvg(chartSpec([{ name: 'one', points: [{ L: 1024, ms: 3 }] }, { name: 'gappy', points: gappy }]));
    expect(text).not.toMatch(/NaN|Infinity|undefined|null/);
    const svg = parseXml(text);
    expect(plotted).toBe(1 + 5);
    const [one, gaps] = seriesGroups(svg);
    // One point: a marker and no line.
    expect(classed(one, 'path', 'line')).toHaveLength(0);
    expect(markerCenters(one)).toHaveLength(1);
    // A point left out breaks the line: 256-512 and 16384-32768 joined, 2048 alone.
    const runs = pathRuns(classed(gaps, 'path', 'line')[0].attrs.d);
    const centers = markerCenters(gaps);
    expect(centers).toHaveLength(5);
    expect(runs).toEqual([centers.slice(0, 2), centers.slice(3, 5)]);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(/^"gappy": left out 3 points \(x = 1024: y = 0, not positive on a log axis; x = 4096: y = -1, not positive on a log axis; x = 8192: y = missing\)$/);
    expect(texts(svg).join(' ')).toContain('x = 1024: y = 0, not positive on a log axis');
    // A single point alone still gets axes with labelled ticks around it.
    const single = parseXml(renderSvg(chartSpec([{ name: 'one', points: [{ L: 1024, ms: 3 }] }])).svg);
    const [[cx, cy]] = markerCenters(seriesGroups(single)[0]);
    const frame = classed(single, 'rect', 'frame')[0];
    expect(cx).toBeCloseTo(Number(frame.attrs.x) + Number(frame.attrs.width) / 2, 0);
    expect(cy).toBeGreaterThan(Number(frame.attrs.y));
    expect(cy).toBeLessThan(Number(frame.attrs.y) + Number(frame.attrs.height));
    expect(texts(single)).toEqual(expect.arrayContaining(['1000', '1', '10']));
    // Nothing drawable: no file, and why.
    const dir = tmpDir();
    const r = writeChart([{ name: 'zero', points: [{ L: 256, ms: 0 }] }], path.join(dir, 'x.svg'), {});
    expect(r.skipped).toMatch(/^no timings to plot \("zero": left out a point/);
    expect(fs.existsSync(path.join(dir, 'x.svg'))).toBe(false);
  });

  test("numpy's child environment: no OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE, the library's thread count", () => {
    const env = numpyEnv(2, { PATH: '/bin', OPENBLAS_CORETYPE: 'Haswell', OPENBLAS_L2_SIZE: '1048576', OPENBLAS_NUM_THREADS: '8' });
    expect(env).toEqual({ PATH: '/bin', OPENBLAS_NUM_THREADS: '2', OMP_NUM_THREADS: '2' });
  });

  test('seeded inputs are reproducible and have the requested spread', () => {
    const a = data.makeInputs({ batch: 1, heads: 1, L: 2000, headDim: 8, seed: 3 });
    const b = data.makeInputs({ batch: 1, heads: 1, L: 2000, headDim: 8, seed: 3 });
    expect(a.q.data).toEqual(b.q.data);
    expect(a.q.data).not.toEqual(a.k.data);
    let s2 = 0;
    for (const x of a.v.data) s2 += x * x;
    expect(Math.sqrt(s2 / a.v.data.length)).toBeCloseTo(1, 1);
    expect(a.out.shape).toEqual([1, 1, 2000, 8]);
  });
});

describe('the other bench scripts share the flag parser', () => {
  const script = (name: string, args: string[]) => spawnSync(process.execPath, [path.join(benchDir, name), ...args], { encoding: 'utf8', cwd: root, timeout: 60000 });

  test.each([
    ['layers.js', ['--runs', '0'], 'bench:layers: --runs: expected an integer from 1 to 1000000, received 0'],
    ['layers.js', ['--only', 'self'], 'bench:layers: --only: expected one of cross, received "self"'],
    ['layers.js', ['--contexts', '1k,,2k'], 'bench:layers: --contexts: empty item in "1k,,2k"'],
    ['generate.js', ['--numerics', 'exact,fast'], 'bench:generate: --numerics: expected one of performer-pytorch, exact, received "fast"'],
    ['generate.js', ['--steps'], 'bench:generate: --steps: missing value'],
    ['train.js', ['--lengths', 'long'], 'bench:train: --lengths: expected a length like 4096, 64k or 2^20, received "long"'],
    ['train.js', ['--no-torch=yes'], 'bench:train: --no-torch takes no value, received "yes"'],
    ['train.js', ['--fast'], 'bench:train: unknown flag --fast (see --help)'],
  ])('%s %j exits 2: %s', (name, args, message) => {
    const r = script(name, args);
    expect(r.stderr).toBe(`${message}\n`);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
  });

  test.each([
    ['layers.js', '--only cross'],
    ['generate.js', '--recompute-up-to 4096'],
    ['train.js', '--no-torch'],
  ])('%s --help prints the usage line and exits 0', (name, flag) => {
    const r = script(name, ['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: npm run bench:\w+ -- /);
    expect(r.stdout).toContain(flag);
  });
});

describe('performer-bench, run for real on tiny sizes', () => {
  test('writes a JSON report with both modes, FAVOR+ and exact at each L, peaks and the chart', () => {
    const dir = tmpDir();
    const json = path.join(dir, 'report.json');
    const r = runCli(['--seq', '32,64', '--heads', '1', '--dim', '8', '--features', '8', '--repeats', '1', '--peak-ms', '20', '--out', dir, '--json', json, '--quiet']);
    expect(r.stderr).not.toMatch(/failed/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/== sweep ==/);
    expect(r.stdout).toMatch(/FAVOR\+ ms\s+GFLOP\/s\s+% peak/);
    const report = JSON.parse(fs.readFileSync(json, 'utf8'));
    expect(report.tool).toBe('performer-bench');
    expect(report.peaks.map((p: { threads: number }) => p.threads)).toContain(1);
    for (const p of report.peaks) expect(p.gflops).toBeGreaterThan(0);
    const rows = report.suites.sweep.rows;
    expect(rows.map((x: { mode: string; L: number }) => `${x.mode} ${x.L}`)).toEqual(['bidirectional 32', 'bidirectional 64', 'causal 32', 'causal 64']);
    for (const row of rows) {
      for (const rec of [row.favor, row.exact]) {
        expect(rec.runs).toBe(1);
        expect(rec.ms).toBeGreaterThan(0);
        expect(Number.isFinite(rec.gflops)).toBe(true);
        expect(rec.extraBytes).toBeGreaterThanOrEqual(0);
        expect(rec.ioBytes).toBe(4 * 4 * row.L * 8);
      }
      const shape = { L: row.L, headDim: 8, numFeatures: 8, causal: row.mode === 'causal' };
      expect(row.favor.flops).toBe(cost.favorCost(shape).flops);
      expect(row.exact.flops).toBe(cost.exactCost(shape).flops);
    }
    expect(report.suites.sweep.crossover).toHaveLength(2);
    expect(report.suites.sweep.linearity).toHaveLength(2);
    // The chart needs no optional package: always written, one line per implementation and mode.
    expect(r.stdout).toContain(`chart: ${report.files['chart-sweep']}`);
    const svg = parseXml(fs.readFileSync(report.files['chart-sweep'], 'utf8'));
    const groups = seriesGroups(svg);
    expect(groups.map((g) => g.attrs['data-series'])).toEqual(['FAVOR+ bidirectional', 'exact bidirectional', 'FAVOR+ causal', 'exact causal']);
    for (const g of groups) {
      const centers = markerCenters(g);
      expect(pathRuns(classed(g, 'path', 'line')[0].attrs.d)).toEqual([centers]);
      expect(centers[1][0]).toBeGreaterThan(centers[0][0]); // L = 64 right of L = 32
    }
  });

  test('--json - prints the report on stdout (tables go to stderr); skipped comparisons are named', () => {
    const dir = tmpDir();
    const r = spawnSync(process.execPath, [cli, '--suite', 'sampling', '--dim', '8', '--features', '16', '--peak-ms', '10', '--json', '-', '--out', dir, '--quiet'], {
      encoding: 'utf8',
      cwd: root,
      timeout: 60000,
      env: { ...process.env, PERFORMER_BENCH_PYTHON: path.join(dir, 'no-such-python') },
    });
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.suites.sampling.redrawOrthogonalMs.median).toBeGreaterThan(0);
    expect(r.stderr).toMatch(/== sampling ==/);
    const np = spawnSync(process.execPath, [cli, '--suite', 'numpy', '--seq', '16', '--dim', '8', '--heads', '1', '--features', '8', '--no-exact', '--peak-ms', '10', '--out', dir, '--quiet'], {
      encoding: 'utf8',
      cwd: root,
      timeout: 60000,
      env: { ...process.env, PERFORMER_BENCH_PYTHON: path.join(dir, 'no-such-python') },
    });
    expect(np.status).toBe(0);
    expect(np.stdout).toMatch(/skipped: numpy comparison: .*no-such-python not found/);
  });

  test('the torch suite is skipped with an install hint when the python cannot import torch', () => {
    const dir = tmpDir();
    // python3 without its site-packages (-S): no torch, whatever this machine has installed.
    const python = path.join(dir, 'python-without-torch');
    fs.writeFileSync(python, '#!/bin/sh\nexec python3 -S "$@"\n', { mode: 0o755 });
    for (const py of [python, path.join(dir, 'no-such-python')]) {
      const r = spawnSync(process.execPath, [cli, '--suite', 'torch', '--seq', '16', '--dim', '8', '--heads', '1', '--features', '8', '--peak-ms', '10', '--out', dir, '--quiet'], {
        encoding: 'utf8',
        cwd: root,
        timeout: 60000,
        env: { ...process.env, PERFORMER_BENCH_PYTHON: py },
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('== torch ==');
      expect(r.stdout).toMatch(/skipped: torch comparison: .*; pip install torch \(CPU wheel\)/);
      expect(r.stdout).not.toMatch(/FAVOR\+ ms/);
    }
  });

  test('bad flags exit with code 2 and a message; --help exits 0', () => {
    const bad = runCli(['--seq', '1024..256']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^performer-bench: --seq: range "1024..256" goes down/);
    const unknown = runCli(['--fast']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/unknown flag --fast/);
    const help = runCli(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--seq LIST/);
    for (const flag of ['--batch', '--heads', '--dim', '--features', '--kernel', '--causal', '--threads', '--json', '--out', '--repeats', '--no-exact', '--onnx', '--numpy', '--torch', '--suite']) {
      expect(help.stdout).toContain(flag);
    }
  });
});

describe('bench:compare (builds timed call by call in one process)', () => {
  const compare = path.join(benchDir, 'compare-builds.js');
  const run = (args: string[]) => spawnSync(process.execPath, [compare, ...args], { encoding: 'utf8', cwd: root, timeout: 60000 });

  test('a build against itself: one row per build, the first build at ratio 1, the same outputs', () => {
    const binary = path.join(root, 'build', 'Release', 'performer_attention.node');
    const builds = fs.existsSync(binary) ? `current,${binary}` : 'current,current';
    const r = run(['--builds', builds, '--seq', '64', '--rounds', '3', '--modes', 'favor,exact-causal', '--heads', '2', '--dim', '8', '--features', '8']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^bench:compare: 2 builds, \w+, 1 thread\(s\), FMA peak [\d.]+ GFLOP\/s/);
    for (const mode of ['favor', 'exact-causal']) {
      const block = r.stdout.split(`\n${mode}, L = 64\n`)[1];
      expect(block).toBeDefined();
      const rows = block.split('\n').slice(1, 3);
      expect(rows[0]).toMatch(/^current\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+%\s+1\.000\s+0\.0e\+0$/);
      // The same binary loaded twice: the same bits.
      expect(rows[1]).toMatch(/\s\d+\.\d{3}\s+0\.0e\+0$/);
    }
  });

  test('a missing build or no --builds: exit 2 with the reason', () => {
    const missing = run(['--builds', 'current,/nonexistent/performer_attention.node']);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/build \/nonexistent\/performer_attention.node not found/);
    const none = run([]);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/--builds is required/);
  });
});
