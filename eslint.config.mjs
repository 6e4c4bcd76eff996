// ESLint flat config, run by `npm run lint` and by test/lint.test.ts (so `npm test` fails on lint).
// TypeScript gets the syntactic typescript-eslint presets only: the type-checked ones are too slow.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    // Generated, vendored or data: not source.
    ignores: [
      'dist/',
      'build/',
      'build-cmake/',
      'node_modules/',
      'results/',
      'docs/api/',
      'prebuilds/',
      'test/fixtures/',
      'test/fuzz/corpus/',
    ],
  },
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  js.configs.recommended,
  {
    // Unused arguments kept for a signature's sake are named with a leading `_`; a
    // destructured property next to a rest element is how an object drops keys.
    rules: {
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  // Plain JavaScript: CommonJS scripts for Node, except the ESM entry point and .mjs files.
  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { ...globals.node } },
  },
  {
    files: ['**/*.mjs', 'esm/**/*.js'],
    languageOptions: { sourceType: 'module', globals: { ...globals.node } },
  },
  // TypeScript: the library and its jest suite.
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommended],
    languageOptions: { globals: { ...globals.node } },
    rules: {
      'no-unused-vars': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  {
    // Loads the native addon, and a script shared with the install step, from paths computed at run time.
    files: ['lib/native.ts'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // The jest suite loads the plain-JavaScript programs (bench/, experiments/, examples/, test/fuzz/)
    // and the built package (dist/) by path, with require().
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['test/**/*.ts', 'test/**/*.js'],
    languageOptions: { globals: { ...globals.jest } },
  },
);
