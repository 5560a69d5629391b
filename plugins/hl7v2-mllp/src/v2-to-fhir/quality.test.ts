import type { ReportedIssue } from '@ferry/core';
import { acksFor, HL7Error } from '../ack/ack.builder';
import { readRawHeader } from '../ack/msh';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';

const issuesOf = (text: string, conversion = {}) => {
  const out: ReportedIssue[] = [];
  new Hl7v2Transform({ conversion }).convert(Buffer.from(text, 'latin1'), (i) => out.push(i));
  return out;
};
const MSH = 'MSH|^~\\&|LAB|GHH|EHR|RCV|20240102120000+0100||ORU^R01^ORU_R01|L1|P|2.5.1';

describe('data-quality check of a message', () => {
  test('a clean message has none', () => {
    expect(
      issuesOf([MSH, 'PID|1||111^^^MRN^MR||Doe^Jane||19800515|F', 'OBX|1|NM|718-7^Hb^LN||13.2|g/dL|||||F'].join('\r')),
    ).toEqual([]);
  });

  test('dates, numbers, codes, OBX-5 by OBX-2 and SN: location, occurrence, repetition, path, reason, never the value', () => {
    const got = issuesOf(
      [
        MSH,
        'PID|x1||111^^^MRN^MR~222^^^MRN^MR^^2024133||Doe^Jane||Quibblesworth-DOB|Zorro',
        'OBX|1|NM|718-7^Hb^LN||thirteen|g/dL|||||F',
        'OBX|2|SN|718-7^Hb^LN||>^many|g/dL|||||Q',
        'OBX|3|DT|1-8^Birth^LN||2024-01-02||||||F',
      ].join('\r'),
    );
    const brief = got.map((i) => [i.location, i.occurrence, i.repetition, i.code, i.path, i.hl7ErrorCode]);
    expect(brief).toEqual([
      ['PID-1', 1, undefined, 'invalid-number', undefined, '102'],
      ['PID-3-7', 1, 2, 'invalid-date', 'Patient.identifier.period.start', '102'],
      ['PID-7', 1, undefined, 'invalid-date', 'Patient.birthDate', '102'],
      ['PID-8', 1, undefined, 'unknown-code', 'Patient.gender', '103'],
      ['OBX-5', 1, undefined, 'invalid-number', 'Observation.value[x]', '102'],
      ['OBX-5-2', 2, undefined, 'invalid-number', 'Observation.value[x]', '102'],
      ['OBX-11', 2, undefined, 'unknown-code', 'Observation.status', '103'],
      ['OBX-5', 3, undefined, 'invalid-date', 'Observation.value[x]', '102'],
    ]);
    for (const v of ['Quibblesworth', 'Zorro', 'thirteen', 'many', '2024133', 'x1'])
      expect(JSON.stringify(got)).not.toContain(v);
  });

  test('a composite whose first component is typed (PV1-44 DTM in older layouts, CQ-1): checked sent plain or with components', () => {
    const got = issuesOf([MSH, 'PID|1||111^^^MRN^MR', 'TQ1|1|x^mg|||||nope', 'TQ1|2|y|||||20240101^bad'].join('\r'));
    expect(got.map((i) => [i.location, i.occurrence, i.code])).toEqual([
      ['TQ1-2-1', 1, 'invalid-number'],
      ['TQ1-7', 1, 'invalid-date'],
      ['TQ1-2-1', 2, 'invalid-number'],
    ]);
  });

  test('a standard segment nobody maps, dropped under unknownSegments: ignore, is an issue; kept as an extension it is not', () => {
    const text = [MSH, 'PID|1||111^^^MRN^MR', 'ACC|20240101|AUTO'].join('\r');
    expect(issuesOf(text)).toEqual([
      expect.objectContaining({ location: 'ACC', occurrence: 1, sequence: 3, code: 'unknown-segment' }),
    ]);
    expect(issuesOf(text, { unknownSegments: 'extension' })).toEqual([]);
  });

  test('a value cut short by the sender (v2.7+ truncation character) is an issue at its component', () => {
    const text = [
      'MSH|^~\\&#|LAB|GHH|EHR|RCV|20240102120000+0100||ADT^A01^ADT_A01|L1|P|2.7',
      'PID|1||111^^^MRN^MR||Doe^Janett#',
    ].join('\r');
    expect(issuesOf(text)).toEqual([
      expect.objectContaining({ location: 'PID-5-2', code: 'truncated', hl7ErrorCode: '104' }),
    ]);
  });
});

describe('enhanced-mode application ACK with data errors', () => {
  const msh = readRawHeader(Buffer.from(`${MSH}|||AL|AL\r`, 'latin1'));
  test('CA, then AE with one ERR per error (ERL: segment, occurrence, field, repetition, component)', () => {
    const acks = acksFor(
      msh,
      {
        status: 'accepted',
        dataErrors: [
          {
            condition: HL7Error.dataType,
            location: { segment: 'PID', sequence: 1, field: 7 },
            detail: 'PID-7: not a valid HL7 date/time',
          },
          {
            condition: HL7Error.tableValueNotFound,
            location: { segment: 'OBX', sequence: 3, field: 5, repetition: 2, component: 2 },
            detail: 'OBX-5-2: x',
          },
        ],
      },
      'auto',
    );
    expect(acks).toHaveLength(2);
    expect(acks[0]).toContain('MSA|CA|L1\r');
    const lines = acks[1].split('\r');
    expect(lines[1]).toBe('MSA|AE|L1|PID-7: not a valid HL7 date/time');
    expect(lines.filter((l) => l.startsWith('ERR'))).toEqual([
      'ERR||PID^1^7|102^Data type error^HL70357|E||||PID-7: not a valid HL7 date/time',
      'ERR||OBX^3^5^2^2|103^Table value not found^HL70357|E||||OBX-5-2: x',
    ]);
  });
  test('MSH-16 SU (success only): no application ACK for an error', () => {
    const su = readRawHeader(Buffer.from(`${MSH}|||AL|SU\r`, 'latin1'));
    const acks = acksFor(su, { status: 'accepted', dataErrors: [{ condition: HL7Error.dataType }] }, 'auto');
    expect(acks.map((a) => a.split('\r')[1])).toEqual(['MSA|CA|L1']);
  });
});
