/**
 * A narrative's `div` (Narrative.div, FHIR type `xhtml`) as R4 requires it, which @medplum/core does not
 * check (its `htmlChecks()` is `[true]`):
 * - well-formed XML: one `div` element in the XHTML namespace, nothing but whitespace and comments around
 *   it, matching end tags, quoted and unique attributes, and only XML's own five named entities or
 *   character references (R4: "there is no support for HTML entities like &nbsp;": `&#160;` instead);
 * - txt-1: only the element and attribute names its definition's XPath lists (NARRATIVE_ELEMENTS,
 *   NARRATIVE_ATTRIBUTES; `xml:lang` and namespace declarations too), every element in the XHTML
 *   namespace, and no script in a link (`javascript:` or `vbscript:` in href/src) -- no active content;
 * - txt-2: some non-whitespace text, or an image with a `src`.
 *
 * A scanner of that subset rather than a general XML parser: it runs on every narrative of every resource
 * validated (a vendor's resources often carry one), and sax, the general parser its test holds it to, took
 * ≈ 180 µs for a 2 KB narrative. Prefixed element names (`<h:p>`) are refused as not allowed: narratives
 * use the default namespace.
 */

export const XHTML_NS = 'http://www.w3.org/1999/xhtml';

/** txt-1's element names (R4 Narrative.div, the constraint's XPath; its test reads them from the definitions). */
export const NARRATIVE_ELEMENTS: ReadonlySet<string> = new Set(
  'a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em h1 h2 h3 h4 h5 h6 hr i img li ol p pre q samp small span strong sub sup table tbody td tfoot th thead tr tt ul var'.split(
    ' ',
  ),
);

/** txt-1's attribute names (the same XPath). */
export const NARRATIVE_ATTRIBUTES: ReadonlySet<string> = new Set(
  'abbr accesskey align alt axis bgcolor border cellhalign cellpadding cellspacing cellvalign char charoff charset cite class colspan compact coords dir frame headers height href hreflang hspace id lang longdesc name nowrap rel rev rowspan rules scope shape span src start style summary tabindex title type valign value vspace width'.split(
    ' ',
  ),
);

export interface XhtmlCheck {
  /** Why the text is not one well-formed XHTML div (no values quoted), or undefined when it is. */
  malformed?: string;
  /** txt-1: only allowed elements and attributes, all in the XHTML namespace, no script URL (true when malformed: not judged). */
  allowed: boolean;
  /** txt-2: some non-whitespace text or an image with a src (true when malformed: not judged). */
  content: boolean;
}

const SCRIPT_URL = /^[\s\u0000-\u001f]*(javascript|vbscript):/i; // eslint-disable-line no-control-regex -- leading controls are skipped by browsers
const CHAR_REF = /^#(?:[0-9]+|x[0-9a-fA-F]+)$/;
const XML_ENTITIES = new Set(['amp', 'lt', 'gt', 'quot', 'apos']);

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

/** XML name characters: ASCII letters, digits, '.', '-', '_', ':', and anything beyond ASCII. */
function isNameChar(c: number): boolean {
  return (
    (c >= 97 && c <= 122) ||
    (c >= 65 && c <= 90) ||
    (c >= 48 && c <= 57) ||
    c === 45 ||
    c === 46 ||
    c === 95 ||
    c === 58 ||
    c >= 128
  );
}

/** A character XML 1.0 allows in a document (the surrogate halves of a pair are allowed as such). */
function xmlChar(c: number): boolean {
  return c >= 32 ? c !== 0xfffe && c !== 0xffff : c === 9 || c === 10 || c === 13;
}

/** Whether `&...;` at `i` (the '&') is a reference XML allows; returns the index after ';', or -1. */
function reference(s: string, i: number): number {
  const end = s.indexOf(';', i + 1);
  if (end < 0 || end - i > 12) return -1;
  const name = s.slice(i + 1, end);
  if (XML_ENTITIES.has(name)) return end + 1;
  if (!CHAR_REF.test(name)) return -1;
  const code = name.charCodeAt(1) === 120 ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
  const ok =
    code === 9 ||
    code === 10 ||
    code === 13 ||
    (code >= 0x20 && code <= 0xd7ff) ||
    (code >= 0xe000 && code <= 0xfffd) ||
    (code >= 0x10000 && code <= 0x10ffff);
  return ok ? end + 1 : -1;
}

function malformed(why: string): XhtmlCheck {
  return { malformed: why, allowed: true, content: true };
}

function scan(s: string): XhtmlCheck {
  const names: string[] = [];
  const spaces: string[] = [];
  let allowed = true;
  let content = false;
  let root = false; // the root div has been opened
  let closed = false; // ... and closed
  const n = s.length;
  let i = 0;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c === 60) {
      const c1 = s.charCodeAt(i + 1);
      if (c1 === 33) {
        if (s.startsWith('<!--', i)) {
          const end = s.indexOf('-->', i + 4);
          if (end < 0) return malformed('a comment is not closed');
          if (s.slice(i + 4, end).includes('--')) return malformed("'--' inside a comment");
          i = end + 3;
          continue;
        }
        if (s.startsWith('<![CDATA[', i) && names.length) {
          const end = s.indexOf(']]>', i + 9);
          if (end < 0) return malformed('a CDATA section is not closed');
          for (let k = i + 9; k < end; k++) {
            const d = s.charCodeAt(k);
            if (!xmlChar(d)) return malformed('a character XML does not allow');
            if (!isSpace(d)) content = true;
          }
          i = end + 3;
          continue;
        }
        return malformed('a declaration (DOCTYPE, or CDATA outside the div) is not allowed');
      }
      if (c1 === 63) return malformed('a processing instruction is not allowed');
      if (closed) return malformed('content after the root div');
      if (c1 === 47) {
        const end = s.indexOf('>', i + 2);
        if (end < 0) return malformed('an end tag is not closed');
        let e = end;
        while (e > i + 2 && isSpace(s.charCodeAt(e - 1))) e--;
        if (!names.length || names[names.length - 1] !== s.slice(i + 2, e))
          return malformed('an end tag does not match its start tag');
        names.pop();
        spaces.pop();
        if (!names.length) closed = true;
        i = end + 1;
        continue;
      }
      // a start tag
      let j = i + 1;
      while (j < n && isNameChar(s.charCodeAt(j))) j++;
      const name = s.slice(i + 1, j);
      const c0 = name.charCodeAt(0);
      if (!name || (c0 >= 48 && c0 <= 57) || c0 === 45 || c0 === 46) return malformed('a tag without a valid name');
      let ns = spaces.length ? spaces[spaces.length - 1] : undefined;
      let seen: Set<string> | undefined;
      let selfClosing = false;
      for (;;) {
        const before = j;
        while (j < n && isSpace(s.charCodeAt(j))) j++;
        if (j >= n) return malformed('a start tag is not closed');
        const d = s.charCodeAt(j);
        if (d === 62) {
          j++;
          break;
        }
        if (d === 47) {
          if (s.charCodeAt(j + 1) !== 62) return malformed("'/' inside a start tag");
          j += 2;
          selfClosing = true;
          break;
        }
        if (j === before) return malformed('attributes not separated by whitespace');
        const a0 = j;
        while (j < n && isNameChar(s.charCodeAt(j))) j++;
        const attr = s.slice(a0, j);
        if (!attr) return malformed('an attribute without a valid name');
        while (j < n && isSpace(s.charCodeAt(j))) j++;
        if (s.charCodeAt(j) !== 61) return malformed('an attribute without a value');
        j++;
        while (j < n && isSpace(s.charCodeAt(j))) j++;
        const q = s.charCodeAt(j);
        if (q !== 34 && q !== 39) return malformed('an attribute value not in quotes');
        const vEnd = s.indexOf(q === 34 ? '"' : "'", j + 1);
        if (vEnd < 0) return malformed('an attribute value is not closed');
        for (let k = j + 1; k < vEnd; k++) {
          const e = s.charCodeAt(k);
          if (e === 60) return malformed("'<' inside an attribute value");
          if (e === 38) {
            const after = reference(s, k);
            if (after < 0 || after > vEnd)
              return malformed('an entity other than the five XML ones (write &#160; for &nbsp;)');
            k = after - 1;
          } else if (!xmlChar(e)) return malformed('a character XML does not allow');
        }
        const value = s.slice(j + 1, vEnd);
        j = vEnd + 1;
        seen ??= new Set();
        if (seen.has(attr)) return malformed('an attribute given twice');
        seen.add(attr);
        if (attr === 'xmlns') ns = value;
        else if (attr.startsWith('xmlns:') || attr === 'xml:lang') continue;
        else if (!NARRATIVE_ATTRIBUTES.has(attr)) allowed = false;
        else if ((attr === 'href' || attr === 'src') && SCRIPT_URL.test(value)) allowed = false;
        else if (attr === 'src' && name === 'img' && value.trim()) content = true;
      }
      if (!names.length) {
        if (root) return malformed('more than one root element');
        root = true;
        if (name !== 'div' || ns !== XHTML_NS) return malformed('the root is not a div in the XHTML namespace');
      }
      if (ns !== XHTML_NS || !NARRATIVE_ELEMENTS.has(name)) allowed = false;
      if (selfClosing) {
        if (!names.length) closed = true;
      } else {
        names.push(name);
        spaces.push(ns!);
      }
      i = j;
      continue;
    }
    if (c === 38) {
      if (!names.length) return malformed('text outside the root div');
      const after = reference(s, i);
      if (after < 0) return malformed('an entity other than the five XML ones (write &#160; for &nbsp;)');
      content = true;
      i = after;
      continue;
    }
    if (!isSpace(c)) {
      if (!names.length) return malformed('text outside the root div');
      if (!xmlChar(c)) return malformed('a character XML does not allow');
      content = true;
    }
    i++;
  }
  if (!root) return malformed('no root div');
  if (names.length) return malformed('an element is not closed');
  return { allowed, content };
}

let lastText: string | undefined;
let lastCheck: XhtmlCheck = { allowed: true, content: true };

/**
 * The checks of a narrative's div. The type's check and txt-1 and txt-2 ask about the same string one
 * after the other: the last answer is kept.
 */
export function checkXhtml(s: string): XhtmlCheck {
  if (s !== lastText) {
    lastCheck = scan(s);
    lastText = s;
  }
  return lastCheck;
}
