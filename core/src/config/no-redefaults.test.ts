import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { mllpSinkSchema, mllpSourceSchema } from '../../../plugins/hl7v2-mllp/src/mllp/mllp.schema';
import { auditSourceSchema } from '../sources/audit.source';
import { fileSourceSchema } from '../sources/file.source';
import { httpSourceSchema } from '../sources/http.source';
import { sinkAuthSchema } from '../sinks/auth';
import { fhirSinkSchema } from '../sinks/fhir.sink';
import { fileSinkSchema } from '../sinks/file.sink';
import { httpSinkSchema } from '../sinks/http.sink';
import { engineSchema, sinkCommonSchema, sourceCommonSchema } from './engine.schema';
import type { SchemaSpec } from './schema-type';

/*
 * Defaults live in the schema only (defineSchema / withSchemaDefaults): a component must not default
 * a schema key again in code (`cfg.frameTimeoutMs ?? 120_000`), where the two would drift apart.
 */
const ROOT = path.resolve(__dirname, '../../..');
const at = (p: string): string => path.join(ROOT, p);

/** The names of a schema's keys, nested ones included. */
function keysOf(schema: SchemaSpec, out = new Set<string>()): Set<string> {
  for (const [k, v] of Object.entries(schema)) {
    out.add(k);
    if (!('default' in v)) keysOf(v as SchemaSpec, out);
  }
  return out;
}

/** `<config>.<key> ?? <literal>` (optional chaining and a closing parenthesis allowed before ??). */
const LITERAL = String.raw`(-?\d[\d_.]*|'[^']*'|"[^"]*"|true|false|\[\]|\{\})`;
const REDEFAULT = new RegExp(String.raw`\b(?:cfg|config|conf)((?:\??\.\w+)+)\)?\s*\?\?\s*` + LITERAL, 'g');

function redefaults(file: string, keys: Set<string>): string[] {
  const text = readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const m of text.matchAll(REDEFAULT)) {
    const last = m[1].split(/\??\./).filter(Boolean).pop()!;
    const line = text.slice(0, m.index).split('\n').length;
    if (keys.has(last)) found.push(`${path.relative(ROOT, file)}:${line}: ${m[0]}`);
  }
  return found;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return name === '__fixtures__' ? [] : sourceFiles(p);
    return name.endsWith('.ts') && !name.endsWith('.test.ts') ? [p] : [];
  });
}

describe('no default given twice', () => {
  const components: [string, SchemaSpec][] = [
    ['core/src/sources/http.source.ts', { ...httpSourceSchema, ...sourceCommonSchema }],
    ['core/src/sources/file.source.ts', { ...fileSourceSchema, ...sourceCommonSchema }],
    ['core/src/sources/audit.source.ts', { ...auditSourceSchema, ...sourceCommonSchema }],
    ['core/src/sinks/http.sink.ts', { ...httpSinkSchema, ...sinkCommonSchema }],
    ['core/src/sinks/fhir.sink.ts', { ...fhirSinkSchema, ...sinkCommonSchema }],
    ['core/src/sinks/file.sink.ts', { ...fileSinkSchema, ...sinkCommonSchema }],
    ['core/src/sinks/auth.ts', sinkAuthSchema],
    // The fhir sink's transaction building, outcome reading and reference cache live beside it.
    ['core/src/sinks/fhir-transaction.ts', { ...fhirSinkSchema, ...sinkCommonSchema }],
    ['core/src/sinks/fhir-outcome.ts', { ...fhirSinkSchema, ...sinkCommonSchema }],
    ['core/src/sinks/reference-cache.ts', { ...fhirSinkSchema, ...sinkCommonSchema }],
    ['plugins/hl7v2-mllp/src/sources/mllp.source.ts', { ...mllpSourceSchema, ...sourceCommonSchema }],
    ['plugins/hl7v2-mllp/src/sinks/mllp.sink.ts', { ...mllpSinkSchema, ...sinkCommonSchema }],
  ];

  it.each(components)('%s takes its defaults from its schema', (file, schema) => {
    expect(redefaults(at(file), keysOf(schema))).toEqual([]);
  });

  it('engine keys (store, processing, admin, api, log, files) are not defaulted again anywhere in core', () => {
    const sections = ['store', 'processing', 'admin', 'api', 'log', 'files'] as const;
    const found = sourceFiles(at('core/src')).flatMap((f) =>
      redefaults(f, keysOf(Object.fromEntries(sections.map((s) => [s, engineSchema[s]])) as SchemaSpec)).filter((hit) =>
        sections.some((s) => hit.includes(`.${s}.`) || hit.includes(`.${s}?.`)),
      ),
    );
    expect(found).toEqual([]);
  });

  it('the check finds a re-default', () => {
    const probe = at('core/src/config/__fixtures__/redefault-probe.txt');
    expect(redefaults(probe, keysOf(mllpSourceSchema))).toEqual([
      'core/src/config/__fixtures__/redefault-probe.txt:2: cfg.frameTimeoutMs ?? 120_000',
      'core/src/config/__fixtures__/redefault-probe.txt:3: cfg.tls?.allowedClientNames ?? []',
    ]);
  });
});
