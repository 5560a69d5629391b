import fc from 'fast-check';
import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
import { toTransaction } from './fhir-transaction';

/**
 * Properties of the transaction the FHIR sink builds, over random bundles whose entries reference
 * each other by fullUrl, by Type/id, by absolute URL, or point outside the bundle.
 */
const types = ['Patient', 'Encounter', 'Observation', 'Practitioner'] as const;

const bundleArb = fc
  .array(
    fc.record({
      type: fc.constantFrom(...types),
      id: fc.option(fc.stringMatching(/^[a-z0-9]{1,8}$/), { nil: undefined }),
      ident: fc.option(
        fc.record({
          system: fc.constantFrom('urn:a', 'urn:b|x', 'urn:c,d'),
          value: fc.stringMatching(/^[A-Za-z0-9|,$\\-]{1,6}$/),
        }),
        { nil: undefined },
      ),
      urlKind: fc.constantFrom('uuid', 'abs', 'none'),
      refs: fc.array(fc.record({ to: fc.nat(), how: fc.constantFrom('fullUrl', 'typeId', 'abs', 'external') }), {
        maxLength: 4,
      }),
    }),
    { minLength: 1, maxLength: 12 },
  )
  .map((specs) => {
    const entries: BundleEntry[] = specs.map((s, i) => ({
      fullUrl:
        s.urlKind === 'uuid'
          ? `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`
          : s.urlKind === 'abs' && s.id
            ? `http://src.example/fhir/${s.type}/${s.id}`
            : undefined,
      resource: {
        resourceType: s.type,
        ...(s.id ? { id: s.id } : {}),
        ...(s.ident ? { identifier: [s.ident] } : {}),
      } as any,
    }));
    specs.forEach((s, i) => {
      const links = s.refs.map((r) => {
        const target = entries[r.to % entries.length];
        const t = target.resource!;
        switch (r.how) {
          case 'fullUrl':
            return target.fullUrl ?? 'Organization/outside';
          case 'typeId':
            return t.id ? `${t.resourceType}/${t.id}` : 'Organization/outside';
          case 'abs':
            return t.id ? `http://other.example/fhir/${t.resourceType}/${t.id}/_history/3` : 'Organization/outside';
          default:
            return 'Organization/outside';
        }
      });
      (entries[i].resource as any).extension = links.map((reference) => ({
        url: 'urn:ref',
        valueReference: { reference },
      }));
    });
    return { resourceType: 'Bundle', type: 'collection', entry: entries } as Bundle;
  });

const refsOf = (e: BundleEntry): string[] =>
  ((e.resource as any).extension ?? []).map((x: any) => x.valueReference.reference);

describe('toTransaction properties', () => {
  it('is deterministic, writes each resource once, and every internal reference points at an entry of the transaction', () => {
    fc.assert(
      fc.property(bundleArb, fc.uuid(), (bundle, messageId) => {
        const before = JSON.stringify(bundle);
        const tx = toTransaction(bundle, messageId);
        expect(JSON.stringify(bundle)).toBe(before); // the input is not modified
        expect(toTransaction(bundle, messageId)).toEqual(tx);
        const entries = tx.entry ?? [];
        const fullUrls = new Set(entries.map((e) => e.fullUrl));
        expect(fullUrls.size).toBe(entries.length);
        const urls = entries.map((e) => e.request!.url);
        expect(new Set(urls).size).toBe(urls.length);
        for (const e of entries) {
          expect(e.fullUrl).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
          expect(e.request!.method).toBe('PUT');
          const r = e.resource as any;
          // A resource without an id is a conditional PUT by identifier; one with an id is PUT to type/id.
          const byIdentifier = expect.stringMatching(new RegExp(`^${r.resourceType}\\?identifier=`));
          const byId = `${r.resourceType}/${encodeURIComponent(r.id)}`;
          expect(e.request!.url).toEqual(r.id === undefined ? byIdentifier : byId);
          // Every reference is to an entry of this transaction, or the one outside resource.
          expect(
            refsOf(e).filter(
              (ref) => !(ref.startsWith('urn:uuid:') ? fullUrls.has(ref) : ref === 'Organization/outside'),
            ),
          ).toEqual([]);
        }
      }),
      { numRuns: 300 },
    );
  });
});
