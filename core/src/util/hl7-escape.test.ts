import { escapeHl7, STANDARD_HL7_DELIMITERS, unescapeHl7, type Hl7Delimiters as Delimiters } from './hl7-escape';

/** Other delimiters than the standard ones, each one a different character. */
const ODD: Delimiters = {
  field: '#',
  component: '*',
  repetition: '@',
  escape: '!',
  subcomponent: '$',
  truncation: '',
};

const D = STANDARD_HL7_DELIMITERS;
const WITH_TRUNCATION: Delimiters = { ...D, truncation: '#' };
const u = (s: string, d: Delimiters = D) => unescapeHl7(s, d);

describe('unescapeHl7: every sequence', () => {
  it.each([
    ['\\F\\', '|'],
    ['\\S\\', '^'],
    ['\\T\\', '&'],
    ['\\R\\', '~'],
    ['\\E\\', '\\'],
    ['a\\H\\b\\N\\c', 'abc'],
    ['a\\.br\\b', 'a\nb'],
    ['a\\.fi\\b\\.nf\\c', 'abc'],
    ['a\\.sp\\b', 'a\nb'],
    ['a\\.sp3\\b', 'a\n\n\nb'],
    ['a\\.sp 2\\b', 'a\n\nb'],
    ['a\\.sp0\\b', 'ab'],
    ['a\\.sp99\\b', `a${'\n'.repeat(99)}b`],
    ['a\\.sp100\\b', 'a\nb'],
    ['a\\.spx\\b', 'a\nb'],
    ['a\\.sp-1\\b', 'a\nb'],
    ['a\\.in+4\\b\\.ti-2\\c\\.ce\\d', 'abcd'],
    ['a\\.sk3\\b', 'a b'],
    ['a\\C2842\\b\\M2442\\c', 'abc'],
    ['a\\Zlocal\\b', 'ab'],
    ['\\X41\\', 'A'],
    ['\\X4142\\', 'AB'],
    ['\\XC3A9\\', 'é'],
    ['\\XE9\\', 'é'],
    ['\\Xe9\\', 'é'],
  ])('%j -> %j', (input, out) => {
    expect(u(input)).toBe(out);
  });

  it.each([
    ['an unterminated escape', 'C:\\path', 'C:\\path'],
    ['an unterminated known sequence', 'a\\Fx', 'a\\Fx'],
    ['an empty sequence', 'a\\\\b', 'a\\\\b'],
    ['an unknown sequence', 'a\\Q\\b', 'a\\Q\\b'],
    ['an unknown dot command', 'a\\.zz\\b', 'a\\.zz\\b'],
    ['odd hex', '\\X414\\', '\\X414\\'],
    ['empty hex', '\\X\\', '\\X\\'],
    ['not hex', '\\XGG\\', '\\XGG\\'],
    ['a charset switch that is not hex', 'a\\Cxyz\\b', 'a\\Cxyz\\b'],
    ['P without a truncation character', 'a\\P\\b', 'a\\P\\b'],
    ['hex with junk before the digits', '\\XGG41\\', '\\XGG41\\'],
    ['hex with junk after the digits', '\\X41GG\\', '\\X41GG\\'],
    ['a dot command only later in the sequence', 'a\\.zz.in\\b', 'a\\.zz.in\\b'],
    ['a charset switch with junk first', 'a\\CxC1\\b', 'a\\CxC1\\b'],
    ['a charset switch with junk last', 'a\\C1x\\b', 'a\\C1x\\b'],
  ])('%s is kept literally', (_what, input, out) => {
    expect(u(input)).toBe(out);
  });

  it('keeps decoding after a literal escape character', () => {
    expect(u('a\\Q\\F\\b')).toBe('a\\Q|b');
    expect(u('x\\F\\y\\S\\z')).toBe('x|y^z');
    expect(u('\\F\\\\F\\')).toBe('||');
  });

  it('P is the truncation character when there is one (v2.7)', () => {
    expect(u('a\\P\\b', WITH_TRUNCATION)).toBe('a#b');
  });

  it('other delimiters, and no escape character at all', () => {
    expect(u('a!F!b!S!c!T!d!R!e!E!f', ODD)).toBe('a#b*c$d@e!f');
    expect(u('a\\F\\b', ODD)).toBe('a\\F\\b');
    expect(u('a\\F\\b', { ...D, escape: '' })).toBe('a\\F\\b');
  });
});

describe('escapeHl7', () => {
  it('escapes each delimiter, the escape character and line breaks', () => {
    expect(escapeHl7('a|b^c&d~e\\f', D)).toBe('a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f');
    expect(escapeHl7('1\r\n2\n3\r4', D)).toBe('1\\.br\\2\\.br\\3\\.br\\4');
    expect(escapeHl7('plain text', D)).toBe('plain text');
    expect(escapeHl7('', D)).toBe('');
  });

  it('the truncation character only when there is one; the subcomponent separator only when there is one', () => {
    expect(escapeHl7('a#b', D)).toBe('a#b');
    expect(escapeHl7('a#b', WITH_TRUNCATION)).toBe('a\\P\\b');
    expect(escapeHl7('a&b', { ...D, subcomponent: '' })).toBe('a&b');
  });

  it('with other delimiters, and with none declared for escape (a backslash then)', () => {
    expect(escapeHl7('a#b*c$d@e!f|g', ODD)).toBe('a!F!b!S!c!T!d!R!e!E!f|g');
    expect(escapeHl7('a|b', { ...D, escape: '' })).toBe('a\\F\\b');
  });

  it('round-trips through unescapeHl7', () => {
    for (const s of ['a|b^c&d~e\\f', 'x\\F\\y', 'line1\nline2', '\\\\', '|||'])
      expect(u(escapeHl7(s, D))).toBe(s.replace(/\r\n?/g, '\n'));
  });
});
