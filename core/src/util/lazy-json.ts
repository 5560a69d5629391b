/**
 * Defines `obj[key]` as the parse of `text`, parsed on first read and then kept. The stored
 * canonical bundle is JSON text; most deliveries (file, HTTP sinks) only ever need that text, so
 * the object is built only for code that reads it. Writing the property replaces the value.
 */
export function lazyJson<T extends object>(obj: T, key: string, text: string): T {
  let parsed: unknown;
  let done = false;
  Object.defineProperty(obj, key, {
    enumerable: true,
    configurable: true,
    get() {
      if (!done) {
        parsed = JSON.parse(text);
        done = true;
      }
      return parsed;
    },
    set(v: unknown) {
      Object.defineProperty(obj, key, { value: v, enumerable: true, configurable: true, writable: true });
    },
  });
  return obj;
}
