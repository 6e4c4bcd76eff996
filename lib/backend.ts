/** Which kernels and how many threads the native side uses. */
import { describe, typeError } from './errors';
import { workspaceStats, setWorkspaceLimit } from './workspace';
import { native } from './native';
import { readEnum, readInteger, readOptions } from './validate';

/** A kernel set: portable scalar code, AVX2 + FMA, or AVX-512 (F, DQ, VL). */
export type Isa = 'scalar' | 'avx2' | 'avx512';

/** What {@link backendInfo} and {@link setBackend} return. */
export interface BackendInfo {
  /** The kernel set new calls use. */
  isa: Isa;
  /** Kernel sets this CPU can run, slowest first. */
  available: Isa[];
  /** Kernel sets compiled into this binary. */
  compiled: Isa[];
  /** Threads of the native pool (calls share it; concurrent calls take turns). */
  threads: number;
  /** Layer temporaries kept between calls. */
  workspace: {
    /** Bytes held now. */
    bytes: number;
    /** The bound (setBackend's workspaceLimit). */
    limitBytes: number;
  };
}

/** The kernel set in use, those this CPU can run and this binary has, and the thread pool size. Loads the addon on first use (an Error listing the causes and fixes if it cannot be loaded). */
export function backendInfo(): BackendInfo {
  return { ...native().backendInfo(), workspace: workspaceStats() } as BackendInfo;
}

/** Options of {@link setBackend}; both optional, omitted ones are left as they are. */
export interface BackendOptions {
  /** Force a kernel set (for tests and comparisons). Also: env PERFORMER_ATTENTION_ISA at load. */
  isa?: Isa;
  /** Size of the native thread pool. Also: env PERFORMER_ATTENTION_THREADS at load. */
  threads?: number;
  /**
   * Bytes of layer temporaries kept between calls, so that passes of shapes seen before
   * touch no fresh pages. Default 256 MiB; 0 keeps none (each pass allocates anew).
   */
  workspaceLimit?: number;
}

/**
 * Changes the kernel set or the thread count for calls made from now on.
 * @returns The backend after the change.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`) when `options` is not an object; TypeError
 *   (`ERR_INVALID_ARG_VALUE`) for an unknown option; RangeError (`ERR_INVALID_ARG_VALUE`) for
 *   an unknown kernel set; RangeError (`ERR_OUT_OF_RANGE`) for a kernel set this CPU cannot
 *   run or `threads` outside 1 … 1024.
 */
export function setBackend(options: BackendOptions): BackendInfo {
  if (options === undefined || options === null || typeof options !== 'object') {
    throw typeError(`setBackend options: expected an object, received ${describe(options)}`);
  }
  const o = readOptions<BackendOptions>(options, 'setBackend options', ['isa', 'threads', 'workspaceLimit']);
  if (o.isa !== undefined) {
    const isa = readEnum(o.isa, 'setBackend options.isa', 'scalar', ['scalar', 'avx2', 'avx512'] as const);
    native().setIsa(isa);
  }
  if (o.threads !== undefined) native().setThreads(readInteger(o.threads, 'setBackend options.threads', 1, 1, 1024));
  if (o.workspaceLimit !== undefined) {
    setWorkspaceLimit(readInteger(o.workspaceLimit, 'setBackend options.workspaceLimit', 0, 0, Number.MAX_SAFE_INTEGER));
  }
  return backendInfo();
}

/** Options of {@link measureFmaPeak}. */
export interface FmaPeakOptions {
  /** Kernel set whose FMA loop to run. Default: the one in use. */
  isa?: Isa;
  /** Threads running the loop at the same time. Default 1. */
  threads?: number;
  /** How long to run. Default 200. */
  milliseconds?: number;
}

/** What {@link measureFmaPeak} measured. */
export interface FmaPeak {
  /** The kernel set that ran. */
  isa: Isa;
  /** Total multiply-add rate of all threads, GFLOP/s (an FMA counts as 2 flops). */
  gflops: number;
  /** The rate of each thread, GFLOP/s; `threads` entries. */
  perThread: number[];
}

/**
 * Measures this machine's float32 multiply-add peak: independent vector FMAs held
 * in registers, on `threads` threads at once. Benchmarks report achieved GFLOP/s
 * against it. Blocks the calling thread for about `milliseconds`.
 * @throws RangeError (`ERR_OUT_OF_RANGE`) for `threads` outside 1 … 1024 or `milliseconds`
 *   outside 1 … 60000; TypeError for an unknown option, RangeError for an unknown kernel set.
 */
export function measureFmaPeak(options: FmaPeakOptions = {}): FmaPeak {
  const o = readOptions<FmaPeakOptions>(options, 'measureFmaPeak options', ['isa', 'threads', 'milliseconds']);
  const isa = readEnum(o.isa, 'measureFmaPeak options.isa', backendInfo().isa, ['scalar', 'avx2', 'avx512'] as const);
  const threads = readInteger(o.threads, 'measureFmaPeak options.threads', 1, 1, 1024);
  const milliseconds = readInteger(o.milliseconds, 'measureFmaPeak options.milliseconds', 200, 1, 60000);
  return native().measureFmaPeak({ isa, threads, milliseconds }) as FmaPeak;
}

/**
 * Async calls (attention functions, layer passes and steps) queued or running on the
 * native worker threads and not yet settled, in this process. A service can export it
 * as its native queue length.
 */
export function pendingCalls(): number {
  return native().pendingCalls();
}
