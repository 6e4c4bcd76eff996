'use strict';
// Runs one measurement in a child process and returns its result object.
const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');

const WORKER = path.join(__dirname, 'worker.js');
const NUMPY_SCRIPT = path.join(__dirname, '..', 'numpy_attention.py');
const TORCH_SCRIPT = path.join(__dirname, '..', 'torch_attention.py');
const MARK = '@@RESULT ';

function runChild(command, args, env) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], env });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s) => {
      out += s;
    });
    child.on('error', (e) => resolve({ ok: false, error: `could not start ${command}: ${e.message}` }));
    child.on('close', (code, signal) => {
      const line = out.split('\n').find((l) => l.startsWith(MARK));
      if (line) {
        try {
          resolve(JSON.parse(line.slice(MARK.length)));
          return;
        } catch (e) {
          resolve({ ok: false, error: `unreadable result from ${path.basename(args[0])}: ${e.message}` });
          return;
        }
      }
      const how = signal ? `killed by ${signal}${signal === 'SIGKILL' ? ' (out of memory?)' : ''}` : `exit code ${code}`;
      resolve({ ok: false, error: `${path.basename(args[0] ?? command)} ended without a result (${how})${out.trim() ? `: ${out.trim().slice(-500)}` : ''}` });
    });
  });
}

/** A measurement in a fresh Node.js process (bench/lib/worker.js). */
function runWorker(spec) {
  return runChild(process.execPath, [WORKER, JSON.stringify(spec)], process.env);
}

/**
 * The environment of the python children (numpy, torch): OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
 * removed (let OpenBLAS pick its kernels for this CPU), thread counts pinned to
 * the library's.
 */
function numpyEnv(threads, base = process.env) {
  const env = { ...base };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  if (threads) {
    env.OPENBLAS_NUM_THREADS = String(threads);
    env.OMP_NUM_THREADS = String(threads);
  }
  return env;
}

function pythonCommand() {
  return process.env.PERFORMER_BENCH_PYTHON || 'python3';
}

/**
 * { ok, version, python, command } or { ok: false, reason } for the python
 * (PERFORMER_BENCH_PYTHON, else python3) importing `module`; hint ends the reason.
 */
function probePython(module, hint = '') {
  const py = pythonCommand();
  const r = spawnSync(py, ['-c', `import ${module}, sys; print(${module}.__version__, sys.version.split()[0])`], {
    encoding: 'utf8',
    timeout: 60000,
    env: numpyEnv(null),
  });
  const tail = hint ? `; ${hint}` : '';
  if (r.error) return { ok: false, reason: `${py} not found (${r.error.code ?? r.error.message})${tail}` };
  if (r.status !== 0) return { ok: false, reason: `${module} is not importable by ${py}: ${(r.stderr || '').trim().split('\n').pop()}${tail}` };
  const [version, python] = r.stdout.trim().split(/\s+/);
  return { ok: true, version, python, command: py };
}

/** { ok, numpy, python } or { ok: false, reason } for python3 with numpy. */
function probeNumpy() {
  const p = probePython('numpy');
  return p.ok ? { ok: true, numpy: p.version, python: p.python, command: p.command } : p;
}

/** { ok, torch, python } or { ok: false, reason } for python3 with torch. */
function probeTorch() {
  const p = probePython('torch', 'pip install torch (CPU wheel), see docs/benchmark.md');
  return p.ok ? { ok: true, torch: p.version, python: p.python, command: p.command } : p;
}

/** A measurement by bench/numpy_attention.py. */
function runNumpy(spec, threads) {
  return runChild(pythonCommand(), [NUMPY_SCRIPT, JSON.stringify(spec)], numpyEnv(threads));
}

/** A measurement by bench/torch_attention.py (which also calls torch.set_num_threads). */
function runTorch(spec, threads) {
  return runChild(pythonCommand(), [TORCH_SCRIPT, JSON.stringify(spec)], numpyEnv(threads));
}

module.exports = { runWorker, runNumpy, probeNumpy, runTorch, probeTorch, numpyEnv, WORKER };
