import type { Bundle, Coverage, Patient, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { adtBundle, ormBundle, patient, oruBundle } from './__fixtures__/bundles';
import { controlIdFor, FhirToV2, unresolvedPatientReferences } from './fhir-to-v2';
import { receiverProfile } from './profile';

// Issue #23, second part: OML^O21, ADT A40/A11/A28, IN1 from Coverage, Z-segments, FHIRPath message-type rules.
// Expected text checked against the HL7 v2.5.1 message structures (OML_O21, ADT_A39, ADT_A09, ADT_A05)
// and the IG maps IN1[Coverage], MRG (inbound v2-to-fhir/segments/) read in reverse.
const NOW = '2026-03-02T10:00:00-06:00';
const SEED = 'msg-2|sink-b';
const CID = controlIdFor(SEED);
const lines = (text: string) => text.split('\r').filter(Boolean);
const conv = (b: Bundle, profile?: unknown) => new FhirToV2(profile).convert(b, { controlIdSeed: SEED, now: NOW });
const PID =
  "PID|1||E1234^^^EPIC&1.2.840.114350.1.13.0.1.7.5.737384.14&ISO^MR||O'Brien\\F\\Smith^Anne^Marie^^^^L||19800515|F|||12 Main St^Apt 4\\S\\B^Madison^WI^53703^US^H||608-555-0100^PRN^PH~^NET^Internet^anne@example.org|608-555-0199^WPN^PH||M^Married^HL70002|||123-45-6789";
const XCN = '1234567893^Welby^Marcus^^^Dr^^^&http://hl7.org/fhir/sid/us-npi&URI';

const withEntries = (b: Bundle, ...rs: Resource[]): Bundle => ({
  ...b,
  entry: [...(b.entry ?? []), ...rs.map((r) => ({ fullUrl: `urn:uuid:${r.id}`, resource: r }))],
});
const header = (event: string): Resource =>
  ({
    resourceType: 'MessageHeader',
    id: 'mh',
    eventCoding: { system: 'http://terminology.hl7.org/CodeSystem/v2-0003', code: event.split('^')[1], display: event },
    source: { endpoint: 'urn:x' },
  }) as Resource;

const coverage: Coverage = {
  resourceType: 'Coverage',
  id: 'cov1',
  status: 'active',
  beneficiary: { reference: 'urn:uuid:p1' },
  payor: [{ reference: 'urn:uuid:org1' }],
  subscriber: { reference: 'urn:uuid:p1' },
  identifier: [
    { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MB' }] }, value: 'POL-555' },
  ],
  class: [
    {
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'plan' }] },
      value: 'BAV',
      name: 'Blue Advantage HMO',
    },
    {
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'group' }] },
      value: 'Grp-12345',
      name: 'BCBS HMO',
    },
  ],
  period: { start: '2026-01-01', end: '2026-12-31' },
  order: 1,
};
const payor = {
  resourceType: 'Organization',
  id: 'org1',
  identifier: [{ system: 'urn:ferry:id:NIIP', value: 'Org-12345' }],
  name: 'Blue Cross',
} as Resource;

describe('FHIR R4 -> HL7 v2: OML^O21, ADT A40/A11/A28, IN1, Z-segments, message-type rules', () => {
  test('OML^O21 from the MessageHeader event: PID, IN1, ORC, TQ1 (start, priority), OBR, NTE, SPM', () => {
    const b = withEntries(ormBundle(), header('OML^O21'), coverage as Resource, payor, {
      resourceType: 'Specimen',
      id: 'sp1',
      identifier: [{ system: 'urn:ferry:id:LAB', value: 'SP-1' }],
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0487', code: 'SER', display: 'Serum' }] },
    } as Resource);
    (b.entry!.find((e) => e.resource?.resourceType === 'ServiceRequest')!.resource as ServiceRequest).specimen = [
      { reference: 'urn:uuid:sp1' },
    ];
    const [m] = conv(b);
    expect(m.messageType).toBe('OML^O21');
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||OML^O21^OML_O21|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      PID,
      'IN1|1|BAV^Blue Advantage HMO|Org-12345^^^NIIP|Blue Cross||||Grp-12345|BCBS HMO|||20260101|20261231|||||||||1||||||||||||||POL-555',
      `ORC|NW|ORD-9^EHR|LAB-9^LAB||IP||^^^20260303080000-0600^^S||20260302100000-0600|||${XCN}`,
      'TQ1|1||||||20260303080000-0600||S^^HL70485',
      `OBR|1|ORD-9^EHR|LAB-9^LAB|24331-1^Lipid panel^LN|||20260303080000-0600|||||||||${XCN}`,
      'NTE|1||Fasting 12 h',
      'SPM|1|^SP-1&LAB||SER^Serum^HL70487',
    ]);
    // the same Bundle without the header: ORM^O01 (no TQ1, no SPM); a profile type asks for OML
    expect(conv(ormBundle())[0].messageType).toBe('ORM^O01');
    expect(conv(ormBundle(), { messageTypes: { order: 'OML^O21' } })[0].text).toContain('|OML^O21^OML_O21|');
    // Ferry's inbound reads it back: the order, its status and identifiers, the coverage
    const back = new Hl7v2Transform().convert(Buffer.from(m.text, 'utf8'));
    const sr = back
      .entry!.map((e) => e.resource)
      .find((r): r is ServiceRequest => r?.resourceType === 'ServiceRequest')!;
    expect([sr.status, sr.code?.coding?.[0]?.code, sr.priority]).toEqual(['active', '24331-1', 'stat']);
    const cov = back.entry!.map((e) => e.resource).find((r): r is Coverage => r?.resourceType === 'Coverage')!;
    expect(cov.class?.map((c) => c.value)).toEqual(['BAV', 'Grp-12345']);
    expect(cov.period).toEqual({ start: '2026-01-01', end: '2026-12-31' });
  });

  test('ADT^A40 from Patient.link: PID (survivor), MRG (prior identifiers and name); the inbound links them back', () => {
    const prior = {
      resourceType: 'Patient',
      id: 'p0',
      active: false,
      identifier: [
        {
          system: 'urn:ferry:id:EPIC',
          value: 'E0999',
          type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] },
        },
      ],
      name: [{ family: 'Smith', given: ['Anne'] }],
      link: [{ type: 'replaced-by', other: { reference: 'urn:uuid:p1' } }],
    } as Resource;
    const survivor = {
      ...(patient as Patient),
      link: [{ type: 'replaces', other: { reference: 'urn:uuid:p0' } }],
    } as Resource;
    const b: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [survivor, prior].map((r) => ({ fullUrl: `urn:uuid:${r.id}`, resource: r })),
    };
    const [m] = conv(b);
    expect(m.messageType).toBe('ADT^A40');
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||ADT^A40^ADT_A39|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      'EVN||20260302100000-0600',
      PID,
      'MRG|E0999^^^EPIC^MR||||||Smith^Anne',
    ]);
    // only the prior patient, replaced by a survivor known by identifier
    const onlyPrior: Bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          resource: {
            ...prior,
            link: [
              {
                type: 'replaced-by',
                other: {
                  type: 'Patient',
                  identifier: { system: 'urn:ferry:id:EPIC', value: 'E1234' },
                  display: 'Anne Smith',
                },
              },
            ],
          } as Resource,
        },
      ],
    };
    expect(lines(conv(onlyPrior)[0].text).slice(2)).toEqual([
      'PID|1||E1234^^^EPIC||Smith^Anne',
      'MRG|E0999^^^EPIC^MR||||||Smith^Anne',
    ]);
    const back = new Hl7v2Transform().convert(Buffer.from(m.text, 'utf8'));
    const ps = back.entry!.map((e) => e.resource).filter((r): r is Patient => r?.resourceType === 'Patient');
    const old = ps.find((p) => p.link?.some((l) => l.type === 'replaced-by'))!;
    expect(old.identifier?.map((i) => i.value)).toEqual(['E0999']);
    expect(ps.find((p) => p !== old)!.identifier?.map((i) => i.value)).toContain('E1234');
    // a merge without the merged patient's identifiers cannot be expressed
    const noIds: Bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [survivor, { ...prior, identifier: [] } as Resource].map((r) => ({
        fullUrl: `urn:uuid:${r.id}`,
        resource: r,
      })),
    };
    expect(() => conv(noIds)).toThrow(
      'cannot express the Bundle in HL7 v2: Patient.identifier (of the merged Patient) is required for MRG-1 (prior patient identifier list)',
    );
  });

  test('ADT^A11 (cancelled Encounter): ADT_A09 — PID, PV1, DG1; no NK1, AL1 or IN1', () => {
    const [m] = conv(withEntries(adtBundle('cancelled'), coverage as Resource, payor));
    expect(m.messageType).toBe('ADT^A11');
    expect(lines(m.text).map((l) => l.slice(0, 3))).toEqual(['MSH', 'EVN', 'PID', 'PV1', 'DG1']);
    expect(lines(m.text)[0]).toContain('|ADT^A11^ADT_A09|');
    expect(conv(adtBundle('entered-in-error'))[0].messageType).toBe('ADT^A11');
  });

  test('ADT^A28 (add person) for a new Patient alone (request POST or version 1), A31 otherwise; IN1 in ADT_A05', () => {
    const only = (method: string, extra: Resource[] = []): Bundle => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:p1', resource: patient, request: { method: method as 'POST', url: 'Patient' } },
        ...extra.map((r) => ({ fullUrl: `urn:uuid:${r.id}`, resource: r })),
      ],
    });
    const [a28] = conv(only('POST', [coverage as Resource, payor]));
    expect(a28.messageType).toBe('ADT^A28');
    expect(lines(a28.text).map((l) => l.slice(0, 3))).toEqual(['MSH', 'EVN', 'PID', 'PV1', 'IN1']);
    expect(lines(a28.text)[0]).toContain('|ADT^A28^ADT_A05|');
    expect(conv(only('PUT'))[0].messageType).toBe('ADT^A31');
    expect(
      conv({
        resourceType: 'Bundle',
        type: 'collection',
        entry: [{ resource: { ...patient, meta: { versionId: '1' } } as Resource }],
      })[0].messageType,
    ).toBe('ADT^A28');
    // IN1 needs the plan: a Coverage without class plan or type cannot be expressed
    const bare = { ...coverage, class: undefined } as Resource;
    expect(() => conv(only('PUT', [bare, payor]))).toThrow(
      'Coverage.class (type plan) or Coverage.type is required for IN1-2 (health plan id)',
    );
    expect(
      lines(conv(only('PUT', [bare, payor]), { segments: { IN1: false } })[0].text).map((l) => l.slice(0, 3)),
    ).toEqual(['MSH', 'EVN', 'PID', 'PV1']);
  });

  test('a Coverage that is only a financial class (the inbound PV1-20 row) goes back to PV1-20, not IN1', () => {
    const fc = {
      resourceType: 'Coverage',
      id: 'fc1',
      status: 'active',
      type: { coding: [{ code: '05' }] },
      beneficiary: { reference: 'urn:uuid:p1' },
      payor: [{ display: 'unknown (PV1-20 financial class only)' }],
      period: { start: '2026-02-01' },
    } as Resource;
    const l = lines(conv(withEntries(adtBundle(), fc))[0].text);
    expect(l.some((x) => x.startsWith('IN1'))).toBe(false);
    expect(l.find((x) => x.startsWith('PV1'))!.split('|')[20]).toBe('05^20260201');
  });

  test('unresolvedPatientReferences: literal Patient references the Bundle lacks (Epic Observation.subject), none when it holds a Patient', () => {
    const obs = (id: string, subject: object): Resource =>
      ({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject }) as Resource;
    const b = (...rs: Resource[]): Bundle => ({
      resourceType: 'Bundle',
      type: 'collection',
      entry: rs.map((r) => ({ fullUrl: `${r.resourceType}/${r.id}`, resource: r })),
    });
    expect(
      unresolvedPatientReferences(
        b(
          obs('o1', { reference: 'Patient/epic-1' }),
          obs('o2', { reference: 'Patient/epic-1' }),
          obs('o3', { reference: 'Patient/epic-2', identifier: { value: 'M1' } }),
        ),
      ),
    ).toEqual(['Patient/epic-1']);
    expect(unresolvedPatientReferences(b(obs('o1', { reference: 'Patient/epic-1' }), patient))).toEqual([]);
    expect(unresolvedPatientReferences(b(obs('o1', { reference: 'Group/g1' })))).toEqual([]);
    // not resolved: the reason names the element, the reference and the v2 field
    expect(() => conv(b(obs('o1', { reference: 'Patient/epic-1' })))).toThrow(
      "cannot express the Bundle in HL7 v2: Observation.subject (Patient/epic-1: not in the Bundle, not found in the store nor at the source's EHR, and the reference has no identifier) is required for PID-3 (patient identifier list)",
    );
    // resolved (the sink added the stored Patient under its reference): PID from it
    const withPatient = b(obs('o1', { reference: 'Patient/epic-1' }), {
      ...(patient as Patient),
      id: 'epic-1',
    } as Resource);
    expect(lines(conv(withPatient)[0].text)[1]).toBe(PID);
  });

  test('NK1 from Patient.contact (contact role in NK1-7) before the RelatedPersons; an insured subscriber is in IN1, not NK1', () => {
    const p = {
      ...(patient as Patient),
      contact: [
        {
          relationship: [
            {
              coding: [
                { system: 'http://terminology.hl7.org/CodeSystem/v2-0131', code: 'C', display: 'Emergency Contact' },
                { system: 'http://terminology.hl7.org/CodeSystem/v2-0063', code: 'BRO', display: 'Brother' },
              ],
            },
          ],
          name: { family: 'Smith', given: ['Tom'] },
          telecom: [{ system: 'phone', value: '608-555-0123', use: 'home' }],
        },
      ],
    } as Resource;
    const insured = {
      resourceType: 'RelatedPerson',
      id: 'rp9',
      patient: { reference: 'urn:uuid:p1' },
      name: [{ family: 'Payer', given: ['Pat'] }],
    } as Resource;
    const b: Bundle = {
      ...adtBundle(),
      entry: adtBundle().entry!.map((e) => (e.resource?.resourceType === 'Patient' ? { ...e, resource: p } : e)),
    };
    const l = lines(
      conv(withEntries(b, insured, { ...coverage, subscriber: { reference: 'urn:uuid:rp9' } } as Resource, payor))[0]
        .text,
    );
    expect(l.filter((x) => x.startsWith('NK1'))).toEqual([
      'NK1|1|Smith^Tom|BRO^Brother^HL70063||608-555-0123^PRN^PH||C^Emergency Contact^HL70131',
      "NK1|2|O'Brien^Tom|SPO^spouse^HL70063||608-555-0101^PRN^PH",
    ]);
    expect(l.find((x) => x.startsWith('IN1'))!.split('|')[16]).toBe('Payer^Pat');
  });

  test('Z-segments from extensions, per the profile: after a segment, one per resource, typed values', () => {
    const p = {
      ...(patient as Patient),
      extension: [
        { url: 'http://example.org/fhir/vip', valueBoolean: true },
        {
          url: 'http://example.org/fhir/tribe',
          valueCoding: { system: 'http://loinc.org', code: 'T-1', display: 'Tribe | one' },
        },
        { url: 'http://example.org/fhir/since', valueDate: '2019-04-02' },
      ],
    } as Resource;
    const b: Bundle = {
      ...adtBundle(),
      entry: adtBundle().entry!.map((e) => (e.resource?.resourceType === 'Patient' ? { ...e, resource: p } : e)),
    };
    const profile = {
      zSegments: [
        {
          segment: 'ZPI',
          resource: 'Patient',
          after: 'PID',
          fields: {
            1: "extension('http://example.org/fhir/vip').value",
            2: "extension('http://example.org/fhir/tribe').value",
            3: "extension('http://example.org/fhir/since').value",
            5: 'name.given',
          },
        },
        {
          segment: 'ZAL',
          resource: 'AllergyIntolerance',
          fields: { 1: 'code.coding.code', 2: "extension('http://nowhere').value" },
        },
      ],
    };
    const l = lines(conv(b, profile)[0].text);
    expect(l.map((x) => x.slice(0, 3))).toEqual(['MSH', 'EVN', 'PID', 'ZPI', 'NK1', 'PV1', 'AL1', 'DG1', 'ZAL']);
    expect(l[3]).toBe('ZPI|Y|T-1^Tribe \\F\\ one^LN|20190402||Anne~Marie');
    expect(l[8]).toBe('ZAL|7980');
  });

  test('FHIRPath message-type rules: first match wins, before messageTypes and the derived event', () => {
    const profile = {
      messageTypes: { adt: 'ADT^A08' },
      messageTypeRules: [
        { when: "entry.resource.ofType(Encounter).where(status = 'planned').exists()", type: 'ADT^A05' },
        { when: 'entry.resource.ofType(Encounter).exists()', type: 'ADT^A04' },
        { when: 'entry.resource.ofType(Encounter).exists()', type: 'ADT^A01' },
      ],
    };
    expect(conv(adtBundle('planned'), profile)[0].text).toContain('|ADT^A05^ADT_A05|');
    expect(conv(adtBundle('finished'), profile)[0].messageType).toBe('ADT^A04');
    // no rule matches: the messageTypes entry
    expect(conv(oruBundle(), { ...profile, messageTypes: { result: 'ORU^R01' } })[0].messageType).toBe('ORU^R01');
    // a rule can pick another kind of message for the same Bundle: the ServiceRequest as OML^O21 rather than its result
    const b = withEntries(
      oruBundle(),
      ...ormBundle()
        .entry!.filter((e) => e.resource?.resourceType === 'ServiceRequest')
        .map((e) => e.resource!),
    );
    expect(
      conv(b, { messageTypeRules: [{ when: 'entry.resource.ofType(ServiceRequest).exists()', type: 'OML^O21' }] })[0]
        .messageType,
    ).toBe('OML^O21');
  });

  test('rules and Z-segments are checked when the profile loads: every problem, by path', () => {
    let err: (Error & { details?: { problems?: { path: string; message: string }[] } }) | undefined;
    try {
      receiverProfile({
        messageTypeRules: [
          { when: 'entry.resource.ofType(', type: 'ADT^A28' },
          { when: 'true', type: 'DFT^P03' },
          { type: 'ADT^A01' },
        ],
        zSegments: [
          { segment: 'PID', resource: 'Patient', fields: { 1: 'id' } },
          { segment: 'ZPI', resource: 'Patient', fields: { x: 'id', 2: 'name.(' } },
        ],
      });
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.details?.problems?.map((p) => p.path)).toEqual([
      'messageTypeRules[0].when',
      'messageTypeRules[1].type',
      'messageTypeRules[2].when',
      'zSegments[0].segment',
      'zSegments[1].fields.2',
      'zSegments[1].fields.x',
    ]);
    expect(err?.message).toMatch(/^profile\.messageTypeRules\[0\]\.when: not valid FHIRPath/);
    expect(err?.message).toContain(
      'profile.messageTypeRules[1].type: "DFT^P03": the conversion builds ADT, ORU, SIU, VXU, ORM, OML, MDM messages',
    );
  });
});
