// ESLint flat config (ESLint 9, typescript-eslint 8). Run with `npm run lint` (also run by `npm test`'s pretest);
// `npm run lint:fix` applies the autofixes: Prettier, then eslint --fix (type imports...), then Prettier again.
// Formatting is Prettier's job (.prettierrc): eslint-config-prettier switches off the stylistic rules that would
// fight it; max-len is set again after it, for the code lines Prettier cannot bring under 120 columns.
import js from '@eslint/js';
import comments from '@eslint-community/eslint-plugin-eslint-comments/configs';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import jest from 'eslint-plugin-jest';
import tseslint from 'typescript-eslint';
import { defineConfig } from 'eslint/config';

const root = import.meta.dirname;

export default defineConfig(
  {
    ignores: [
      '**/node_modules/',
      '**/dist/',
      'reports/',
      '**/coverage/',
      '.stryker-tmp/',
      '.bench-tmp/',
      // written by plugins/hl7v2-mllp/scripts/gen-*.js and checked byte for byte by their --check
      '**/*.generated.ts',
      // test data: scripts the pipeline tests load on purpose with type errors, not project code
      '**/__fixtures__/scripts/',
    ],
  },
  {
    linterOptions: {
      // a disable comment that no longer disables anything goes
      reportUnusedDisableDirectives: 'error',
    },
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  comments.recommended,
  {
    rules: {
      // every eslint-disable comment says why: `// eslint-disable-next-line rule -- reason`
      '@eslint-community/eslint-comments/require-description': ['error', { ignore: ['eslint-enable'] }],
      // a disable comment names the rule(s) it disables
      '@eslint-community/eslint-comments/no-unlimited-disable': 'error',
      // code built from strings escapes every static check and the sandbox's eyes
      'no-new-func': 'error',
      // untyped vendor JSON (athena, Epic, Cerner payloads) and test doubles: ~330 uses, typing them is a follow-up
      '@typescript-eslint/no-explicit-any': 'off',
      // `const self = this` is how a function declaration or an object literal's methods reach their owner here
      '@typescript-eslint/no-this-alias': ['error', { allowedNames: ['self'] }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrors: 'none',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
    },
  },
  {
    files: ['**/*.ts', '**/*.mts', '**/*.cts'],
    languageOptions: {
      parserOptions: {
        // The typed rules (no-floating-promises) read types from the same programs the typecheck builds:
        // every package's src and test/ (tsconfig.typecheck.json), the browser console and the examples.
        project: ['./tsconfig.typecheck.json', './core/console/tsconfig.json', './examples/tsconfig.json'],
        tsconfigRootDir: root,
      },
    },
    rules: {
      // a promise nobody awaits loses its rejection: await it, return it, or `void` it with a comment saying why
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true, ignoreIIFE: false }],
      '@typescript-eslint/consistent-type-imports': [
        'error',
        { prefer: 'type-imports', fixStyle: 'separate-type-imports', disallowTypeAnnotations: false },
      ],
    },
  },
  {
    // Tests that cannot pass by not asserting: no expect left behind an `if` or in a `catch` (a branch that
    // does not run asserts nothing), every async expect awaited, no test without one (helpers that assert
    // are named expect*), no focused test left in. (A visible skip is `(cond ? it : it.skip)` or
    // test/support/requires.ts.)
    files: ['**/*.test.ts'],
    plugins: { jest },
    rules: {
      'jest/no-conditional-expect': 'error',
      'jest/valid-expect': 'error',
      'jest/valid-expect-in-promise': 'error',
      'jest/expect-expect': ['error', { assertFunctionNames: ['expect', 'expect*', 'fc.assert'] }],
      'jest/no-done-callback': 'error',
      'jest/no-identical-title': 'error',
      'jest/no-focused-tests': 'error',
    },
  },
  {
    // plain JavaScript: node scripts (CommonJS) under scripts/, bench/, plugins/*/scripts, jest.config.js
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { ...globals.node } },
    rules: {
      // CommonJS modules load each other with require()
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module', globals: { ...globals.node } },
  },
  {
    // core/script.d.ts only re-exports core/dist's script types: no program of ours holds it
    files: ['core/script.d.ts'],
    ...tseslint.configs.disableTypeChecked,
  },
  // last: switches off the stylistic rules Prettier owns -- max-len among them, so it is set again below
  prettier,
  {
    rules: {
      'max-len': [
        'error',
        {
          code: 120,
          tabWidth: 2,
          // URLs, string and template literals (messages, SQL, HL7 samples) and regex literals cannot be
          // wrapped without changing them; comments neither (Prettier leaves them; 134 prose lines over 120)
          ignoreUrls: true,
          ignoreComments: true,
          ignoreStrings: true,
          ignoreTemplateLiterals: true,
          ignoreRegExpLiterals: true,
        },
      ],
    },
  },
);
