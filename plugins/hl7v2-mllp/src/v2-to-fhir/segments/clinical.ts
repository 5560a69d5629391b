/** Clinical segments: DG1 (Condition), PRB (Condition), PR1 (Procedure), AL1 / IAM (AllergyIntolerance). */
import type { AllergyIntolerance, Condition, EpisodeOfCare, Procedure } from '@medplum/fhirtypes';
import { ref } from '../context';
import { c, codeOf, compact, cwe, cweMapped, decimal, ei, isCode, valued } from '../datatypes';
import { all, type Handler, idKey, push } from './common';
import { location, practitioner } from './shared-resources';
import { episodeDiagnosis } from './visit';

export const dg1: Handler = (seg, ctx) => {
  // DG1[Condition] (+ Encounter.diagnosis, DG1[Encounter])
  const p = ctx.state.patient;
  if (!p) return;
  const id = ei(seg.rep(20), ctx);
  const code = cwe(seg.rep(3), ctx) ?? (valued(seg.get(4)) ? { text: seg.get(4) } : undefined);
  if (code && valued(seg.get(4)) && !code.text) code.text = seg.get(4);
  const cond: Condition = {
    resourceType: 'Condition',
    id: id ? ctx.b.idFor('Condition', idKey(id, ctx)!) : ctx.localId('Condition', seg),
    subject: ref(p),
    clinicalStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }],
    },
    category: [
      {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/condition-category',
            code: 'encounter-diagnosis',
            display: 'Encounter Diagnosis',
          },
        ],
      },
    ],
  };
  if (seg.get(21) === 'D') {
    delete cond.clinicalStatus;
    cond.verificationStatus = {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'entered-in-error' }],
    };
  }
  if (id) cond.identifier = [id];
  if (code) cond.code = code;
  const onset = ctx.dt(seg.get(5));
  if (onset) cond.onsetDateTime = onset;
  const asserter = practitioner(seg.rep(16), ctx);
  if (asserter) cond.asserter = asserter;
  const rec = ctx.dt(seg.get(19));
  if (rec) {
    // DG1[Condition] rows 21-23: DG1-19 attestation date -> assertedDate extension (the CSV names its page,
    // www.hl7.org/fhir/extension-condition-asserteddate; this is its canonical URL) and recordedDate
    cond.recordedDate = rec;
    cond.extension = push(cond.extension, {
      url: 'http://hl7.org/fhir/StructureDefinition/condition-assertedDate',
      valueDateTime: rec,
    });
  }
  // rows 27-28: DG1-22 parent diagnosis (EI[Condition]) -> condition-dueTo, a reference by identifier
  const parentDx = ei(seg.rep(22), ctx);
  if (parentDx)
    cond.extension = push(cond.extension, {
      url: 'http://hl7.org/fhir/StructureDefinition/condition-dueTo',
      valueReference: { type: 'Condition', identifier: parentDx },
    });
  const e = ctx.state.encounter;
  const added = ctx.b.add(cond);
  if (e) {
    cond.encounter = ref(e);
    const use = cweMapped(seg.rep(6), 'DiagnosisType', ctx, '0052');
    const n = Number(seg.get(15));
    const rank = Number.isInteger(n) && n > 0 ? n : undefined;
    e.diagnosis = push(e.diagnosis, compact({ condition: ref(cond), use, rank })!);
    // DG1[EpisodeOfCare]: the visit's episode of care (PV1-54) lists the diagnosis too, role DG1-6, rank DG1-15
    const eoc = e.episodeOfCare?.[0]?.reference
      ? (ctx.b.get(e.episodeOfCare[0].reference.slice('urn:uuid:'.length)) as EpisodeOfCare | undefined)
      : undefined;
    if (eoc && added === cond) episodeDiagnosis(eoc, cond, use, rank);
  }
  ctx.state.last = added;
};

export const prb: Handler = (seg, ctx) => {
  // PRB (problem detail) -> Condition (problem-list-item); PRB-1 action code DE deletes it
  const p = ctx.state.patient;
  if (!p) return;
  const id = ei(seg.rep(4), ctx);
  const code = cwe(seg.rep(3), ctx) ?? { text: 'unknown' };
  const cond: Condition = {
    resourceType: 'Condition',
    id: id ? ctx.b.idFor('Condition', idKey(id, ctx)!) : ctx.localId('Condition', seg),
    subject: ref(p),
    category: [
      {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/condition-category',
            code: 'problem-list-item',
            display: 'Problem List Item',
          },
        ],
      },
    ],
    code,
  };
  if (id) cond.identifier = [id];
  const rec = ctx.dt(seg.get(2));
  if (rec) cond.recordedDate = rec;
  const onset = ctx.dt(seg.get(16));
  if (onset) cond.onsetDateTime = onset;
  const resolved = ctx.dt(seg.get(9)) ?? ctx.dt(seg.get(8));
  cond.clinicalStatus = {
    coding: [
      { system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: resolved ? 'resolved' : 'active' },
    ],
  };
  if (resolved) cond.abatementDateTime = resolved;
  if (ctx.state.encounter) cond.encounter = ref(ctx.state.encounter);
  const added = ctx.b.add(cond);
  if (seg.get(1) === 'DE') ctx.b.markDelete(added);
  ctx.state.last = added;
};

export const pr1: Handler = (seg, ctx) => {
  // PR1[Procedure]
  const p = ctx.state.patient;
  if (!p) return;
  const id = ei(seg.rep(19), ctx);
  const code = cwe(seg.rep(3), ctx) ?? (valued(seg.get(4)) ? { text: seg.get(4) } : { text: 'unknown' });
  if (valued(seg.get(4)) && !c(seg.rep(3), 9)) code.text = seg.get(4);
  const proc: Procedure = {
    resourceType: 'Procedure',
    id: id ? ctx.b.idFor('Procedure', idKey(id, ctx)!) : ctx.localId('Procedure', seg),
    status: 'completed',
    subject: ref(p),
    code,
  };
  if (id) proc.identifier = [id];
  const start = ctx.dt(seg.get(5));
  const minutes = decimal(seg.get(7));
  if (start && minutes !== undefined && minutes > 0) {
    const end = new Date(Date.parse(start) + minutes * 60000);
    proc.performedPeriod = { start, ...(Number.isNaN(end.getTime()) ? {} : { end: isoWithOffset(end, start) }) };
  } else if (start) proc.performedDateTime = start;
  const cat = cwe(seg.rep(6), ctx) ?? isCode(seg.get(6), '0230');
  if (cat) proc.category = cat;
  const performers = [
    ...seg.reps(8).map((r) => [r, '88189002', 'Anesthesiologist'] as const),
    ...seg.reps(11).map((r) => [r, '304292004', 'Surgeon'] as const),
    ...seg.reps(12).map((r) => [r, undefined, undefined] as const),
  ];
  for (const [r, fn, disp] of performers) {
    const actor = practitioner(r, ctx);
    if (actor)
      proc.performer = push(proc.performer, {
        actor,
        ...(fn ? { function: { coding: [{ system: 'http://snomed.info/sct', code: fn, display: disp }] } } : {}),
      });
  }
  const reason = cwe(seg.rep(15), ctx);
  if (reason) proc.reasonCode = [reason];
  const loc = location(seg.rep(23), ctx);
  if (loc) proc.location = loc;
  if (ctx.state.encounter) proc.encounter = ref(ctx.state.encounter);
  // PR1[Procedure] row 35: PR1-25 parent procedure id -> partOf, a reference by identifier (EI; the parent's
  // resource may be in another message), the PR1 in this message with that PR1-19 id when there is one
  const parent = ei(seg.rep(25), ctx);
  if (parent) {
    const here = ctx.b
      .resources()
      .find(
        (r) =>
          r.resourceType === 'Procedure' &&
          (r as Procedure).identifier?.some((i) => i.value === parent.value && i.system === parent.system),
      );
    proc.partOf = [here ? ref(here) : { type: 'Procedure', identifier: parent }];
  }
  ctx.state.last = ctx.b.add(proc);
};

/** Adds minutes to a dateTime keeping its offset. */
export function isoWithOffset(d: Date, like: string): string {
  const m = /([+-])(\d{2}):(\d{2})$/.exec(like);
  if (!m || like.endsWith('Z')) return d.toISOString().replace(/\.000Z$/, 'Z');
  const off = (m[1] === '-' ? -1 : 1) * (+m[2] * 60 + +m[3]);
  const local = new Date(d.getTime() + off * 60000).toISOString().slice(0, 19);
  return `${local}${m[1]}${m[2]}:${m[3]}`;
}

export const al1: Handler = (seg, ctx) => {
  // AL1[AllergyIntolerance]
  const p = ctx.state.patient;
  if (!p) return;
  const code = cwe(seg.rep(3), ctx);
  const a: AllergyIntolerance = {
    resourceType: 'AllergyIntolerance',
    id: ctx.b.idFor('AllergyIntolerance', `${p.id}|${code?.coding?.[0]?.code ?? code?.text ?? seg.sequence}`),
    patient: ref(p),
    clinicalStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }],
    },
  };
  const type = seg.get(2);
  const cat = codeOf('AllergenType[AllergyIntoleranceCategory]', type);
  if (cat) a.category = [cat as 'food'];
  const t = codeOf('AllergyType', type);
  if (t === 'allergy' || t === 'intolerance') a.type = t;
  if (code) a.code = code;
  const sev = seg.get(4);
  const crit = codeOf('AllergySeverity[AllergyIntolerance.criticality]', sev);
  if (crit) a.criticality = crit as AllergyIntolerance['criticality'];
  const rsev = codeOf('AllergySeverity[AllergyIntolerance.reaction.severity]', sev);
  const manif = all(seg, 5, (r) => (valued(c(r, 1)) ? { text: c(r, 1) } : undefined));
  if (manif.length) a.reaction = [{ manifestation: manif, ...(rsev ? { severity: rsev as 'mild' } : {}) }];
  const onset = ctx.dt(seg.get(6));
  if (onset) a.onsetDateTime = onset;
  if (ctx.state.encounter) a.encounter = ref(ctx.state.encounter);
  ctx.state.last = ctx.b.add(a);
};

export const iam: Handler = (seg, ctx) => {
  // IAM[AllergyIntolerance]; IAM-6 action code D deletes
  const p = ctx.state.patient;
  if (!p) return;
  const code = cwe(seg.rep(3), ctx);
  const uid = ei(seg.rep(7), ctx);
  const a: AllergyIntolerance = {
    resourceType: 'AllergyIntolerance',
    id: uid
      ? ctx.b.idFor('AllergyIntolerance', idKey(uid, ctx)!)
      : ctx.b.idFor('AllergyIntolerance', `${p.id}|${code?.coding?.[0]?.code ?? seg.sequence}`),
    patient: ref(p),
    clinicalStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }],
    },
  };
  if (uid) a.identifier = [uid];
  const cat = codeOf('AllergenType[AllergyIntoleranceCategory]', seg.get(2));
  if (cat) a.category = [cat as 'food'];
  if (code) a.code = code;
  const crit = codeOf('AllergySeverity[AllergyIntolerance.criticality]', seg.get(4));
  if (crit) a.criticality = crit as AllergyIntolerance['criticality'];
  const manif = all(seg, 5, (r) => cwe(r, ctx));
  if (manif.length) a.reaction = [{ manifestation: manif }];
  const onset = ctx.dt(seg.get(11));
  if (onset) a.onsetDateTime = onset;
  const rec = ctx.dt(seg.get(13));
  if (rec) a.recordedDate = rec;
  const added = ctx.b.add(a);
  if (seg.get(6) === 'D') ctx.b.markDelete(added);
  ctx.state.last = added;
};
