/**
 * Message-level maps: MSH, SFT, EVN, and what is done once the walk is over (`finishMessage`): trigger-event
 * semantics (ADT status changes, merges, deletes; SIU status), the kept Z-/unknown segments, MessageHeader.focus
 * and the message's Provenance.
 */
import type {
  Account,
  Appointment,
  Device,
  DocumentReference,
  Encounter,
  MessageHeader,
  Provenance,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';
import { mapCode, V2_TABLE } from '../codes';
import { ref } from '../context';
import { type ConvertContext, FERRY_SEGMENT_EXTENSION, segmentText } from '../convert';
import { c, codeOf, codeStr, cwe, cweMapped, valued } from '../datatypes';
import { type Handler, push, type Ref } from './common';
import { flushOrder } from './order';
import { hdLocation, hdOrg, practitioner, xonOrg } from './shared-resources';
import { deleteEncounterHistory } from './visit';

export const msh: Handler = (seg, ctx) => {
  // MSH[MessageHeader]
  const code = seg.get(9, 0, 1);
  const trig = seg.get(9, 0, 2);
  const src = seg.rep(3);
  const endpoint = c(src, 2) ? (/^[0-2](\.\d+)+$/.test(c(src, 2)) ? `urn:oid:${c(src, 2)}` : c(src, 2)) : undefined;
  const h: MessageHeader = {
    resourceType: 'MessageHeader',
    id: ctx.b.idFor('MessageHeader', 'MSH', true),
    eventCoding: { system: V2_TABLE('0003'), code: codeStr(trig) ?? codeStr(code) ?? 'unknown' },
    source: { endpoint: '' },
  };
  ctx.header = ctx.b.add(h); // first entry; filled below
  if (valued(code))
    h.eventCoding = {
      system: 'http://terminology.hl7.org/CodeSystem/v2-0003',
      code: codeStr(trig) ?? codeStr(code),
      display: `${code}^${trig}`,
    };
  const srcName = c(src, 1) || c(src, 2);
  if (srcName) h.source.name = srcName;
  h.source.endpoint =
    seg.get(24) ||
    endpoint ||
    (srcName ? `urn:ferry:hl7v2:app:${encodeURIComponent(srcName)}` : 'urn:ferry:hl7v2:app:unknown');
  const dst = seg.rep(5);
  const dstName = c(dst, 1) || c(dst, 2);
  // MSH[MessageHeader] row 30: MSH-23 receiving responsible organization (XON[Organization]); row 11: MSH-6 only IF MSH-23 NOT VALUED
  const receiver = xonOrg(seg.rep(23), ctx) ?? hdOrg(seg.rep(6), ctx);
  if (dstName || receiver) {
    h.destination = [
      {
        ...(dstName ? { name: dstName } : {}),
        endpoint:
          seg.get(25) ||
          (dstName ? `urn:ferry:hl7v2:app:${encodeURIComponent(dstName)}` : 'urn:ferry:hl7v2:app:unknown'),
        ...(receiver ? { receiver } : {}),
      },
    ];
  }
  const sender = hdOrg(seg.rep(4), ctx);
  if (sender) h.sender = sender;
  const meta: Resource['meta'] = {};
  const pt = seg.get(11);
  if (valued(pt)) meta.tag = [{ system: V2_TABLE('0103'), code: codeStr(pt) }];
  const sec = mapCode('ConfidentialityCode', seg.get(8));
  if (valued(seg.get(8)))
    meta.security = [{ system: sec?.system ?? V2_TABLE('0952'), code: sec?.code ?? codeStr(seg.get(8)) }];
  if (meta.tag || meta.security) h.meta = meta;
  const lang = seg.get(19);
  if (valued(lang) && /^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$/.test(lang.trim())) h.language = lang.trim();
  const responsible = xonOrg(seg.rep(22), ctx);
  if (responsible) h.responsible = responsible;
};

export const sft: Handler = (seg, ctx) => {
  // SFT[MessageHeader]: source.software / source.version
  const s = ctx.header?.source;
  if (s) {
    if (valued(seg.get(3)) && !s.software) s.software = seg.get(3);
    if (valued(seg.get(2)) && !s.version) s.version = seg.get(2);
  }
  // SFT[Device] (ADT_A01 message map rows 8-9: Provenance.entity.what(Device)): row 4 SFT-1 XON.1 -> manufacturer,
  // row 6 SFT-2 -> version.value, rows 7-8 SFT-3 -> deviceName (manufacturer-name), row 9 SFT-4 -> modelNumber,
  // row 10 SFT-5 -> note, rows 11-12 SFT-6 -> version installDate (R5 backport extension)
  const name = seg.get(3);
  const version = seg.get(2);
  if (!valued(name) && !valued(version)) return;
  const d: Device = {
    resourceType: 'Device',
    id: ctx.b.idFor('Device', `software|${seg.get(1, 0, 1)}|${name}|${version}|${seg.get(4)}`),
  };
  if (valued(seg.get(1, 0, 1))) d.manufacturer = seg.get(1, 0, 1);
  if (valued(name)) d.deviceName = [{ name, type: 'manufacturer-name' }];
  if (valued(seg.get(4))) d.modelNumber = seg.get(4);
  if (valued(version)) {
    const installed = ctx.dt(seg.get(6));
    d.version = [
      {
        value: version,
        ...(installed
          ? {
              extension: [
                {
                  url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Device.version.installDate',
                  valueDateTime: installed,
                },
              ],
            }
          : {}),
      },
    ];
  }
  if (valued(seg.get(5))) d.note = [{ text: seg.get(5) }];
  ctx.state.software = push(ctx.state.software, ctx.b.add(d));
};

export const evn: Handler = (seg, ctx) => {
  // EVN[Provenance]
  const p: Provenance = {
    resourceType: 'Provenance',
    id: ctx.b.idFor('Provenance', 'EVN', true),
    target: [],
    recorded: ctx.instant(seg.get(2)) ?? ctx.instant(ctx.msg.msh.get(7)) ?? '1970-01-01T00:00:00Z',
    activity: {
      coding: [
        {
          system: V2_TABLE('0003'),
          code: (valued(seg.get(1)) ? seg.get(1).trim() : '') || ctx.trigger || ctx.messageCode || 'unknown',
          display: `event - :${ctx.messageCode}^${ctx.trigger}`,
        },
      ],
    },
    agent: [],
  };
  const occurred = ctx.dt(seg.get(6));
  if (occurred) p.occurredDateTime = occurred;
  const reason = seg.get(4) !== 'U' ? cweMapped(seg.rep(4), 'EventReason', ctx, '0062') : undefined;
  if (reason) p.reason = [reason];
  const who = practitioner(seg.rep(5), ctx);
  if (who)
    p.agent.push({
      type: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'enterer' }],
      },
      who,
    });
  // EVN[Provenance] row 12: EVN-7 event facility -> location (HD[Location])
  const where = hdLocation(seg.rep(7), ctx);
  if (where) p.location = where;
  ctx.provenance = ctx.b.add(p);
};

export function finishMessage(ctx: ConvertContext): void {
  flushOrder(ctx);
  const st = ctx.state;
  // REF/RRI: RF1 and PRD come before PID; the referral's subject and the primary care providers are the patient's
  if (st.patient) {
    const sr = st.referral as ServiceRequest | undefined;
    if (sr && !sr.subject.reference) sr.subject = ref(st.patient);
    if (st.primaryCare)
      st.patient.generalPractitioner = push(st.patient.generalPractitioner, ...(st.primaryCare as Ref[]));
  }
  // MDM: OBX text becomes the document's content
  if (st.document && st.documentText?.length) {
    const d = st.document as DocumentReference;
    const text = st.documentText.join('\n');
    d.content = [
      {
        attachment: {
          ...d.content[0].attachment,
          contentType: 'text/plain',
          data: Buffer.from(text, 'utf8').toString('base64'),
        },
      },
      ...d.content.slice(1),
    ];
  }
  if (
    st.document &&
    (st.document as DocumentReference).content.length > 1 &&
    !(st.document as DocumentReference).content[0].attachment.data
  ) {
    (st.document as DocumentReference).content.shift();
  }
  eventSemantics(ctx);
  // kept Z-/unknown segments
  if (st.kept.length && ctx.header) {
    ctx.header.extension = st.kept.map((s) => ({ url: FERRY_SEGMENT_EXTENSION, valueString: segmentText(s) }));
  }
  // MessageHeader.focus: the primary resources
  const focus = ctx.b
    .resources()
    .filter(
      (r) =>
        r !== ctx.header &&
        r !== ctx.provenance &&
        [
          'Patient',
          'Encounter',
          'DiagnosticReport',
          'ServiceRequest',
          'Appointment',
          'DocumentReference',
          'Immunization',
          'MedicationRequest',
        ].includes(r.resourceType),
    );
  if (ctx.header && focus.length) ctx.header.focus = focus.map((r) => ref(r));
  messageProvenance(ctx);
}

const PARTICIPANT_TYPE = 'http://terminology.hl7.org/CodeSystem/provenance-participant-type';
/** The converter's own version (the package's), recorded as the Provenance assembler. */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the plugin's package.json, read at run time (outside tsc's rootDir)
const FERRY_VERSION: string = (require('../../../package.json') as { version: string }).version;

/**
 * One Provenance per converted message, targeting every resource the message produced:
 * - the event: EVN[Provenance] (row 3 activity display "event - :" MSG.1^MSG.2, row 5 EVN-2 recorded, rows 7-9
 *   EVN-4 reason, row 10 EVN-5 agent, row 11 EVN-6 occurred, row 12 EVN-7 location); without EVN the message
 *   time: MSH[Provenance-Source] rows 16-17 (MSH-7 -> recorded and occurred);
 * - the source: MSH[Provenance-Source] rows 11-13 (MSH-4 sending facility -> agent author, IF MSH-22 NOT VALUED)
 *   and rows 32-34 (MSH-22 -> agent author), rows 9-10 (MSH-3 sending application -> entity role source, a
 *   Device by identifier), with the message control id (MSH-10) in the entity's display;
 * - the conversion: MSH[Provenance-Transformation] rows 7-9 (agent type "assembler", who = the Device
 *   performing the transformation: Ferry, with its version).
 */
function messageProvenance(ctx: ConvertContext): void {
  const msh = ctx.msg.msh;
  const targets = ctx.b
    .resources()
    .filter((r) => r !== ctx.header && r !== ctx.provenance && r.resourceType !== 'Provenance');
  let prov = ctx.provenance;
  if (!targets.length) {
    if (prov) ctx.b.markDelete(prov);
    return;
  }
  if (!prov) {
    prov = ctx.b.add<Provenance>({
      resourceType: 'Provenance',
      id: ctx.b.idFor('Provenance', 'MSH', true),
      target: [],
      recorded: ctx.instant(msh.get(7)) ?? '1970-01-01T00:00:00Z',
      activity: {
        coding: [
          {
            system: V2_TABLE('0003'),
            code: ctx.trigger || ctx.messageCode || 'unknown',
            display: `message - ${msh.get(9, 0, 1)}^${msh.get(9, 0, 2)}^${msh.get(9, 0, 3)}`,
          },
        ],
      },
      agent: [],
    });
    const occurred = ctx.dt(msh.get(7));
    if (occurred) prov.occurredDateTime = occurred;
  }
  // MSH[Provenance-Source] row 17: MSH-7 -> occurred, when EVN-6 (the event's own time) did not give it
  if (!prov.occurredDateTime && !prov.occurredPeriod) {
    const occurred = ctx.dt(msh.get(7));
    if (occurred) prov.occurredDateTime = occurred;
  }
  prov.target = targets.map((r) => ref(r));
  // source: MSH-22 when valued, else MSH-4 (the MessageHeader's sender)
  const responsible = xonOrg(msh.rep(22), ctx);
  const author = responsible ?? ctx.header?.sender;
  if (author) prov.agent.push({ type: { coding: [{ system: PARTICIPANT_TYPE, code: 'author' }] }, who: author });
  if (responsible && ctx.header?.sender && ctx.header.sender.reference !== responsible.reference)
    prov.agent.push({ type: { coding: [{ system: PARTICIPANT_TYPE, code: 'author' }] }, who: ctx.header.sender });
  // the conversion: Ferry as the assembler
  prov.agent.push({
    type: { coding: [{ system: PARTICIPANT_TYPE, code: 'assembler', display: 'Assembler' }] },
    who: ref(ferryDevice(ctx), `Ferry ${FERRY_VERSION}`),
  });
  const app = msh.rep(3);
  const appId = c(app, 1) || c(app, 2);
  const control = msh.get(10);
  if (valued(appId) || valued(control)) {
    const what: Ref = { type: 'Device' };
    if (valued(appId))
      what.identifier = {
        ...(valued(c(app, 2)) && /^[0-2](\.\d+)+$/.test(c(app, 2))
          ? { system: 'urn:ietf:rfc:3986', value: `urn:oid:${c(app, 2)}` }
          : { value: appId }),
      };
    what.display = `HL7 v2 ${msh.get(9, 0, 1)}^${msh.get(9, 0, 2)} message${valued(control) ? ` ${control}` : ''}${valued(appId) ? ` from ${appId}` : ''}`;
    prov.entity = [{ role: 'source', what }];
  }
  // ADT_A01 message map rows 8-9: SFT -> Provenance.entity.what(Device), role "derivation" (software that handled
  // the message on its way, the usual case: an interface engine's SFT)
  for (const d of ctx.state.software ?? []) prov.entity = push(prov.entity, { role: 'derivation', what: ref(d) });
}

/** The Device standing for this converter (one per Ferry version, shared by every message). */
function ferryDevice(ctx: ConvertContext): Resource {
  return ctx.b.add({
    resourceType: 'Device',
    id: ctx.b.idFor('Device', `ferry|${FERRY_VERSION}`),
    deviceName: [{ name: 'Ferry HL7 v2 to FHIR R4 conversion', type: 'user-friendly-name' }],
    version: [{ value: FERRY_VERSION }],
  } as Resource & { id: string });
}

/** Trigger-event semantics (ADT status changes, merges, deletes; SIU status). */
function eventSemantics(ctx: ConvertContext): void {
  const { messageCode: code, trigger } = ctx;
  const st = ctx.state;
  const e = st.encounter;
  if (code === 'ADT') {
    const evnTime = ctx.dt(ctx.msg.get('EVN', 2)) ?? ctx.dt(ctx.msg.get('EVN', 6)) ?? ctx.dt(ctx.msg.msh.get(7));
    // Event[EncounterStatus] concept map (A01 in-progress, A03 finished, A04/A05 planned, A11 cancelled, A13 in-progress)
    const mapped = codeOf('Event[EncounterStatus]', trigger);
    if (e) {
      if (mapped && mapped !== 'unknown') e.status = mapped as Encounter['status'];
      switch (trigger) {
        case 'A03':
          e.status = 'finished';
          if (!e.period?.end) {
            const end = ctx.dt(ctx.msg.get('PV1', 45)) ?? evnTime;
            if (end) e.period = { ...(e.period ?? {}), end };
          }
          break;
        case 'A13':
        case 'A25':
          // cancel discharge / cancel pending discharge: the visit goes on
          e.status = 'in-progress';
          if (e.period?.end) {
            delete e.period.end;
            if (!e.period.start) delete e.period;
          }
          break;
        case 'A11':
        case 'A27':
          e.status = 'cancelled';
          break;
        case 'A12':
          // cancel transfer: PV1-3 holds the location the patient stays in (active); the transfer location
          // in PV1-6 never happened, so it is not kept as a completed stay
          if (e.location) {
            e.location = e.location.filter((l) => l.status !== 'completed');
            if (!e.location.length) delete e.location;
          }
          e.status = 'in-progress';
          break;
        case 'A14':
        case 'A15':
        case 'A16':
          e.status = trigger === 'A14' ? 'planned' : 'in-progress';
          break;
        case 'A10':
          e.status = 'arrived';
          break;
        case 'A26':
        case 'A02':
        case 'A06':
        case 'A07':
        case 'A09':
          e.status = 'in-progress';
          break;
        case 'A23':
          ctx.b.markDelete(e);
          deleteEncounterHistory(e, ctx); // the visit's history goes with it
          break;
        default:
      }
    }
    if (trigger === 'A29' && st.patient) {
      // delete person information: the patient's visit data goes (DELETE entries); the Patient record is kept inactive
      if (e) {
        ctx.b.markDelete(e);
        deleteEncounterHistory(e, ctx);
      }
      st.patient.active = false;
    }
  }
  if (code === 'BAR' && trigger === 'P02') {
    // purge patient accounts
    for (const r of ctx.b.resources()) if (r.resourceType === 'Account') (r as Account).status = 'inactive';
  }
  for (const appt of st.appointments) {
    const a = appt as Appointment;
    if (code === 'SIU') {
      const byTrigger: Record<string, Appointment['status']> = {
        S15: 'cancelled',
        S16: 'cancelled',
        S17: 'entered-in-error',
        S26: 'noshow',
      };
      if (byTrigger[trigger]) a.status = byTrigger[trigger];
      if (trigger === 'S15' || trigger === 'S16') {
        const reason = cwe(ctx.msg.segment('SCH')?.rep(6), ctx);
        if (reason) a.cancelationReason = reason;
      }
    }
    // Appointment invariants: start and end together; required unless proposed/cancelled/waitlist
    if (!a.start || !a.end) {
      delete a.start;
      delete a.end;
      // app-3: only proposed / cancelled / waitlist may lack times
      if (a.status === 'entered-in-error' || a.status === 'noshow') a.status = 'cancelled';
      else if (!['proposed', 'cancelled', 'waitlist'].includes(a.status)) a.status = 'proposed';
    }
    if (st.patient && !a.participant.some((p) => p.actor?.reference === `urn:uuid:${st.patient!.id}`))
      a.participant.unshift({ actor: ref(st.patient), status: 'accepted' });
    if (!a.participant.length) a.participant.push({ status: 'needs-action', type: [{ text: 'unknown' }] });
  }
}
