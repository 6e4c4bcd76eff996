// Every ```js block of the README and docs/*.md runs as a program, as a reader would run it:
// in an empty folder holding the files the snippets name (model.safetensors and config.json:
// the trained performer-pytorch test model; bert.safetensors: a 2-layer BERT-style encoder),
// with require('performer-attention') resolved to this checkout. A block that is not a whole
// program fails here. Outputs are checked by the tests of each feature (readme.test.ts and
// others); this file checks that no documented snippet is stale.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ROOT as root, runSnippet } from './helpers/doc-snippets';
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
  // Throws (failing the test with the snippet's stderr) on a non-zero exit or a timeout.
  runSnippet(snippet.code);
}, 150_000);
