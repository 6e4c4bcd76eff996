// Runs the type tests of the public API (test/types/api.test-d.ts) with tsc, so that
// npm test counts them: a wrong type, or an expected error that is no longer one, fails.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

test('the public API type tests compile with their expected errors', () => {
  const root = path.resolve(__dirname, '..');
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'test/types/tsconfig.json'], {
    cwd: root,
    encoding: 'utf8',
  });
  expect(tsc.stdout + tsc.stderr).toBe('');
  expect(tsc.status).toBe(0);
});
