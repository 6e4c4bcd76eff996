/**
 * Loads the compiled addon. Looks, in order, at PERFORMER_ATTENTION_BINARY (a path
 * to a .node file), the node-gyp build (build/Release) and the cmake-js build
 * (build-cmake/Release); fails with one error that lists what was tried and how
 * to fix it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** @internal The addon's functions (arguments are validated by the TypeScript layer). */
export interface NativeAddon {
  backendInfo(): { isa: string; available: string[]; compiled: string[]; threads: number };
  setIsa(name: string): void;
  setThreads(n: number): void;
  measureFmaPeak(options: { isa?: string; threads?: number; milliseconds?: number }): {
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
  computeFeatures(x: Float32Array, rows: number, featureMap: NativeFeatureMap, logSpace: boolean): Float32Array;
  favorAttentionSync(...args: NativeAttentionArgs<NativeFavorOptions>): Float32Array;
  favorAttentionAsync(...args: NativeAttentionArgs<NativeFavorOptions>): Promise<Float32Array>;
  softmaxAttentionSync(...args: NativeAttentionArgs<NativeSoftmaxOptions>): Float32Array;
  softmaxAttentionAsync(...args: NativeAttentionArgs<NativeSoftmaxOptions>): Promise<Float32Array>;
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

function candidates(): string[] {
  const root = path.resolve(__dirname, '..');
  const list = [
    path.join(root, 'build', 'Release', 'performer_attention.node'),
    path.join(root, 'build-cmake', 'Release', 'performer_attention.node'),
  ];
  const override = process.env.PERFORMER_ATTENTION_BINARY;
  return override ? [path.resolve(override)] : list;
}

function load(): NativeAddon {
  const problems: string[] = [];
  for (const file of candidates()) {
    if (!fs.existsSync(file)) {
      problems.push(`  ${file}: not found`);
      continue;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
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
    'performer-attention: could not load the native addon.\n' +
      `Tried:\n${problems.join('\n')}\n` +
      'Possible fixes:\n' +
      '  - build it: run `npm rebuild performer-attention` in your project (or `npm run build` in a checkout);\n' +
      '    building needs a C++17 compiler, make and python3, and the Node.js headers (node-gyp finds them\n' +
      '    next to the running node binary);\n' +
      `  - the addon was built for another platform or Node-API version than this one (${process.platform}-${process.arch},` +
      ` Node ${process.versions.node}): rebuild it here;\n` +
      '  - point PERFORMER_ATTENTION_BINARY at a performer_attention.node you built yourself.',
  );
}

let cached: NativeAddon | undefined;

/** @internal The addon, loaded on first use. */
export function native(): NativeAddon {
  if (cached === undefined) cached = load();
  return cached;
}
