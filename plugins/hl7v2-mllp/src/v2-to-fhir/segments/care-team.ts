/**
 * Participation: ROL (a visit's roles, the general practitioner, the care team) and PRT (Device, participants).
 * The patient's CareTeam from ROL and IN3 (issue #22 item 9), from the IG's segment CSVs
 * (../shared/v2-to-fhir/mappings/segments/HL7 Segment - FHIR R4_ ROL[CareTeam] / IN3[CareTeam] - Sheet1.csv; "row" = the
 * CSV record number, header rows included, as the fidelity report prints it). The CareTeam is the one PRT[CareTeam]
 * fills (`careTeam` below): one per patient per message, subject the Patient.
 */
import type {
  CareTeam,
  CareTeamParticipant,
  Device,
  DiagnosticReport,
  Encounter,
  Immunization,
  MedicationRequest,
  Observation,
  Organization,
  Patient,
  PractitionerRole,
  Procedure,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';
import type { Hl7Segment } from '../../hl7v2/parser';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { c, compact, cwe, cweMapped, ei, valued, xtn } from '../datatypes';
import { all, type Handler, idKey, push } from './common';
import { location, practitioner, xonOrg } from './shared-resources';

export const rol: Handler = (seg, ctx) => {
  // ROL: a role on the visit (ROL[Encounter-PractitionerRole]), the patient's care provider (PP,
  // ROL[Patient-GeneralPractitioner]) or, any other role after PID, a member of the patient's CareTeam
  // (ROL[CareTeam], ADT_A01 message map row 13; rolCareTeam below)
  const who = practitioner(seg.rep(4), ctx);
  const role = cwe(seg.rep(3), ctx);
  const e =
    ctx.state.lastSegment === 'PV1' || ctx.state.lastSegment === 'PV2' || ctx.state.last === ctx.state.encounter
      ? ctx.state.encounter
      : undefined;
  if (e) {
    if (who)
      e.participant = push(
        e.participant,
        compact({
          type: role ? [role] : undefined,
          individual: who,
          period: compact({ start: ctx.dt(seg.get(5)), end: ctx.dt(seg.get(6)) }),
        })!,
      );
  } else if (ctx.state.patient) {
    if (c(seg.rep(3), 1) === 'PP') {
      if (who) ctx.state.patient.generalPractitioner = push(ctx.state.patient.generalPractitioner, who);
    } else if (ctx.state.last === ctx.state.patient) rolCareTeam(seg, ctx.state.patient, ctx); // the patient's own ROL group (after PID/PD1), not a procedure's or an insurance's
  }
};

/**
 * PRT[Device] (ORU_R01 message map rows 25, 67: IF PRT-10 VALUED -> Device, Observation.device): row 13/14 PRT-10 ->
 * udiCarrier (HRF/AIDC) or identifier, row 20 PRT-16 -> udiCarrier.deviceIdentifier, rows 21-25 PRT-17..21 ->
 * manufactureDate, expirationDate, lotNumber, serialNumber, distinctIdentifier, row 26 PRT-22 -> type.
 */
function prtDevice(seg: Hl7Segment, ctx: ConvertContext): Resource | undefined {
  const ids = all(seg, 10, (r) => ei(r, ctx));
  const udi = c(seg.rep(16), 1);
  if (!ids.length && !valued(udi)) return undefined;
  const key = ids[0] ? idKey(ids[0], ctx)! : `udi|${udi}`;
  const d: Device = { resourceType: 'Device', id: ctx.b.idFor('Device', key) };
  if (ids.length) d.identifier = ids;
  if (valued(udi)) d.udiCarrier = [{ deviceIdentifier: udi }];
  const made = ctx.dt(seg.get(17));
  if (made) d.manufactureDate = made;
  const exp = ctx.dt(seg.get(18));
  if (exp) d.expirationDate = exp;
  if (valued(seg.get(19))) d.lotNumber = seg.get(19);
  if (valued(seg.get(20))) d.serialNumber = seg.get(20);
  if (valued(seg.get(21, 0, 1))) d.distinctIdentifier = seg.get(21, 0, 1);
  const type = cwe(seg.rep(22), ctx);
  if (type) d.type = type;
  if (seg.get(2) === 'D') d.status = 'inactive'; // PRT[Device] row 4: PRT-2 "D" inactivates the relationship
  const added = ctx.b.add(d);
  const target = ctx.state.last;
  if (target?.resourceType === 'Observation' && !(target as Observation).device)
    (target as Observation).device = ref(added);
  return added;
}

export const prt: Handler = (seg, ctx) => {
  prtDevice(seg, ctx);
  // PRT[PractitionerRole]: a person's participation in the segment above (PRT-5 person; org-only PRT are skipped)
  const who = practitioner(seg.rep(5), ctx);
  if (!who) return;
  const code = cweMapped(seg.rep(4), 'Participation', ctx, '0912');
  const org = xonOrg(seg.rep(8), ctx);
  const role: PractitionerRole = {
    resourceType: 'PractitionerRole',
    id: ctx.b.idFor('PractitionerRole', `${who.reference}|${c(seg.rep(4), 1)}|${org?.reference ?? ''}`, true),
    practitioner: who,
  };
  if (code) role.code = [code];
  const spec = cwe(seg.rep(6), ctx);
  if (spec) role.specialty = [spec];
  if (org) role.organization = org;
  const loc = location(seg.rep(9), ctx);
  if (loc) role.location = [loc];
  const period = compact({ start: ctx.dt(seg.get(11)), end: ctx.dt(seg.get(12)) });
  if (period) role.period = period;
  const tel = all(seg, 15, (r) => xtn(r, ctx));
  if (tel.length) role.telecom = tel;
  const r = ref(ctx.b.add(role));
  const target = ctx.state.last;
  switch (target?.resourceType) {
    case 'Encounter':
      (target as Encounter).participant = push(
        (target as Encounter).participant,
        compact({ type: code ? [code] : undefined, individual: r, period })!,
      );
      break;
    case 'ServiceRequest':
      (target as ServiceRequest).performer = push((target as ServiceRequest).performer, r);
      break;
    case 'Observation':
      (target as Observation).performer = push((target as Observation).performer, r);
      break;
    case 'DiagnosticReport':
      (target as DiagnosticReport).performer = push((target as DiagnosticReport).performer, r);
      break;
    case 'Procedure':
      (target as Procedure).performer = push((target as Procedure).performer, compact({ actor: r, function: code })!);
      break;
    case 'MedicationRequest':
      if (!(target as MedicationRequest).performer) (target as MedicationRequest).performer = r;
      break;
    case 'Immunization':
      (target as Immunization).performer = push(
        (target as Immunization).performer,
        compact({ actor: r, function: code })!,
      );
      break;
    case 'Patient':
      // ADT_A01 message map rows 25-26: PRT-4 PP -> Patient.generalPractitioner; the other roles -> CareTeam
      if (c(seg.rep(4), 1) === 'PP')
        (target as Patient).generalPractitioner = push((target as Patient).generalPractitioner, r);
      else
        careTeam(target as Patient, ctx).participant!.push(
          compact({ role: code ? [code] : undefined, member: r, onBehalfOf: org, period })!,
        );
      break;
    default:
  }
};

/**
 * The patient's care team of this message (PRT[CareTeam]: row 7 PRT-4 -> participant.role, rows 8-10 PRT-5 ->
 * participant.member, row 14 PRT-8 -> participant.onBehalfOf, rows 18-19 PRT-11/12 -> participant.period).
 */
export function careTeam(p: Patient, ctx: ConvertContext): CareTeam {
  const id = ctx.b.idFor('CareTeam', `patient|${p.id}`, true);
  const existing = ctx.b.get(id) as CareTeam | undefined;
  if (existing) return existing;
  return ctx.b.add<CareTeam>({ resourceType: 'CareTeam', id, status: 'active', subject: ref(p), participant: [] });
}

/**
 * ROL[CareTeam] (ADT_A01 message map row 13, a ROL following PID whose role is not PP: "IF ROL-3.3 EQUALS HL70443
 * AND ROL-3.1 IS NOT PP", FHIRPath `3.1 != PP or 3.3 != HL70443`; the PP ones are the general practitioner,
 * ROL[Patient-GeneralPractitioner]):
 *  row 5 ROL-3 -> participant.role[1] (ProviderRole), rows 6-8 ROL-4 -> participant.member (XCN[Practitioner]),
 *  rows 9-10 ROL-5/6 -> participant.period, row 12 ROL-8 -> CareTeam.reasonCode, row 13 ROL-9 -> participant.role[2],
 *  rows 14 + 19 ROL-10/14 with ROL-4 -> participant.onBehalfOf (XON[Organization], ROL-10 its type),
 *  rows 15 + 20 ROL-10/14 without ROL-4 -> participant.member = that Organization, row 17 ROL-12 -> CareTeam.telecom.
 * A ROL naming neither a person nor an organization adds nothing.
 */
export function rolCareTeam(seg: Hl7Segment, p: Patient, ctx: ConvertContext): CareTeam | undefined {
  const who = practitioner(seg.rep(4), ctx);
  const org = xonOrg(seg.rep(14), ctx);
  const unitType = cweMapped(seg.rep(10), 'ParticipantOrganizationUnitType', ctx, '0406');
  if (org && unitType) {
    const o = ctx.b.get(org.reference!.slice('urn:uuid:'.length)) as Organization | undefined;
    if (o && !o.type) o.type = [unitType];
  }
  const member = who ?? org;
  if (!member) return undefined;
  const role = [cweMapped(seg.rep(3), 'ProviderRole', ctx, '0443'), ...seg.reps(9).map((r) => cwe(r, ctx))].filter(
    (x) => !!x,
  );
  const part: CareTeamParticipant = compact({
    role: role.length ? role : undefined,
    member,
    onBehalfOf: who ? org : undefined,
    period: compact({ start: ctx.dt(seg.get(5)), end: ctx.dt(seg.get(6)) }),
  })!;
  const team = careTeam(p, ctx);
  team.participant!.push(part);
  const reason = cwe(seg.rep(8), ctx);
  if (reason) team.reasonCode = [...(team.reasonCode ?? []), reason];
  const tel = seg
    .reps(12)
    .map((r) => xtn(r, ctx))
    .filter((x) => !!x);
  if (tel.length) team.telecom = [...(team.telecom ?? []), ...tel];
  return team;
}

/** SNOMED CT 768832004 |Case manager| (IN3[CareTeam] rows 23-25). */
const CASE_MANAGER = {
  coding: [{ system: 'http://snomed.info/sct', code: '768832004', display: 'Case manager' }],
  text: 'case manager',
};

/**
 * IN3[CareTeam] (ADT_A01 message map row 29.3: IN3 in the insurance group -> CareTeam, subject the Patient): rows
 * 23-25 IN3-21 case manager -> a participant with role SNOMED 768832004 "case manager". IN3-21 is a plain string
 * (ST), not a person reference, so the member is a display-only reference holding the name as sent. No other IN3
 * field has a row; an IN3 without IN3-21 adds nothing.
 */
export function in3CareTeam(seg: Hl7Segment, p: Patient, ctx: ConvertContext): CareTeam | undefined {
  const manager = seg.get(21);
  if (!valued(manager)) return undefined;
  const team = careTeam(p, ctx);
  team.participant!.push({ role: [CASE_MANAGER], member: { display: manager.trim() } });
  return team;
}
