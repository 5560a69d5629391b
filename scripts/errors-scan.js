'use strict';
/**
 * Finds every error code written in the hand-written sources (core/src, plugins/<name>/src,
 * packages/<name>/src; tests excluded), with the TypeScript parser rather than regexes:
 *  - the first argument of `new FerryError(...)`, `FerryError.from(e, ...)` (second argument) and of the
 *    helpers configError / inputError / transientError / permanentDeliveryError / retryableDeliveryError,
 *    prefixed as the helper prefixes it (CONFIG_, INPUT_, TRANSIENT_, DELIVERY_);
 *  - the code arguments of the wrappers in WRAPPERS (tls options, hl7InputError, …) and of facadeError,
 *    `super(...)` in a class extending FerryError, `errorCode:` properties, parameter defaults typed
 *    ErrorCode / CodeSuffix<'X_'>, and full codes marked `as const` where a code is chosen before the throw;
 *  - every string literal that starts with FERRY_E_.
 * Codes built from template strings are reported as `dynamic` (the test fails on them). String literals are followed through `a ? 'X' : 'Y'`, parentheses and `as` casts. Used by
 * scripts/gen-errors-doc.js (the "thrown in" column) and core/src/errors/catalogue.test.ts.
 */
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const root = path.resolve(__dirname, '..');
const HELPERS = {
  configError: 'CONFIG_',
  inputError: 'INPUT_',
  transientError: 'TRANSIENT_',
  permanentDeliveryError: 'DELIVERY_',
  retryableDeliveryError: 'DELIVERY_',
};

function sourceFiles() {
  const dirs = [path.join(root, 'core/src')];
  for (const group of ['plugins', 'packages']) {
    const g = path.join(root, group);
    if (!fs.existsSync(g)) continue;
    for (const name of fs.readdirSync(g)) {
      const src = path.join(g, name, 'src');
      if (fs.existsSync(src)) dirs.push(src);
    }
  }
  const out = [];
  const walk = (d) => {
    for (const ent of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name);
      if (ent.isDirectory()) {
        if (ent.name !== 'node_modules' && ent.name !== '__fixtures__' && ent.name !== 'dist') walk(p);
      } else if (/\.ts$/.test(ent.name) && !/\.(test|d)\.ts$/.test(ent.name)) out.push(p);
    }
  };
  dirs.forEach(walk);
  return out.sort();
}

/** String literals an expression may evaluate to (conditionals followed), or null if not all are literal. */
function literals(node) {
  if (!node) return [];
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return [node.text];
  if (ts.isParenthesizedExpression(node) || ts.isAsExpression(node) || ts.isSatisfiesExpression?.(node))
    return literals(node.expression);
  if (ts.isConditionalExpression(node)) return [...literals(node.whenTrue), ...literals(node.whenFalse)];
  return [];
}

/**
 * Functions that take a code and pass it on to a helper: name -> [argument index, prefix]. Their
 * literal arguments (and the default of that parameter) are codes too.
 */
const WRAPPERS = {
  pem: [3, 'CONFIG_'],
  tlsServerOptions: [2, 'CONFIG_'],
  time: [2, 'INPUT_'],
  hl7InputError: [0, 'INPUT_'],
  mk: [0, ''],
};

const strip = (c) => (c.startsWith('FERRY_E_') ? c.slice(8) : c);

/** A code written in full, marked `as const` where it is chosen before the throw. */
const CODE = /^(CONFIG|INPUT|TRANSIENT|INTERNAL|DELIVERY|VENDOR)_[A-Z0-9_]*[A-Z0-9]$/;

function extendsFerryError(n) {
  for (let p = n.parent; p; p = p.parent) {
    if (ts.isClassDeclaration(p) || ts.isClassExpression(p)) {
      return (p.heritageClauses ?? []).some((h) => h.types.some((t) => t.expression.getText() === 'FerryError'));
    }
  }
  return false;
}

function wrapperName(fn) {
  if (fn.name) return fn.name.text;
  if (ts.isVariableDeclaration(fn.parent) && ts.isIdentifier(fn.parent.name)) return fn.parent.name.text;
  return undefined;
}

/**
 * @returns {{ uses: Map<string, Set<string>>, dynamic: Array<{ file: string, line: number, text: string }> }}
 *   uses: code (without FERRY_E_) -> repo-relative files; dynamic: code arguments built with template strings.
 */
function scan(files = sourceFiles()) {
  const uses = new Map();
  const dynamic = [];
  for (const file of files) {
    const rel = path.relative(root, file).split(path.sep).join('/');
    // the catalogue declares codes, it does not throw them; the conformance suite is jest (the store
    // contract) whose made-up codes are test data.
    if (rel === 'core/src/errors/catalogue.ts' || rel.startsWith('core/src/store/__fixtures__/conformance/')) continue;
    // errors/index.ts builds the helpers' codes from their typed suffixes (`CONFIG_${code}`).
    const helpersFile = rel === 'core/src/errors/index.ts';
    const text = fs.readFileSync(file, 'utf8');
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    const add = (code) => {
      if (!uses.has(code)) uses.set(code, new Set());
      uses.get(code).add(rel);
    };
    const codeArg = (arg, prefix) => {
      if (!arg) return;
      if (ts.isTemplateExpression(arg)) {
        if (helpersFile) return;
        dynamic.push({
          file: rel,
          line: sf.getLineAndCharacterOfPosition(arg.getStart()).line + 1,
          text: arg.getText(),
        });
        return;
      }
      for (const l of literals(arg)) add(strip(l.startsWith('FERRY_E_') ? l : prefix + l));
    };
    const visit = (n) => {
      if (ts.isNewExpression(n) && n.expression.getText() === 'FerryError') codeArg(n.arguments?.[0], '');
      else if (ts.isCallExpression(n)) {
        const callee = n.expression.getText();
        if (callee === 'FerryError.from') codeArg(n.arguments[1], '');
        else if (Object.prototype.hasOwnProperty.call(HELPERS, callee)) codeArg(n.arguments[0], HELPERS[callee]);
        else if (Object.prototype.hasOwnProperty.call(WRAPPERS, callee))
          codeArg(n.arguments[WRAPPERS[callee][0]], WRAPPERS[callee][1]);
        // facadeError('not-found', …) throws FacadeIssue['not-found'].errorCode, INPUT_FACADE_NOT_FOUND
        else if (callee === 'facadeError')
          for (const l of literals(n.arguments[0])) add(`INPUT_FACADE_${l.toUpperCase().replace(/-/g, '_')}`);
        else if (n.expression.kind === ts.SyntaxKind.SuperKeyword && extendsFerryError(n)) codeArg(n.arguments[0], '');
      } else if (
        (ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) &&
        /^FERRY_E_[A-Z0-9_]*[A-Z0-9]$/.test(n.text)
      )
        add(strip(n.text));
      else if (ts.isPropertyAssignment(n) && n.name.getText() === 'errorCode') codeArg(n.initializer, '');
      else if (ts.isParameter(n) && n.initializer && n.type) {
        // a code parameter's default: `code: ErrorCodeArg = 'INTERNAL_UNEXPECTED'`, `code: CodeSuffix<'INPUT_'> = 'X'`
        const t = n.type.getText();
        const suffix = /^CodeSuffix<'([A-Z_]+)'>$/.exec(t);
        if (suffix) codeArg(n.initializer, suffix[1]);
        else if (/^(ErrorCode|ErrorCodeArg|FerryErrorCode)$/.test(t)) codeArg(n.initializer, '');
      } else if (
        ts.isAsExpression(n) &&
        n.type.getText() === 'const' &&
        ts.isStringLiteral(n.expression) &&
        CODE.test(n.expression.text)
      )
        add(n.expression.text);
      else if (
        (ts.isFunctionDeclaration(n) || ts.isArrowFunction(n) || ts.isFunctionExpression(n)) &&
        wrapperName(n) &&
        Object.prototype.hasOwnProperty.call(WRAPPERS, wrapperName(n))
      ) {
        const [i, prefix] = WRAPPERS[wrapperName(n)];
        const param = n.parameters[i];
        if (param?.initializer) codeArg(param.initializer, prefix);
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return { uses, dynamic };
}

module.exports = { scan, sourceFiles, root };

if (require.main === module) {
  const { uses, dynamic } = scan();
  for (const [c, f] of [...uses].sort()) console.log(c, [...f].join(' '));
  for (const d of dynamic) console.error(`dynamic: ${d.file}:${d.line} ${d.text}`);
}
