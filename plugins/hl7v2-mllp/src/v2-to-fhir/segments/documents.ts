/** Documents: TXA (DocumentReference; MDM's OBX text becomes its content in finishMessage). */
import type { DocumentReference } from '@medplum/fhirtypes';
import { mapCode, V2_TABLE } from '../codes';
import { ref } from '../context';
import { cwe, ei, isCode, mimeCode, valued } from '../datatypes';
import { all, type Handler, idKey } from './common';
import { practitioner } from './shared-resources';

export const txa: Handler = (seg, ctx) => {
  // TXA[DocumentReference]
  const master = ei(seg.rep(12), ctx);
  const key = idKey(master, ctx);
  const avail = seg.get(19);
  const d: DocumentReference = {
    resourceType: 'DocumentReference',
    id: key ? ctx.b.idFor('DocumentReference', key) : ctx.localId('DocumentReference', seg),
    status: avail === 'OB' || avail === 'UN' ? 'superseded' : avail === 'CA' ? 'entered-in-error' : 'current',
    content: [],
  };
  if (master) d.masterIdentifier = master;
  const uid = seg.get(16);
  if (valued(uid)) d.identifier = [{ value: uid }];
  const type = cwe(seg.rep(2), ctx) ?? isCode(seg.get(2), '0270');
  if (type) d.type = type;
  const docStatus: Record<string, DocumentReference['docStatus']> = {
    AU: 'final',
    LA: 'final',
    DI: 'preliminary',
    DO: 'preliminary',
    IP: 'preliminary',
    IN: 'preliminary',
    PA: 'preliminary',
  };
  const ds = docStatus[seg.get(17)];
  if (ds) d.docStatus = ds;
  const date = ctx.instant(seg.get(6)) ?? ctx.instant(seg.get(4));
  if (date) d.date = date;
  if (ctx.state.patient) d.subject = ref(ctx.state.patient);
  const authors = all(seg, 9, (r) => practitioner(r, ctx));
  if (authors.length) d.author = authors;
  const auth = practitioner(seg.rep(10), ctx);
  if (auth) d.authenticator = auth;
  const conf = seg.get(18);
  if (valued(conf)) {
    const m = mapCode('DocumentConfidentialityStatus', conf);
    d.securityLabel = [{ coding: [m ? { system: m.system, code: m.code } : { system: V2_TABLE('0272'), code: conf }] }];
  }
  const desc = seg.get(25);
  if (valued(desc)) d.description = desc;
  // MDM T05/T06/T09/T10 (addendum / replacement): TXA-13 parent document
  const parent = ei(seg.rep(13), ctx);
  if (parent) {
    const code =
      ctx.trigger === 'T05' || ctx.trigger === 'T06'
        ? 'appends'
        : ctx.trigger === 'T09' || ctx.trigger === 'T10'
          ? 'replaces'
          : 'transforms';
    d.relatesTo = [{ code, target: { identifier: parent, type: 'DocumentReference' } }];
  }
  const related = ctx.state.order?.serviceRequest; // MDM COMMON_ORDER: the order the document answers
  if (ctx.state.encounter || related)
    d.context = {
      ...(ctx.state.encounter ? { encounter: [ref(ctx.state.encounter)] } : {}),
      ...(related ? { related: [ref(related)] } : {}),
    };
  const contentType = seg.get(3);
  d.content.push({
    attachment: {
      contentType: (contentType ? mimeCode(mimeOf(contentType)) : undefined) ?? 'text/plain',
      ...(valued(seg.get(23)) ? { title: seg.get(23) } : {}),
    },
  });
  ctx.state.document = ctx.b.add(d);
  ctx.state.documentText = [];
  ctx.state.last = ctx.state.document;
};

function mimeOf(v: string): string {
  if (v.includes('/')) return v.toLowerCase();
  const m: Record<string, string> = {
    TX: 'text/plain',
    FT: 'text/plain',
    TEXT: 'text/plain',
    ST: 'text/plain',
    HTML: 'text/html',
    PDF: 'application/pdf',
    RTF: 'text/rtf',
    XML: 'text/xml',
    AP: 'application/octet-stream',
  };
  return m[v.toUpperCase()] ?? 'text/plain';
}
