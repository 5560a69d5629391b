import type { Bundle } from '@medplum/fhirtypes';
import type { StoredMessage } from '../model/message';
import { scriptHelpers, v2Message } from './script-helpers';

const ADT = [
  'MSH|^~\\&|HIS|GEN|FERRY|HUB|20250101120000||ADT^A01^ADT_A01|CTRL-1|P|2.5.1',
  'EVN|A01|20250101120000',
  'PID|1||MRN1^^^GEN^MR~SSN9^^^SSA^SS||DOE^JANE^Q\\S\\X||19800101|F|||1 MAIN ST&APT 2^^TOWN',
  'OBX|1|NM|8867-4^Heart rate^LN||72|/min',
  'OBX|2|ST|TXT^Note^L||a\\F\\b\\T\\c\\E\\d',
  '',
].join('\r');

const bundle = (): Bundle => ({
  resourceType: 'Bundle',
  type: 'transaction',
  entry: [
    {
      fullUrl: 'urn:uuid:p1',
      resource: { resourceType: 'Patient', id: 'p1', gender: 'female', identifier: [{ value: 'MRN1' }] },
    },
    {
      fullUrl: 'urn:uuid:e1',
      resource: {
        resourceType: 'Encounter',
        id: 'e1',
        status: 'in-progress',
        class: { code: 'IMP' },
        subject: { reference: 'urn:uuid:p1' },
      },
    },
    {
      fullUrl: 'urn:uuid:o1',
      resource: { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'hr' } },
    },
    {
      fullUrl: 'urn:uuid:o2',
      resource: { resourceType: 'Observation', id: 'o2', status: 'final', code: { text: 'note' } },
    },
  ],
});

const message = (body: string | undefined): StoredMessage => ({
  id: 'm1',
  seq: 1,
  sourceId: 'feed',
  contentType: 'application/hl7-v2',
  body: body === undefined ? undefined : Buffer.from(body),
  headers: { messageType: 'ADT^A01' },
  receivedAt: new Date(),
  status: 'received',
});

describe('v2Message (ferry.v2): HL7 v2 fields by path', () => {
  const v2 = v2Message(Buffer.from(ADT))!;

  it('reads fields, components, subcomponents, repetitions and segment occurrences', () => {
    expect(v2.get('MSH-9')).toBe('ADT^A01^ADT_A01');
    expect(v2.get('MSH-9.2')).toBe('A01');
    expect(v2.get('MSH-10')).toBe('CTRL-1');
    expect(v2.get('MSH-1')).toBe('|');
    expect(v2.get('MSH-2')).toBe('^~\\&');
    expect(v2.get('PID-3.1')).toBe('MRN1');
    expect(v2.get('PID-3[2].1')).toBe('SSN9');
    expect(v2.get('PID-3[2].4')).toBe('SSA');
    expect(v2.getAll('PID-3.1')).toEqual(['MRN1', 'SSN9']);
    expect(v2.get('PID-11.1.2')).toBe('APT 2');
    expect(v2.get('OBX-5')).toBe('72');
    expect(v2.get('OBX[2]-3.2')).toBe('Note');
    expect(v2.getAll('OBX-5')).toEqual(['72', 'a|b&c\\d']);
    expect(v2.count('OBX')).toBe(2);
    expect(v2.segments).toEqual(['MSH', 'EVN', 'PID', 'OBX', 'OBX']);
    expect(v2.get('PID')).toMatch(/^PID\|1\|\|MRN1/);
  });

  it('decodes HL7 escapes and answers undefined for what is absent', () => {
    expect(v2.get('PID-5.3')).toBe('Q^X');
    expect(v2.get('PID-3[3].1')).toBeUndefined();
    expect(v2.get('PID-4')).toBeUndefined();
    expect(v2.get('OBX[3]-5')).toBeUndefined();
    expect(v2.get('ZZZ-1')).toBeUndefined();
    expect(v2.getAll('NK1-2')).toEqual([]);
  });

  it("decodes every value as the HL7 v2 plugin's parser does (line breaks, UTF-8 hex, unknown escapes kept, no escape character)", () => {
    const note = v2Message(
      Buffer.from(
        'MSH|^~\\&|A|B|C|D|20250101||ORU^R01|1|P|2.5\rOBX|1|TX|N^Note||line 1\\.br\\line 2~caf\\XC3A9\\~50\\Q\\off\r',
      ),
    )!;
    expect(note.getAll('OBX-5')).toEqual(['line 1\nline 2', 'café', '50\\Q\\off']);
    // MSH-2 without an escape character or subcomponent separator: nothing decoded or split
    const bare = v2Message(Buffer.from('MSH|^~|A|B|C|D|20250101||ADT^A01|1|P|2.3\rPID|1||a\\F\\b&c\r'))!;
    expect(bare.get('PID-3')).toBe('a\\F\\b&c');
    expect(bare.get('PID-3.1.1')).toBe('a\\F\\b&c');
  });

  it('refuses a malformed path with a clear error', () => {
    expect(() => v2.get('PID3')).toThrow(/not an HL7 v2 path: "PID3"/);
    expect(() => v2.get('PID-0')).toThrow(/not an HL7 v2 path/);
    expect(() => v2.get('OBX[0]-5')).toThrow(/not an HL7 v2 path/);
  });

  it('is undefined for a body that is not HL7 v2, and honours other delimiters', () => {
    expect(v2Message(Buffer.from('{"resourceType":"Bundle"}'))).toBeUndefined();
    const other = v2Message(Buffer.from('MSH#*@!%#A#B#C#D#1##ORU*R01#7#P#2.3\rPID#1##X1*a%b@X2\r'))!;
    expect(other.get('MSH-9.2')).toBe('R01');
    expect(other.getAll('PID-3.1')).toEqual(['X1', 'X2']);
    expect(other.get('PID-3.2.2')).toBe('b');
  });
});

describe('scriptHelpers (the ferry argument of a script)', () => {
  it('evaluates FHIRPath on the Bundle (or on a resource) and looks resources up', () => {
    const b = bundle();
    const f = scriptHelpers(b, message(ADT));
    expect(f.fhirpath('Bundle.entry.resource.ofType(Patient).gender')).toEqual(['female']);
    expect(f.fhirpathTest("Bundle.entry.resource.ofType(Patient).gender = 'female'")).toBe(true);
    expect(f.fhirpathTest("Bundle.entry.resource.ofType(Patient).gender = 'male'")).toBe(false);
    const patient = f.resource('Patient')!;
    expect(f.fhirpath('identifier.value', patient)).toEqual(['MRN1']);
    expect(f.resources('Observation').map((o) => o.id)).toEqual(['o1', 'o2']);
    expect(f.resources('Condition')).toEqual([]);
    expect(f.resource('Condition')).toBeUndefined();
    // the same objects as in the Bundle: a change stays in it
    f.resource('Patient')!.gender = 'other';
    expect(b.entry![0].resource).toMatchObject({ gender: 'other' });
  });

  it('resolves references by fullUrl, Type/id and absolute URL', () => {
    const f = scriptHelpers(bundle(), message(ADT));
    const enc = f.resource('Encounter')!;
    expect(f.resolve(enc.subject)?.id).toBe('p1');
    expect(f.resolve('Observation/o2')?.id).toBe('o2');
    expect(f.resolve('https://ehr.example/fhir/Observation/o1/_history/3')?.id).toBe('o1');
    expect(f.resolve('Patient/nope')).toBeUndefined();
    expect(f.resolve(undefined)).toBeUndefined();
    expect(f.resolve({ display: 'no reference' })).toBeUndefined();
  });

  it('gives v2 access to the original message, undefined when there is none', () => {
    expect(scriptHelpers(bundle(), message(ADT)).v2?.get('PID-3.1')).toBe('MRN1');
    expect(scriptHelpers(bundle(), message(undefined)).v2).toBeUndefined();
    expect(
      scriptHelpers(bundle(), { ...message('{"resourceType":"Bundle"}'), contentType: 'application/fhir+json' }).v2,
    ).toBeUndefined();
  });
});
