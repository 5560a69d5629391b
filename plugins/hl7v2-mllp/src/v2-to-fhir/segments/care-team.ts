/**
 * The patient's CareTeam from ROL and IN3 (issue #22 item 9), from the IG's segment CSVs
 * (../shared/v2-to-fhir/mappings/segments/HL7 Segment - FHIR R4_ ROL[CareTeam] / IN3[CareTeam] - Sheet1.csv; "row" = the
 * CSV record number, header rows included, as the fidelity report prints it). The CareTeam is the one PRT[CareTeam]
 * fills (`careTeam` in segments.ts): one per patient per message, subject the Patient.
 */
import type { CareTeam, CareTeamParticipant, Organization, Patient } from '@medplum/fhirtypes';
import type { Hl7Segment } from '../../hl7v2/parser';
import type { ConvertContext } from '../convert';
import { compact, cwe, cweMapped, valued, xtn } from '../datatypes';
import { careTeam, practitioner, xonOrg } from '../segments';

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
  const role = [cweMapped(seg.rep(3), 'ProviderRole', ctx, '0443'), ...seg.reps(9).map((r) => cwe(r, ctx))].filter((x) => !!x);
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
  const tel = seg.reps(12).map((r) => xtn(r, ctx)).filter((x) => !!x);
  if (tel.length) team.telecom = [...(team.telecom ?? []), ...tel];
  return team;
}

/** SNOMED CT 768832004 |Case manager| (IN3[CareTeam] rows 23-25). */
const CASE_MANAGER = { coding: [{ system: 'http://snomed.info/sct', code: '768832004', display: 'Case manager' }], text: 'case manager' };

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
