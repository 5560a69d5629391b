/** MDM^T02: EVN, PID, PV1, TXA, {OBX} (IG message map MDM_T02; TXA[DocumentReference], OBX[DocumentReference]). */
import type {
  DiagnosticReport,
  DocumentReference,
  Encounter,
  Patient,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';
import type { Ctx } from './bundle-context';
import { dtm } from './datatypes';
import { orderSegs } from './orders';
import { pid, pv1, xcn } from './patient-segments';
import { obrGroup } from './results';
import { missing, Seg, type V2Out } from './segment';

export function mdm(rcv: V2Out, ctx: Ctx): Seg[] {
  const w = rcv.w;
  const doc = ctx.all<DocumentReference>('DocumentReference')[0];
  const patient = ctx.resolve<Patient>(doc.subject) ?? ctx.patient();
  if (!patient) throw missing('DocumentReference.subject (Patient)', 'PID');
  const out = [pid(rcv, patient, ctx)];
  const enc = ctx.resolve<Encounter>(doc.context?.encounter?.[0]) ?? ctx.all<Encounter>('Encounter')[0];
  if (enc?.resourceType === 'Encounter' && rcv.on('PV1')) out.push(pv1(rcv, enc, ctx));
  // MDM_T02 {ORC, OBR}: the order the document belongs to (no OBX: the content follows TXA). The inbound
  // MDM_T02 map makes OBR a ServiceRequest only (ORC[ServiceRequest], OBR[ServiceRequest]): each ServiceRequest
  // is written as ORC + OBR; a DiagnosticReport (a Bundle from another source) as its OBR group, with the
  // ServiceRequest it is based on as its ORC
  const reports = ctx.all<DiagnosticReport>('DiagnosticReport');
  const reported = new Set(
    reports.flatMap((dr) => (dr.basedOn ?? []).map((r) => ctx.resolve<Resource>(r)).filter((x): x is Resource => !!x)),
  );
  let obrSet = 0;
  ctx.all<ServiceRequest>('ServiceRequest').forEach((sr) => {
    if (!reported.has(sr)) out.push(...orderSegs(rcv, sr, ++obrSet, ctx));
  });
  reports.forEach((dr) => out.push(...obrGroup(rcv, ++obrSet, dr, [], ctx)));
  const type = w.cwe(doc.type, 'TXA-2')?.[0];
  if (!type) throw missing('DocumentReference.type', 'TXA-2 (document type)');
  const master = doc.masterIdentifier ?? doc.identifier?.[0];
  if (!master?.value) throw missing('DocumentReference.masterIdentifier', 'TXA-12 (unique document number)');
  const attachments = (doc.content ?? []).map((c) => c.attachment).filter((a) => a.data || a.url);
  const text =
    attachments.length > 0 && attachments.every((a) => !a.contentType || a.contentType.startsWith('text/plain'));
  // TXA-17 completion: final -> AU (authenticated), preliminary -> IP; TXA-19 availability from the status
  const completion =
    doc.docStatus === 'final' || doc.docStatus === 'amended' ? 'AU' : doc.docStatus === 'preliminary' ? 'IP' : 'DO';
  out.push(
    new Seg('TXA')
      .set(1, '1')
      .set(2, type as string)
      .set(3, text ? 'TX' : attachments.length ? 'AP' : undefined)
      .set(4, dtm(doc.date))
      .set(6, dtm(doc.date))
      .reps(
        9,
        (doc.author ?? []).map((a) => xcn(rcv, a, ctx)),
      )
      .set(12, w.ei(master))
      .set(13, w.ei(doc.relatesTo?.[0]?.target?.identifier))
      .set(17, completion)
      .set(19, doc.status === 'superseded' ? 'OB' : doc.status === 'entered-in-error' ? 'CA' : 'AV')
      .set(25, doc.description),
  );
  // the content: text/plain as TX (one OBX per line), anything else as ED (Base64) or RP (a URL)
  let set = 0;
  for (const a of attachments) {
    if (a.data && (!a.contentType || a.contentType.startsWith('text/plain'))) {
      for (const line of Buffer.from(a.data, 'base64')
        .toString('utf8')
        .split(/\r\n|\n|\r/))
        out.push(
          new Seg('OBX')
            .set(1, String(++set))
            .set(2, 'TX')
            .set(3, w.cwe(doc.type, 'OBX-3') ?? [''])
            .set(5, line)
            .set(11, 'F'),
        );
    } else if (a.data) {
      const [mt, sub] = (a.contentType ?? 'application/octet-stream').split('/');
      out.push(
        new Seg('OBX')
          .set(1, String(++set))
          .set(2, 'ED')
          .set(3, w.cwe(doc.type, 'OBX-3') ?? [''])
          .set(5, ['', mt, sub ?? '', 'Base64', a.data])
          .set(11, 'F'),
      );
    } else if (a.url) {
      out.push(
        new Seg('OBX')
          .set(1, String(++set))
          .set(2, 'RP')
          .set(3, w.cwe(doc.type, 'OBX-3') ?? [''])
          .set(5, [a.url, '', a.contentType?.split('/')[0] ?? '', a.contentType?.split('/')[1] ?? ''])
          .set(11, 'F'),
      );
    }
  }
  return out;
}
