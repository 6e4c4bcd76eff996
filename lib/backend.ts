/** Which kernels and how many threads the native side uses. */
import { describe, typeError } from './errors';
import { native } from './native';
import { readEnum, readInteger, readOptions } from './validate';

export type Isa = 'scalar' | 'avx2' | 'avx512';

export interface BackendInfo {
  /** The kernel set new calls use. */
  isa: Isa;
  /** Kernel sets this CPU can run, slowest first. */
  available: Isa[];
  /** Kernel sets compiled into this binary. */
  compiled: Isa[];
  /** Threads of the native pool (calls share it; concurrent calls take turns). */
  threads: number;
}

export function backendInfo(): BackendInfo {
  return native().backendInfo() as BackendInfo;
}

export interface BackendOptions {
  /** Force a kernel set (for tests and comparisons). Also: env PERFORMER_ATTENTION_ISA at load. */
  isa?: Isa;
  /** Size of the native thread pool. Also: env PERFORMER_ATTENTION_THREADS at load. */
  threads?: number;
}

/** Changes the kernel set or the thread count for calls made from now on. */
export function setBackend(options: BackendOptions): BackendInfo {
  if (options === undefined || options === null || typeof options !== 'object') {
    throw typeError(`setBackend options: expected an object, received ${describe(options)}`);
  }
  const o = readOptions<BackendOptions>(options, 'setBackend options', ['isa', 'threads']);
  if (o.isa !== undefined) {
    const isa = readEnum(o.isa, 'setBackend options.isa', 'scalar', ['scalar', 'avx2', 'avx512'] as const);
    native().setIsa(isa);
  }
  if (o.threads !== undefined) native().setThreads(readInteger(o.threads, 'setBackend options.threads', 1, 1, 1024));
  return backendInfo();
}

export interface FmaPeakOptions {
  /** Kernel set whose FMA loop to run. Default: the one in use. */
  isa?: Isa;
  /** Threads running the loop at the same time. Default 1. */
  threads?: number;
  /** How long to run. Default 200. */
  milliseconds?: number;
}

export interface FmaPeak {
  isa: Isa;
  /** Total multiply-add rate of all threads, GFLOP/s (an FMA counts as 2 flops). */
  gflops: number;
  perThread: number[];
}

/**
 * Measures this machine's float32 multiply-add peak: independent vector FMAs held
 * in registers, on `threads` threads at once. Benchmarks report achieved GFLOP/s
 * against it. Blocks the calling thread for about `milliseconds`.
 */
export function measureFmaPeak(options: FmaPeakOptions = {}): FmaPeak {
  const o = readOptions<FmaPeakOptions>(options, 'measureFmaPeak options', ['isa', 'threads', 'milliseconds']);
  const isa = readEnum(o.isa, 'measureFmaPeak options.isa', backendInfo().isa, ['scalar', 'avx2', 'avx512'] as const);
  const threads = readInteger(o.threads, 'measureFmaPeak options.threads', 1, 1, 1024);
  const milliseconds = readInteger(o.milliseconds, 'measureFmaPeak options.milliseconds', 200, 1, 60000);
  return native().measureFmaPeak({ isa, threads, milliseconds }) as FmaPeak;
}
