/**
 * Conversion fidelity II (issue #22): field-level checks written from the IG CSVs in
 * ../shared/v2-to-fhir/mappings. Each test names the CSV (segments/, datatypes/, codesystems/) and row
 * (the CSV line number) it checks. Messages are inline, so these run without ../shared.
 */
import type {
  Bundle,
  DiagnosticReport,
  Observation,
  Patient,
  RelatedPerson,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';
import { parseHl7 } from '../hl7v2/parser';
import type { ConversionOptions } from './conversion.schema';
import { convertMessage } from './convert';
import { OBSERVATION_VALUE_ATTACHMENT } from './segments';
import { validateBundle } from './validate';

const MSH = (type: string, ctrl = 'C1', time = '20240102103000+0100') =>
  `MSH|^~\\&|SendApp|SendFac^1.2.3^ISO|RecvApp|RecvFac|${time}||${type}|${ctrl}|P|2.5.1`;
const convert = (lines: string[], opts: Partial<ConversionOptions> = {}): Bundle => {
  const b = convertMessage(parseHl7(lines.join('\r')), {
    identifierSystems: { MRN: 'urn:oid:2.16.840.1.113883.19.5' },
    ...opts,
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
/** Builds a segment from field number -> value, so field positions are explicit. */
const seg = (name: string, fields: Record<number, string>): string => {
  const max = Math.max(...Object.keys(fields).map(Number));
  const out = [name];
  for (let i = 1; i <= max; i++) out.push(fields[i] ?? '');
  return out.join('|');
};
const PID = 'PID|1||12345^^^MRN^MR||Everyman^Adam^A|Jones^Mary|19800515|M';
const ROLE_CODE = 'http://terminology.hl7.org/CodeSystem/v3-RoleCode';

describe("1. PID-21 mother's identifier -> RelatedPerson MTH (PID[Patient] row 37 -> CX[RelatedPerson-Mother])", () => {
  const b = convert([MSH('ADT^A01^ADT_A01'), `${PID}|||||||||||||M-777^^^MRN^MR~99-1^^^SSA^SS`]);
  const p = one<Patient>(b, 'Patient');
  const m = one<RelatedPerson>(b, 'RelatedPerson');
  test('CX[RelatedPerson-Mother] rows 3-5: patient = the Patient, relationship MTH (v3-RoleCode)', () => {
    expect(m.patient.reference).toBe(refTo(p));
    expect(m.relationship).toEqual([{ coding: [{ system: ROLE_CODE, code: 'MTH', display: 'mother' }] }]);
  });
  test('rows 6-13: every repetition is an identifier of the mother (CX.1 value, CX.4 system, CX.5 type)', () => {
    expect(m.identifier).toEqual([
      {
        type: { coding: [expect.objectContaining({ code: 'MR' })] },
        system: 'urn:oid:2.16.840.1.113883.19.5',
        value: 'M-777',
        assigner: { display: 'MRN' },
      },
      {
        type: { coding: [expect.objectContaining({ code: 'SS' })] },
        system: 'urn:ferry:id:SSA',
        value: '99-1',
        assigner: { display: 'SSA' },
      },
    ]);
  });
  test('the mother is not an identifier of the child, and her RelatedPerson id is stable across messages', () => {
    expect(p.identifier!.map((i) => i.value)).toEqual(['12345']);
    const again = convert([MSH('ADT^A08^ADT_A01', 'C2'), `${PID}|||||||||||||M-777^^^MRN^MR`]);
    expect(one<RelatedPerson>(again, 'RelatedPerson').id).toBe(m.id);
  });
  test('no PID-21: no RelatedPerson', () => {
    expect(all(convert([MSH('ADT^A01^ADT_A01'), PID]), 'RelatedPerson')).toEqual([]);
  });
});

describe('2. repeating OBX-5 (ORU_R01 message map rows 63-64 -> OBX[Observation-Component])', () => {
  const b = convert([
    MSH('ORU^R01^ORU_R01'),
    PID,
    seg('OBR', {
      1: '1',
      2: 'P1^EPIC',
      3: 'F1^LAB',
      4: '85354-9^Blood pressure panel^LN',
      7: '20240102080000+0100',
      25: 'F',
    }),
    'OBX|1|NM|8867-4^Heart rate^LN||60~120|/min^per minute^UCUM|||||F',
    'OBX|2|CWE|600-7^Bacteria identified^LN||3092008^Staphylococcus aureus^SCT~112283007^Escherichia coli^SCT||||||F',
    'OBX|3|NM|718-7^Hemoglobin^LN||13.2|g/dL^^UCUM|||||F',
    'OBX|4|CWE|600-7^Bacteria identified^LN||3092008^Staphylococcus aureus^SCT||||||F',
    'OBX|5|TX|11526-1^Pathology study^LN||Line one~Line two||||||F',
  ]);
  const [hr, bact, hb, single, text] = all<Observation>(b, 'Observation');
  test('NM repetitions: component[each].code = OBX-3 (row 6), component[each].valueQuantity = NM[Quantity] + OBX-6 units (rows 8, 34)', () => {
    expect(hr.valueString).toBeUndefined();
    expect(hr.valueQuantity).toBeUndefined();
    expect(hr.component).toEqual([
      {
        code: hr.code,
        valueQuantity: { value: 60, unit: 'per minute', system: 'http://unitsofmeasure.org', code: '/min' },
      },
      {
        code: hr.code,
        valueQuantity: { value: 120, unit: 'per minute', system: 'http://unitsofmeasure.org', code: '/min' },
      },
    ]);
  });
  test('coded repetitions: every one kept, component[each].valueCodeableConcept = CWE[CodeableConcept] (row 13)', () => {
    expect(bact.valueCodeableConcept).toBeUndefined();
    expect(bact.component!.map((c) => c.valueCodeableConcept!.coding![0])).toEqual([
      { system: 'http://snomed.info/sct', code: '3092008', display: 'Staphylococcus aureus' },
      { system: 'http://snomed.info/sct', code: '112283007', display: 'Escherichia coli' },
    ]);
  });
  test('a single OBX-5 stays value[x] (OBX[Observation] rows 7 and 12)', () => {
    expect(hb.valueQuantity).toEqual({ value: 13.2, unit: 'g/dL', system: 'http://unitsofmeasure.org', code: 'g/dL' });
    expect(hb.component).toBeUndefined();
    expect(single.valueCodeableConcept!.coding![0].code).toBe('3092008');
  });
  test('TX repetitions: component[each].valueString, one per repetition (OBX[Observation-Component] row 10)', () => {
    expect(text.valueString).toBeUndefined();
    expect(text.component).toEqual([
      { code: text.code, valueString: 'Line one' },
      { code: text.code, valueString: 'Line two' },
    ]);
  });
});

describe('2. ST / TX / FT repetitions and components (OBX[Observation] row 8, OBX[Observation-Component] row 10)', () => {
  const obs = (lines: string[]) =>
    all<Observation>(
      convert([
        MSH('ORU^R01^ORU_R01'),
        PID,
        seg('OBR', { 1: '1', 3: 'F1^LAB', 4: '11526-1^Pathology study^LN', 25: 'F' }),
        ...lines,
      ]),
      'Observation',
    );
  test('a single ST/TX/FT value -> valueString (row 8), escapes decoded, FT formatting kept as text', () => {
    const [st, tx, ft] = obs([
      'OBX|1|ST|1^A^L||Positive \\T\\ confirmed||||||F',
      'OBX|2|TX|2^B^L||  indented line||||||F',
      'OBX|3|FT|3^C^L||Bold\\.br\\next||||||F',
    ]);
    expect(st.valueString).toBe('Positive & confirmed');
    expect(tx.valueString).toBe('  indented line');
    expect(ft.valueString).toBe('Bold\nnext');
    for (const o of [st, tx, ft]) expect(o.component).toBeUndefined();
  });
  test('unescaped component / subcomponent separators inside text are kept as sent (nothing after ^ is lost)', () => {
    const [st, rep] = obs(['OBX|1|ST|1^A^L||A^B&C^D||||||F', 'OBX|2|TX|2^B^L||one^two~three||||||F']);
    expect(st.valueString).toBe('A^B&C^D');
    expect(rep.component!.map((c) => c.valueString)).toEqual(['one^two', 'three']);
  });
  test("the message's own separators are the ones kept (MSH-2 #*@!)", () => {
    const b = convertMessage(
      parseHl7(
        [
          'MSH#*@!$#SendApp#SendFac#RecvApp#RecvFac#20240102103000+0100##ORU*R01*ORU_R01#C9#P#2.5.1',
          'PID#1##12345***MRN*MR##Everyman*Adam',
          'OBX#1#ST#1*A*L##x*y$z@w#######F',
        ].join('\r'),
      ),
      {},
    );
    expect(all<Observation>(b, 'Observation')[0].component!.map((c) => c.valueString)).toEqual(['x*y$z', 'w']);
  });
  test('ST repetitions are components too (each kept; blank repetitions make none)', () => {
    const [st] = obs(['OBX|1|ST|1^A^L||first~~second~third||||||F']);
    expect(st.valueString).toBeUndefined();
    expect(st.component!.map((c) => c.valueString)).toEqual(['first', 'second', 'third']);
    expect(st.component!.every((c) => c.code === st.code)).toBe(true);
  });
});

describe('3. OBR in order messages -> ServiceRequest only; DiagnosticReport for results', () => {
  const obr = seg('OBR', {
    1: '1',
    2: 'P1^EPIC',
    3: 'F1^LAB',
    4: '57021-8^CBC^LN',
    7: '20240102080000+0100',
    22: '20240102090000+0100',
    24: 'HM',
    25: 'F',
  });
  for (const type of ['ORM^O01^ORM_O01', 'OML^O21^OML_O21', 'OMG^O19^OMG_O19', 'MDM^T02^MDM_T02', 'RDE^O11^RDE_O11']) {
    test(`${type}: OBR[ServiceRequest] only, even with OBR-22/OBR-25 valued; OBX -> ServiceRequest.supportingInfo`, () => {
      const b = convert([
        MSH(type),
        PID,
        'ORC|NW|P1^EPIC|F1^LAB',
        obr,
        'OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|||||F',
      ]);
      expect(all(b, 'DiagnosticReport')).toEqual([]);
      const sr = one<ServiceRequest>(b, 'ServiceRequest');
      expect(sr.supportingInfo).toEqual([{ reference: refTo(one<Observation>(b, 'Observation')) }]);
    });
  }
  test('ORU^R01 (ORU_R01 message map row 49: OBR -> OBR[DiagnosticReport]) makes the report, based on the request', () => {
    const b = convert([MSH('ORU^R01^ORU_R01'), PID, 'ORC|RE|P1^EPIC|F1^LAB', obr]);
    const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
    expect(dr.status).toBe('final');
    expect(dr.basedOn).toEqual([{ reference: refTo(one<ServiceRequest>(b, 'ServiceRequest')) }]);
  });
});

describe('4. OBX RP / ED -> valueAttachment extension (OBX[Observation] rows 26-27 ED, 29-30 RP)', () => {
  const b = convert([
    MSH('ORU^R01^ORU_R01'),
    PID,
    seg('OBR', {
      1: '1',
      2: 'P1^EPIC',
      3: 'F1^LAB',
      4: '18748-4^Diagnostic imaging study^LN',
      7: '20240102080000+0100',
      24: 'RAD',
      25: 'F',
    }),
    'OBX|1|RP|18748-4^Report^LN||http://pacs.example.org/img/1.2.3^PACS^IM^JPEG||||||F',
    'OBX|2|ED|11502-2^Lab report^LN||LAB^AP^PDF^Base64^JVBERi0xLjQK||||||F',
  ]);
  const [rpObs, edObs] = all<Observation>(b, 'Observation');
  test('RP: extension valueAttachment = RP[Attachment] (url, content type); no valueString holding the URL', () => {
    expect(rpObs.extension).toEqual([
      {
        url: OBSERVATION_VALUE_ATTACHMENT,
        valueAttachment: { url: 'http://pacs.example.org/img/1.2.3', contentType: 'image/jpeg' },
      },
    ]);
    expect(rpObs.valueString).toBeUndefined();
  });
  test('ED (Base64): extension valueAttachment = ED[Attachment] (base64 data + content type); no value[x]', () => {
    expect(edObs.extension).toEqual([
      { url: OBSERVATION_VALUE_ATTACHMENT, valueAttachment: { contentType: 'application/pdf', data: 'JVBERi0xLjQK' } },
    ]);
    expect(edObs.valueString).toBeUndefined();
  });
});

describe('5. ORC-5 / ORC-1 -> ServiceRequest.status (ORC[ServiceRequest] rows 3 and 24; OrderStatus, OrderControlCode[ServiceRequest.status])', () => {
  const status = (orc: string, type = 'ORM^O01^ORM_O01') =>
    one<ServiceRequest>(convert([MSH(type), PID, orc, 'OBR|1|P1^EPIC|F1^LAB|57021-8^CBC^LN']), 'ServiceRequest').status;
  test('ORC-5 wins when valued: CM -> completed, CA -> revoked, HD -> on-hold, IP -> active (OrderStatus rows 3-10)', () => {
    expect(status('ORC|SC|P1^EPIC|F1^LAB||CM')).toBe('completed');
    expect(status('ORC|SC|P1^EPIC|F1^LAB||CA')).toBe('revoked');
    expect(status('ORC|NW|P1^EPIC|F1^LAB||HD')).toBe('on-hold');
    expect(status('ORC|SC|P1^EPIC|F1^LAB||IP')).toBe('active');
  });
  test('ORC-5 empty: ORC-1 through OrderControlCode[ServiceRequest.status] (NW -> active row 18, OC -> revoked row 19, HR -> on-hold row 15)', () => {
    expect(status('ORC|NW|P1^EPIC|F1^LAB')).toBe('active');
    expect(status('ORC|OC|P1^EPIC|F1^LAB')).toBe('revoked');
    expect(status('ORC|HR|P1^EPIC|F1^LAB')).toBe('on-hold');
    expect(status('ORC|NW|P1^EPIC|F1^LAB', 'OML^O21^OML_O21')).toBe('active');
  });
  test('ORC-5 valued but outside the concept map: unknown, not ORC-1 (ORC-1 applies only IF ORC-5 NOT VALUED, row 3)', () => {
    expect(status('ORC|NW|P1^EPIC|F1^LAB||A')).toBe('unknown');
  });
  test('RDE^O11: ORC-1 NW -> MedicationRequest active', () => {
    const b = convert([MSH('RDE^O11^RDE_O11'), PID, 'ORC|NW|P1^EPIC', 'RXE||00143963401^NICARDIPINE^NDC|5||mg']);
    expect(all<Resource & { status: string }>(b, 'MedicationRequest')[0].status).toBe('active');
  });
});

describe('6. XPN-15 called by -> an additional HumanName use nickname (XPN[HumanName] rows 18-19)', () => {
  test('PID-5 with XPN.15: the official name plus a nickname name', () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      'PID|1||12345^^^MRN^MR||Everyman^Adam^A^^^^L^^^^^^^^Bud|Jones^Mary|19800515|M',
    ]);
    expect(one<Patient>(b, 'Patient').name).toEqual([
      { family: 'Everyman', given: ['Adam', 'A'], use: 'official' },
      { use: 'nickname', given: ['Bud'] },
    ]);
  });
  test('NK1-2 with XPN.15: RelatedPerson gets both names, Patient.contact (one name) the real one', () => {
    const b = convert([MSH('ADT^A01^ADT_A01'), PID, 'NK1|1|Everyman^Eve^^^^^^^^^^^^^Evie|SPO^Spouse^HL70063']);
    expect(one<RelatedPerson>(b, 'RelatedPerson').name).toEqual([
      { family: 'Everyman', given: ['Eve'] },
      { use: 'nickname', given: ['Evie'] },
    ]);
    expect(one<Patient>(b, 'Patient').contact![0].name).toEqual({ family: 'Everyman', given: ['Eve'] });
  });
});

describe('7. NK1-3 / NK1-7 relationship concept maps (NK1[RelatedPerson] rows 5, 10; NK1[Patient] rows 5, 10)', () => {
  const rel = (nk1: string) => {
    const b = convert([MSH('ADT^A01^ADT_A01'), PID, nk1]);
    return {
      rp: one<RelatedPerson>(b, 'RelatedPerson').relationship,
      contact: one<Patient>(b, 'Patient').contact?.[0]?.relationship,
    };
  };
  test('Relationship map row 4: SPO -> v3-RoleCode SPS first, the sent v2-0063 coding kept', () => {
    const { rp, contact } = rel('NK1|1|Everyman^Eve|SPO^Spouse^HL70063');
    expect(rp).toEqual([
      {
        coding: [
          { system: ROLE_CODE, code: 'SPS', display: 'spouse' },
          { system: 'http://terminology.hl7.org/CodeSystem/v2-0063', code: 'SPO', display: 'Spouse' },
        ],
      },
    ]);
    expect(contact).toEqual(rp);
  });
  test('Relationship rows 26/28 map into v2-0131 (EMR -> E Employer, EMC -> C Emergency Contact); NK1-7 through ContactRole (row 4 C)', () => {
    const { rp } = rel('NK1|1|Acme^^^^^^^^^^^^^^|EMR^Employer^HL70063||||C^Emergency Contact^HL70131');
    expect(rp![0].coding![0]).toEqual({
      system: 'http://terminology.hl7.org/CodeSystem/v2-0131',
      code: 'E',
      display: 'Employer',
    });
    expect(rp![1].coding![0]).toEqual({
      system: 'http://terminology.hl7.org/CodeSystem/v2-0131',
      code: 'C',
      display: 'Emergency Contact',
    });
  });
  test('words instead of a code ("Mother", "Emergency Contact"): mapped by the concept map display, the sent value kept', () => {
    const { rp } = rel('NK1|1|Everyman^Mary|Mother||||Emergency Contact');
    expect(rp![0].coding![0]).toEqual({ system: ROLE_CODE, code: 'MTH', display: 'mother' });
    expect(rp![0].coding![1]).toMatchObject({ code: 'Mother' });
    expect(rp![1].coding![0]).toEqual({
      system: 'http://terminology.hl7.org/CodeSystem/v2-0131',
      code: 'C',
      display: 'Emergency Contact',
    });
  });
  test('a code the map does not know is kept as sent, not guessed', () => {
    const { rp } = rel('NK1|1|Everyman^Eve|ZZZ^Something^99REL');
    expect(rp).toEqual([{ coding: [{ system: 'urn:ferry:cs:99REL', code: 'ZZZ', display: 'Something' }] }]);
  });
});

describe('8. MSH-6 / MSH-23 -> MessageHeader.destination.receiver; EVN-7 and one Provenance per message', () => {
  const MSH23 = (type: string) => `${MSH(type)}||||||||||Sender Resp Org|Receiver Resp Org^^^^^^^^^RRO-1`;
  test('MSH[MessageHeader] row 30: MSH-23 (XON[Organization]) is the receiver; row 11: MSH-6 only when MSH-23 is empty', () => {
    const b = convert([MSH23('ADT^A01^ADT_A01'), PID]);
    const h = one<Resource & { destination: { receiver: { reference: string } }[] }>(b, 'MessageHeader');
    const org = b.entry!.find((e) => e.fullUrl === h.destination[0].receiver.reference)!.resource as Resource & {
      name: string;
      identifier: { value: string }[];
    };
    expect(org).toMatchObject({ name: 'Receiver Resp Org', identifier: [{ value: 'RRO-1' }] });
    const b6 = convert([MSH('ADT^A01^ADT_A01'), PID]);
    const h6 = one<Resource & { destination: { receiver: { reference: string } }[] }>(b6, 'MessageHeader');
    expect(
      (
        b6.entry!.find((e) => e.fullUrl === h6.destination[0].receiver.reference)!.resource as Resource & {
          name: string;
        }
      ).name,
    ).toBe('RecvFac');
  });
  test('EVN[Provenance] row 12: EVN-7 event facility -> Provenance.location (HD[Location] rows 3-6)', () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      'EVN|A01|20240102100000+0100||||20240102095500+0100|GHH Main^1.3.6.1.4.1.44750.1.4^ISO',
      PID,
    ]);
    const pv = one<Resource & { location: { reference: string }; occurredDateTime: string; recorded: string }>(
      b,
      'Provenance',
    );
    const loc = b.entry!.find((e) => e.fullUrl === pv.location.reference)!.resource;
    expect(loc).toMatchObject({
      resourceType: 'Location',
      name: 'GHH Main',
      identifier: [{ system: 'urn:ietf:rfc:3986', value: 'urn:oid:1.3.6.1.4.1.44750.1.4' }],
      physicalType: { coding: [{ code: 'si' }] },
    });
    expect(pv.recorded).toBe('2024-01-02T10:00:00+01:00');
    expect(pv.occurredDateTime).toBe('2024-01-02T09:55:00+01:00');
  });
  type Prov = Resource & {
    target: { reference: string }[];
    agent: { type: { coding: { code: string }[] }; who: { reference?: string; display?: string } }[];
    entity?: { role: string; what: { identifier?: { value: string }; display?: string } }[];
    activity: { coding: { code: string; display?: string }[] };
    recorded: string;
  };
  test('one Provenance per message: targets every produced resource; source (MSH-3/4), event, conversion (Ferry version)', () => {
    const b = convert([
      MSH('ORU^R01^ORU_R01'),
      PID,
      'OBR|1|P1^EPIC|F1^LAB|57021-8^CBC^LN',
      'OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|||||F',
    ]);
    const pv = one<Prov>(b, 'Provenance');
    const produced = b
      .entry!.filter((e) => e.resource && !['MessageHeader', 'Provenance', 'Device'].includes(e.resource.resourceType))
      .map((e) => e.fullUrl);
    expect(pv.target.map((t) => t.reference).sort()).toEqual(produced.sort());
    // MSH[Provenance-Source] rows 16, 19: MSH-7 -> recorded, activity display "message - MSG.1^MSG.2^MSG.3"
    expect(pv.recorded).toBe('2024-01-02T10:30:00+01:00');
    expect(pv.activity.coding[0]).toMatchObject({ code: 'R01', display: 'message - ORU^R01^ORU_R01' });
    // rows 11-13: MSH-4 sending facility -> agent author (Organization)
    const author = pv.agent.find((a) => a.type.coding[0].code === 'author')!;
    expect(
      (b.entry!.find((e) => e.fullUrl === author.who.reference)!.resource as Resource & { name: string }).name,
    ).toBe('SendFac');
    // rows 9-10: MSH-3 -> entity role source (Device by identifier), with the control id
    expect(pv.entity).toEqual([
      {
        role: 'source',
        what: { type: 'Device', identifier: { value: 'SendApp' }, display: 'HL7 v2 ORU^R01 message C1 from SendApp' },
      },
    ]);
    // MSH[Provenance-Transformation] rows 7-9: agent assembler = the Device doing the conversion, with Ferry's version
    const asm = pv.agent.find((a) => a.type.coding[0].code === 'assembler')!;
    const dev = b.entry!.find((e) => e.fullUrl === asm.who.reference)!.resource as Resource & {
      version: { value: string }[];
    };
    expect(dev.resourceType).toBe('Device');
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the plugin's package.json, read at run time
    expect(dev.version[0].value).toBe(require('../../package.json').version);
  });
  test('MSH[Provenance-Source] rows 32-34: MSH-22 sending responsible organization is the author when valued', () => {
    const b = convert([MSH23('ADT^A08^ADT_A01'), PID]);
    const pv = one<Prov>(b, 'Provenance');
    const authors = pv.agent
      .filter((a) => a.type.coding[0].code === 'author')
      .map((a) => (b.entry!.find((e) => e.fullUrl === a.who.reference)!.resource as Resource & { name: string }).name);
    expect(authors).toEqual(['Sender Resp Org', 'SendFac']);
  });
});

describe('9. targets the last round left out: PD1-7, SFT -> Device, PRT -> Device', () => {
  test('PD1[Observation-LivingWill] rows 3-5, 13: PD1-7 -> Observation LOINC 75320-2, final, value through LivingWillCode', () => {
    const b = convert([MSH('ADT^A01^ADT_A01'), PID, 'PD1|||||||F^Has will not on file^HL70315']);
    const o = one<Observation>(b, 'Observation');
    expect(o).toMatchObject({
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '75320-2' }] },
      subject: { reference: refTo(one<Patient>(b, 'Patient')) },
    });
    expect(o.valueCodeableConcept!.coding![0]).toEqual({
      system: 'http://terminology.hl7.org/CodeSystem/v2-0315',
      code: 'F',
      display: 'Has will not on file',
    });
    const bare = one<Observation>(convert([MSH('ADT^A01^ADT_A01'), PID, 'PD1|||||||Y']), 'Observation');
    expect(bare.valueCodeableConcept!.coding![0]).toEqual({
      system: 'http://terminology.hl7.org/CodeSystem/v2-0315',
      code: 'Y',
      display: 'Yes, patient has a living will',
    });
  });
  test('SFT[Device] rows 4-12 (+ ADT_A01 message map rows 8-9: Provenance.entity role derivation)', () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      'SFT|Orion Health^L|2.4.3.52854|Rhapsody|RAP234|Interface engine|20070725111624+0100',
      PID,
    ]);
    const dev = all<
      Resource & {
        deviceName?: unknown;
        manufacturer?: string;
        version?: unknown;
        modelNumber?: string;
        note?: unknown;
      }
    >(b, 'Device').find((d) => d.manufacturer)!;
    expect(dev).toMatchObject({
      manufacturer: 'Orion Health',
      deviceName: [{ name: 'Rhapsody', type: 'manufacturer-name' }],
      modelNumber: 'RAP234',
      note: [{ text: 'Interface engine' }],
      version: [
        {
          value: '2.4.3.52854',
          extension: [
            {
              url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Device.version.installDate',
              valueDateTime: '2007-07-25T11:16:24+01:00',
            },
          ],
        },
      ],
    });
    const pv = one<Resource & { entity: { role: string; what: { reference?: string } }[] }>(b, 'Provenance');
    expect(pv.entity).toContainEqual({ role: 'derivation', what: { reference: refTo(dev) } });
  });
  test('PRT[Device] rows 13-26 (ORU_R01 message map row 67: Observation.device)', () => {
    const b = convert([
      MSH('ORU^R01^ORU_R01'),
      PID,
      'OBR|1|P1^EPIC|F1^LAB|57021-8^CBC^LN',
      'OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|||||F',
      seg('PRT', {
        2: 'AD',
        4: 'EQUIP^Equipment^HL70912',
        10: 'ANALYZER-7^LAB',
        17: '20200101',
        18: '20300101',
        19: 'LOT42',
        20: 'SN-123',
        22: '706172005^Hematology analyzer^SCT',
      }),
    ]);
    const o = one<Observation>(b, 'Observation');
    const dev = b.entry!.find((e) => e.fullUrl === o.device!.reference)!.resource as Resource & Record<string, unknown>;
    expect(dev).toMatchObject({
      resourceType: 'Device',
      identifier: [{ system: 'urn:ferry:id:LAB', value: 'ANALYZER-7' }],
      manufactureDate: '2020-01-01',
      expirationDate: '2030-01-01',
      lotNumber: 'LOT42',
      serialNumber: 'SN-123',
      type: { coding: [{ system: 'http://snomed.info/sct', code: '706172005' }] },
    });
  });
});

describe('9. RF1 / PRD referrals (REF_I12; the IG has no segment map: mapped as a clinician reads a referral)', () => {
  const b = convert([
    MSH('REF^I12^REF_I12'),
    'RF1|P^Pending^HL70283|S^Stat^HL70280|Med^Medical^HL70281||O^Outpatient^HL70284|226839^EPIC|20220125|20220210|20220124|O^Provider Ordered^HL70336|11001^EXTID|||Suspected ulcer',
    'PRD|RP^Referring Provider^HL70286|POWELL^ROBERT^^^DR^MD|1031 HEALTHCARE DRIVE^^ANN ARBOR^MI^99999|^^^GENERAL FACILITY|^WPN^PH^^^^^^^^^(626)555-1234||PLN1001^SL^^20240112|20200112|20240112|GOOD HEALTH HOSPITAL',
    'PRD|RT^Referred to Provider^HL70286|McWILLIAMS^PAUL^^^DR^MD||||||||RADIANT HEALTH HOSPITAL',
    'PRD|PP^Primary Care Provider^HL70286|CARE^PRIMA',
    PID,
  ]);
  const sr = one<ServiceRequest>(b, 'ServiceRequest');
  const byUrl = <T>(u?: string) => b.entry!.find((e) => e.fullUrl === u)!.resource as T;
  test('RF1 -> ServiceRequest: referral category, status (RF1-1), priority (RF1-2), code (RF1-3), ids (RF1-6/11), period (RF1-7/8), reasons (RF1-10/14)', () => {
    expect(sr).toMatchObject({
      status: 'active',
      intent: 'order',
      priority: 'stat',
      category: [{ coding: [{ system: 'http://snomed.info/sct', code: '3457005' }] }],
      code: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0281', code: 'Med' }] },
      occurrencePeriod: { start: '2022-01-25', end: '2022-02-10' },
      authoredOn: '2022-01-24',
      subject: { reference: refTo(one<Patient>(b, 'Patient')) },
    });
    expect(sr.identifier!.map((i) => i.value)).toEqual(['226839', '11001']);
    expect(sr.reasonCode!.map((r) => r.coding?.[0]?.code ?? r.text)).toEqual(['O', 'Suspected ulcer']);
  });
  test("PRD -> Practitioner + PractitionerRole: RP the requester, RT a performer, PP the patient's general practitioner", () => {
    const req = byUrl<
      Resource & {
        code: { coding: { code: string }[] }[];
        practitioner: { reference: string };
        period: unknown;
        organization: { display: string };
      }
    >(sr.requester!.reference);
    expect(req.code[0].coding[0].code).toBe('RP');
    expect(req.period).toEqual({ start: '2020-01-12', end: '2024-01-12' });
    expect(req.organization.display).toBe('GOOD HEALTH HOSPITAL');
    const doc = byUrl<Resource & { name: unknown; identifier: { value: string }[]; address: unknown[] }>(
      req.practitioner.reference,
    );
    expect(doc).toMatchObject({
      name: [{ family: 'POWELL', given: ['ROBERT'], prefix: ['DR'] }],
      identifier: [{ value: 'PLN1001' }],
    });
    expect(doc.address).toHaveLength(1);
    const perf = byUrl<Resource & { code: { coding: { code: string }[] }[] }>(sr.performer![0].reference);
    expect(perf.code[0].coding[0].code).toBe('RT');
    const gp = one<Patient>(b, 'Patient').generalPractitioner!;
    expect(
      byUrl<Resource & { code: { coding: { code: string }[] }[] }>(gp[gp.length - 1].reference).code[0].coding[0].code,
    ).toBe('PP');
  });
});

describe('9. PV1-20 -> Coverage; PRT after PID -> CareTeam / general practitioner', () => {
  test('PV1[Coverage] row 22 (ADT_A01 message map row 37): PV1-20 -> Coverage.type, beneficiary the Patient, FC.2 -> period.start', () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      PID,
      seg('PV1', { 1: '1', 2: 'I', 19: 'V100^^^MRN^VN', 20: '02^20240101' }),
    ]);
    const cov = one<Resource & Record<string, unknown>>(b, 'Coverage');
    expect(cov).toMatchObject({
      status: 'active',
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0064', code: '02' }] },
      beneficiary: { reference: refTo(one<Patient>(b, 'Patient')) },
      period: { start: '2024-01-01' },
      payor: [{ display: 'unknown (PV1-20 financial class only)' }],
    });
  });
  test('PRT[CareTeam] rows 7-8, 14, 18-19 (ADT_A01 message map rows 25-26): PP -> generalPractitioner, other roles -> CareTeam', () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      PID,
      seg('PRT', { 2: 'AD', 4: 'PP^Primary Care Provider^HL70912', 5: '111^Primary^Pat' }),
      seg('PRT', {
        2: 'AD',
        4: 'AT^Attending Provider^HL70912',
        5: '222^Attend^Art',
        8: 'Good Health Hospital',
        11: '20240101',
        12: '20240131',
      }),
    ]);
    const p = one<Patient>(b, 'Patient');
    expect(p.generalPractitioner).toHaveLength(1);
    const team = one<Resource & { subject: { reference: string }; participant: Record<string, unknown>[] }>(
      b,
      'CareTeam',
    );
    expect(team.subject.reference).toBe(refTo(p));
    expect(team.participant).toHaveLength(1);
    expect(team.participant[0]).toMatchObject({
      role: [{ coding: expect.arrayContaining([expect.objectContaining({ code: 'AT' })]) }],
      period: { start: '2024-01-01', end: '2024-01-31' },
      onBehalfOf: { display: 'Good Health Hospital' },
    });
  });
});

describe('rows the fidelity report found unfilled: MSH-10, OBX-19/29, PID-26/39, DG1-19/22', () => {
  test('MSH[Bundle] rows 13-14: MSH-10 -> Bundle.identifier (system names the sender)', () => {
    expect(convert([MSH('ADT^A01^ADT_A01', 'CTRL-9'), PID]).identifier).toEqual({
      system: 'urn:ferry:hl7v2:control-id:SendApp@SendFac',
      value: 'CTRL-9',
    });
  });
  test('OBX[Observation] rows 58-59: OBX-19 -> observation-analysis-date-time (not issued); rows 74-75: OBX-29 -> category', () => {
    const b = convert([
      MSH('ORU^R01^ORU_R01'),
      PID,
      'OBR|1|P1^EPIC|F1^LAB|57021-8^CBC^LN',
      seg('OBX', {
        1: '1',
        2: 'NM',
        3: '718-7^Hemoglobin^LN',
        5: '13.2',
        11: 'F',
        19: '20240102093000+0100',
        29: 'RSLT',
      }),
    ]);
    const o = one<Observation>(b, 'Observation');
    expect(o.extension).toContainEqual({
      url: 'http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time',
      valueDateTime: '2024-01-02T09:30:00+01:00',
    });
    expect(o.issued).toBeUndefined();
    expect(o.category).toEqual([
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0936', code: 'RSLT' }] },
    ]);
  });
  test('PID[Patient] rows 42-44, 63-65: PID-26 citizenship and PID-39 tribal citizenship -> patient-citizenship', () => {
    const p = one<Patient>(
      convert([
        MSH('ADT^A01^ADT_A01'),
        seg('PID', {
          1: '1',
          3: '12345^^^MRN^MR',
          5: 'Everyman^Adam',
          26: 'USA^United States^ISO3166_1',
          39: '170^Navajo^HL70171',
        }),
      ]),
      'Patient',
    );
    const cit = p.extension!.filter((x) => x.url === 'http://hl7.org/fhir/StructureDefinition/patient-citizenship');
    expect(cit.map((x) => x.extension![0].valueCodeableConcept!.coding![0].code)).toEqual(['USA', '170']);
  });
  test('DG1[Condition] rows 21-23: DG1-19 -> assertedDate + recordedDate; rows 27-28: DG1-22 -> condition-dueTo by identifier', () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      PID,
      seg('DG1', {
        1: '1',
        3: 'K63.3^Ulcer of intestine^I10',
        19: '20240101120000+0100',
        20: 'DG2^HIS',
        22: 'DG1^HIS',
      }),
    ]);
    const c = one<Resource & { extension: { url: string }[]; recordedDate: string }>(b, 'Condition');
    expect(c.recordedDate).toBe('2024-01-01T12:00:00+01:00');
    expect(c.extension).toEqual([
      {
        url: 'http://hl7.org/fhir/StructureDefinition/condition-assertedDate',
        valueDateTime: '2024-01-01T12:00:00+01:00',
      },
      {
        url: 'http://hl7.org/fhir/StructureDefinition/condition-dueTo',
        valueReference: { type: 'Condition', identifier: { system: 'urn:ferry:id:HIS', value: 'DG1' } },
      },
    ]);
  });
});

describe('9. PV1-43 -> Basic EncounterHistory; PV1-54 / DG1 -> EpisodeOfCare; ROL / IN3 -> CareTeam', () => {
  const PV1 = seg('PV1', {
    1: '1',
    2: 'I',
    3: 'W^101^1^HOSP',
    19: 'V100^^^HOSP^VN',
    43: 'ER^2^1^HOSP',
    53: 'Stroke rehabilitation',
    54: 'EOC124^^^HOSP^MR',
  });
  const DG1 = seg('DG1', { 1: '1', 3: '422504002^Ischemic stroke^SCT', 6: 'A', 15: '1' });
  const b = convert([
    MSH('ADT^A01^ADT_A01'),
    'EVN|A01|20240102103000',
    PID,
    PV1,
    DG1,
    seg('DG1', { 1: '2', 3: 'I10^Hypertension^I10', 6: 'W', 15: '2' }),
  ]);
  const p = one<Patient>(b, 'Patient');
  const e = one<Resource & { episodeOfCare?: { reference: string }[]; location?: unknown[] }>(b, 'Encounter');
  test('PV1[Basic-EncounterHistory] rows 3-4, 51-58 (ADT_A01 message map row 16): code EncounterHistory, subject the Patient, PV1-43 location complete / temporary', () => {
    const h = one<
      Resource & {
        code: unknown;
        subject: { reference: string };
        extension: {
          url: string;
          valueReference?: { reference: string };
          extension?: { url: string; valueCode?: string; valueCodeableConcept?: unknown; valueReference?: unknown }[];
        }[];
      }
    >(b, 'Basic');
    expect(h.code).toEqual({
      coding: [{ system: 'http://hl7.org/fhir/fhir-types', code: 'EncounterHistory', display: 'EncounterHistory' }],
    });
    expect(h.subject.reference).toBe(refTo(p));
    const R5 = 'http://hl7.org/fhir/5.0/StructureDefinition/';
    expect(
      h.extension.find((x) => x.url === `${R5}extension-EncounterHistory.encounter`)!.valueReference!.reference,
    ).toBe(refTo(e));
    const loc = h.extension.find((x) => x.url === `${R5}extension-EncounterHistory.location.location`)!.valueReference!
      .reference;
    const locRes = b.entry!.find((x) => x.fullUrl === loc)!.resource as Resource & {
      name?: string;
      physicalType?: unknown;
    };
    expect(locRes.resourceType).toBe('Location');
    const complex = h.extension.find((x) => x.url === `${R5}extension-EncounterHistory.location`)!.extension!;
    expect(complex).toEqual([
      { url: 'location', valueReference: expect.objectContaining({ reference: loc }) },
      { url: `${R5}extension-EncounterHistory.location.location.status`, valueCode: 'complete' },
      {
        url: 'http://hl7.org/fhir/StructureDefinition/subject-locationClassification',
        valueCodeableConcept: {
          coding: [{ system: 'http://hl7.org/fhir/ValueSet/subject-location', code: 'temporary' }],
        },
      },
    ]);
  });
  test('no PV1-43: no Basic', () => {
    expect(
      all(convert([MSH('ADT^A01^ADT_A01'), PID, seg('PV1', { 1: '1', 2: 'I', 19: 'V100^^^HOSP^VN' })]), 'Basic'),
    ).toEqual([]);
  });
  test('PV1[Encounter] rows 83-85: PV1-54 -> Encounter.episodeOfCare (EpisodeOfCare.identifier), PV1-53 -> resource-instance-description', () => {
    const eoc = one<
      Resource & {
        status: string;
        patient: { reference: string };
        identifier: { value: string }[];
        extension: unknown[];
      }
    >(b, 'EpisodeOfCare');
    expect(e.episodeOfCare).toEqual([{ reference: refTo(eoc) }]);
    expect(eoc.status).toBe('active');
    expect(eoc.patient.reference).toBe(refTo(p));
    expect(eoc.identifier.map((i) => i.value)).toEqual(['EOC124']);
    expect(eoc.extension).toEqual([
      {
        url: 'http://hl7.org/fhir/StructureDefinition/resource-instance-description',
        valueString: 'Stroke rehabilitation',
      },
    ]);
    // the same episode from another visit's message: the same EpisodeOfCare
    const other = convert([
      MSH('ADT^A01^ADT_A01', 'C7'),
      PID,
      seg('PV1', { 1: '1', 2: 'O', 19: 'V200^^^HOSP^VN', 54: 'EOC124^^^HOSP^MR' }),
    ]);
    expect(one<Resource>(other, 'EpisodeOfCare').id).toBe(eoc.id);
  });
  test('DG1[EpisodeOfCare] rows 5, 8, 17: each DG1 of the visit -> EpisodeOfCare.diagnosis (condition, role DG1-6 DiagnosisType, rank DG1-15)', () => {
    const eoc = one<
      Resource & {
        diagnosis: { condition: { reference: string }; role?: { coding: { code: string }[] }; rank?: number }[];
      }
    >(b, 'EpisodeOfCare');
    const conds = all<Resource & { code: { coding: { code: string }[] } }>(b, 'Condition');
    expect(eoc.diagnosis.map((d) => d.condition.reference)).toEqual(conds.map(refTo));
    expect(eoc.diagnosis.map((d) => d.rank)).toEqual([1, 2]);
    expect(eoc.diagnosis.map((d) => d.role!.coding.map((k) => k.code))).toEqual([
      expect.arrayContaining(['AD']),
      expect.arrayContaining(['W']),
    ]);
  });
  test('no PV1-53/54: no EpisodeOfCare, DG1 stays Condition + Encounter.diagnosis', () => {
    const b2 = convert([MSH('ADT^A01^ADT_A01'), PID, seg('PV1', { 1: '1', 2: 'I', 19: 'V100^^^HOSP^VN' }), DG1]);
    expect(all(b2, 'EpisodeOfCare')).toEqual([]);
    expect(one<Resource & { diagnosis: unknown[] }>(b2, 'Encounter').diagnosis).toHaveLength(1);
  });

  const ROL_PP = seg('ROL', { 1: '1', 2: 'AD', 3: 'PP^Primary Care Provider^HL70443', 4: '121^Phoeb^Harold^H' });
  const ROL_CP = seg('ROL', {
    1: '2',
    2: 'AD',
    3: 'CP^Consulting Provider^HL70443',
    4: '555^Heart^Anna^^^DR',
    5: '20240101',
    6: '20241231',
    8: 'RSN1^Cardiac follow-up^L',
    9: '408443003^General practice^SCT',
    10: '2^Physician Clinic^HL70406',
    12: '^WPN^PH^^^555^1234567',
    14: 'Good Health Hospital^L^^^^CMS^XX^^A',
  });
  const ROL_ORG = seg('ROL', {
    1: '3',
    2: 'AD',
    3: 'FHCP^Family Health Care Professional^HL70443',
    14: 'Home Care Inc^L^^^^CMS^XX^^B',
  });
  const rb = convert([
    MSH('ADT^A01^ADT_A01'),
    PID,
    ROL_PP,
    ROL_CP,
    ROL_ORG,
    seg('PV1', { 1: '1', 2: 'I', 19: 'V100^^^HOSP^VN' }),
  ]);
  const byUrl = <T>(u?: string) => rb.entry!.find((x) => x.fullUrl === u)!.resource as T;
  test('ROL[Patient-GeneralPractitioner]: PP after PID stays Patient.generalPractitioner, not a CareTeam member', () => {
    const pt = one<Patient>(rb, 'Patient');
    expect(pt.generalPractitioner).toHaveLength(1);
    const team = one<Resource & { participant: { member: { reference: string } }[] }>(rb, 'CareTeam');
    expect(team.participant.map((x) => x.member.reference)).not.toContain(pt.generalPractitioner![0].reference);
  });
  test('ROL[CareTeam] rows 5-10, 12-14, 17, 19 (ADT_A01 message map row 13): role ROL-3 (+ ROL-9), member ROL-4, period, reason ROL-8, onBehalfOf ROL-14 (type ROL-10), telecom ROL-12', () => {
    const team = one<
      Resource & {
        subject: { reference: string };
        status: string;
        reasonCode: { coding: { code: string }[] }[];
        telecom: { value: string }[];
        participant: {
          role: { coding: { system: string; code: string }[] }[];
          member: { reference: string };
          onBehalfOf?: { reference: string };
          period?: unknown;
        }[];
      }
    >(rb, 'CareTeam');
    expect(team.subject.reference).toBe(refTo(one<Patient>(rb, 'Patient')));
    const cp = team.participant[0];
    expect(cp.role[0].coding.map((k) => k.code)).toEqual(expect.arrayContaining(['CON', 'CP'])); // ProviderRole row CP -> v3 CON, the v2 code kept
    expect(cp.role[1].coding[0]).toMatchObject({ system: 'http://snomed.info/sct', code: '408443003' });
    expect(byUrl<Resource & { name: { family: string }[] }>(cp.member.reference)).toMatchObject({
      resourceType: 'Practitioner',
      name: [{ family: 'Heart' }],
    });
    expect(cp.period).toEqual({ start: '2024-01-01', end: '2024-12-31' });
    const org = byUrl<Resource & { name: string; type: { coding: { code: string }[] }[] }>(cp.onBehalfOf!.reference);
    expect(org).toMatchObject({ resourceType: 'Organization', name: 'Good Health Hospital' });
    expect(org.type[0].coding.map((k) => k.code)).toContain('2');
    expect(team.reasonCode[0].coding[0].code).toBe('RSN1');
    expect(team.telecom[0].value).toBe('555 1234567');
  });
  test('ROL[CareTeam] rows 15 + 20: no ROL-4 -> the ROL-14 Organization is the member', () => {
    const team = one<Resource & { participant: { member: { reference: string }; onBehalfOf?: unknown }[] }>(
      rb,
      'CareTeam',
    );
    const orgPart = team.participant[1];
    expect(byUrl<Resource & { name: string }>(orgPart.member.reference)).toMatchObject({
      resourceType: 'Organization',
      name: 'Home Care Inc',
    });
    expect(orgPart.onBehalfOf).toBeUndefined();
  });
  test('IN3[CareTeam] rows 23-25 (ADT_A01 message map row 29.3): IN3-21 case manager -> participant role SNOMED 768832004, subject the Patient', () => {
    const ib = convert([
      MSH('ADT^A01^ADT_A01'),
      PID,
      seg('PV1', { 1: '1', 2: 'I' }),
      seg('IN1', { 1: '1', 2: 'PLAN1^Gold^L', 3: 'PAY1^^^HOSP', 4: 'Acme Insurance' }),
      seg('IN3', { 1: '1', 2: 'CERT1', 21: 'Casey Manager' }),
    ]);
    const team = one<Resource & { subject: { reference: string }; participant: unknown[] }>(ib, 'CareTeam');
    expect(team.subject.reference).toBe(refTo(one<Patient>(ib, 'Patient')));
    expect(team.participant).toEqual([
      {
        role: [
          {
            coding: [{ system: 'http://snomed.info/sct', code: '768832004', display: 'Case manager' }],
            text: 'case manager',
          },
        ],
        member: { display: 'Casey Manager' },
      },
    ]);
    expect(
      all(
        convert([
          MSH('ADT^A01^ADT_A01'),
          PID,
          seg('IN1', { 1: '1', 3: 'PAY1^^^HOSP' }),
          seg('IN3', { 1: '1', 2: 'CERT1' }),
        ]),
        'CareTeam',
      ),
    ).toEqual([]);
  });
});

describe('rows the fidelity report found unfilled (round II): IN1-5/49, PID-18 in ADT, NTE on an appointment, MSH-7 occurred', () => {
  test("IN1[Coverage] row 7: IN1-5 -> the payor Organization's address, also without an IN1-3 id; rows 54-55: IN1-49 -> extension subscriberId", () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      PID,
      seg('IN1', {
        1: '1',
        2: 'PLAN1^Gold^L',
        4: 'Acme Insurance',
        5: '1 Main St^^Springfield^IL^62701',
        17: 'SEL',
        49: 'SUB-9^^^ACME^MB',
      }),
    ]);
    const cov = one<
      Resource & {
        payor: { reference: string }[];
        subscriberId: string;
        extension: { url: string; valueIdentifier: { value: string; system?: string } }[];
      }
    >(b, 'Coverage');
    const org = b.entry!.find((e) => e.fullUrl === cov.payor[0].reference)!.resource as Resource & {
      name: string;
      address: { city: string }[];
    };
    expect(org).toMatchObject({
      resourceType: 'Organization',
      name: 'Acme Insurance',
      address: [{ city: 'Springfield' }],
    });
    expect(cov.subscriberId).toBe('SUB-9');
    expect(cov.extension).toEqual([
      {
        url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-subscriberId',
        valueIdentifier: expect.objectContaining({ value: 'SUB-9', system: 'urn:ferry:id:ACME' }),
      },
    ]);
  });
  test('PID[Account] row 22 (ADT_A01 message map row 6): PID-18 in ADT -> Account.identifier, subject the Patient; no PID-18: no Account', () => {
    const b = convert([MSH('ADT^A01^ADT_A01'), `${PID}||||||||||ACCT-1^^^HOSP^AN`]);
    const acct = one<Resource & { identifier: { value: string }[]; subject: { reference: string }[]; status: string }>(
      b,
      'Account',
    );
    expect(acct.identifier.map((i) => i.value)).toEqual(['ACCT-1']);
    expect(acct.subject).toEqual([{ reference: refTo(one<Patient>(b, 'Patient')) }]);
    expect(all(convert([MSH('ADT^A01^ADT_A01'), PID]), 'Account')).toEqual([]);
  });
  test('NTE[Appointment-Comment] rows 5-6: NTE-3 -> extension-Appointment.note valueAnnotation (the comment string kept)', () => {
    const b = convert([
      MSH('SIU^S12^SIU_S12'),
      seg('SCH', { 1: 'A1^SCHED', 2: 'F1^SCHED', 11: '^^30^20240105100000+0100^20240105103000+0100', 25: 'Booked' }),
      'NTE|1||Bring the referral letter',
      PID,
    ]);
    const appt = one<Resource & { comment: string; extension: { url: string; valueAnnotation: { text: string } }[] }>(
      b,
      'Appointment',
    );
    expect(appt.comment).toBe('Bring the referral letter');
    expect(appt.extension).toContainEqual({
      url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.note',
      valueAnnotation: { text: 'Bring the referral letter' },
    });
  });
  test('MSH[Provenance-Source] row 17: MSH-7 -> Provenance.occurred when EVN-6 does not give it; EVN-6 wins when valued', () => {
    const noEvn6 = one<Resource & { occurredDateTime: string }>(
      convert([MSH('ADT^A01^ADT_A01'), 'EVN|A01|20240102103000', PID]),
      'Provenance',
    );
    expect(noEvn6.occurredDateTime).toBe('2024-01-02T10:30:00+01:00');
    const evn6 = one<Resource & { occurredDateTime: string }>(
      convert([MSH('ADT^A01^ADT_A01'), 'EVN|A01|20240102103000||||20240102090000', PID]),
      'Provenance',
    );
    expect(evn6.occurredDateTime).toBe('2024-01-02T09:00:00+01:00');
  });
});

describe('PR1[Procedure] row 35: PR1-25 parent procedure id -> Procedure.partOf', () => {
  test('the parent PR1 of the same message by reference, another one by identifier (EI)', () => {
    const b = convert([
      MSH('ADT^A01^ADT_A01'),
      PID,
      seg('PR1', { 1: '1', 3: '73761001^Colonoscopy^SCT', 5: '20240102080000+0100', 19: 'PR-1^^1.2.3^ISO' }),
      seg('PR1', {
        1: '2',
        3: '76164006^Biopsy of colon^SCT',
        5: '20240102081000+0100',
        19: 'PR-2^^1.2.3^ISO',
        25: 'PR-1^^1.2.3^ISO',
      }),
      seg('PR1', {
        1: '3',
        3: '76164006^Biopsy of colon^SCT',
        5: '20240102082000+0100',
        19: 'PR-3^^1.2.3^ISO',
        25: 'PR-0^^1.2.3^ISO',
      }),
    ]);
    const [colo, biopsy, other] = all<
      Resource & { partOf?: { reference?: string; type?: string; identifier?: { value: string; system: string } }[] }
    >(b, 'Procedure');
    expect(colo.partOf).toBeUndefined();
    expect(biopsy.partOf).toEqual([{ reference: refTo(colo) }]);
    expect(other.partOf).toEqual([
      { type: 'Procedure', identifier: expect.objectContaining({ value: 'PR-0', system: 'urn:oid:1.2.3' }) },
    ]);
  });
});

describe('PV1-43 EncounterHistory and the visit deleted (A23 / A29)', () => {
  test.each(['A23', 'A29'])(
    'ADT^%s: the Basic EncounterHistory goes with the Encounter (DELETE entries, no resource left pointing at the deleted visit)',
    (trigger) => {
      const b = convert([
        MSH(`ADT^${trigger}^ADT_A21`),
        `EVN|${trigger}|20240102103000`,
        PID,
        seg('PV1', { 1: '1', 2: 'I', 19: 'V100^^^HOSP^VN', 43: 'ER^2^1^HOSP' }),
      ]);
      const deleted = b
        .entry!.filter((e) => e.request?.method === 'DELETE')
        .map((e) => e.request!.url.split(/[/?]/)[0]);
      expect(deleted).toEqual(expect.arrayContaining(['Encounter', 'Basic']));
      const gone = new Set(b.entry!.filter((e) => e.request?.method === 'DELETE').map((e) => e.fullUrl));
      const pointing = b.entry!.filter(
        (e) =>
          e.resource?.resourceType === 'Basic' &&
          JSON.stringify(e.resource)
            .split('"reference":"')
            .slice(1)
            .some((r) => gone.has(r.split('"')[0])),
      );
      expect(pointing).toEqual([]);
    },
  );
});
