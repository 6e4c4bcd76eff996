// Runs one seed of a fuzz script in a child process (`node -r ts-register <script> <seed>
// <count>`), so that a crash or a hang fails the test and names the last case started
// instead of taking jest down. The script writes `case N` to stderr before each case and
// one JSON summary line to stdout at the end.
import { spawn } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

export interface FuzzSummary {
  seed: number;
  cases: number;
  results: number;
  referenceChecks: number;
  errors: Record<string, number>;
  failures: string[];
}

export interface FuzzRun<S> {
  summary: S | null;
  status: number | null;
  signal: string | null;
  lastCase: string;
  stderr: string;
}

/** What a child process left: its exit, its stdout, the tail of its stderr, and its last stdout line parsed as JSON. */
export interface ChildRun<S> {
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** The last line of stdout as JSON, or null when it is not. */
  last: S | null;
}

/** `node ...args` from the repository root, killed after timeoutMs (stderr kept to its last 100 kB or so). */
export function runNodeChild<S>(args: string[], timeoutMs: number, env: NodeJS.ProcessEnv = process.env): Promise<ChildRun<S>> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      if (stderr.length > 1e6) stderr = stderr.slice(-1e5);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      let last: S | null = null;
      try {
        last = JSON.parse(stdout.trim().split('\n').pop() ?? '') as S;
      } catch {
        last = null;
      }
      resolve({ status, signal, stdout, stderr, last });
    });
  });
}

export async function runFuzzSeed<S = FuzzSummary>(script: string, seed: number, count: number, timeoutMs: number): Promise<FuzzRun<S>> {
  const run = await runNodeChild<S>(['-r', './test/helpers/ts-register.js', script, String(seed), String(count)], timeoutMs, {
    ...process.env,
    PERFORMER_ATTENTION_THREADS: '2',
  });
  const cases = run.stderr.match(/^case \d+$/gm);
  const lastCase = cases ? cases[cases.length - 1] : 'none';
  return { summary: run.last, status: run.status, signal: run.signal, lastCase, stderr: run.stderr.replace(/^case \d+\n/gm, '').slice(-3000) };
}

/** Adds up the summaries of several seeds after checking that every child exited cleanly with no failures. */
export function mergeRuns(seeds: number[], runs: FuzzRun<FuzzSummary>[]): FuzzSummary & { seeds: number[] } {
  const total = { seed: 0, seeds, cases: 0, results: 0, referenceChecks: 0, errors: {} as Record<string, number>, failures: [] as string[] };
  for (const [i, run] of runs.entries()) {
    // A crash, hang or uncaught error names the seed and the last case started.
    const how = `seed ${seeds[i]}: exit ${run.status} ${run.signal ?? ''} during ${run.lastCase}\n${run.stderr}`;
    if (run.status !== 0 || run.summary === null) throw new Error(how);
    total.failures.push(...run.summary.failures);
    total.cases += run.summary.cases;
    total.results += run.summary.results;
    total.referenceChecks += run.summary.referenceChecks;
    for (const [key, n] of Object.entries(run.summary.errors)) total.errors[key] = (total.errors[key] ?? 0) + n;
  }
  return total;
}
