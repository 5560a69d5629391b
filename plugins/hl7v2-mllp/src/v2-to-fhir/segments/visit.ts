/**
 * Visit-level targets of PV1 and DG1 beyond the Encounter (issue #22 item 9), from the IG's segment CSVs
 * (../shared/v2-to-fhir/mappings/segments/HL7 Segment - FHIR R4_ <SEG>[<Resource>].csv; "row" = the CSV record
 * number, header rows included, as the fidelity report prints it):
 *  - PV1-53/54 -> the visit's EpisodeOfCare (PV1[Encounter] rows 84-85), and each DG1 of that visit one of its
 *    diagnoses (DG1[EpisodeOfCare]);
 *  - PV1-43 prior temporary location -> a Basic "EncounterHistory" (PV1[Basic-EncounterHistory]; ADT_A01 message
 *    map row 16: IF PV1-43 VALUED -> Basic, subject the Patient).
 */
import type { Basic, CodeableConcept, Condition, Encounter, EpisodeOfCare, Patient } from '@medplum/fhirtypes';
import type { Hl7Segment } from '../../hl7v2/parser';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { cx, valued } from '../datatypes';
import { location } from '../segments';

const R5 = 'http://hl7.org/fhir/5.0/StructureDefinition/';

/**
 * PV1[Encounter] row 85: PV1-54 service episode identifier -> Encounter.episodeOfCare(EpisodeOfCare.identifier,
 * CX[Identifier]); row 83-84: PV1-53 service episode description -> EpisodeOfCare extension
 * resource-instance-description. The episode's id comes from its identifier, so every visit of the episode points
 * at the same EpisodeOfCare. Its status is `active`: v2 says nothing about the episode ending, and one visit's
 * discharge does not end the episode it belongs to. Nothing is created when PV1-53 and PV1-54 are both empty.
 */
export function visitEpisode(seg: Hl7Segment, e: Encounter, p: Patient | undefined, ctx: ConvertContext): EpisodeOfCare | undefined {
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
  if (valued(desc)) eoc.extension = [{ url: 'http://hl7.org/fhir/StructureDefinition/resource-instance-description', valueString: desc }];
  const added = ctx.b.add(eoc);
  e.episodeOfCare = [ref(added)];
  return added;
}

/**
 * DG1[EpisodeOfCare] (ADT_A01 message map row 25, "if in context of an episode of care": the visit's PV1-54 episode):
 * rows 5-7, 17-28 DG1-3..22 -> diagnosis.condition (the DG1's Condition, mapped by DG1[Condition]), row 8 DG1-6 ->
 * diagnosis.role (DiagnosisType), row 17 DG1-15 -> diagnosis.rank.
 */
export function episodeDiagnosis(eoc: EpisodeOfCare, cond: Condition, role: CodeableConcept | undefined, rank: number | undefined): void {
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
export function encounterHistory(seg: Hl7Segment, e: Encounter, p: Patient | undefined, ctx: ConvertContext): Basic | undefined {
  if (!p) return undefined;
  const loc = location(seg.rep(43), ctx);
  if (!loc) return undefined;
  const basic: Basic = {
    resourceType: 'Basic',
    id: ctx.b.idFor('Basic', `EncounterHistory|${e.id}|PV1-43|${loc.reference}`),
    code: { coding: [{ system: 'http://hl7.org/fhir/fhir-types', code: 'EncounterHistory', display: 'EncounterHistory' }] },
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
            valueCodeableConcept: { coding: [{ system: 'http://hl7.org/fhir/ValueSet/subject-location', code: 'temporary' }] },
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
    if (r.resourceType === 'Basic' && (r as Basic).extension?.some((x) => x.url === `${R5}extension-EncounterHistory.encounter` && x.valueReference?.reference === url)) ctx.b.markDelete(r);
}
