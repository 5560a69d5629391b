/**
 * The visit: PV1 and PV2 (PV1[Encounter], PV2[Encounter]).
 * Visit-level targets of PV1 and DG1 beyond the Encounter (issue #22 item 9), from the IG's segment CSVs
 * (../shared/v2-to-fhir/mappings/segments/HL7 Segment - FHIR R4_ <SEG>[<Resource>].csv; "row" = the CSV record
 * number, header rows included, as the fidelity report prints it):
 *  - PV1-53/54 -> the visit's EpisodeOfCare (PV1[Encounter] rows 84-85), and each DG1 of that visit one of its
 *    diagnoses (DG1[EpisodeOfCare]);
 *  - PV1-43 prior temporary location -> a Basic "EncounterHistory" (PV1[Basic-EncounterHistory]; ADT_A01 message
 *    map row 16: IF PV1-43 VALUED -> Basic, subject the Patient).
 */
import type {
  Basic,
  CodeableConcept,
  Condition,
  Coverage,
  Encounter,
  EncounterLocation,
  EncounterParticipant,
  EpisodeOfCare,
  Identifier,
  Patient,
} from '@medplum/fhirtypes';
import type { Hl7Segment } from '../../hl7v2/parser';
import { mapCode, V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { c, codeOf, codeStr, compact, cwe, cweMapped, cx, decimal, nest, valued } from '../datatypes';
import { all, escapeXml, type Handler, idKey, push } from './common';
import { location, practitioner } from './shared-resources';

export const pv1: Handler = (seg, ctx) => {
  // PV1[Encounter]
  const p = ctx.state.patient;
  const visit = cx(seg.rep(19), ctx);
  if (visit)
    visit.type = { coding: [{ system: V2_TABLE('0203'), code: 'VN', display: 'Visit number' }], text: 'visit number' };
  const key = idKey(visit, ctx);
  const pclass = seg.get(2, 0, 1);
  const mclass = mapCode('PatientClass[EncounterClass]', pclass);
  const e: Encounter = {
    resourceType: 'Encounter',
    id: key ? ctx.b.idFor('Encounter', key) : ctx.localId('Encounter', seg),
    status: 'unknown',
    class: mclass
      ? { system: mclass.system, code: mclass.code, display: mclass.display }
      : valued(pclass)
        ? { system: V2_TABLE('0004'), code: codeStr(pclass) }
        : { system: 'http://terminology.hl7.org/CodeSystem/v3-NullFlavor', code: 'UNK', display: 'unknown' },
  };
  const ids = [visit, cx(seg.rep(50), ctx)].filter((x): x is Identifier => !!x);
  if (ids.length) e.identifier = ids;
  if (!valued(seg.get(45))) {
    const st = codeOf('PatientClass[EncounterStatus]', pclass);
    if (st) e.status = st as Encounter['status'];
  }
  if (p) e.subject = ref(p);
  const locations: EncounterLocation[] = [];
  const loc = (n: number, status: EncounterLocation['status']) => {
    const l = location(seg.rep(n), ctx);
    if (l) locations.push({ location: l, status });
  };
  loc(3, pclass === 'P' ? 'planned' : 'active');
  loc(6, 'completed');
  loc(11, 'active');
  loc(42, 'reserved');
  loc(43, 'completed');
  if (locations.length) e.location = locations;
  const type = cweMapped(seg.rep(4), 'AdmissionType', ctx, '0007');
  if (type) e.type = [type];
  const participants: EncounterParticipant[] = [];
  const part = (n: number, code: string, display: string) => {
    for (const r of seg.reps(n)) {
      const who = practitioner(r, ctx);
      if (who)
        participants.push({
          type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code, display }] }],
          individual: who,
        });
    }
  };
  part(7, 'ATND', 'attender');
  part(8, 'REF', 'referrer');
  part(9, 'CON', 'consultant');
  part(17, 'ADM', 'admitter');
  part(52, 'PART', 'Participation');
  if (participants.length) e.participant = participants;
  const svc = cweMapped(seg.rep(10), 'HospitalService', ctx, '0069');
  if (svc) e.serviceType = svc;
  const hosp: Encounter['hospitalization'] = {};
  const pre = cx(seg.rep(5), ctx);
  if (pre) hosp.preAdmissionIdentifier = pre;
  const readm = cweMapped(seg.rep(13), 'ReadmissionIndicator', ctx, '0092');
  if (readm) hosp.reAdmission = readm;
  const src = cwe(seg.rep(14), ctx);
  if (src) hosp.admitSource = src;
  const arr = all(seg, 15, (r) => cweMapped(r, 'AmbulatoryStatus', ctx, '0009'));
  if (arr.length) hosp.specialArrangement = arr;
  const vip = cweMapped(seg.rep(16), 'VIPIndicator', ctx, '0099');
  if (vip) {
    hosp.specialCourtesy = [vip];
    // PV1[Patient]: PV1-16 -> Patient patient-importance extension
    if (p && !p.extension?.some((x) => x.url === 'http://hl7.org/fhir/StructureDefinition/patient-importance'))
      p.extension = push(p.extension, {
        url: 'http://hl7.org/fhir/StructureDefinition/patient-importance',
        valueCodeableConcept: vip,
      });
  }
  const dd = cweMapped(seg.rep(36), 'DischargeDisposition', ctx, '0112');
  if (dd) hosp.dischargeDisposition = dd;
  const dest = location([[seg.get(37, 0, 1)]], ctx);
  if (dest) hosp.destination = dest;
  const diet = all(seg, 38, (r) => cweMapped(r, 'DietType', ctx, '0114'));
  if (diet.length) hosp.dietPreference = diet;
  if (Object.keys(hosp).length) e.hospitalization = hosp;
  const period = compact({ start: ctx.dt(seg.get(44)), end: ctx.dt(seg.get(45)) });
  if (period) e.period = period;
  if (valued(seg.get(45))) e.status = 'finished';
  ctx.state.encounter = ctx.b.add(e);
  if (p) financialClass(seg, p, ctx);
  if (ctx.state.encounter === e) {
    visitEpisode(seg, e, p, ctx); // PV1-53/54 -> EpisodeOfCare (below)
    encounterHistory(seg, e, p, ctx); // PV1-43 -> Basic EncounterHistory (below)
  }
  ctx.state.last = ctx.state.encounter;
};

/**
 * PV1[Coverage] (ADT_A01 message map row 37: IF PV1-20 VALUED -> Coverage, beneficiary the Patient): row 22 PV1-20
 * financial class -> Coverage.type (FinancialClass; v2 table 0064 is site-defined, so the sent code is kept),
 * FC.2 effective date -> period.start. The IG gives no payor, which Coverage requires: `payor` says it is
 * unknown (a display-only reference) rather than inventing one.
 */
function financialClass(seg: Hl7Segment, p: Patient, ctx: ConvertContext): void {
  for (const r of seg.reps(20)) {
    const type = cweMapped(nest(r, 1), 'FinancialClass', ctx, '0064');
    if (!type) continue;
    const cov: Coverage = {
      resourceType: 'Coverage',
      id: ctx.b.idFor('Coverage', `${p.id}|PV1-20|${c(r, 1)}`),
      status: 'active',
      type,
      beneficiary: ref(p),
      payor: [{ display: 'unknown (PV1-20 financial class only)' }],
    };
    const start = ctx.dt(c(r, 2));
    if (start) cov.period = { start };
    ctx.b.add(cov);
  }
}

export const pv2: Handler = (seg, ctx) => {
  // PV2[Encounter]
  const e = ctx.state.encounter;
  if (!e) return;
  const reason = cwe(seg.rep(3), ctx);
  if (reason) e.reasonCode = push(e.reasonCode, reason);
  const los = decimal(seg.get(11));
  if (los !== undefined && los >= 0)
    e.length = { value: los, unit: 'd', system: 'http://unitsofmeasure.org', code: 'd' };
  const desc = seg.get(12);
  if (valued(desc))
    e.text = { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${escapeXml(desc)}</div>` };
  const prio = cweMapped(seg.rep(25), 'EncounterPriority', ctx, '0217');
  if (prio) e.priority = prio;
  const expected = ctx.dt(seg.get(8));
  if (expected)
    e.extension = push(e.extension, {
      url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate',
      valueDateTime: expected,
    });
  const expectedEnd = ctx.dt(seg.get(9));
  if (expectedEnd)
    e.extension = push(e.extension, {
      url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedEndDate',
      valueDateTime: expectedEnd,
    });
  const prior = location(seg.rep(1), ctx); // PV2-1 prior pending location
  if (prior) e.location = push(e.location, { location: prior, status: 'planned' });
  for (const r of seg.reps(13)) {
    const who = practitioner(r, ctx); // PV2-13 referral source code
    if (who)
      e.participant = push(e.participant, {
        type: [
          {
            coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'REF' }],
            text: 'referrer',
          },
        ],
        individual: who,
      });
  }
  const arrival = cwe(seg.rep(38), ctx)?.coding?.[0];
  if (arrival)
    e.extension = push(e.extension, {
      url: 'http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival',
      valueCoding: arrival,
    });
  const ml = cweMapped(seg.rep(40), 'AdmissionLevelOfCareCode', ctx, '0432');
  if (ml) e.type = push(e.type, ml);
};

const R5 = 'http://hl7.org/fhir/5.0/StructureDefinition/';

/**
 * PV1[Encounter] row 85: PV1-54 service episode identifier -> Encounter.episodeOfCare(EpisodeOfCare.identifier,
 * CX[Identifier]); row 83-84: PV1-53 service episode description -> EpisodeOfCare extension
 * resource-instance-description. The episode's id comes from its identifier, so every visit of the episode points
 * at the same EpisodeOfCare. Its status is `active`: v2 says nothing about the episode ending, and one visit's
 * discharge does not end the episode it belongs to. Nothing is created when PV1-53 and PV1-54 are both empty.
 */
export function visitEpisode(
  seg: Hl7Segment,
  e: Encounter,
  p: Patient | undefined,
  ctx: ConvertContext,
): EpisodeOfCare | undefined {
  const id = cx(seg.rep(54), ctx);
  const desc = seg.get(53);
  if (!p || (!id?.value && !valued(desc))) return undefined;
  const key = id?.value ? `${id.system ?? `scope:${ctx.scope}`}|${id.value}` : undefined;
  const eoc: EpisodeOfCare = {
    resourceType: 'EpisodeOfCare',
    id: key ? ctx.b.idFor('EpisodeOfCare', key) : ctx.b.idFor('EpisodeOfCare', `encounter|${e.id}`, true),
    status: 'active',
    patient: ref(p),
  };
  if (id?.value) eoc.identifier = [id];
  if (valued(desc))
    eoc.extension = [
      { url: 'http://hl7.org/fhir/StructureDefinition/resource-instance-description', valueString: desc },
    ];
  const added = ctx.b.add(eoc);
  e.episodeOfCare = [ref(added)];
  return added;
}

/**
 * DG1[EpisodeOfCare] (ADT_A01 message map row 25, "if in context of an episode of care": the visit's PV1-54 episode):
 * rows 5-7, 17-28 DG1-3..22 -> diagnosis.condition (the DG1's Condition, mapped by DG1[Condition]), row 8 DG1-6 ->
 * diagnosis.role (DiagnosisType), row 17 DG1-15 -> diagnosis.rank.
 */
export function episodeDiagnosis(
  eoc: EpisodeOfCare,
  cond: Condition,
  role: CodeableConcept | undefined,
  rank: number | undefined,
): void {
  (eoc.diagnosis ??= []).push({ condition: ref(cond), ...(role ? { role } : {}), ...(rank ? { rank } : {}) });
}

/**
 * PV1[Basic-EncounterHistory] (a Basic standing in for R5 EncounterHistory): rows 3-4 code = fhir-types
 * `EncounterHistory`; ADT_A01 message map row 16 subject = the Patient (and the R5 EncounterHistory.encounter
 * extension names the visit); rows 51-58 PV1-43 prior temporary location ->
 *  - row 51-52: extension `extension-EncounterHistory.location.location` valueReference = PL[Location];
 *  - rows 53-58: the location's status `complete` and its classification `temporary`
 *    (subject-locationClassification). The CSV hangs the status under the valued extension of rows 51-52 and the
 *    classification under a second `extension-EncounterHistory.location` extension; an extension cannot have both a
 *    value and sub-extensions (FHIR ext-1), so both go under that second, complex extension, beside its `location`.
 * The CSV's PV1-11 rows (16-19, `location[3].extension` on a Basic, which has no location) name no element a Basic
 * has; PV1-11 stays Encounter.location (PV1[Encounter]).
 */
export function encounterHistory(
  seg: Hl7Segment,
  e: Encounter,
  p: Patient | undefined,
  ctx: ConvertContext,
): Basic | undefined {
  if (!p) return undefined;
  const loc = location(seg.rep(43), ctx);
  if (!loc) return undefined;
  const basic: Basic = {
    resourceType: 'Basic',
    id: ctx.b.idFor('Basic', `EncounterHistory|${e.id}|PV1-43|${loc.reference}`),
    code: {
      coding: [{ system: 'http://hl7.org/fhir/fhir-types', code: 'EncounterHistory', display: 'EncounterHistory' }],
    },
    subject: ref(p),
    extension: [
      { url: `${R5}extension-EncounterHistory.encounter`, valueReference: ref(e) },
      { url: `${R5}extension-EncounterHistory.location.location`, valueReference: loc },
      {
        url: `${R5}extension-EncounterHistory.location`,
        extension: [
          { url: 'location', valueReference: loc },
          { url: `${R5}extension-EncounterHistory.location.location.status`, valueCode: 'complete' },
          {
            url: 'http://hl7.org/fhir/StructureDefinition/subject-locationClassification',
            // rows 57-58 as the CSV assigns them (the system is the CSV's, without its leading blank)
            valueCodeableConcept: {
              coding: [{ system: 'http://hl7.org/fhir/ValueSet/subject-location', code: 'temporary' }],
            },
          },
        ],
      },
    ],
  };
  return ctx.b.add(basic);
}

/** A23 / A29 delete the visit: its EncounterHistory (PV1-43) is visit data too, a DELETE entry like the Encounter. */
export function deleteEncounterHistory(e: Encounter, ctx: ConvertContext): void {
  const url = `urn:uuid:${e.id}`;
  for (const r of ctx.b.resources())
    if (
      r.resourceType === 'Basic' &&
      (r as Basic).extension?.some(
        (x) => x.url === `${R5}extension-EncounterHistory.encounter` && x.valueReference?.reference === url,
      )
    )
      ctx.b.markDelete(r);
}
