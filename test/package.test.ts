// The package as users get it: `npm pack` (prepack builds the prebuild with prebuildify),
// then an install of the tarball into an empty project with --offline and no compiler,
// make or python on PATH, then the README's examples from CommonJS and ES modules and a
// TypeScript check against the installed types.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-package-'));
const project = path.join(work, 'project');
const bin = path.join(work, 'bin');
const installed = path.join(project, 'node_modules', 'performer-attention');
let tarball = '';

// The outer `npm test` exports npm_config_* and lifecycle variables; the inner npm must
// behave as a user's would, so none are passed on.
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(key) && key !== 'INIT_CWD' && key !== 'NODE_OPTIONS') env[key] = value;
  }
  return { ...env, ...extra };
}
const noCompilerEnv = () => cleanEnv({ PATH: bin });

function run(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): string {
  return execFileSync(file, args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function readmeBlock(heading: string): string {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.split(`\n## ${heading}\n`)[1];
  const match = section && /```js\n([\s\S]*?)```/.exec(section);
  if (!match) throw new Error(`README.md has no \`\`\`js block under "## ${heading}"`);
  return match[1];
}
// The same code as an ES module: `const { a, b } = require('x')` becomes `import { a, b } from 'x'`.
const toEsm = (code: string) =>
  code.replace(/const (\{[^}]*\}) = require\('performer-attention'\);/, "import $1 from 'performer-attention';");

beforeAll(() => {
  // Pack a copy of the checkout so that prebuildify's rebuild does not touch this
  // checkout's build/ while other tests use it.
  const copy = path.join(work, 'src');
  const skip = new Set(['node_modules', 'build', 'build-cmake', 'dist', 'prebuilds', 'results', 'docs', '.git']);
  fs.cpSync(root, copy, { recursive: true, filter: (src) => !skip.has(path.relative(root, src).split(path.sep)[0]) });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'));
  const npmCli = fs.realpathSync(run('sh', ['-c', 'command -v npm'], root, process.env).trim());
  const packed = run(npmCli, ['pack', '--silent', '--pack-destination', work], copy, cleanEnv());
  tarball = path.join(work, packed.trim().split('\n').pop()!);

  // PATH: node, npm and sh only.
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(npmCli, path.join(bin, 'npm'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  // The offline install needs the dependencies' metadata in npm's cache, and `npm ci` caches
  // only their tarballs: add them first (from the registry; the install itself stays offline).
  const { dependencies } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  run(npmCli, ['cache', 'add', ...Object.entries(dependencies).map(([name, range]) => `${name}@${range}`)], work, cleanEnv());
  run(path.join(bin, 'npm'), ['install', '--offline', '--no-audit', '--no-fund', tarball], project, noCompilerEnv());
}, 300_000);

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

test('no compiler, make or python is reachable on the install PATH', () => {
  const found = run('/bin/sh', ['-c', 'for c in cc c++ gcc g++ clang make python3 node-gyp; do command -v $c; done; true'], project, noCompilerEnv());
  expect(found.trim()).toBe('');
});

test('the tarball is small and ships the prebuild, dist, the ESM entry and the sources, not tests or maps', () => {
  expect(fs.statSync(tarball).size).toBeLessThan(1024 * 1024);
  const files = run('tar', ['tzf', tarball], work, process.env).trim().split('\n');
  expect(files).toContain(`package/prebuilds/${process.platform}-${process.arch}/performer-attention.glibc.node`);
  for (const file of ['dist/index.js', 'dist/index.d.ts', 'esm/index.mjs', 'binding.gyp', 'scripts/install.js', 'native/sources.json'])
    expect(files).toContain(`package/${file}`);
  expect(files.filter((f) => /\.map$|^package\/(test|lib|native\/tests)\//.test(f))).toEqual([]);
  // docs/building.md quotes the tarball's file count: it may not drift from the real one by
  // more than 5% (a file or two added needs no new measurement; a new directory does).
  const quoted = /([\d.]+) kB packed, (\d+)\s+files/.exec(fs.readFileSync(path.join(root, 'docs', 'building.md'), 'utf8'));
  expect(quoted).not.toBeNull();
  const documented = Number(quoted![2]);
  expect({ files: files.length, documented, within: Math.abs(files.length - documented) <= Math.ceil(documented * 0.05) }).toEqual({
    files: files.length,
    documented,
    within: true,
  });
});

test('the install used the prebuild: nothing was compiled, and it loads', () => {
  expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);
  const isa = run(path.join(bin, 'node'), ['-e', "console.log(require('performer-attention').backendInfo().isa)"], project, noCompilerEnv());
  expect(['scalar', 'avx2', 'avx512']).toContain(isa.trim());
});

// Row 0 (exact in both attentions, so the same numbers twice), the last row, the shape.
const exampleOutput =
  /^row 0: FAVOR\+ (-?\d+\.\d{4} -?\d+\.\d{4} -?\d+\.\d{4}) \| exact \1\nrow 511: FAVOR\+ (-?\d+\.\d{4} ?){3}\| exact (-?\d+\.\d{4} ?){3}\n\[ 1, 4, 512, 64 \]\n$/;

test('the README example runs from CommonJS', () => {
  fs.writeFileSync(path.join(project, 'example.cjs'), readmeBlock('Example'));
  expect(run(path.join(bin, 'node'), ['example.cjs'], project, noCompilerEnv())).toMatch(exampleOutput);
});

test('the README example runs from an ES module', () => {
  const code = toEsm(readmeBlock('Example'));
  expect(code).toMatch(/^import \{/);
  fs.writeFileSync(path.join(project, 'example.mjs'), code);
  expect(run(path.join(bin, 'node'), ['example.mjs'], project, noCompilerEnv())).toMatch(exampleOutput);
});

test('the README quick start runs from CommonJS and ES modules', () => {
  const code = readmeBlock('Install');
  fs.writeFileSync(path.join(project, 'quick.cjs'), code);
  fs.writeFileSync(path.join(project, 'quick.mjs'), toEsm(code));
  for (const file of ['quick.cjs', 'quick.mjs'])
    expect(run(path.join(bin, 'node'), [file], project, noCompilerEnv())).toMatch(/^\[ 1, 8, 4096, 64 \]\n$/);
});

test('the ES module entry exports exactly what the CommonJS one does, as the same objects', () => {
  const script = `
    import * as esm from 'performer-attention';
    import { createRequire } from 'node:module';
    const cjs = createRequire(import.meta.url)('performer-attention');
    const names = Object.keys(esm).filter((n) => n !== 'default').sort();
    const same = names.every((n) => esm[n] === cjs[n]) && esm.default === cjs;
    console.log(JSON.stringify({ names, cjs: Object.keys(cjs).sort(), same }));`;
  const out = JSON.parse(run(path.join(bin, 'node'), ['--input-type=module', '-e', script], project, noCompilerEnv()));
  expect(out.names).toEqual(out.cjs);
  expect(out.same).toBe(true);
});

test('TypeScript resolves the installed types through the exports map, for ESM and CommonJS', () => {
  const check = (mod: string) => `
    ${mod}
    const x: Tensor = tensor(new Float32Array(2 * 4), [1, 1, 2, 4]);
    const fm = new FeatureMap({ headDim: 4, numFeatures: 8, seed: 1, kernel: 'softmax' });
    const y: Tensor = favorAttentionSync(x, x, x, { featureMap: fm, causal: true });
    const z: Promise<Tensor> = softmaxAttention(x, x, y);
    void z;
    // @ts-expect-error: not a kernel
    new FeatureMap({ headDim: 4, kernel: 'gelu' });
    // @ts-expect-error: causal is a boolean
    favorAttentionSync(x, x, x, { causal: 'yes' });
  `;
  fs.writeFileSync(
    path.join(project, 'check.mts'),
    check("import { FeatureMap, favorAttentionSync, softmaxAttention, tensor, type Tensor } from 'performer-attention';"),
  );
  fs.writeFileSync(
    path.join(project, 'check.cts'),
    check("import pa = require('performer-attention'); const { FeatureMap, favorAttentionSync, softmaxAttention, tensor } = pa; type Tensor = pa.Tensor;"),
  );
  fs.writeFileSync(
    path.join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, types: [] },
      files: ['check.mts', 'check.cts'],
    }),
  );
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  expect(run(path.join(bin, 'node'), [tsc, '-p', 'tsconfig.json'], project, noCompilerEnv())).toBe('');
});

test('where no prebuild fits and nothing was built, loading fails with one error naming the causes and fixes', () => {
  let stderr = '';
  try {
    // Another architecture: node-gyp-build's matching (and so the loader's) reads npm_config_arch.
    run(path.join(bin, 'node'), ['-e', "require('performer-attention').backendInfo()"], project, {
      ...noCompilerEnv(),
      npm_config_arch: 'arm64',
    });
  } catch (error) {
    stderr = String((error as { stderr?: string }).stderr);
  }
  expect(stderr).toMatch(/could not load the native addon/);
  expect(stderr).toMatch(/prebuilds\/\S+: no prebuilt binary for this platform/);
  expect(stderr).toMatch(/build\/Release\/performer_attention\.node: not found/);
  expect(stderr).toMatch(/npm rebuild performer-attention/);
  expect(stderr).toMatch(/C\+\+17 compiler/);
});

test('the tarball also builds from source (--build-from-source, offline), and then loads that build', () => {
  const other = path.join(work, 'from-source');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'package.json'), JSON.stringify({ name: 'consumer2', version: '1.0.0', private: true }));
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--build-from-source', tarball], other, cleanEnv());
  const pkg = path.join(other, 'node_modules', 'performer-attention');
  expect(fs.existsSync(path.join(pkg, 'build', 'Release', 'performer_attention.node'))).toBe(true);
  expect(fs.existsSync(path.join(pkg, 'prebuilds'))).toBe(false);
  fs.writeFileSync(path.join(other, 'example.cjs'), readmeBlock('Example'));
  expect(run(process.execPath, ['example.cjs'], other, cleanEnv())).toMatch(exampleOutput);
}, 120_000);
