import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/**
 * The shipped script types (`@ferry/core/script`) type-check a script as an editor would
 * (`// @ts-check` in a .js file): a correct one is clean, mistakes are reported.
 */
describe('@ferry/core/script (the typed script API)', () => {
  const fixtures = path.join(__dirname, '__fixtures__', 'scripts');
  const check = (file: string): string[] => {
    const program = ts.createProgram([path.join(fixtures, file)], {
      allowJs: true,
      checkJs: true,
      noEmit: true,
      strict: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      types: [],
      skipLibCheck: true,
      // what core/script.d.ts re-exports once built (dist/pipeline/script-api.d.ts)
      paths: { '@ferry/core/script': [path.join(__dirname, 'script-api.ts')] },
    });
    return ts
      .getPreEmitDiagnostics(program)
      .map(
        (d) =>
          `${d.start !== undefined && d.file ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : '?'}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`,
      );
  };

  it('a script written against it type-checks clean', () => {
    expect(check('typed-ok.js')).toEqual([]);
  }, 60_000);

  it('reports a script that misuses it', () => {
    const problems = check('typed-bad.js').join('\n');
    expect(problems).toMatch(/5: .*possibly 'undefined'/);
    expect(problems).toMatch(/'gendr' does not exist/);
    expect(problems).toMatch(/6: .*possibly 'undefined'|6: .*'number' is not assignable to parameter of type 'string'/);
    expect(problems).toMatch(/7: .*"Pateint"/);
    expect(problems).toMatch(/Type '"not a bundle"' is not assignable/);
  }, 60_000);

  it('is shipped: core/script.d.ts re-exports the built types and the package lists it', () => {
    const root = path.resolve(__dirname, '../..');
    expect(readFileSync(path.join(root, 'script.d.ts'), 'utf8')).toMatch(
      /export \* from '\.\/dist\/pipeline\/script-api'/,
    );
    expect(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).files).toContain('script.d.ts');
  });
});
