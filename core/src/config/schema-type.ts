/**
 * Config types derived from convict schemas, so a schema is the single source of a config's keys,
 * types and defaults:
 *
 *   export const fooSchema = defineSchema({ port: { doc: '…', format: 'port', default: 2575 } });
 *   export type FooConfig = SchemaType<typeof fooSchema>;   // { port: number }
 *
 * A leaf (an object with a `default`) gets its type from its `format`:
 * - a list of values (`['auto', 'original']`): their union;
 * - `String`: string; `Number` / `'nat'` / `'int'` / `'port'`: number; `Boolean`: boolean (convict 6
 *   has no `'url'` / `'email'` / `'duration'` formats of its own: a validator function checks those);
 * - `Array`: the default's element type (`default: [] as string[]`), else unknown[];
 * - `Object`: the default's type (`default: {} as Record<string, string>`), else Record<string, unknown>;
 * - a type guard `(v: unknown) => v is T`: T;
 * - any other validator function, `'*'` or no format: the default's type, widened (`'0077'` -> string,
 *   `['RS256']` -> string[]); give a default an explicit type (`'auto' as number | 'auto'`,
 *   `[] as Feed[]`) when that is wider or narrower than the literal.
 * `default: null` adds `| null` (the key is required: convict refuses null unless the format takes it),
 * `default: undefined` adds `| undefined`. Any other key is a nested schema.
 */

/** convict's named formats. */
type NamedFormat = '*' | 'int' | 'nat' | 'port' | 'windows_named_pipe' | 'port_or_windows_named_pipe';

/** One key of a schema: what convict accepts as a leaf. */
export interface SchemaLeaf {
  default: unknown;
  doc?: string;
  format?:
    | NamedFormat
    | unknown[]
    | StringConstructor
    | NumberConstructor
    | BooleanConstructor
    | ArrayConstructor
    | ObjectConstructor
    | RegExp
    | ((v: any) => void);
  env?: string;
  arg?: string;
  sensitive?: boolean;
  nullable?: boolean;
  coerce?: (v: any) => unknown;
}

/** A convict schema: leaves and nested schemas. */
export interface SchemaSpec {
  [key: string]: SchemaLeaf | SchemaSpec;
}

/**
 * A literal default's type widened to its primitive (`'0077'` -> string, `readonly ['a']` -> string[]);
 * a type given with `as` (`'auto' as number | 'auto'`, `[] as Feed[]`: a mutable array) is kept.
 */
type Widen<T> = [T] extends [never]
  ? unknown
  : [T] extends [string]
    ? string
    : [T] extends [number]
      ? number
      : [T] extends [boolean]
        ? boolean
        : T extends unknown[]
          ? T
          : T extends readonly (infer E)[]
            ? Widen<E>[]
            : T;

type ElementOf<D> = D extends (infer E)[]
  ? E
  : D extends readonly (infer E)[]
    ? [E] extends [never]
      ? unknown
      : Widen<E>
    : unknown;
type EmptyToRecord<D> = [keyof D] extends [never] ? Record<string, unknown> : Widen<D>;

type FromFormat<F, D> = F extends readonly (infer E)[]
  ? E
  : F extends StringConstructor
    ? string
    : F extends NumberConstructor
      ? number
      : F extends BooleanConstructor
        ? boolean
        : F extends ArrayConstructor
          ? ElementOf<D>[]
          : F extends ObjectConstructor
            ? EmptyToRecord<D>
            : F extends 'nat' | 'int' | 'port'
              ? number
              : F extends 'windows_named_pipe'
                ? string
                : F extends 'port_or_windows_named_pipe'
                  ? number | string
                  : F extends (v: any) => v is infer T
                    ? T
                    : Widen<Exclude<D, null | undefined>>;

/** The value type of one leaf. */
export type LeafType<L> = L extends { default: infer D }
  ? | (L extends { format: infer F }
        ? FromFormat<F, Exclude<D, null | undefined>>
        : Widen<Exclude<D, null | undefined>>)
    | (null extends D ? null : never)
    | (undefined extends D ? undefined : never)
  : never;

/** The validated config a schema gives (what `validateWithSchema` returns for it). */
export type SchemaType<S> = {
  -readonly [K in keyof S]: S[K] extends { default: unknown } ? LeafType<S[K]> : SchemaType<S[K]>;
};

/**
 * What a component may be given in code (tests, embedding): any key may be left out, nested ones too;
 * `withSchemaDefaults` fills the rest from the schema. The engine always gives the full SchemaType.
 */
export type SchemaInput<S> = {
  -readonly [K in keyof S]?: S[K] extends { default: unknown } ? LeafType<S[K]> : SchemaInput<S[K]>;
};

/**
 * Declares a convict schema, keeping its literal types (`format: ['a', 'b']`, defaults) so that
 * `SchemaType<typeof schema>` can be derived from it. Returns the schema itself.
 */
export function defineSchema<const S extends SchemaSpec>(schema: S): S {
  return schema;
}

const isLeaf = (v: unknown): v is SchemaLeaf => !!v && typeof v === 'object' && 'default' in v;

/** The config a schema gives when nothing is set: every leaf's default (a fresh copy). */
export function schemaDefaults<const S extends SchemaSpec>(schema: S): SchemaType<S> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) out[k] = isLeaf(v) ? structuredClone(v.default) : schemaDefaults(v);
  return out as SchemaType<S>;
}

const isPlainMap = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * `given` with every key it leaves out (nested keys too) taken from the schema's defaults, so a
 * component has its defaults in one place, the schema, whether the engine (which validated the
 * config) or code (a partial config) made it. Keys the schema does not declare are kept as given.
 */
export function withSchemaDefaults<const S extends SchemaSpec>(
  schema: S,
  given: SchemaInput<S> | undefined,
): SchemaType<S> {
  const out: Record<string, unknown> = { ...(given ?? {}) };
  const from = (given ?? {}) as Record<string, unknown>;
  for (const [k, v] of Object.entries(schema)) {
    if (isLeaf(v)) out[k] = from[k] === undefined ? structuredClone(v.default) : from[k];
    else out[k] = withSchemaDefaults(v, isPlainMap(from[k]) ? (from[k] as SchemaInput<typeof v>) : undefined);
  }
  return out as SchemaType<S>;
}
