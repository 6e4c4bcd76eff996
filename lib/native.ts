/**
 * Loads the compiled addon. Looks, in order, at PERFORMER_ATTENTION_BINARY (a path
 * to a .node file, and then nothing else), the prebuilt binary for this platform in
 * prebuilds/ (node-gyp-build's matching), the node-gyp build (build/Release) and the
 * cmake-js build (build-cmake/Release); fails with one error that lists what was
 * tried and how to fix it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** @internal The addon's functions (arguments are validated by the TypeScript layer). */
export interface NativeAddon {
  backendInfo(): { isa: string; available: string[]; compiled: string[]; threads: number };
  setIsa(name: string): void;
  setThreads(n: number): void;
  measureFmaPeak(options: { isa: string; threads: number; milliseconds: number }): {
    isa: string;
    gflops: number;
    perThread: number[];
  };
  sampleProjection(options: {
    numFeatures: number;
    headDim: number;
    seed: number;
    orthogonal: boolean;
    normScaling: string;
    signFix?: boolean;
  }): Float32Array;
  packProjection(projection: Float32Array | null, numProjections: number, headDim: number): Float32Array;
  calibrateFeatures(
    query: Float32Array,
    key: Float32Array,
    dims: { batch: number; heads: number; queryLength: number; keyLength: number; headDim: number },
    kernel: string,
  ): { coefficients: Float64Array; basis: Float64Array | null };
  computeFeatures(x: Float32Array, rows: number, featureMap: NativeFeatureMap, logSpace: boolean): Float32Array;
  favorAttentionSync(...args: NativeAttentionArgs<NativeFavorOptions>): Float32Array;
  favorAttentionAsync(...args: NativeAttentionArgs<NativeFavorOptions>): Promise<Float32Array>;
  softmaxAttentionSync(...args: NativeAttentionArgs<NativeSoftmaxOptions>): Float32Array;
  softmaxAttentionAsync(...args: NativeAttentionArgs<NativeSoftmaxOptions>): Promise<Float32Array>;
  // The options are checked natively against the call (favor or softmax).
  favorAttentionBackwardSync(...args: NativeBackwardArgs<NativeFavorOptions | NativeSoftmaxOptions>): NativeGradients;
  favorAttentionBackwardAsync(...args: NativeBackwardArgs<NativeFavorOptions | NativeSoftmaxOptions>): Promise<NativeGradients>;
  softmaxAttentionBackwardSync(...args: NativeBackwardArgs<NativeFavorOptions | NativeSoftmaxOptions>): NativeGradients;
  softmaxAttentionBackwardAsync(...args: NativeBackwardArgs<NativeFavorOptions | NativeSoftmaxOptions>): Promise<NativeGradients>;
  runPlanSync(steps: readonly object[]): void;
  runPlanAsync(steps: readonly object[], control?: { cancel?: () => void }, atomic?: boolean): Promise<void>;
  linearPack(weight: Float32Array, inFeatures: number, outFeatures: number): Float32Array;
  /**
   * W [out, in] quantized, values still [out, in] (not packed): int8 with one scale per output
   * channel (max |row| / 127, values rounded to nearest even) or bf16 bits (scales null).
   * RangeError for non-finite weights (naming the index), wrong lengths or zero sizes.
   */
  linearQuantize(weight: Float32Array, inFeatures: number, outFeatures: number, format: 'int8'): { values: Int8Array; scales: Float32Array };
  linearQuantize(weight: Float32Array, inFeatures: number, outFeatures: number, format: 'bf16'): { values: Uint16Array; scales: null };
  linearQuantize(weight: Float32Array, inFeatures: number, outFeatures: number, format: 'int8' | 'bf16'): { values: Int8Array | Uint16Array; scales: Float32Array | null };
  /** Quantized values [out, in] packed for linear plan steps (same array type). */
  linearPackQuantized(values: Int8Array, inFeatures: number, outFeatures: number): Int8Array;
  linearPackQuantized(values: Uint16Array, inFeatures: number, outFeatures: number): Uint16Array;
  linearPackQuantized(values: Int8Array | Uint16Array, inFeatures: number, outFeatures: number): Int8Array | Uint16Array;
  favorStateFloats(featureCount: number, valueDim: number): number;
  favorStateReset(state: Float32Array, heads: number, featureCount: number, valueDim: number): void;
  pendingCalls(): number;
  pytorchFavorStateFloats(featureCount: number, valueDim: number): number;
  pytorchFavorStateReset(state: Float32Array, heads: number, featureCount: number, valueDim: number): void;
  localRingFloats(window: number, headDim: number, valueDim: number): number;
}

/** @internal */
export interface NativeFeatureMap {
  kernel: string;
  headDim: number;
  numProjections: number;
  projection: Float32Array | null;
  /** The projection as the kernels use it (packProjection), made once per map. */
  packedProjection: Float32Array;
  kernelEpsilon: number;
  /** Adaptive kernels: fixed parameter sets (0 = estimate per call), their a_k and Q. */
  adaptiveHeads?: number;
  adaptiveCoefficients?: Float64Array | null;
  adaptiveBasis?: Float64Array | null;
  /** computeFeatures: the set to use. */
  adaptiveHead?: number;
}

/** @internal */
export interface NativeDims {
  batch: number;
  heads: number;
  queryLength: number;
  keyLength: number;
  headDim: number;
  valueDim: number;
}

/** @internal */
export interface NativeFavorOptions extends NativeFeatureMap {
  causal: boolean;
  keyPadding: Uint8Array | null;
  epsilon: number;
  chunkSize: number;
  /** Causal continuation: the (batch, head) decoding states, advanced in place. */
  state?: Float32Array | null;
  /** Bidirectional, keys only (queryLength 0): absorbs them into these (batch, head) states. */
  absorbInto?: Float32Array | null;
  /** Bidirectional, queries only (keyLength 0): attends the keys absorbed in these states. */
  keysState?: Float32Array | null;
}

/** @internal */
export interface NativeSoftmaxOptions {
  causal: boolean;
  keyPadding: Uint8Array | null;
  scale: number;
}

/** @internal */
export type NativeAttentionArgs<O> = [
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  dims: NativeDims,
  options: O,
];

/** @internal Where a backward call writes its gradients. */
export interface NativeGradients {
  query: Float32Array;
  key: Float32Array;
  value: Float32Array;
  projection?: Float32Array;
}

/** @internal (q, k, v, gradOut, grads, dims, options) */
export type NativeBackwardArgs<O> = readonly [
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  gradOut: Float32Array,
  grads: NativeGradients,
  dims: NativeDims,
  options: O,
];

const root = path.resolve(__dirname, '..');

function candidates(): { file: string | null; label: string }[] {
  const override = process.env.PERFORMER_ATTENTION_BINARY;
  if (override) return [{ file: path.resolve(override), label: path.resolve(override) }];
  // Plain JavaScript shared with the install script (scripts/install.js).
  const { findPrebuild } = require(path.join(root, 'scripts', 'find-prebuild.js')) as {
    findPrebuild(dir: string): string | null;
  };
  const prebuild = findPrebuild(root);
  const build = (dir: string) => path.join(root, dir, 'Release', 'performer_attention.node');
  return [
    { file: prebuild, label: prebuild ?? path.join(root, 'prebuilds', `${process.platform}-${process.arch}`) },
    { file: build('build'), label: build('build') },
    { file: build('build-cmake'), label: build('build-cmake') },
  ];
}

function load(): NativeAddon {
  const problems: string[] = [];
  for (const { file, label } of candidates()) {
    if (file === null) {
      problems.push(`  ${label}: no prebuilt binary for this platform (prebuilds ship for linux-x64 with glibc)`);
      continue;
    }
    if (!fs.existsSync(file)) {
      problems.push(`  ${file}: not found`);
      continue;
    }
    try {
      const addon = require(file) as NativeAddon;
      const forced = process.env.PERFORMER_ATTENTION_ISA;
      if (forced) addon.setIsa(forced); // throws a RangeError naming an unavailable ISA
      return addon;
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_OUT_OF_RANGE') {
        throw new Error(
          `performer-attention: PERFORMER_ATTENTION_ISA=${process.env.PERFORMER_ATTENTION_ISA}: ` +
            `${(error as Error).message}. Unset it or use one of: ${
              (require(file) as NativeAddon).backendInfo().available.join(', ')
            }.`,
        );
      }
      problems.push(`  ${file}: ${(error as Error).message}`);
    }
  }
  throw new Error(
    'performer-attention: could not load the native addon ' +
      `(${process.platform}-${process.arch}, Node ${process.versions.node}, Node-API ${process.versions.napi}).\n` +
      `Tried:\n${problems.join('\n')}\n` +
      'Possible causes and fixes:\n' +
      '  - no prebuilt binary fits this platform and the install did not build one (install scripts disabled,\n' +
      '    --ignore-scripts, or the build failed): run `npm rebuild performer-attention` in your project (or\n' +
      '    `npm run build` in a checkout); building needs a C++17 compiler, make and python3, and the Node.js\n' +
      '    headers (found next to the running node binary);\n' +
      '  - the binary was built for another platform, C library or Node-API version than this one (for example\n' +
      '    node_modules copied from another machine): run `npm rebuild performer-attention` here;\n' +
      '  - point PERFORMER_ATTENTION_BINARY at a performer_attention.node you built yourself.',
  );
}

let cached: NativeAddon | undefined;

/** @internal The addon, loaded on first use. */
export function native(): NativeAddon {
  if (cached === undefined) cached = load();
  return cached;
}
