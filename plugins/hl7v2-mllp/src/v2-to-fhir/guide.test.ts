/**
 * Field-by-field checks against the HL7 v2-to-FHIR IG maps (../shared/v2-to-fhir/mappings), written by
 * hand from the CSVs — not snapshots of our own output. Each block names the segment/datatype/concept
 * map rows it checks. Messages are inline so these tests run without ../shared.
 */
import type {
  Account,
  AllergyIntolerance,
  Appointment,
  Bundle,
  ChargeItem,
  Condition,
  Coverage,
  DiagnosticReport,
  DocumentReference,
  Encounter,
  Immunization,
  MedicationDispense,
  MedicationRequest,
  MessageHeader,
  Observation,
  Patient,
  Practitioner,
  Procedure,
  Provenance,
  RelatedPerson,
  Resource,
  ServiceRequest,
  Specimen,
} from '@medplum/fhirtypes';
import { parseHl7 } from '../hl7v2/parser';
import { convertMessage } from './convert';
import { validateBundle } from './validate';

const MSH = (type: string, ctrl = 'C1', extra = '') =>
  `MSH|^~\\&|SendApp|SendFac^1.2.3^ISO|RecvApp|RecvFac|20240102103000+0100||${type}|${ctrl}|P|2.5.1${extra}`;
const convert = (...lines: string[]): Bundle => {
  const b = convertMessage(parseHl7(lines.join('\r')), {
    identifierSystems: { MRN: 'urn:oid:2.16.840.1.113883.19.5' },
  });
  const issues = validateBundle(b);
  if (issues.length) throw new Error(JSON.stringify(issues.slice(0, 5)));
  return b;
};
const all = <T extends Resource>(b: Bundle, type: T['resourceType']): T[] =>
  (b.entry ?? []).filter((e) => e.resource?.resourceType === type).map((e) => e.resource as T);
const one = <T extends Resource>(b: Bundle, type: T['resourceType']): T => {
  const l = all<T>(b, type);
  expect(l).toHaveLength(1);
  return l[0];
};
const refTo = (r: Resource) => `urn:uuid:${r.id}`;
const byRef = <T extends Resource>(b: Bundle, reference: string | undefined): T =>
  b.entry!.find((e) => e.fullUrl === reference)!.resource as T;

/** Builds a segment from field number -> value, so field positions are explicit. */
const seg = (name: string, fields: Record<number, string>): string => {
  const max = Math.max(...Object.keys(fields).map(Number));
  const out = [name];
  for (let i = 1; i <= max; i++) out.push(fields[i] ?? '');
  return out.join('|');
};

const PID =
  'PID|1||12345^^^MRN^MR~987-65-4321^^^SSA^SS||Everyman^Adam^A^III^Dr.^^L~Smith^Adam^^^^^M|Jones^Mary|19800515|M||2106-3^White^CDCREC|1 Main St^Apt 2^Ann Arbor^MI^48103^USA^H||^PRN^PH^^1^734^5551234|^WPN^PH^^1^734^5559999||M^Married^HL70002||||||||||||20240101120000+0100|Y';
const PV1_FIELDS: Record<number, string> = {
  1: '1',
  2: 'I',
  3: '4E^401^B^GHH^^^Main^2',
  4: 'E',
  7: '1234^Attend^Anna^^^Dr',
  8: '5678^Refer^Rob',
  10: 'MED',
  17: '9999^Admit^Al',
  19: 'V100^^^MRN^VN',
  44: '20240102090000+0100',
};
const PV1 = seg('PV1', PV1_FIELDS);
const PV1_END = (end: string) => seg('PV1', { ...PV1_FIELDS, 45: end });

describe('ADT^A01 admit: PID[Patient], PV1[Encounter], EVN[Provenance], MSH[MessageHeader]', () => {
  const b = convert(
    MSH('ADT^A01^ADT_A01'),
    'EVN|A01|20240102100000+0100||01^Patient request^HL70062|OP1^Operator^Olga',
    PID,
    PV1,
  );
  const p = one<Patient>(b, 'Patient');
  test('PID-3 -> identifier (CX[Identifier]: CX.1 value, CX.4 system through the table, CX.5 type)', () => {
    expect(p.identifier![0]).toMatchObject({
      value: '12345',
      system: 'urn:oid:2.16.840.1.113883.19.5',
      type: { coding: [{ code: 'MR' }] },
    });
    expect(p.identifier![1]).toMatchObject({ value: '987-65-4321', type: { coding: [{ code: 'SS' }] } });
  });
  test('PID-5 -> name (XPN[HumanName]: .1 family, .2/.3 given, .4 suffix, .5 prefix, .7 use via NameType)', () => {
    expect(p.name![0]).toEqual({
      family: 'Everyman',
      given: ['Adam', 'A'],
      suffix: ['III'],
      prefix: ['Dr.'],
      use: 'official',
    });
    expect(p.name![1]).toMatchObject({ family: 'Smith', use: 'maiden' });
  });
  test('PID-6 -> mothersMaidenName extension; PID-7 -> birthDate; PID-8 -> gender via AdministrativeSex', () => {
    expect(p.extension).toContainEqual({
      url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName',
      valueString: 'Mary Jones',
    });
    expect(p.birthDate).toBe('1980-05-15');
    expect(p.gender).toBe('male');
  });
  test('PID-11 -> address (XAD), PID-13/14 -> telecom home/work (XTN), PID-16 -> maritalStatus via MaritalStatus', () => {
    expect(p.address![0]).toEqual({
      line: ['1 Main St', 'Apt 2'],
      city: 'Ann Arbor',
      state: 'MI',
      postalCode: '48103',
      country: 'USA',
      use: 'home',
    });
    expect(p.telecom![0]).toMatchObject({ system: 'phone', use: 'home', value: '+1 734 5551234' });
    expect(p.telecom![1]).toMatchObject({ system: 'phone', use: 'work', value: '+1 734 5559999' });
    expect(p.maritalStatus!.coding![0]).toMatchObject({
      system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus',
      code: 'M',
    });
  });
  test("XTN without an equipment type (XTN-3) or email (XTN-4): the IG's data-absent-reason on system (cpt-2)", () => {
    const b = convert(MSH('ADT^A01^ADT_A01'), 'PID|1||123^^^MRN||Doe^J||19800101|M|||||8885551212~^NET^^a@b.org');
    const pt = one<Patient>(b, 'Patient');
    expect(pt.telecom).toEqual([
      {
        _system: {
          extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'unknown' }],
        },
        value: '8885551212',
        use: 'home',
      },
      { system: 'email', value: 'a@b.org' },
    ]);
  });
  test('PV1-2 -> Encounter.class via PatientClass[EncounterClass]; A01 -> status in-progress (Event[EncounterStatus])', () => {
    const e = one<Encounter>(b, 'Encounter');
    expect(e.class).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' });
    expect(e.status).toBe('in-progress');
    expect(e.subject!.reference).toBe(refTo(p));
    expect(e.period).toEqual({ start: '2024-01-02T09:00:00+01:00' });
  });
  test('PV1-7/8/17 -> participant ATND/REF/ADM (XCN[Practitioner]); PV1-19 -> identifier VN; PV1-3 -> location (PL)', () => {
    const e = one<Encounter>(b, 'Encounter');
    const types = e.participant!.map((x) => x.type![0].coding![0].code);
    expect(types).toEqual(['ATND', 'REF', 'ADM']);
    const att = byRef<Practitioner>(b, e.participant![0].individual!.reference);
    expect(att.identifier![0].value).toBe('1234');
    expect(att.name![0]).toMatchObject({ family: 'Attend', given: ['Anna'], prefix: ['Dr'] });
    expect(e.identifier![0]).toMatchObject({ value: 'V100', type: { coding: [{ code: 'VN' }] } });
    const bed = byRef<{ resourceType: 'Location'; name: string; physicalType: { coding: { code: string }[] } }>(
      b,
      e.location![0].location.reference,
    );
    expect(bed.name).toBe('B');
    expect(bed.physicalType.coding[0].code).toBe('bd');
    expect(e.location![0].status).toBe('active');
  });
  test('EVN-2 -> Provenance.recorded, EVN-4 -> reason, EVN-5 -> agent; MSH-9 -> MessageHeader.eventCoding', () => {
    const pv = one<Provenance>(b, 'Provenance');
    expect(pv.recorded).toBe('2024-01-02T10:00:00+01:00');
    expect(pv.reason![0].coding!.some((c) => c.code === '01')).toBe(true);
    expect(pv.agent[0].who!.reference).toBeDefined();
    expect(pv.target.length).toBeGreaterThan(2);
    const h = one<MessageHeader>(b, 'MessageHeader');
    expect(h.eventCoding).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/v2-0003', code: 'A01' });
    expect(h.source.name).toBe('SendApp');
    expect(h.destination![0].name).toBe('RecvApp');
  });
});

describe('ADT event semantics', () => {
  test('ADT^A03 discharge: PV1-45 -> period.end and status finished', () => {
    const b = convert(MSH('ADT^A03^ADT_A03'), 'EVN|A03|20240105120000+0100', PID, PV1_END('20240105110000+0100'));
    const e = one<Encounter>(b, 'Encounter');
    expect(e.status).toBe('finished');
    expect(e.period).toEqual({ start: '2024-01-02T09:00:00+01:00', end: '2024-01-05T11:00:00+01:00' });
  });
  test('ADT^A03 without PV1-45: period.end from EVN-2', () => {
    const b = convert(MSH('ADT^A03^ADT_A03'), 'EVN|A03|20240105120000+0100', PID, PV1);
    expect(one<Encounter>(b, 'Encounter').period!.end).toBe('2024-01-05T12:00:00+01:00');
  });
  test('ADT^A04 register -> planned; ADT^A05 pre-admit -> planned (Event[EncounterStatus])', () => {
    expect(one<Encounter>(convert(MSH('ADT^A04^ADT_A01'), 'EVN|A04|20240102', PID, PV1), 'Encounter').status).toBe(
      'planned',
    );
    expect(one<Encounter>(convert(MSH('ADT^A05^ADT_A05'), 'EVN|A05|20240102', PID, PV1), 'Encounter').status).toBe(
      'planned',
    );
  });
  test('ADT^A08 / A31 update: same deterministic ids as the admit (PUT updates the same resources)', () => {
    const a01 = convert(MSH('ADT^A01^ADT_A01', 'X1'), PID, PV1);
    const a08 = convert(MSH('ADT^A08^ADT_A01', 'X2'), PID, PV1);
    expect(one<Patient>(a08, 'Patient').id).toBe(one<Patient>(a01, 'Patient').id);
    expect(one<Encounter>(a08, 'Encounter').id).toBe(one<Encounter>(a01, 'Encounter').id);
    const a31 = convert(MSH('ADT^A31^ADT_A05', 'X3'), PID);
    expect(one<Patient>(a31, 'Patient').id).toBe(one<Patient>(a01, 'Patient').id);
    expect(a31.entry!.find((e) => e.resource?.resourceType === 'Patient')!.request).toEqual({
      method: 'PUT',
      url: `Patient/${one<Patient>(a01, 'Patient').id}`,
    });
  });
  test('ADT^A11 cancel admit -> cancelled; ADT^A13 cancel discharge -> in-progress without period.end', () => {
    expect(one<Encounter>(convert(MSH('ADT^A11^ADT_A09'), PID, PV1), 'Encounter').status).toBe('cancelled');
    const e = one<Encounter>(convert(MSH('ADT^A13^ADT_A01'), PID, PV1_END('20240105110000+0100')), 'Encounter');
    expect(e.status).toBe('in-progress');
    expect(e.period!.end).toBeUndefined();
  });
  test('ADT^A12 cancel transfer: PV1-3 stays the active location, the cancelled PV1-6 move is dropped', () => {
    const b = convert(MSH('ADT^A12^ADT_A12'), PID, seg('PV1', { ...PV1_FIELDS, 6: '5W^510^A' }));
    const e = one<Encounter>(b, 'Encounter');
    expect(e.status).toBe('in-progress');
    expect(
      e.location!.map((l) => [
        byRef<{ resourceType: 'Location'; name: string }>(b, l.location.reference).name,
        l.status,
      ]),
    ).toEqual([['B', 'active']]);
  });
  test('ADT^A40 merge: MRG-1 prior patient replaced-by the PID patient, which replaces it', () => {
    const b = convert(MSH('ADT^A40^ADT_A39'), 'EVN|A40|20240102', PID, 'MRG|55555^^^MRN^MR');
    const [survivor, prior] = all<Patient>(b, 'Patient');
    expect(prior.identifier![0].value).toBe('55555');
    expect(prior.link).toEqual([{ other: { reference: refTo(survivor) }, type: 'replaced-by' }]);
    expect(survivor.link).toEqual([{ other: { reference: refTo(prior) }, type: 'replaces' }]);
    expect(prior.active).toBe(false);
  });
  test('ADT^A23 delete visit: a DELETE entry for the Encounter', () => {
    const b = convert(MSH('ADT^A23^ADT_A21'), 'EVN|A23|20240102', PID, PV1);
    const del = b.entry!.find((e) => e.request?.method === 'DELETE');
    expect(del?.request?.url).toMatch(/^Encounter[/?]/);
    expect(del?.resource).toBeUndefined();
  });
});

describe('ORU^R01: OBR[DiagnosticReport], OBX[Observation], NTE, SPM', () => {
  const b = convert(
    MSH('ORU^R01^ORU_R01'),
    PID,
    'ORC|RE|PLC1^EPIC|FIL1^LAB',
    'OBR|1|PLC1^EPIC|FIL1^LAB|57021-8^CBC W Auto Differential panel^LN|||20240102080000+0100|||||||||1111^Order^Olivia||||||20240102120000+0100||HM|F',
    'OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL^grams per deciliter^UCUM|12.0-16.0|N|||F|||20240102083000+0100',
    'NTE|1||Specimen slightly hemolyzed',
    'OBX|2|NM|6690-2^WBC^LN||11.5|10*3/uL|4.0-10.0|H|||C',
    'OBX|3|SN|777-3^Platelets^LN||<^10|10*3/uL||LL|||P',
    'OBX|4|ST|5778-6^Color of Urine^LN||Yellow\\S\\Amber||||||F',
    'OBX|5|CWE|600-7^Bacteria identified^LN||3092008^Staphylococcus aureus^SCT||||||F',
    'OBX|6|NR|X-1^Range^L||10^20||||||F',
    'OBX|7|SN|X-2^Ratio^L||^1^:^128||||||F',
    'OBX|8|DTM|X-3^Date^L||202401021030+0100||||||F',
  );
  const obs = all<Observation>(b, 'Observation');
  test('OBR -> DiagnosticReport: OBR-4 code, OBR-7 effective, OBR-22 issued, OBR-24 category, OBR-25 F -> final (ResultStatus)', () => {
    const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
    expect(dr.code.coding![0]).toEqual({
      system: 'http://loinc.org',
      code: '57021-8',
      display: 'CBC W Auto Differential panel',
    });
    expect(dr.effectiveDateTime).toBe('2024-01-02T08:00:00+01:00');
    expect(dr.issued).toBe('2024-01-02T12:00:00+01:00');
    expect(dr.category![0].coding!.some((c) => c.code === 'HM')).toBe(true);
    expect(dr.status).toBe('final');
    expect(dr.identifier!.map((i) => [i.type!.coding![0].code, i.value])).toEqual([
      ['PLAC', 'PLC1'],
      ['FILL', 'FIL1'],
    ]);
  });
  test('every OBX under the OBR is a result of its report, in order', () => {
    const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
    expect(dr.result!.map((r) => r.reference)).toEqual(obs.map(refTo));
  });
  test('OBX-2 NM: OBX-5 -> valueQuantity.value, OBX-6 -> unit/code/system, OBX-7 -> referenceRange.text, OBX-8 -> interpretation', () => {
    expect(obs[0].valueQuantity).toEqual({
      value: 13.2,
      unit: 'grams per deciliter',
      system: 'http://unitsofmeasure.org',
      code: 'g/dL',
    });
    expect(obs[0].referenceRange![0]).toMatchObject({ text: '12.0-16.0', low: { value: 12 }, high: { value: 16 } });
    expect(obs[0].interpretation![0].coding![0]).toMatchObject({
      system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation',
      code: 'N',
    });
    expect(obs[1].interpretation![0].coding![0].code).toBe('H');
    expect(obs[0].effectiveDateTime).toBe('2024-01-02T08:30:00+01:00');
  });
  test('OBX-11 F/C/P -> final/corrected/preliminary (ObservationResultStatusCodesInterpretation)', () => {
    expect(obs.slice(0, 3).map((o) => o.status)).toEqual(['final', 'corrected', 'preliminary']);
  });
  test('OBX-2 SN with a comparator -> valueQuantity.comparator', () => {
    expect(obs[2].valueQuantity).toMatchObject({ comparator: '<', value: 10 });
  });
  test('OBX-2 ST -> valueString with escapes decoded; CWE -> valueCodeableConcept; NR -> valueRange; SN ratio -> valueRatio; DTM -> valueDateTime', () => {
    expect(obs[3].valueString).toBe('Yellow^Amber');
    expect(obs[4].valueCodeableConcept!.coding![0]).toEqual({
      system: 'http://snomed.info/sct',
      code: '3092008',
      display: 'Staphylococcus aureus',
    });
    expect(obs[5].valueRange).toEqual({ low: { value: 10 }, high: { value: 20 } });
    expect(obs[6].valueRatio).toEqual({ numerator: { value: 1 }, denominator: { value: 128 } });
    expect(obs[7].valueDateTime).toBe('2024-01-02T10:30:00+01:00');
  });
  test('NTE after an OBX -> Observation.note', () => {
    expect(obs[0].note).toEqual([{ text: 'Specimen slightly hemolyzed' }]);
  });
  test('ORC/OBR -> ServiceRequest (intent order, OBR-16 requester), the report is basedOn it', () => {
    const sr = one<ServiceRequest>(b, 'ServiceRequest');
    expect(sr.intent).toBe('order');
    expect(byRef<Practitioner>(b, sr.requester!.reference).identifier![0].value).toBe('1111');
    expect(one<DiagnosticReport>(b, 'DiagnosticReport').basedOn![0].reference).toBe(refTo(sr));
  });
});

describe('ORU^R01 with two OBR groups: each OBX belongs to the OBR above it', () => {
  test('repeating-group assignment', () => {
    const b = convert(
      MSH('ORU^R01^ORU_R01'),
      PID,
      'OBR|1||F1|A^Panel A^L|||20240101',
      'OBX|1|NM|a1^A1^L||1||||||F',
      'OBX|2|NM|a2^A2^L||2||||||F',
      'OBR|2||F2|B^Panel B^L|||20240101',
      'OBX|1|NM|b1^B1^L||3||||||F',
    );
    const reports = all<DiagnosticReport>(b, 'DiagnosticReport');
    expect(reports).toHaveLength(2);
    const codes = (d: DiagnosticReport) =>
      d.result!.map((r) => byRef<Observation>(b, r.reference).code.coding![0].code);
    expect(codes(reports[0])).toEqual(['a1', 'a2']);
    expect(codes(reports[1])).toEqual(['b1']);
  });
});

describe('ORM^O01 / OML^O21: ORC[ServiceRequest], OBR[ServiceRequest], TQ1, SPM[Specimen]', () => {
  test('ORM^O01: ORC-1 NW -> active, ORC-2/3 placer/filler, ORC-9 authoredOn, ORC-12 requester, OBR-4 code', () => {
    const b = convert(
      MSH('ORM^O01^ORM_O01'),
      PID,
      seg('ORC', { 1: 'NW', 2: 'P100^OE', 3: 'F100^LAB', 4: 'G1', 9: '20240102090000+0100', 12: '4444^Doc^Dan' }),
      'OBR|1|P100^OE|F100^LAB|24331-1^Lipid panel^LN|R',
    );
    const sr = one<ServiceRequest>(b, 'ServiceRequest');
    expect(sr.status).toBe('active');
    expect(sr.intent).toBe('order');
    expect(sr.authoredOn).toBe('2024-01-02T09:00:00+01:00');
    expect(sr.requisition).toMatchObject({ value: 'G1', type: { coding: [{ code: 'PGN' }] } });
    expect(sr.code!.coding![0]).toMatchObject({ system: 'http://loinc.org', code: '24331-1' });
    expect(sr.priority).toBe('routine');
    expect(byRef<Practitioner>(b, sr.requester!.reference).name![0].family).toBe('Doc');
    expect(all<DiagnosticReport>(b, 'DiagnosticReport')).toHaveLength(0);
  });
  test('ORM^O01 with two ORC-only orders: two ServiceRequests (ORC[ServiceRequest])', () => {
    const b = convert(MSH('ORM^O01^ORM_O01'), PID, 'ORC|NW|P1^OE', 'ORC|NW|P2^OE');
    expect(all<ServiceRequest>(b, 'ServiceRequest').map((s) => s.identifier![0].value)).toEqual(['P1', 'P2']);
  });
  test('ORM^O01: ORC-1 OC -> revoked, CA -> active (OrderControlCode[ServiceRequest.status]); ORC-5 wins (OrderStatus)', () => {
    const sr = (orc: string) =>
      one<ServiceRequest>(
        convert(MSH('ORM^O01^ORM_O01'), PID, orc, 'OBR|1|P100^OE|F100^LAB|24331-1^Lipid panel^LN'),
        'ServiceRequest',
      );
    expect(sr('ORC|OC|P100^OE|F100^LAB').status).toBe('revoked');
    expect(sr('ORC|CA|P100^OE|F100^LAB').status).toBe('active');
    expect(sr('ORC|SC|P100^OE|F100^LAB||CM').status).toBe('completed');
  });
  test('OML^O21: TQ1-7/8 -> occurrencePeriod, TQ1-9 -> priority; SPM-4 type, SPM-17 collected, SPM-2 identifiers', () => {
    const b = convert(
      MSH('OML^O21^OML_O21'),
      PID,
      'ORC|NW|P200^OE||||||||20240102',
      'TQ1|1||||||20240103080000+0100|20240103090000+0100|S',
      'OBR|1|P200^OE||2345-7^Glucose^LN',
      'SPM|1|SP1&OE^SF1&LAB||119297000^Blood specimen^SCT|||||||||||||20240103081500+0100',
    );
    const sr = one<ServiceRequest>(b, 'ServiceRequest');
    expect(sr.occurrencePeriod).toEqual({ start: '2024-01-03T08:00:00+01:00', end: '2024-01-03T09:00:00+01:00' });
    expect(sr.priority).toBe('stat');
    const sp = one<Specimen>(b, 'Specimen');
    expect(sp.type!.coding![0]).toMatchObject({ system: 'http://snomed.info/sct', code: '119297000' });
    expect(sp.collection!.collectedDateTime).toBe('2024-01-03T08:15:00+01:00');
    expect(sp.identifier!.map((i) => i.value)).toEqual(['SP1', 'SF1']);
    expect(sr.specimen![0].reference).toBe(refTo(sp));
  });
});

describe('OUL^R22 (specimen-first): SPM heads the orders and results that follow', () => {
  test('each SPM group links its specimen to the DiagnosticReport, ServiceRequest and Observations under it', () => {
    const b = convert(
      MSH('OUL^R22^OUL_R22'),
      PID,
      'SPM|1|S1&LAB||119297000^Blood^SCT',
      'OBX|1|NM|S-VOL^Volume^L||5|mL||||||F',
      'OBR|1||F10^LAB|2345-7^Glucose^LN',
      'OBX|1|NM|2345-7^Glucose^LN||95|mg/dL||||||F',
      'SPM|2|S2&LAB||122575003^Urine^SCT',
      'OBR|2||F11^LAB|5811-5^Specific gravity^LN',
      'OBX|1|NM|5811-5^Specific gravity^LN||1.02||||||F',
    );
    const [s1, s2] = all<Specimen>(b, 'Specimen');
    const [d1, d2] = all<DiagnosticReport>(b, 'DiagnosticReport');
    expect(d1.specimen!.map((r) => r.reference)).toEqual([refTo(s1)]);
    expect(d2.specimen!.map((r) => r.reference)).toEqual([refTo(s2)]);
    const obs = all<Observation>(b, 'Observation');
    expect(obs.map((o) => o.specimen?.reference)).toEqual([refTo(s1), refTo(s1), refTo(s2)]);
    expect(d1.result!.map((r) => r.reference)).toEqual([refTo(obs[1])]);
  });
});

describe('VXU^V04: RXA[Immunization], RXR[Immunization], ORC', () => {
  const b = convert(
    MSH('VXU^V04^VXU_V04'),
    PID,
    'ORC|RE||IZ-783274^NDA|||||||||7777^Nurse^Nancy',
    'RXA|0|1|20230615103000-0500||08^Hep B, adolescent or pediatric^CVX|0.5|mL^milliliters^UCUM||00^new immunization record^NIP001|7777^Nurse^Nancy|||||LOT-1|20251231|MSD^Merck^MVX|||CP|A',
    'RXR|C28161^Intramuscular^NCIT|LA^Left arm^HL70163',
    'OBX|1|CE|64994-7^Vaccine funding program eligibility^LN|1|V02^VFC eligible^HL70064||||||F',
  );
  const im = one<Immunization>(b, 'Immunization');
  test('RXA-3 occurrence, RXA-5 vaccineCode, RXA-6/7 doseQuantity, RXA-15 lot, RXA-16 expiration, RXA-17 manufacturer, RXA-20 CP -> completed', () => {
    expect(im.occurrenceDateTime).toBe('2023-06-15T10:30:00-05:00');
    expect(im.vaccineCode.coding![0]).toEqual({
      system: 'http://hl7.org/fhir/sid/cvx',
      code: '08',
      display: 'Hep B, adolescent or pediatric',
    });
    expect(im.doseQuantity).toEqual({
      value: 0.5,
      unit: 'milliliters',
      system: 'http://unitsofmeasure.org',
      code: 'mL',
    });
    expect(im.lotNumber).toBe('LOT-1');
    expect(im.expirationDate).toBe('2025-12-31');
    expect(im.manufacturer!.display).toBe('Merck');
    expect(im.status).toBe('completed');
    expect(im.primarySource).toBe(true);
    expect(im.performer![0].function!.coding![0].code).toBe('AP');
    expect(im.identifier![0]).toMatchObject({ value: 'IZ-783274', type: { coding: [{ code: 'FILL' }] } });
  });
  test('RXR-1 route, RXR-2 site', () => {
    expect(im.route!.coding!.some((c) => c.code === 'C28161')).toBe(true);
    expect(im.site!.coding!.some((c) => c.code === 'LA')).toBe(true);
  });
  test('OBX after RXA: an Observation about the immunization', () => {
    const o = one<Observation>(b, 'Observation');
    expect(o.partOf![0].reference).toBe(refTo(im));
    expect(o.valueCodeableConcept!.coding![0].code).toBe('V02');
  });
});

describe('SIU: SCH[Appointment], AIS/AIG/AIL/AIP, event status', () => {
  const siu = (trigger: string, status = 'Booked') =>
    convert(
      MSH(`SIU^${trigger}^SIU_S12`),
      `SCH|P1^OE|F1^SCHED|||||CHECKUP^Checkup^HL70277||30|min|^^^20240110090000+0100^20240110093000+0100||||||||||||${status}`,
      PID,
      'RGS|1|A',
      'AIS|1|A|99213^Office visit^CPT|20240110090000+0100|||30|min',
      'AIG|1|A|R1^Room scope^L|EQ^Equipment^HL70182',
      'AIL|1|A|^EXAM1^^CLINIC',
      'AIP|1|A|5555^Smith^Sam|D^Doctor^HL70182',
    );
  test('SCH-1/2 identifiers, SCH-8 appointmentType, SCH-9 minutesDuration, SCH-11 start/end, SCH-25 Booked -> booked', () => {
    const a = one<Appointment>(siu('S12'), 'Appointment');
    expect(a.identifier!.map((i) => i.value)).toEqual(['P1', 'F1']);
    expect(a.appointmentType!.coding!.some((c) => c.code === 'CHECKUP')).toBe(true);
    expect(a.minutesDuration).toBe(30);
    expect(a.start).toBe('2024-01-10T09:00:00+01:00');
    expect(a.end).toBe('2024-01-10T09:30:00+01:00');
    expect(a.status).toBe('booked');
    expect(a.serviceType![0].coding![0].code).toBe('99213');
  });
  test('participants: the patient, AIG resource, AIL location, AIP practitioner', () => {
    const b = siu('S12');
    const a = one<Appointment>(b, 'Appointment');
    const actors = a.participant.map((p) =>
      p.actor?.reference ? byRef<Resource>(b, p.actor.reference).resourceType : p.actor?.display,
    );
    expect(actors).toEqual(['Patient', 'Room scope', 'Location', 'Practitioner']);
    expect(a.participant[1].actor!.identifier!.value).toBe('R1'); // AIG-3 -> actor(Location.identifier)
  });
  test('SIU^S15 cancellation -> cancelled; S17 deletion -> entered-in-error; S26 no-show -> noshow (FillerStatusCodes / trigger)', () => {
    expect(one<Appointment>(siu('S15', 'Cancelled'), 'Appointment').status).toBe('cancelled');
    expect(one<Appointment>(siu('S17', 'Deleted'), 'Appointment').status).toBe('entered-in-error');
    expect(one<Appointment>(siu('S26', 'Noshow'), 'Appointment').status).toBe('noshow');
  });
  test('SCH-26/27 placer/filler order numbers -> basedOn ServiceRequest identifiers', () => {
    const b = convert(
      MSH('SIU^S12^SIU_S12'),
      seg('SCH', { 1: 'P1^OE', 2: 'F1^SCHED', 25: 'Booked', 26: 'ORD-1^OE', 27: 'ORD-F^LAB' }),
      PID,
    );
    expect(one<Appointment>(b, 'Appointment').basedOn!.map((r) => [r.type, r.identifier!.value])).toEqual([
      ['ServiceRequest', 'ORD-1'],
      ['ServiceRequest', 'ORD-F'],
    ]);
  });
  test('SIU^S13 reschedule keeps the same Appointment id (filler id)', () => {
    expect(one<Appointment>(siu('S13'), 'Appointment').id).toBe(one<Appointment>(siu('S12'), 'Appointment').id);
  });
});

describe('MDM: TXA[DocumentReference]', () => {
  test('MDM^T02: TXA-2 type, TXA-6 date, TXA-9 author, TXA-12 masterIdentifier, TXA-17 AU -> final, OBX text -> content', () => {
    const b = convert(
      MSH('MDM^T02^MDM_T02'),
      'EVN|T02|20240102',
      PID,
      PV1,
      seg('TXA', {
        1: '1',
        2: 'DS^Discharge summary^HL70270',
        3: 'TX',
        4: '20240102',
        6: '20240102110000+0100',
        9: '2222^Writer^Wanda',
        12: 'DOC-1^EHR',
        17: 'AU',
        19: 'AV',
      }),
      'OBX|1|TX|||Line one\\.br\\Line two||||||F',
      'OBX|2|TX|||Line three||||||F',
    );
    const d = one<DocumentReference>(b, 'DocumentReference');
    expect(d.type!.coding![0].code).toBe('DS');
    expect(d.date).toBe('2024-01-02T11:00:00+01:00');
    expect(d.masterIdentifier!.value).toBe('DOC-1');
    expect(d.docStatus).toBe('final');
    expect(d.status).toBe('current');
    expect(Buffer.from(d.content[0].attachment.data!, 'base64').toString('utf8')).toBe(
      'Line one\nLine two\nLine three',
    );
    expect(d.content[0].attachment.contentType).toBe('text/plain');
  });
  test('MDM COMMON_ORDER: ORC/OBR -> ServiceRequest only (no DiagnosticReport), related to the document', () => {
    const b = convert(
      MSH('MDM^T02^MDM_T02'),
      PID,
      'ORC|RE|P9^OE',
      'OBR|1|P9^OE||11488-4^Consult note^LN',
      seg('TXA', { 1: '1', 2: 'CN', 3: 'TX', 12: 'DOC-9^EHR', 17: 'AU' }),
      'OBX|1|TX|||text||||||F',
    );
    expect(all<DiagnosticReport>(b, 'DiagnosticReport')).toHaveLength(0);
    const sr = one<ServiceRequest>(b, 'ServiceRequest');
    expect(one<DocumentReference>(b, 'DocumentReference').context!.related![0].reference).toBe(refTo(sr));
  });
  test('MDM^T06 addendum: TXA-13 parent document -> relatesTo appends', () => {
    const b = convert(
      MSH('MDM^T06^MDM_T02'),
      PID,
      seg('TXA', { 1: '1', 2: 'PN', 3: 'TX', 4: '20240102', 12: 'DOC-2^EHR', 13: 'DOC-1^EHR', 17: 'AU' }),
      'OBX|1|TX|||Addendum text||||||F',
    );
    const d = one<DocumentReference>(b, 'DocumentReference');
    expect(d.relatesTo).toEqual([
      {
        code: 'appends',
        target: { identifier: { value: 'DOC-1', system: 'urn:ferry:id:EHR' }, type: 'DocumentReference' },
      },
    ]);
  });
});

describe('Pharmacy: RXO/RXE[MedicationRequest], RXR, RXD[MedicationDispense]', () => {
  test('RDE^O11: RXE-2 medication, RXE-3/5 dose, RXE-10/11 dispense quantity, RXE-12 refills, RXR-1 route', () => {
    const b = convert(
      MSH('RDE^O11^RDE_O11'),
      PID,
      'ORC|NW|RX1^OE|||||||20240102|||3333^Pres^Pat',
      'RXE|^^^20240102|197361^Amlodipine 5 MG Oral Tablet^RXNORM|5||mg^milligram^UCUM|||||30|{tbl}^tablet^UCUM|2',
      'RXR|PO^Oral^HL70162',
    );
    const mr = one<MedicationRequest>(b, 'MedicationRequest');
    expect(mr.status).toBe('active');
    expect(mr.intent).toBe('order');
    expect(mr.medicationCodeableConcept!.coding![0]).toMatchObject({
      system: 'http://www.nlm.nih.gov/research/umls/rxnorm',
      code: '197361',
    });
    expect(mr.dosageInstruction![0].doseAndRate![0].doseQuantity).toMatchObject({ value: 5, code: 'mg' });
    expect(mr.dispenseRequest).toMatchObject({ quantity: { value: 30 }, numberOfRepeatsAllowed: 2 });
    expect(mr.dosageInstruction![0].route!.coding!.some((c) => c.code === 'PO')).toBe(true);
    expect(mr.authoredOn).toBe('2024-01-02');
  });
  test('RDS^O13: RXD -> MedicationDispense (RXD-2 drug, RXD-3 handed over, RXD-4 quantity) authorised by the order', () => {
    const b = convert(
      MSH('RDS^O13^RDS_O13'),
      PID,
      'ORC|RE|RX1^OE',
      'RXE|^^^20240102|197361^Amlodipine^RXNORM|5||mg',
      'RXD|1|197361^Amlodipine^RXNORM|20240103|30|{tbl}||RXN-9',
    );
    const md = one<MedicationDispense>(b, 'MedicationDispense');
    expect(md.whenHandedOver).toBe('2024-01-03');
    expect(md.quantity!.value).toBe(30);
    expect(md.authorizingPrescription![0].reference).toBe(refTo(one<MedicationRequest>(b, 'MedicationRequest')));
  });
});

describe('Clinical ADT segments: AL1, IAM, DG1, PR1, NK1, IN1, GT1', () => {
  test('AL1[AllergyIntolerance]: AL1-2 category/type, AL1-3 code, AL1-4 criticality, AL1-5 reaction, clinicalStatus active', () => {
    const b = convert(
      MSH('ADT^A01^ADT_A01'),
      PID,
      'AL1|1|DA^Drug allergy^HL70127|70618^Penicillin^RXNORM|SV^Severe^HL70128|Hives|20200101',
    );
    const a = one<AllergyIntolerance>(b, 'AllergyIntolerance');
    expect(a.category).toEqual(['medication']);
    expect(a.type).toBe('allergy');
    expect(a.code!.coding![0].code).toBe('70618');
    expect(a.criticality).toBe('high');
    expect(a.reaction![0]).toMatchObject({ manifestation: [{ text: 'Hives' }], severity: 'severe' });
    expect(a.onsetDateTime).toBe('2020-01-01');
    expect(a.clinicalStatus!.coding![0].code).toBe('active');
  });
  test('ADT^A60 IAM[AllergyIntolerance] with action D -> DELETE', () => {
    const b = convert(MSH('ADT^A60^ADT_A60'), PID, 'IAM|1|DA|70618^Penicillin^RXNORM|MO|Rash|D|A1^EHR');
    expect(b.entry!.find((e) => /^AllergyIntolerance[/?]/.test(e.request?.url ?? ''))!.request!.method).toBe('DELETE');
  });
  test('DG1[Condition]: DG1-3 code, DG1-4 text, DG1-5 onset, DG1-19 recordedDate; Encounter.diagnosis', () => {
    const b = convert(
      MSH('ADT^A01^ADT_A01'),
      PID,
      PV1,
      seg('DG1', {
        1: '1',
        3: 'I10^Essential hypertension^I10',
        4: 'High blood pressure',
        5: '20230101',
        6: 'A',
        15: '1',
        19: '20240102',
      }),
    );
    const c = one<Condition>(b, 'Condition');
    expect(c.code!.coding![0]).toMatchObject({ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I10' });
    expect(c.code!.text).toBe('High blood pressure');
    expect(c.onsetDateTime).toBe('2023-01-01');
    expect(c.recordedDate).toBe('2024-01-02');
    expect(one<Encounter>(b, 'Encounter').diagnosis![0]).toMatchObject({ condition: { reference: refTo(c) }, rank: 1 });
  });
  test('PR1[Procedure]: PR1-3 code, PR1-5 performed, PR1-8 anesthesiologist (88189002), PR1-11 surgeon (304292004)', () => {
    const b = convert(
      MSH('ADT^A01^ADT_A01'),
      PID,
      'PR1|1||80146002^Appendectomy^SCT||20240102101500+0100|||1010^Gas^Gary|||2020^Cut^Carl',
    );
    const p = one<Procedure>(b, 'Procedure');
    expect(p.code!.coding![0]).toMatchObject({ system: 'http://snomed.info/sct', code: '80146002' });
    expect(p.performedDateTime).toBe('2024-01-02T10:15:00+01:00');
    expect(p.performer!.map((x) => x.function!.coding![0].code)).toEqual(['88189002', '304292004']);
  });
  test('NK1[RelatedPerson]: NK1-2 name, NK1-3 relationship (Relationship), NK1-5 telecom; also Patient.contact', () => {
    const b = convert(MSH('ADT^A01^ADT_A01'), PID, 'NK1|1|Everyman^Eve|SPO^Spouse^HL70063||^PRN^PH^^^734^5550000');
    const r = one<RelatedPerson>(b, 'RelatedPerson');
    expect(r.name![0]).toMatchObject({ family: 'Everyman', given: ['Eve'] });
    expect(r.relationship![0].coding!.some((c) => c.code === 'SPS' || c.code === 'SPO')).toBe(true);
    expect(r.telecom![0]).toMatchObject({ system: 'phone', use: 'home', value: '734 5550000' });
    expect(one<Patient>(b, 'Patient').contact![0].name!.family).toBe('Everyman');
  });
  test('IN1[Coverage]: IN1-4 payor, IN1-12/13 period, IN1-17 relationship SEL -> subscriber is the patient', () => {
    const b = convert(
      MSH('ADT^A01^ADT_A01'),
      PID,
      'IN1|1|PLAN1^Gold Plan|PAYER1^^^NAIC|Acme Insurance||||GRP-9||||20240101|20241231||||SEL^Self^HL70063',
    );
    const cov = one<Coverage>(b, 'Coverage');
    expect(byRef<{ resourceType: 'Organization'; name: string }>(b, cov.payor[0].reference).name).toBe(
      'Acme Insurance',
    );
    expect(cov.period).toEqual({ start: '2024-01-01', end: '2024-12-31' });
    expect(cov.subscriber!.reference).toBe(refTo(one<Patient>(b, 'Patient')));
    expect(cov.beneficiary.reference).toBe(refTo(one<Patient>(b, 'Patient')));
  });
});

describe('PV2[Encounter] and PD1[Patient] extras', () => {
  test('PV2-1 pending location (planned), PV2-8 planned start, PV2-13 referrer, PV2-38 mode of arrival; PD1-4 GP, PD1-6 disability, PD1-14 congregation', () => {
    const b = convert(
      MSH('ADT^A01^ADT_A01'),
      PID,
      seg('PD1', { 4: '4321^Family^Fred', 6: 'H1^Wheelchair^L', 14: 'St. Mary' }),
      PV1,
      seg('PV2', { 1: '5W^510^A', 8: '20240103080000+0100', 13: '8765^Referrer^Rita', 38: 'A^Ambulance^HL70430' }),
    );
    const e = one<Encounter>(b, 'Encounter');
    const pending = e.location!.find((l) => l.status === 'planned')!;
    expect(byRef<{ resourceType: 'Location'; name: string }>(b, pending.location.reference).name).toBe('A');
    expect(e.extension).toContainEqual({
      url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate',
      valueDateTime: '2024-01-03T08:00:00+01:00',
    });
    expect(e.extension).toContainEqual({
      url: 'http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival',
      valueCoding: { system: 'http://terminology.hl7.org/CodeSystem/v2-0430', code: 'A', display: 'Ambulance' },
    });
    const ref = e.participant!.find(
      (x) =>
        x.type![0].text === 'referrer' &&
        byRef<Practitioner>(b, x.individual!.reference).name![0].family === 'Referrer',
    );
    expect(ref).toBeDefined();
    const p = one<Patient>(b, 'Patient');
    expect(byRef<Practitioner>(b, p.generalPractitioner![0].reference).name![0].family).toBe('Family');
    expect(p.extension).toContainEqual({
      url: 'http://hl7.org/fhir/StructureDefinition/patient-congregation',
      valueString: 'St. Mary',
    });
    expect(
      p.extension!.find((x) => x.url === 'http://hl7.org/fhir/StructureDefinition/patient-disability')!
        .valueCodeableConcept!.coding![0].code,
    ).toBe('H1');
  });
});

describe('PRT[PractitionerRole]', () => {
  test('PRT after PV1: PRT-4 code, PRT-5 practitioner, PRT-8 organization, PRT-11/12 period; an Encounter participant', () => {
    const b = convert(
      MSH('ADT^A01^ADT_A01'),
      PID,
      PV1,
      seg('PRT', {
        1: '1',
        2: 'AD',
        4: 'AD^Admitting Provider^HL70912',
        5: '10535^Beethoven^Ludwig',
        8: 'Good Health Hospital',
        11: '20210223093000+0100',
        12: '20210224100000+0100',
      }),
    );
    const role = one<{
      resourceType: 'PractitionerRole';
      id: string;
      code: { coding: { code: string }[] }[];
      practitioner: { reference: string };
      organization: { reference: string };
      period: object;
    }>(b, 'PractitionerRole');
    expect(role.code[0].coding.some((c) => c.code === 'AD')).toBe(true);
    expect(byRef<Practitioner>(b, role.practitioner.reference).name![0].family).toBe('Beethoven');
    expect(byRef<{ resourceType: 'Organization'; name: string }>(b, role.organization.reference).name).toBe(
      'Good Health Hospital',
    );
    expect(role.period).toEqual({ start: '2021-02-23T09:30:00+01:00', end: '2021-02-24T10:00:00+01:00' });
    const e = one<Encounter>(b, 'Encounter');
    expect(e.participant!.some((p) => p.individual?.reference === `urn:uuid:${role.id}`)).toBe(true);
  });
});

describe('DFT^P03 / BAR^P01: FT1 -> ChargeItem on the Account', () => {
  test('FT1-4 date, FT1-6 type, FT1-7 code, FT1-10 quantity', () => {
    const b = convert(
      MSH('DFT^P03^DFT_P03'),
      'EVN|P03|20240102',
      seg('PID', { 1: '1', 3: '12345^^^MRN^MR', 5: 'Doe^J', 18: 'ACC-1^^^MRN' }),
      PV1,
      'FT1|1|T100||20240102|20240102|CG|99213^Office visit^CPT||| 2',
    );
    const ci = one<ChargeItem>(b, 'ChargeItem');
    expect(ci.code.coding![0]).toMatchObject({ system: 'http://www.ama-assn.org/go/cpt', code: '99213' });
    expect(ci.status).toBe('billable');
    expect(ci.occurrenceDateTime).toBe('2024-01-02');
    expect(ci.quantity).toEqual({ value: 2 });
    expect(byRef<Account>(b, ci.account![0].reference).identifier![0].value).toBe('ACC-1'); // PID-18
  });
  test('BAR^P01 makes the PID-18 Account (active); BAR^P02 purge makes it inactive', () => {
    const acct = (t: string) =>
      one<Account>(
        convert(MSH(`BAR^${t}^BAR_${t}`), seg('PID', { 1: '1', 3: '12345^^^MRN^MR', 5: 'Doe^J', 18: 'ACC-9^^^MRN' })),
        'Account',
      );
    expect(acct('P01')).toMatchObject({ status: 'active', identifier: [{ value: 'ACC-9' }] });
    expect(acct('P02').status).toBe('inactive');
    expect(acct('P02').id).toBe(acct('P01').id);
  });
  test('BAR^P01: GT1 -> Account.guarantor', () => {
    const b = convert(
      MSH('BAR^P01^BAR_P01'),
      'EVN|P01|20240102',
      PID,
      'GT1|1||Everyman^Eve||1 Main St^^Ann Arbor^MI|||||||SPO^Spouse^HL70063',
    );
    const acct = one<Account>(b, 'Account');
    expect(byRef<RelatedPerson>(b, acct.guarantor![0].party.reference).name![0].family).toBe('Everyman');
  });
});

describe('Datatypes and canonical output', () => {
  test('dates keep precision and offsets (DTM[dateTime]); a time without offset takes MSH-7 offset', () => {
    const b = convert(
      MSH('ADT^A08^ADT_A01'),
      'PID|1||1^^^MRN||Doe^J||1980',
      seg('PV1', { 1: '1', 2: 'O', 19: 'V1^^^MRN', 44: '2024010209' }),
    );
    expect(one<Patient>(b, 'Patient').birthDate).toBe('1980');
    expect(one<Encounter>(b, 'Encounter').period!.start).toBe('2024-01-02T09:00:00+01:00');
    const b2 = convert(MSH('ADT^A08^ADT_A01'), 'PID|1||1^^^MRN||Doe^J||198005');
    expect(one<Patient>(b2, 'Patient').birthDate).toBe('1980-05');
  });
  test('PID-7 with a time: birthDate plus the patient-birthTime extension', () => {
    const b = convert(MSH('ADT^A08^ADT_A01'), 'PID|1||1^^^MRN||Doe^J||198005151230-0500');
    const p = one<Patient>(b, 'Patient') as Patient & { _birthDate?: { extension: { valueDateTime: string }[] } };
    expect(p.birthDate).toBe('1980-05-15');
    expect(p._birthDate!.extension[0].valueDateTime).toBe('1980-05-15T12:30:00-05:00');
  });
  test('identifier systems: configured table, ISO OID universal id, namespace fallback', () => {
    const b = convert(MSH('ADT^A08^ADT_A01'), 'PID|1||1^^^MRN~2^^^&2.16.840.1.113883.4.1&ISO~3^^^LOCALHOSP');
    expect(one<Patient>(b, 'Patient').identifier!.map((i) => i.system)).toEqual([
      'urn:oid:2.16.840.1.113883.19.5',
      'urn:oid:2.16.840.1.113883.4.1',
      'urn:ferry:id:LOCALHOSP',
    ]);
  });
  test('Z-segments are kept as MessageHeader extensions by default and can be ignored by config', () => {
    const text = [MSH('ADT^A08^ADT_A01'), 'PID|1||1^^^MRN', 'ZPI|1|custom'].join('\r');
    const h = one<MessageHeader>(convertMessage(parseHl7(text)), 'MessageHeader');
    expect(h.extension).toEqual([
      { url: 'http://ferry.dev/fhir/StructureDefinition/hl7v2-segment', valueString: 'ZPI|1|custom' },
    ]);
    expect(
      one<MessageHeader>(convertMessage(parseHl7(text), { zSegments: 'ignore' }), 'MessageHeader').extension,
    ).toBeUndefined();
  });
  test('ids: a bare identifier (no assigning authority) is scoped by the sending facility', () => {
    const pid = 'PID|1||777';
    const from = (fac: string, ctrl: string) =>
      one<Patient>(convert(`MSH|^~\\&|APP|${fac}|R|R|20240102||ADT^A08^ADT_A01|${ctrl}|P|2.5`, pid), 'Patient').id;
    expect(from('HOSP-A', '1')).toBe(from('HOSP-A', '2'));
    expect(from('HOSP-A', '1')).not.toBe(from('HOSP-B', '1'));
    const withAuth = (fac: string) =>
      one<Patient>(convert(`MSH|^~\\&|APP|${fac}|R|R|20240102||ADT^A08^ADT_A01|9|P|2.5`, 'PID|1||777^^^MRN'), 'Patient')
        .id;
    expect(withAuth('HOSP-A')).toBe(withAuth('HOSP-B'));
  });
  test('transaction Bundle: PUT <type>/<id>, fullUrl urn:uuid:<id>, deterministic ids', () => {
    const b = convert(MSH('ADT^A01^ADT_A01'), PID, PV1);
    expect(b.type).toBe('transaction');
    for (const e of b.entry!) {
      expect(e.fullUrl).toBe(`urn:uuid:${e.resource!.id}`);
      expect(e.request).toEqual({ method: 'PUT', url: `${e.resource!.resourceType}/${e.resource!.id}` });
    }
    expect(JSON.stringify(convert(MSH('ADT^A01^ADT_A01'), PID, PV1))).toBe(JSON.stringify(b));
  });
});
