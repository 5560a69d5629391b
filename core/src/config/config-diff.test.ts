import { diffConfigs, formatConfigChanges } from './config-diff';

describe('diffConfigs', () => {
  it('names each changed leaf, added and removed entry by path', () => {
    const a = { sinks: { a: { type: 'file' } }, routes: [{ id: 'r1', when: { fhirpath: 'x' }, to: ['a'] }] };
    const b = {
      sinks: { a: { type: 'file' }, b: { type: 'memory' } },
      routes: [
        { id: 'r1', when: { fhirpath: 'y' }, to: ['a'] },
        { id: 'r2', to: ['b'] },
      ],
    };
    const d = diffConfigs(a, b);
    expect(d).toEqual([
      { path: 'routes[0].when.fhirpath', change: 'changed', before: 'x', after: 'y' },
      { path: 'routes[1]', change: 'added', after: { id: 'r2', to: ['b'] } },
      { path: 'sinks.b', change: 'added', after: { type: 'memory' } },
    ]);
    expect(formatConfigChanges(diffConfigs(b, a))).toEqual([
      '~ routes[0].when.fhirpath: "y" -> "x"',
      '- routes[1]: {"id":"r2","to":["b"]}',
      '- sinks.b: {"type":"memory"}',
    ]);
    expect(diffConfigs(a, structuredClone(a))).toEqual([]);
  });
});
