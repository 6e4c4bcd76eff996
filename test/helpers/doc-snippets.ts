// The documents' ```js blocks as programs: found by heading, run as a reader runs them (a
// separate Node process, require('performer-attention') resolved to this checkout) in a
// folder holding the files the snippets name.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..');

/** The first ```js block of `file` (relative to the root) after the line `heading`, or of the whole file. */
export function docBlock(file: string, heading?: string): string {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const section = heading === undefined ? text : text.startsWith(`${heading}\n`) ? text : text.split(`\n${heading}\n`)[1];
  const match = section && /```js\n([\s\S]*?)```/.exec(section);
  if (!match) throw new Error(`${file} has no \`\`\`js block under "${heading}"`);
  return match[1];
}

/**
 * A new folder with the files the snippets name: model.safetensors and config.json (the
 * trained performer-pytorch test model), bert.safetensors (a 2-layer BERT-style encoder).
 */
export function snippetFolder(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-docs-'));
  const pp = path.join(ROOT, 'test', 'fixtures', 'performer-pytorch');
  fs.copyFileSync(path.join(pp, 'lm_trained_small.state_dict.safetensors'), path.join(dir, 'model.safetensors'));
  const cases = JSON.parse(fs.readFileSync(path.join(pp, 'cases.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cases.lm_trained_small.ctor));
  fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', 'layers', 'bert_2layers.safetensors'), path.join(dir, 'bert.safetensors'));
  return dir;
}

/** Runs `code` as snippet.js in a snippetFolder(); returns its stdout, throws on a non-zero exit or a timeout. */
export function runSnippet(code: string): string {
  const dir = snippetFolder();
  try {
    const file = path.join(dir, 'snippet.js');
    fs.writeFileSync(file, code.replace(/require\('performer-attention'\)/g, `require(${JSON.stringify(ROOT)})`));
    return execFileSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
