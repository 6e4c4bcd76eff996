// The README's example and the demo run as users run them: as separate Node
// processes against the built package (dist/ and the addon).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');

function readmeExample(): string {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.split('\n## Example\n')[1];
  const match = section && /```js\n([\s\S]*?)```/.exec(section);
  if (!match) throw new Error('README.md has no ```js block under "## Example"');
  return match[1];
}

test('the README example runs and prints FAVOR+ and exact outputs of the documented shape', () => {
  const code = readmeExample().replace(/require\('performer-attention'\)/g, `require(${JSON.stringify(root)})`);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pa-readme-')), 'example.js');
  fs.writeFileSync(file, code);
  const output = execFileSync(process.execPath, [file], { encoding: 'utf8' });
  const match = /^\[ 1, 4, 512, 64 \] (-?\d+\.\d{4}) (-?\d+\.\d{4})\n$/.exec(output);
  expect(match).not.toBeNull();
  // The two outputs estimate the same quantity: both are averages of values in [-0.35, 0.35].
  for (const value of [Number(match![1]), Number(match![2])]) expect(Math.abs(value)).toBeLessThan(0.35);
});

test('the demo runs and reports times, speed-up and a small relative error', () => {
  const output = execFileSync(process.execPath, [path.join(root, 'examples', 'demo.js'), '--seq', '256', '--features', '128'], {
    encoding: 'utf8',
  });
  const rows = output.split('\n').filter((line) => /FAVOR\+ .* ms .* exact .* ms/.test(line));
  expect(rows).toHaveLength(2);
  for (const row of rows) {
    const error = Number(/relative error (\d+\.\d+)/.exec(row)![1]);
    expect(error).toBeGreaterThan(0);
    expect(error).toBeLessThan(0.5);
  }
});

test('the README layers example runs: encoder, safetensors round trip, decoding and a parked state', () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.split('\n## Layers\n')[1];
  const match = section && /```js\n([\s\S]*?)```/.exec(section);
  expect(match).not.toBeNull();
  const code = match![1].replace(/require\('performer-attention'\)/g, `require(${JSON.stringify(root)})`);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pa-readme-')), 'layers.js');
  fs.writeFileSync(file, code);
  const output = execFileSync(process.execPath, [file], { encoding: 'utf8' });
  expect(output).toBe('[ 1, 1024, 256 ] [ 1, 1024, 256 ] [ 1, 1, 256 ] 101\n');
});
