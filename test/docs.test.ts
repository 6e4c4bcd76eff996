// The API reference (npm run docs, TypeDoc) builds with every public name documented:
// typedoc.json turns a missing comment (validation.notDocumented) into an error.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

test('TypeDoc generates the API reference with no undocumented public name', () => {
  const root = path.resolve(__dirname, '..');
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-docs-'));
  try {
    const typedoc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--out', out], { cwd: root, encoding: 'utf8' });
    expect(typedoc.stdout + typedoc.stderr).not.toMatch(/warning|error/i);
    expect(typedoc.status).toBe(0);
    for (const name of ['favorAttention', 'softmaxAttentionSync', 'backendInfo', 'tensor'])
      expect(fs.existsSync(path.join(out, 'functions', `${name}.html`))).toBe(true);
    expect(fs.existsSync(path.join(out, 'classes', 'FeatureMap.html'))).toBe(true);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
