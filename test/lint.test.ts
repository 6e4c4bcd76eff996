// ESLint over the whole tree (eslint.config.mjs): `npm test` fails on any lint error or
// warning, and prints each one as file:line rule message.
//
// ESLint's Node API runs in a child process: it loads its config and some of its own modules
// with import(), which jest's module sandbox only allows under --experimental-vm-modules.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');

const LINT = `
const path = require('node:path');
const { ESLint } = require('eslint');
(async () => {
  const results = await new ESLint({ cwd: process.cwd() }).lintFiles(['.']);
  const problems = results.flatMap((r) =>
    r.messages.map((m) => path.relative(process.cwd(), r.filePath) + ':' + (m.line ?? 0) + ' ' + (m.ruleId ?? '(no rule)') + ' ' + m.message),
  );
  const counts = results.reduce((n, r) => n + r.errorCount + r.fatalErrorCount + r.warningCount, 0);
  process.stdout.write(JSON.stringify({ files: results.length, problems, counts }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
`;

test('eslint reports no errors and no warnings', () => {
  const child = spawnSync(process.execPath, ['-e', LINT], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (child.status !== 0) throw new Error(`eslint could not run (status ${child.status}):\n${child.stderr}`);
  const { files, problems, counts } = JSON.parse(child.stdout) as { files: number; problems: string[]; counts: number };
  if (problems.length > 0) console.error(`eslint: ${problems.length} problem(s)\n${problems.join('\n')}`);
  expect(problems).toEqual([]);
  expect(counts).toBe(0);
  expect(files).toBeGreaterThan(100); // lib/, test/ and the JavaScript programs were all linted
}, 180_000);
