// Every ```js block of the README and docs/*.md runs as a program, as a reader would run it:
// in an empty folder holding the files the snippets name (model.safetensors and config.json:
// the trained performer-pytorch test model; bert.safetensors: a 2-layer BERT-style encoder),
// with require('performer-attention') resolved to this checkout. A block that is not a whole
// program fails here. Outputs are checked by the tests of each feature (readme.test.ts and
// others); this file checks that no documented snippet is stale.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const documents = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

function jsBlocks(file: string): { name: string; code: string }[] {
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const blocks: { name: string; code: string }[] = [];
  for (const match of text.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)) {
    if (match[1] !== 'js' && match[1] !== 'javascript') continue;
    const line = text.slice(0, match.index).split('\n').length;
    blocks.push({ name: `${file}:${line}`, code: match[2] });
  }
  return blocks;
}

const snippets = documents.flatMap(jsBlocks);

function folder(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-docs-'));
  const pp = path.join(root, 'test', 'fixtures', 'performer-pytorch');
  fs.copyFileSync(path.join(pp, 'lm_trained_small.state_dict.safetensors'), path.join(dir, 'model.safetensors'));
  const cases = JSON.parse(fs.readFileSync(path.join(pp, 'cases.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cases.lm_trained_small.ctor));
  fs.copyFileSync(path.join(root, 'test', 'fixtures', 'layers', 'bert_2layers.safetensors'), path.join(dir, 'bert.safetensors'));
  return dir;
}

test('the documents have the snippets this test is meant to run', () => {
  // README: install, example, performer-pytorch, fine-tuning; docs: at least the layers,
  // API, performer-pytorch and training ones.
  expect(snippets.filter((s) => s.name.startsWith('README.md')).length).toBeGreaterThanOrEqual(4);
  for (const doc of ['docs/api.md', 'docs/layers.md', 'docs/performer-pytorch.md', 'docs/training.md']) {
    expect(snippets.some((s) => s.name.startsWith(`${doc}:`))).toBe(true);
  }
  // Only js blocks are programs: a ts block would be skipped, so none may hide there.
  for (const doc of documents) expect(fs.readFileSync(path.join(root, doc), 'utf8')).not.toMatch(/^```(ts|typescript)$/m);
});

test.each(snippets.map((s) => [s.name, s] as const))('%s runs', (_name, snippet) => {
  const dir = folder();
  try {
    const code = snippet.code.replace(/require\('performer-attention'\)/g, `require(${JSON.stringify(root)})`);
    const file = path.join(dir, 'snippet.js');
    fs.writeFileSync(file, code);
    // Throws (failing the test with the snippet's stderr) on a non-zero exit or a timeout.
    execFileSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 150_000);
