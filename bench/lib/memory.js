'use strict';
// Peak resident memory of this process around one call. On Linux the kernel's
// high-water mark (VmHWM in /proc/self/status) is reset to the current RSS by
// writing "5" to /proc/self/clear_refs, so one process can measure several
// calls. Elsewhere the fallback is getrusage's maxRSS, which cannot be reset:
// then only the first measurement of a process is meaningful.
const fs = require('node:fs');

function readProcStatus() {
  try {
    const text = fs.readFileSync('/proc/self/status', 'utf8');
    const field = (name) => {
      const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
      return m ? Number(m[1]) * 1024 : null;
    };
    const rss = field('VmRSS');
    const hwm = field('VmHWM');
    return rss === null || hwm === null ? null : { rss, hwm };
  } catch {
    return null;
  }
}

let canReset = null;

/** Resets the peak to the current RSS; false when the platform cannot. */
function resetPeak() {
  if (canReset === false) return false;
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    canReset = true;
  } catch {
    canReset = false;
  }
  return canReset;
}

/** { rss, peak } in bytes, and how they were read. */
function snapshot() {
  const proc = readProcStatus();
  if (proc) return { rss: proc.rss, peak: proc.hwm, method: 'proc' };
  return { rss: process.memoryUsage.rss(), peak: process.resourceUsage().maxRSS * 1024, method: 'rusage' };
}

/**
 * Runs fn (sync or async) and returns { result, extraBytes, rssBefore, method }:
 * the process's peak RSS during the call minus its RSS just before.
 */
async function measurePeak(fn) {
  const reset = resetPeak();
  const before = snapshot();
  const result = await fn();
  const after = snapshot();
  const base = reset ? before.rss : Math.max(before.rss, before.peak);
  return {
    result,
    extraBytes: Math.max(0, after.peak - base),
    rssBefore: before.rss,
    method: reset ? 'VmHWM (reset through /proc/self/clear_refs)' : before.method === 'proc' ? 'VmHWM (no reset)' : 'getrusage maxRSS',
  };
}

/** Synchronous variant of measurePeak for synchronous calls. */
function measurePeakSync(fn) {
  const reset = resetPeak();
  const before = snapshot();
  const result = fn();
  const after = snapshot();
  const base = reset ? before.rss : Math.max(before.rss, before.peak);
  return { result, extraBytes: Math.max(0, after.peak - base), rssBefore: before.rss, method: reset ? 'VmHWM' : 'maxRSS' };
}

module.exports = { measurePeak, measurePeakSync, resetPeak, snapshot };
