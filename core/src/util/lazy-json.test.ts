import { lazyJson } from './lazy-json';

describe('lazyJson', () => {
  it('parses on first read only, and keeps the parsed object', () => {
    const spy = jest.spyOn(JSON, 'parse');
    const o = lazyJson({ a: 1 } as { a: number; b?: { x: number } }, 'b', '{"x":2}');
    expect(spy).not.toHaveBeenCalled();
    const first = o.b;
    expect(first).toEqual({ x: 2 });
    expect(o.b).toBe(first);
    expect(spy).toHaveBeenCalledTimes(1);
    spy.mockRestore();
  });

  it('is enumerable (spread, toEqual, JSON) and can be replaced', () => {
    const o = lazyJson({} as { b?: unknown }, 'b', '[1,2]');
    expect({ ...o }).toEqual({ b: [1, 2] });
    expect(JSON.stringify(o)).toBe('{"b":[1,2]}');
    o.b = 'other';
    expect(o.b).toBe('other');
  });
});
