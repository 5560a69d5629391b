import { FerryError } from '@ferry/core';
import type { Bundle, Observation, Patient, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { parseHl7 } from '../hl7v2/parser';
import { adtBundle, mdmBundle, ormBundle, oruBundle, siuBundle, vxuBundle } from './__fixtures__/bundles';
import { dt, dtm } from './datatypes';
import { controlIdFor, FhirToV2 } from './fhir-to-v2';
import { receiverProfile } from './profile';

const NOW = '2026-03-02T10:00:00-06:00';
const SEED = 'msg-1|sink-a';
const CID = controlIdFor(SEED);
const lines = (text: string) => text.split('\r').filter(Boolean);
const conv = (b: Bundle, profile?: unknown) => new FhirToV2(profile).convert(b, { controlIdSeed: SEED, now: NOW });

// The expected messages below were checked field by field against the HL7 v2.5.1 segment definitions
// and the IG segment maps PID[Patient], PV1[Encounter], NK1[RelatedPerson], AL1[AllergyIntolerance],
// DG1[Condition], OBR[DiagnosticReport], OBX[Observation], SPM[Specimen], SCH/AIS/AIL/AIP[Appointment].
const PID =
  "PID|1||E1234^^^EPIC&1.2.840.114350.1.13.0.1.7.5.737384.14&ISO^MR||O'Brien\\F\\Smith^Anne^Marie^^^^L||19800515|F|||12 Main St^Apt 4\\S\\B^Madison^WI^53703^US^H||608-555-0100^PRN^PH~^NET^Internet^anne@example.org|608-555-0199^WPN^PH||M^Married^HL70002|||123-45-6789";

describe('FHIR R4 -> HL7 v2.5.1', () => {
  test('ADT^A01 from an in-progress Encounter: MSH, EVN, PID, NK1, PV1, AL1, DG1', () => {
    const [m] = conv(adtBundle());
    expect(m.messageType).toBe('ADT^A01');
    expect(m.controlId).toBe(CID);
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||ADT^A01^ADT_A01|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      'EVN||20260302100000-0600',
      PID,
      "NK1|1|O'Brien^Tom|SPO^spouse^HL70063||608-555-0101^PRN^PH",
      'PV1|1|I|4EAST^4E-12||||1234567893^Welby^Marcus^^^Dr^^^&http://hl7.org/fhir/sid/us-npi&URI||||||||||||V100^^^EPIC^VN|||||||||||||||||||||||||20260301083000-0600',
      'AL1|1|DA|7980^Penicillin G^RXNORM|SV|Hives|201006',
      'DG1|1||J18.9^Pneumonia, unspecified organism^I10C||20260227|A|||||||||1',
    ]);
    expect(m.text.endsWith('\r')).toBe(true);
  });

  test('ADT event from the Encounter status (planned A04, finished A03, Patient alone A31)', () => {
    expect(conv(adtBundle('planned'))[0].messageType).toBe('ADT^A04');
    expect(conv(adtBundle('finished'))[0].messageType).toBe('ADT^A03');
    const onlyPatient: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: adtBundle().entry!.filter((e) => e.resource?.resourceType === 'Patient'),
    };
    const [m] = conv(onlyPatient);
    expect(m.messageType).toBe('ADT^A31');
    expect(lines(m.text)[0]).toContain('|ADT^A31^ADT_A05|');
    expect(lines(m.text)[3]).toBe('PV1|1|N');
  });

  test('ORU^R01: OBR, OBX NM/ST/CWE/TX with units, range, interpretation, NTE, SPM; escaping', () => {
    const [m] = conv(oruBundle());
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||ORU^R01^ORU_R01|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      PID,
      'OBR|1||F-778^LAB|58410-2^CBC panel - Blood by Automated count^LN|||20260302071500.1234-0600|||||||||||||||20260302090000+0000|||F',
      'OBX|1|NM|718-7^Hemoglobin^LN||10.2|g/dL^^UCUM|12-16|L^Low^HL70078|||F|||20260302071500-0600',
      'OBX|2|ST|8251-1^Service comment^LN||Sample slightly hemolysed \\F\\ re-draw advised \\S\\ see note||||||P',
      'OBX|3|CWE|882-1^ABO and Rh group^LN||278149003^Blood group A Rh(D) positive^SCT||||||F',
      'OBX|4|TX|11502-2^Laboratory report^LN||Line one\\.br\\Line two||||||C',
      'NTE|1||Corrected at 09:00',
      'SPM|1|^SP-1&LAB||BLD^Whole blood^HL70487|||||||||||||20260302071000-0600',
    ]);
  });

  test('ORU^R01 from Observations without a report (an EHR Observation feed): one OBR per Observation', () => {
    const b = oruBundle();
    b.entry = b.entry!.filter((e) => e.resource?.resourceType !== 'DiagnosticReport');
    (b.entry.find((e) => e.resource?.id === 'o1')!.resource as Observation).subject = { reference: 'urn:uuid:p1' };
    const segs = lines(conv(b)[0].text).map((l) => l.slice(0, 3));
    expect(segs).toEqual(['MSH', 'PID', 'OBR', 'OBX', 'OBR', 'OBX', 'OBR', 'OBX', 'OBR', 'OBX', 'NTE']);
    expect(lines(conv(b)[0].text)[2]).toBe('OBR|1|||718-7^Hemoglobin^LN|||20260302071500-0600||||||||||||||||||F');
  });

  test('SIU^S12: SCH, NTE, PID, RGS, AIS, AIL, AIP; cancelled -> S15', () => {
    const [m] = conv(siuBundle());
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||SIU^S12^SIU_S12|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      'SCH||998877^ATHENA||||Booked^^HL70278||ROUTINE^Routine appointment^HL70276|30|min^minutes^UCUM|^^M30^20260310140000-0500^20260310143000-0500||||||||||||||Booked^^HL70278',
      'NTE|1||Bring insurance card',
      PID,
      'RGS|1',
      'AIS|1||82^Office visit^ATHENA-APPTTYPE|20260310140000-0500|||30|min^minutes^UCUM',
      'AIL|1||4EAST|||20260310140000-0500',
      'AIP|1||1234567893^Welby^Marcus^^^Dr^^^&http://hl7.org/fhir/sid/us-npi&URI|ATND^^http://terminology.hl7.org/CodeSystem/v3-ParticipationType||20260310140000-0500',
    ]);
    const [c] = conv(siuBundle('cancelled'));
    expect(c.messageType).toBe('SIU^S15');
    expect(lines(c.text)[1]).toMatch(/\|Cancelled\^\^HL70278$/);
  });

  test('SIU^S12 from an athena appointment: patient, provider and department are logical references (identifier only)', () => {
    const appt = {
      resourceType: 'Appointment',
      id: 'athena-195900-appointment-5001',
      identifier: [{ system: 'urn:athenahealth:athenanet:appointment:195900', value: '5001' }],
      status: 'booked',
      serviceType: [
        {
          text: 'FOLLOW UP',
          coding: [{ system: 'urn:athenahealth:athenanet:appointmenttype:195900', code: '11', display: 'FOLLOW UP' }],
        },
      ],
      start: '2026-03-07T17:30:00.000Z',
      end: '2026-03-07T18:00:00.000Z',
      minutesDuration: 30,
      participant: [
        {
          actor: { type: 'Patient', identifier: { system: 'urn:athenahealth:athenanet:patient:195900', value: '100' } },
          required: 'required',
          status: 'accepted',
        },
        {
          actor: {
            type: 'Practitioner',
            identifier: { system: 'urn:athenahealth:athenanet:provider:195900', value: '1' },
          },
          required: 'required',
          status: 'accepted',
        },
        {
          actor: {
            type: 'Location',
            identifier: { system: 'urn:athenahealth:athenanet:department:195900', value: '21' },
            display: 'West Clinic',
          },
          required: 'required',
          status: 'accepted',
        },
      ],
    };
    const b = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ fullUrl: 'urn:uuid:a1', resource: appt }],
    } as Bundle;
    const profile = {
      identifierSystems: {
        ATHENA: 'urn:athenahealth:athenanet:patient:195900',
        ATHENAPROV: 'urn:athenahealth:athenanet:provider:195900',
        ATHENAAPPT: 'urn:athenahealth:athenanet:appointment:195900',
      },
    };
    expect(lines(conv(b, profile)[0].text).slice(1)).toEqual([
      'SCH||5001^ATHENAAPPT||||Booked^^HL70278|||30|min^minutes^UCUM|^^M30^20260307173000.000+0000^20260307180000.000+0000||||||||||||||Booked^^HL70278',
      'PID|1||100^^^ATHENA',
      'RGS|1',
      'AIS|1||11^FOLLOW UP^urn:athenahealth:athenanet:appointmenttype:195900|20260307173000.000+0000|||30|min^minutes^UCUM',
      'AIL|1||West Clinic|||20260307173000.000+0000',
      'AIP|1||1^^^^^^^^ATHENAPROV|||20260307173000.000+0000',
    ]);
  });

  test('VXU^V04: ORC, RXA (dose, lot, expiry, MVX manufacturer, source, completion), RXR', () => {
    const [m] = conv(vxuBundle());
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||VXU^V04^VXU_V04|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      PID,
      'ORC|RE||13696^IIS',
      'RXA|0|1|20260302101500-0600|20260302101500-0600|115^Tdap^CVX|0.5|mL^^UCUM||00^New Record^NIP001|1234567893^Welby^Marcus^^^Dr^^^&http://hl7.org/fhir/sid/us-npi&URI|||||L-42|20270131|PMC^Sanofi Pasteur^MVX|||CP|A',
      'RXR|C28161^Intramuscular^NCIT|LD^Left Deltoid^HL70163',
    ]);
  });

  test('ORM^O01: ORC (control, numbers, status, priority, requester), OBR, NTE', () => {
    const [m] = conv(ormBundle());
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||ORM^O01^ORM_O01|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      PID,
      'ORC|NW|ORD-9^EHR|LAB-9^LAB||IP||^^^20260303080000-0600^^S||20260302100000-0600|||1234567893^Welby^Marcus^^^Dr^^^&http://hl7.org/fhir/sid/us-npi&URI',
      'OBR|1|ORD-9^EHR|LAB-9^LAB|24331-1^Lipid panel^LN|||20260303080000-0600|||||||||1234567893^Welby^Marcus^^^Dr^^^&http://hl7.org/fhir/sid/us-npi&URI',
      'NTE|1||Fasting 12 h',
    ]);
  });

  test('MDM^T02: EVN, PID, TXA (type, date, author, document number, completion, availability), OBX TX per line', () => {
    const [m] = conv(mdmBundle());
    expect(lines(m.text)).toEqual([
      `MSH|^~\\&|FERRY||||20260302100000-0600||MDM^T02^MDM_T02|${CID}|P|2.5.1||||||UNICODE UTF-8`,
      'EVN||20260302100000-0600',
      PID,
      'TXA|1|DS|TX|20260304162000-0600||20260304162000-0600|||1234567893^Welby^Marcus^^^Dr^^^&http://hl7.org/fhir/sid/us-npi&URI|||D-77^DOCS|||||AU||AV',
      'OBX|1|TX|DS^Discharge summary^HL70270||Discharged home.||||||F',
      'OBX|2|TX|DS^Discharge summary^HL70270||Follow up in 2 weeks \\F\\ clinic||||||F',
    ]);
  });

  test('dates keep their precision and offset: date -> DT, dateTime -> DTM', () => {
    expect(dt('1980')).toBe('1980');
    expect(dt('1980-05')).toBe('198005');
    expect(dt('1980-05-15')).toBe('19800515');
    expect(dtm('2026-03-02')).toBe('20260302');
    expect(dtm('2026-03-02T07:15:00Z')).toBe('20260302071500+0000');
    expect(dtm('2026-03-02T07:15:00+02:15')).toBe('20260302071500+0215');
    expect(dtm('2026-03-02T07:15:09.5-05:00')).toBe('20260302071509.5-0500');
    expect(dtm('2026-03-02T07:15:09.123456-05:00')).toBe('20260302071509.1234-0500');
    expect(dtm('not a date')).toBeUndefined();
  });

  test('control ids: 20 characters, stable for a replay, different per message/sink', () => {
    expect(conv(oruBundle())[0].controlId).toBe(conv(oruBundle())[0].controlId);
    expect(CID).toMatch(/^[0-9A-F]{20}$/);
    expect(new FhirToV2().convert(oruBundle(), { controlIdSeed: 'msg-1|sink-b', now: NOW })[0].controlId).not.toBe(CID);
    expect(new FhirToV2().convert(oruBundle(), { controlIdSeed: 'msg-2|sink-a', now: NOW })[0].controlId).not.toBe(CID);
  });

  test('a Bundle that cannot be expressed: input error naming the FHIR element and the v2 field', () => {
    const noId = adtBundle();
    delete (noId.entry!.find((e) => e.resource?.resourceType === 'Patient')!.resource = {
      ...(noId.entry![0].resource as Patient),
    }).identifier;
    const err = (() => {
      try {
        conv(noId);
      } catch (e) {
        return e as FerryError;
      }
      throw new Error('no error');
    })();
    expect(err).toBeInstanceOf(FerryError);
    expect(err.kind).toBe('input');
    expect(err.retryable).toBe(false);
    expect(err.code).toBe('FERRY_E_INPUT_FHIR_TO_V2_MISSING');
    expect(err.message).toBe(
      'cannot express the Bundle in HL7 v2: Patient.identifier is required for PID-3 (patient identifier list)',
    );
    const noCode = oruBundle();
    delete (noCode.entry!.find((e) => e.resource?.id === 'o3')!.resource as Partial<Observation>).code;
    expect(() => conv(noCode)).toThrow('Observation.code is required for OBX-3');
    const noStart = siuBundle();
    delete (noStart.entry!.find((e) => e.resource?.resourceType === 'Appointment')!.resource as { start?: string })
      .start;
    expect(() => conv(noStart)).toThrow('Appointment.start is required for SCH-11.4');
    expect(() => conv({ resourceType: 'Bundle', type: 'transaction', entry: [] })).toThrow(/holds no Patient/);
  });

  test('receiver profile: version, MSH-3..6, message type override, segments off, code table, field override', () => {
    const profile = {
      version: '2.3',
      sendingApplication: 'FERRY',
      sendingFacility: 'GHH',
      receivingApplication: 'LIS',
      receivingFacility: 'LAB^1.2.3^ISO',
      acceptAckType: 'AL',
      applicationAckType: 'NE',
      messageTypes: { adt: 'ADT^A08' },
      segments: { NK1: false, AL1: false },
      codeTables: { 'DG1-3': { system: '99DX', codes: { 'J18.9': 'PNEU' } } },
      fieldOverrides: { 'PV1-3': 'WARD^^^MAIN', 'MSH-11': 'T' },
    };
    const [m] = conv(adtBundle(), profile);
    const l = lines(m.text);
    expect(l[0]).toBe(
      `MSH|^~\\&|FERRY|GHH|LIS|LAB^1.2.3^ISO|20260302100000-0600||ADT^A08^ADT_A01|${CID}|T|2.3|||AL|NE||UNICODE UTF-8`,
    );
    expect(l[1]).toBe('EVN|A08|20260302100000-0600');
    expect(l.map((x) => x.slice(0, 3))).toEqual(['MSH', 'EVN', 'PID', 'PV1', 'DG1']);
    expect(l[3].split('|')[3]).toBe('WARD^^^MAIN');
    expect(l[4]).toContain('|PNEU^Pneumonia, unspecified organism^99DX|');
  });

  test('a v2.3 receiver: CE instead of CWE (no CWE-9 text), no SPM', () => {
    const [m] = conv(oruBundle(), { version: '2.3' });
    const l = lines(m.text);
    expect(l[0]).toContain('|P|2.3|');
    expect(l.map((x) => x.slice(0, 3))).not.toContain('SPM');
    expect(l[5]).toBe('OBX|3|CE|882-1^ABO and Rh group^LN||278149003^Blood group A Rh(D) positive^SCT||||||F');
    const [a] = conv(adtBundle(), { version: '2.3' });
    expect(lines(a.text).find((x) => x.startsWith('DG1'))).toBe(
      'DG1|1||J18.9^Pneumonia, unspecified organism^I10C||20260227|A|||||||||1',
    );
  });

  test('receiver profile is checked strictly', () => {
    expect(() => receiverProfile({ sendingApp: 'x' })).toThrow(/profile\.sendingApp: unknown hl7v2 profile key/);
    expect(() => receiverProfile({ version: '3.0' })).toThrow(/not an HL7 v2 version/);
    expect(() => receiverProfile({ segments: { PID: false } })).toThrow(/segments.PID: not an optional segment/);
    expect(() => receiverProfile({ messageTypes: { adt: 'A08' } })).toThrow(/not a message type/);
    expect(() => receiverProfile({ fieldOverrides: { PV13: 'x' } })).toThrow(/not a field reference/);
    expect(() => receiverProfile({ fieldOverrides: { 'MSH-2': 'x' } })).toThrow(/delimiters/);
    expect(() => receiverProfile({ codeTables: { 'OBX-3': { codes: { a: 1 } } } })).toThrow(
      /codes\.a: must be a string/,
    );
    expect(receiverProfile({}).version).toBe('2.5.1');
  });

  test('what Ferry writes, Ferry reads back to the same core FHIR (v2 -> FHIR inbound maps)', () => {
    const t = new Hl7v2Transform();
    const [m] = conv(oruBundle());
    const b = t.convert(Buffer.from(m.text, 'utf8'));
    const obs = b.entry!.map((e) => e.resource).filter((r): r is Observation => r?.resourceType === 'Observation');
    expect(obs.map((o) => o.code.coding![0].code)).toEqual(['718-7', '8251-1', '882-1', '11502-2']);
    expect(obs[0].valueQuantity).toMatchObject({ value: 10.2, code: 'g/dL' });
    expect(obs[0].referenceRange![0]).toMatchObject({ low: { value: 12 }, high: { value: 16 } });
    expect(obs[1].valueString).toBe('Sample slightly hemolysed | re-draw advised ^ see note');
    expect(obs[3].valueString).toBe('Line one\nLine two');
    expect(obs.map((o) => o.status)).toEqual(['final', 'preliminary', 'final', 'corrected']);
    const p = b.entry!.find((e) => e.resource?.resourceType === 'Patient')!.resource as Patient;
    expect(p.name![0]).toMatchObject({ family: "O'Brien|Smith", given: ['Anne', 'Marie'] });
    expect(p.birthDate).toBe('1980-05-15');
    expect(parseHl7(m.text).msh.get(18)).toBe('UNICODE UTF-8');
  });
  // ServiceRequest.status -> ORC-1/ORC-5 -> the inbound ORC[ServiceRequest] rows (ORC-5 OrderStatus, else ORC-1
  // OrderControlCode[ServiceRequest.status]). Documented loss (FHIR-TO-V2.md): `draft` has no row in either map
  // and comes back `unknown`.
  const STATUS_LOSSES: Record<string, string> = { draft: 'unknown' };
  test.each(['active', 'on-hold', 'revoked', 'completed', 'entered-in-error', 'unknown', 'draft'])(
    'ServiceRequest.status %s: ORC-1/ORC-5 read back to the same status (ORM and MDM)',
    (status) => {
      const t = new Hl7v2Transform();
      const withStatus = (b: Bundle) => {
        const sr = b
          .entry!.map((e) => e.resource)
          .find((r): r is ServiceRequest => r?.resourceType === 'ServiceRequest')!;
        sr.status = status as ServiceRequest['status'];
        return b;
      };
      const orm = ormBundle();
      const mdm = mdmBundle();
      mdm.entry!.push({
        fullUrl: 'urn:uuid:sr1',
        resource: orm.entry!.find((e) => e.resource?.resourceType === 'ServiceRequest')!.resource as Resource,
      });
      for (const b of [withStatus(ormBundle()), withStatus(mdm)]) {
        const [m] = conv(b);
        expect(lines(m.text).filter((l) => /^(ORC|OBR)\|/.test(l)).length).toBe(2);
        const back = t
          .convert(Buffer.from(m.text, 'utf8'))
          .entry!.map((e) => e.resource)
          .filter((r): r is ServiceRequest => r?.resourceType === 'ServiceRequest');
        expect(
          back.map((sr) => [
            sr.status,
            sr.code?.coding?.[0]?.code,
            sr.identifier
              ?.map((i) => i.value)
              .sort()
              .join(' '),
          ]),
        ).toEqual([[STATUS_LOSSES[status] ?? status, '24331-1', 'LAB-9 ORD-9']]);
      }
    },
  );
});
