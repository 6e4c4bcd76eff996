// Runs the type tests of the public API (test/types/api.test-d.ts) with tsc, so that
// npm test counts them: a wrong type, or an expected error that is no longer one, fails.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
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

// The shipped declarations (tsc's .d.ts output, as in the package) must hold only the public
// API: members tagged @internal are stripped, and what remains type-checks on its own.
test('the emitted .d.ts files hide internal members and are self-consistent', () => {
  const root = path.resolve(__dirname, '..');
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-dts-'));
  try {
    const tscBin = require.resolve('typescript/bin/tsc');
    const emit = spawnSync(process.execPath, [tscBin, '-p', 'tsconfig.json', '--emitDeclarationOnly', '--sourceMap', 'false', '--outDir', path.join(out, 'dist')], { cwd: root, encoding: 'utf8' });
    expect(emit.stdout + emit.stderr).toBe('');
    fs.writeFileSync(
      path.join(out, 'consumer.ts'),
      [
        "import { MultiHeadAttention, TransformerDecoder, PerformerLM, FeatureMap, type DecodingState, type PerformerLMState } from './dist/index';",
        "const mha = new MultiHeadAttention({ modelDim: 8, numHeads: 2, causal: true });",
        'const state: DecodingState = mha.createStateSync(1);',
        'const position: number = state.position;',
        'void position;',
        '// @ts-expect-error: internal',
        'void state.busy;',
        '// @ts-expect-error: internal',
        "void state.array('x');",
        '// @ts-expect-error: internal',
        'void mha.planMemoryState;',
        '// @ts-expect-error: internal',
        'void mha.gradientSet;',
        '// @ts-expect-error: internal',
        'void new TransformerDecoder({ modelDim: 8, numHeads: 2, numLayers: 1 }).selfStates;',
        '// @ts-expect-error: internal',
        'void new FeatureMap({ headDim: 4 }).nativeSpec;',
        'declare const lmState: PerformerLMState;',
        '// @ts-expect-error: internal',
        'void lmState.appendTokens;',
        'declare const lm: PerformerLM;',
        'void lm.createStateSync;',
      ].join('\n'),
    );
    const check = spawnSync(process.execPath, [tscBin, '--noEmit', '--strict', '--skipLibCheck', 'false', '--types', 'node', '--typeRoots', path.join(root, 'node_modules/@types'), path.join(out, 'consumer.ts')], { cwd: root, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
