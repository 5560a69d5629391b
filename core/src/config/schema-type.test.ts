import convict from 'convict';
import { defineSchema, schemaDefaults, withSchemaDefaults, type SchemaInput, type SchemaType } from './schema-type';
import { validateWithSchema, type ConfigProblem } from './load-config';
import type { ConfigSchema } from '../plugin/api';

/** true when A and B are the same type (checked by `npm run typecheck`, which covers tests). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(_ok?: T): void {}

function isColour(v: unknown): v is 'red' | 'blue' {
  return v === 'red' || v === 'blue';
}
function accept(_v: unknown): void {}
function checkUmask(v: unknown): void {
  if (typeof v !== 'string' || !/^0?[0-7]{3}$/.test(v)) throw new Error('must be octal, such as 0077');
}

const schema = defineSchema({
  kind: { doc: 'enum', format: ['sqlite', 'postgres'], default: 'sqlite' },
  count: { doc: 'nat', format: 'nat', default: 0 },
  port: { doc: 'port', format: 'port', default: 2575 },
  ratio: { doc: 'Number', format: Number, default: 0.5 },
  name: { doc: 'String', format: String, default: 'x' },
  on: { doc: 'Boolean', format: Boolean, default: true },
  list: { doc: 'Array', format: Array, default: [] as string[] },
  anyList: { doc: 'Array', format: Array, default: [] },
  map: { doc: 'Object', format: Object, default: {} },
  typedMap: { doc: 'Object', format: Object, default: {} as Record<string, number> },
  umask: { doc: 'validator', format: checkUmask, default: '0077' },
  workers: { doc: 'validator', format: accept, default: 'auto' as number | 'auto' },
  algorithms: { doc: 'validator', format: accept, default: ['RS256', 'ES256'] },
  feeds: { doc: 'validator', format: accept, default: ['a'] as ('a' | 'b')[] },
  typedList: { doc: 'Array', format: Array, default: [] as ('x' | 'y')[] },
  colour: { doc: 'guard', format: isColour, default: 'red' },
  required: { doc: 'null default', format: String, default: null },
  optional: { doc: 'undefined default', format: 'nat', default: undefined as number | undefined },
  anything: { doc: '*', format: '*', default: 3 },
  nested: {
    deeper: { leaf: { doc: 'nested', format: ['a', 'b'], default: 'a' } },
    n: { doc: 'nested', format: 'nat', default: 1 },
  },
});
type Conf = SchemaType<typeof schema>;

describe('SchemaType', () => {
  it('maps each format to its TS type (type-level: checked by npm run typecheck)', () => {
    assertType<Equal<Conf['kind'], 'sqlite' | 'postgres'>>();
    assertType<Equal<Conf['count'], number>>();
    assertType<Equal<Conf['port'], number>>();
    assertType<Equal<Conf['ratio'], number>>();
    assertType<Equal<Conf['name'], string>>();
    assertType<Equal<Conf['on'], boolean>>();
    assertType<Equal<Conf['list'], string[]>>();
    assertType<Equal<Conf['anyList'], unknown[]>>();
    assertType<Equal<Conf['map'], Record<string, unknown>>>();
    assertType<Equal<Conf['typedMap'], Record<string, number>>>();
    assertType<Equal<Conf['umask'], string>>();
    assertType<Equal<Conf['workers'], number | 'auto'>>();
    assertType<Equal<Conf['algorithms'], string[]>>();
    assertType<Equal<Conf['feeds'], ('a' | 'b')[]>>();
    assertType<Equal<Conf['typedList'], ('x' | 'y')[]>>();
    assertType<Equal<Conf['colour'], 'red' | 'blue'>>();
    assertType<Equal<Conf['required'], string | null>>();
    assertType<Equal<Conf['optional'], number | undefined>>();
    assertType<Equal<Conf['anything'], number>>();
    assertType<Equal<Conf['nested'], { deeper: { leaf: 'a' | 'b' }; n: number }>>();
    // @ts-expect-error an enum is not widened to string
    assertType<Equal<Conf['kind'], string>>();
    // @ts-expect-error a nat is not a string
    assertType<Equal<Conf['count'], string>>();
    // @ts-expect-error a defaulted key is not optional
    assertType<Equal<Conf['count'], number | undefined>>();
    const misuse = (c: Conf): void => {
      // @ts-expect-error not a key of the schema
      void c.nope;
      // @ts-expect-error not one of the enum's values
      c.kind = 'mysql';
      // @ts-expect-error a nested key keeps its type
      c.nested.deeper.leaf = 'c';
    };
    expect(typeof misuse).toBe('function');
  });

  it('returns the schema itself, which convict and validateWithSchema take as it is', () => {
    const asConvict: ConfigSchema = schema;
    expect(asConvict).toBe(schema);
    const { required: _r, ...withDefaults } = schema;
    const problems: ConfigProblem[] = [];
    const given = { kind: 'postgres', nested: { n: 4 } };
    const got = validateWithSchema<SchemaType<typeof withDefaults>>(withDefaults, given, 'x', problems);
    expect(problems).toEqual([]);
    expect(got.kind).toBe('postgres');
    expect(got.nested).toEqual({ deeper: { leaf: 'a' }, n: 4 });
    expect(got.umask).toBe('0077');
    expect(convict(withDefaults).get('port')).toBe(2575);
  });

  it('schemaDefaults gives every default, a fresh copy each time', () => {
    const { required: _r, ...withDefaults } = schema;
    const d = schemaDefaults(withDefaults);
    assertType<Equal<typeof d, SchemaType<typeof withDefaults>>>();
    expect(d).toEqual(validateWithSchema(withDefaults, {}, 'x', []));
    d.list.push('changed');
    expect(schemaDefaults(withDefaults).list).toEqual([]);
  });

  it('withSchemaDefaults fills what a partial config leaves out, nested keys too, and keeps undeclared keys', () => {
    const { required: _r, ...withDefaults } = schema;
    const given: SchemaInput<typeof withDefaults> & { type: string } = {
      type: 'x',
      count: 3,
      nested: { deeper: { leaf: 'b' } },
    };
    const c = withSchemaDefaults(withDefaults, given);
    const expected = { ...schemaDefaults(withDefaults), type: 'x', count: 3, nested: { deeper: { leaf: 'b' }, n: 1 } };
    expect(c).toEqual(expected);
    expect(withSchemaDefaults(withDefaults, undefined)).toEqual(schemaDefaults(withDefaults));
    // @ts-expect-error a partial config still has the schema's types
    withSchemaDefaults(withDefaults, { count: 'three' });
  });

  it('a bad value is still refused by path', () => {
    const problems: ConfigProblem[] = [];
    validateWithSchema(schema, { kind: 'mysql', nested: { deeper: { leaf: 'c' } }, required: 'r' }, 'x', problems);
    expect(problems.map((p) => p.path).sort()).toEqual(['x.kind', 'x.nested.deeper.leaf']);
  });
});
