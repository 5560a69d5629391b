/**
 * Segment maps, written from the IG's segment CSVs
 * (../shared/v2-to-fhir/mappings/segments/HL7 Segment - FHIR R4_ <SEG>[<Resource>].csv), one file per segment group.
 * Each handler reads one segment, creates/extends resources in the Bundle and updates the walk
 * state (see convert.ts for the grouping rules). The table below is the walker's: a segment it does not list
 * is a Z-segment or an unknown one.
 */
import { in3CareTeam, prt, rol } from './care-team';
import { al1, dg1, iam, pr1, prb } from './clinical';
import type { Handler } from './common';
import { txa } from './documents';
import { ft1, gt1, in1, in2 } from './financial';
import { evn, msh, sft } from './message';
import { obr, orc, tq1 } from './order';
import { mrg, nk1, pd1, pid } from './patient';
import { rxa, rxd, rxe, rxg, rxo, rxr } from './pharmacy';
import { prd, rf1 } from './referral';
import { nte, obx, spm } from './result';
import { aig, ail, aip, ais, sch } from './scheduling';
import { pv1, pv2 } from './visit';

export { finishMessage } from './message';
export { OBSERVATION_VALUE_ATTACHMENT } from './result';

export const SEGMENT_HANDLERS: Record<string, Handler> = {
  MSH: msh,
  SFT: sft,
  EVN: evn,
  PID: pid,
  PD1: pd1,
  NK1: nk1,
  MRG: mrg,
  PV1: pv1,
  PV2: pv2,
  DG1: dg1,
  PRB: prb,
  PR1: pr1,
  AL1: al1,
  IAM: iam,
  ROL: rol,
  IN1: in1,
  IN2: in2,
  GT1: gt1,
  FT1: ft1,
  ORC: orc,
  OBR: obr,
  TQ1: tq1,
  OBX: obx,
  SPM: spm,
  NTE: nte,
  RXO: rxo,
  RXE: rxe,
  RXR: rxr,
  RXA: rxa,
  RXD: rxd,
  RXG: rxg,
  SCH: sch,
  RGS: (_s, ctx) => {
    ctx.state.last = ctx.state.appointment;
  },
  AIS: ais,
  AIG: aig,
  AIL: ail,
  AIP: aip,
  TXA: txa,
  RF1: rf1,
  PRD: prd,
  // IN3-21 case manager -> the patient's CareTeam (IN3[CareTeam], care-team.ts)
  IN3: (seg, ctx) => void (ctx.state.patient && in3CareTeam(seg, ctx.state.patient, ctx)),
  // segments known to the walker but carrying nothing the canonical model keeps
  RXC: () => undefined,
  PRT: prt,
};
