// clang-format over the C++ of native/ (.clang-format at the root): `npm test` fails on any
// file the formatter would change and names it. `npm run format` fixes them.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const format = require(path.resolve(__dirname, '..', 'scripts', 'format-cxx.js')) as {
  cxxFiles(dir: string): string[];
  unformattedFiles(files?: string[]): string[];
};

test('clang-format would change no C++ file', () => {
  const files = format.cxxFiles(path.resolve(__dirname, '..', 'native'));
  expect(files.length).toBeGreaterThan(80); // core, kernels, addon and the C++ tests all found
  const unformatted = format.unformattedFiles(files);
  if (unformatted.length > 0) console.error(`clang-format: run \`npm run format\`; it would change:\n${unformatted.join('\n')}`);
  expect(unformatted).toEqual([]);
}, 120_000);

test('the check names a file that is not formatted', () => {
  // A file outside the tree with a deliberately cramped body: the check must catch it, so an
  // empty list above means the files really are formatted.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-format-'));
  try {
    const bad = path.join(dir, 'cramped.cc');
    fs.writeFileSync(bad, 'int  f(int x){return x+1;}\n');
    fs.copyFileSync(path.resolve(__dirname, '..', '.clang-format'), path.join(dir, '.clang-format'));
    expect(format.unformattedFiles([bad])).toEqual([bad]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
