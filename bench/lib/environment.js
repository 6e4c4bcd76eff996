'use strict';
// Where a report was made: the machine, and the source commit when run from a
// checkout.
const os = require('node:os');

/** The package's git commit when run from a checkout (read-only git commands). */
function sourceInfo() {
  const root = require('node:path').join(__dirname, '..', '..');
  const git = (args) => {
    const r = require('node:child_process').spawnSync('git', args, { cwd: root, encoding: 'utf8', timeout: 10000 });
    return r.status === 0 ? r.stdout.trim() : null;
  };
  const commit = git(['rev-parse', '--short', 'HEAD']);
  if (!commit) return null;
  const dirty = git(['status', '--porcelain', '--untracked-files=no', '--', 'lib', 'native']);
  return { commit, nativeOrLibModified: Boolean(dirty) };
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    cpu: cpus.length ? cpus[0].model : 'unknown',
    logicalCpus: cpus.length,
    availableParallelism: os.availableParallelism ? os.availableParallelism() : cpus.length,
    totalMemoryBytes: os.totalmem(),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadAverage: os.loadavg(),
  };
}

module.exports = { machineInfo, sourceInfo };
