import { silentLogger, type StoredMessage } from '@ferry/core';
import {
  EpicSimulator,
  EPIC_MRN_OID,
  epicVital,
  seedEpicSandbox,
} from '../../../../test/simulators/epic/epic-simulator';
import { EpicFhirTransform } from './epic-fhir.transform';
import { resourceMessage } from '@ferry/fhir-vendor-kit';
import { epicProfile } from '../epic-profile';

const msg = (resource: object): StoredMessage & { body: Buffer } => {
  const m = resourceMessage(resource as any, epicProfile, 'https://fhir.example.org/api/FHIR/R4');
  return {
    id: 'm1',
    seq: 1,
    sourceId: 's',
    contentType: m.contentType,
    body: m.body,
    headers: m.headers ?? {},
    receivedAt: new Date(),
    status: 'received',
  };
};

describe('epic normalisation transform', () => {
  const sim = new EpicSimulator();
  const { patientId, mergedId } = seedEpicSandbox(sim);
  const t = new EpicFhirTransform({ mrnSystems: [EPIC_MRN_OID], canonicalMrnSystem: 'urn:ferry:id:mrn' });
  const ctx = { logger: silentLogger() };

  it('handles only its content type', () => {
    expect(t.canHandle('application/vnd.epic.fhir+json')).toBe(true);
    expect(t.canHandle('application/fhir+json')).toBe(false);
  });

  it('re-labels the MRN with the canonical system (first), keeps other ids, prefixes ids, validates', () => {
    const b = t.toFhir(msg(sim.store.get('Patient', patientId)!), ctx);
    const p = b.entry![0].resource as any;
    expect(p.id).toBe(`epic-${patientId}`);
    expect(p.identifier[0]).toMatchObject({
      system: 'urn:ferry:id:mrn',
      value: '203713',
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }], text: 'EPI' },
    });
    expect(p.identifier.find((i: any) => i.type?.text === 'INTERNAL').value).toBe('Z6129'); // padded value trimmed
    expect(p.identifier.some((i: any) => i.system === EPIC_MRN_OID)).toBe(false);
    expect(p.generalPractitioner[0].reference).toBe('Practitioner/epic-eM5CWtq15N0WJeuCet5bJlQ3');
    expect(p.meta.tag).toEqual(expect.arrayContaining([{ system: 'urn:ferry:source-vendor', code: 'epic' }]));
    expect(b.type).toBe('collection');
  });

  it('keeps the Epic flowsheet coding beside LOINC and rewrites references', () => {
    const b = t.toFhir(msg(sim.store.put(epicVital(patientId, 1))), ctx);
    const o = b.entry![0].resource as any;
    expect(o.code.coding.map((c: any) => c.system)).toEqual([
      'urn:oid:1.2.840.114350.1.13.0.1.7.2.707679',
      'http://loinc.org',
    ]);
    expect(o.subject.reference).toBe(`Patient/epic-${patientId}`);
    expect(o.encounter.reference).toBe('Encounter/epic-es09oReoYsZk20hcbnd7r4A3');
  });

  it('a reference that carries the MRN (Reference.identifier) gets the canonical MRN system, so the FHIR sink can resolve it by identifier', () => {
    const raw = {
      ...epicVital(patientId, 3),
      subject: {
        reference: `Patient/${patientId}`,
        identifier: { system: EPIC_MRN_OID, value: ' 203713 ' },
        display: 'x',
      },
    };
    const o = t.toFhir(msg(sim.store.put(raw)), ctx).entry![0].resource as any;
    expect(o.subject).toMatchObject({
      reference: `Patient/epic-${patientId}`,
      identifier: { system: 'urn:ferry:id:mrn', value: '203713' },
    });
  });

  it('surfaces a merged patient (replaced-by) in the headers and keeps the link', () => {
    const m = msg(sim.store.get('Patient', mergedId)!);
    expect(t.extractHeaders(m.body)).toMatchObject({
      messageType: 'Patient',
      trigger: 'replaced-by',
      replacedBy: `Patient/epic-${patientId}`,
    });
    const p = t.toFhir(m, ctx).entry![0].resource as any;
    expect(p.active).toBe(false);
    expect(p.link[0]).toEqual({ other: { reference: `Patient/epic-${patientId}` }, type: 'replaced-by' });
  });

  it('fails a resource that cannot be made valid R4 with an input error naming the problem', () => {
    const bad = {
      resourceType: 'Observation',
      id: 'x1',
      status: 'final',
      code: { text: 'x' },
      valueQuantity: { value: 'seventy' },
    };
    expect(() => t.toFhir(msg(bad), ctx)).toThrow(/does not validate as FHIR R4/);
  });

  it('uses the tenant id prefix carried by the message (several Epic customers side by side)', () => {
    const m = resourceMessage(
      sim.store.put(epicVital(patientId, 7)) as any,
      { ...epicProfile, idPrefix: 'epicnorth' },
      'https://north.example.org/api/FHIR/R4',
    );
    expect(m.headers).toMatchObject({ idPrefix: 'epicnorth', orderingKey: `Patient/epicnorth-${patientId}` });
    const o = t.toFhir({ ...msg({}), body: m.body, headers: m.headers! }, ctx).entry![0].resource as any;
    expect(o.id).toMatch(/^epicnorth-/);
    expect(o.subject.reference).toBe(`Patient/epicnorth-${patientId}`);
  });
});
