"""Timing and peak-memory helpers shared by the python baselines of performer-bench
(numpy_attention.py, torch_attention.py); standard library only.

A measurement is a warm-up call followed by N timed calls (N adapted to the run time,
at least 3, unless the spec gives repeats); the peak extra memory is the high-water
mark (VmHWM, reset through /proc/self/clear_refs) during the warm-up call minus the
resident size before it, with the inputs already allocated.
"""
import json
import math
import sys
import time


def read_status():
    try:
        with open('/proc/self/status') as f:
            text = f.read()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        key, _, rest = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
            vals[key] = int(rest.split()[0]) * 1024
    return vals if len(vals) == 2 else None


def reset_peak():
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def measure_peak(fn):
    reset = reset_peak()
    before = read_status()
    result = fn()
    after = read_status()
    if before is None or after is None:
        return result, None
    base = before['VmRSS'] if reset else max(before['VmRSS'], before['VmHWM'])
    return result, max(0, after['VmHWM'] - base)


def read_spec(argv):
    """The spec (argv[1], JSON) and its shape: spec, B, H, L, d, Dv, m, causal."""
    spec = json.loads(argv[1])
    d = spec['headDim']
    return (spec, spec['batch'], spec['heads'], spec['L'], d, spec.get('valueDim', d),
            spec.get('features', 256), bool(spec.get('causal', False)))


def time_calls(call, spec, name):
    """Warm-up (with the memory peak), then the timed calls; the fields of the result."""
    t0 = time.perf_counter()
    _, extra = measure_peak(call)
    first_ms = (time.perf_counter() - t0) * 1000
    if spec.get('repeats'):
        runs = spec['repeats']
    else:
        target = spec.get('targetMs', 1000)
        runs = max(3, min(50, math.ceil(target / max(first_ms, 1e-3))))
    times = []
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for r in range(runs):
        t = time.perf_counter()
        call()
        ms = (time.perf_counter() - t) * 1000
        times.append(ms)
        if not spec.get('quiet') and (ms > 2000 or first_ms > 2000):
            sys.stderr.write(f'      {name} L={spec["L"]}: run {r + 1}/{runs} {ms / 1000:.2f} s\n')
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {
        'ok': True,
        'firstMs': first_ms,
        'times': times,
        'extraBytes': extra,
        'coresUsed': cpu / wall if wall > 0 else None,
    }


def print_result(result):
    sys.stdout.write('@@RESULT ' + json.dumps(result) + '\n')
