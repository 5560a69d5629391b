import type { RawMsh } from './msh';

/** MSA-1 acknowledgment codes (HL7 table 0008). */
export const AckCode = {
  /** Original mode: application accept. */
  AA: 'AA',
  /** Original mode: application error (retry may succeed). */
  AE: 'AE',
  /** Original mode: application reject (do not resend as is). */
  AR: 'AR',
  /** Enhanced mode accept acknowledgment: commit accept. */
  CA: 'CA',
  /** Enhanced mode: commit error. */
  CE: 'CE',
  /** Enhanced mode: commit reject. */
  CR: 'CR',
} as const;
export type AckCode = (typeof AckCode)[keyof typeof AckCode];

/** HL7 table 0357 (message error condition codes) - the ones Ferry uses. */
export const HL7Error = {
  segmentSequence: { code: '100', text: 'Segment sequence error' },
  requiredFieldMissing: { code: '101', text: 'Required field missing' },
  dataType: { code: '102', text: 'Data type error' },
  tableValueNotFound: { code: '103', text: 'Table value not found' },
  valueTooLong: { code: '104', text: 'Value too long' },
  unsupportedMessageType: { code: '200', text: 'Unsupported message type' },
  unsupportedEventCode: { code: '201', text: 'Unsupported event code' },
  unsupportedProcessingId: { code: '202', text: 'Unsupported processing id' },
  unsupportedVersionId: { code: '203', text: 'Unsupported version id' },
  unknownKey: { code: '204', text: 'Unknown key identifier' },
  duplicateKey: { code: '205', text: 'Duplicate key identifier' },
  recordLocked: { code: '206', text: 'Application record locked' },
  internal: { code: '207', text: 'Application internal error' },
} as const;
export type HL7ErrorCondition = (typeof HL7Error)[keyof typeof HL7Error];

/** Where an error is: ERR-2 (v2.5+) / the location part of ERR-1 (before 2.5). */
export interface ErrorLocation {
  segment: string;
  /** 1-based occurrence of the segment. */
  sequence?: number;
  field?: number;
  /** 1-based repetition of the field (ERL-4). */
  repetition?: number;
  component?: number;
}

export interface AckError {
  condition: HL7ErrorCondition;
  location?: ErrorLocation;
  /** E (error), W (warning), I (information). Default E. */
  severity?: 'E' | 'W' | 'I';
  /** Short, PHI-free explanation for people (ERR-8 / MSA-3). */
  detail?: string;
}

export interface AckOptions {
  error?: AckError;
  /** Several errors (one ERR segment each; MSA-3 from the first). `error` is the same as `[error]`. */
  errors?: AckError[];
  /** Timestamp for MSH-7 (tests). */
  now?: Date;
  /** The ACK's own control id (MSH-10); generated when absent. */
  controlId?: string;
}

const DEFAULT_ENC = '^~\\&';

let ackCounter = 0;
const ackBase = Date.now().toString(36).toUpperCase();
/** A unique control id for the ACK itself (<= 20 characters, as HL7 v2.5 ST allows). */
export function nextAckControlId(): string {
  ackCounter = (ackCounter + 1) % 36 ** 7;
  return `F${ackBase}${ackCounter.toString(36).toUpperCase().padStart(7, '0')}`.slice(0, 20);
}

function pad(n: number, w = 2): string {
  return String(n).padStart(w, '0');
}

/** HL7 DTM in UTC: YYYYMMDDHHMMSS.SSS+0000 */
export function hl7Timestamp(d: Date): string {
  return (
    `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}` +
    `${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}+0000`
  );
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return true; // unknown: use the current layout
  const a = Number(m[1]);
  const b = Number(m[2]);
  return a > major || (a === major && b >= minor);
}

/** Escape text we write ourselves (MSA-3, ERR-8) with the message's own delimiters. */
function escapeText(s: string, fieldSep: string, enc: string): string {
  const [comp = '^', rep = '~', esc = '\\', sub = '&'] = enc.split('');
  let out = '';
  for (const ch of s.replace(/[\r\n]+/g, ' ')) {
    if (ch === esc) out += `${esc}E${esc}`;
    else if (ch === fieldSep) out += `${esc}F${esc}`;
    else if (ch === comp) out += `${esc}S${esc}`;
    else if (ch === rep) out += `${esc}R${esc}`;
    else if (ch === sub) out += `${esc}T${esc}`;
    else out += ch;
  }
  return out;
}

/**
 * Build one acknowledgment (ACK) for a message whose header is `msh` (undefined when the message
 * had no readable MSH: the ACK then uses the standard delimiters and an empty MSA-2).
 * - MSH-3/4 and MSH-5/6 swapped; MSH-9 `ACK^<trigger>^ACK`; MSH-11, MSH-12 and MSH-18 echoed.
 * - MSA-2 = the acknowledged message's MSH-10.
 * - With an error: ERR-2 location + ERR-3 table 0357 code (v2.5+) or ERR-1 (before v2.5).
 * Returns the ACK text (segments ended by CR), to be written in latin1 so echoed bytes stay exact.
 */
export function buildAck(msh: RawMsh | undefined, code: AckCode, opts: AckOptions = {}): string {
  const fs = msh?.fieldSep ?? '|';
  const enc = msh?.encodingChars || DEFAULT_ENC;
  const comp = enc[0] ?? '^';
  const sub = enc[3] ?? '&';
  const version = msh?.version || '2.5.1';
  const mshFields = [
    'MSH',
    enc,
    msh?.receivingApplication ?? '',
    msh?.receivingFacility ?? '',
    msh?.sendingApplication ?? '',
    msh?.sendingFacility ?? '',
    hl7Timestamp(opts.now ?? new Date()),
    '',
    `ACK${comp}${msh?.trigger ?? ''}${comp}ACK`,
    opts.controlId ?? nextAckControlId(),
    msh?.processingId || 'P',
    msh?.version ?? version,
  ];
  if (msh?.charset) mshFields.push('', '', '', '', '', msh.charset);
  const segments = [mshFields.join(fs)];

  const errs = opts.errors?.length ? opts.errors : opts.error ? [opts.error] : [];
  const msa = ['MSA', code, msh?.controlId ?? ''];
  if (errs.length) msa.push(escapeText(errs[0].detail ?? errs[0].condition.text, fs, enc));
  segments.push(msa.join(fs));

  for (const err of errs) {
    const loc = err.location;
    if (versionAtLeast(version, 2, 5)) {
      // ERL: segment ^ segment sequence ^ field ^ field repetition ^ component
      const erl = loc
        ? [
            loc.segment,
            loc.sequence ?? 1,
            loc.field ?? '',
            loc.field !== undefined && (loc.repetition !== undefined || loc.component !== undefined)
              ? (loc.repetition ?? 1)
              : '',
            loc.component ?? '',
          ]
            .join(comp)
            .replace(new RegExp(`\\${comp}+$`), '')
        : '';
      const cwe = [err.condition.code, err.condition.text, 'HL70357'].join(comp);
      const fields = ['ERR', '', erl, cwe, err.severity ?? 'E', '', '', '', escapeText(err.detail ?? '', fs, enc)];
      while (fields.length > 5 && fields[fields.length - 1] === '') fields.pop();
      segments.push(fields.join(fs));
    } else {
      // ERR-1 ELD: segment ^ sequence ^ field ^ code (CE in subcomponents)
      const ce = [err.condition.code, err.condition.text, 'HL70357'].join(sub);
      const eld = [loc?.segment ?? '', loc ? (loc.sequence ?? 1) : '', loc?.field ?? '', ce].join(comp);
      segments.push(['ERR', eld].join(fs));
    }
  }
  return segments.join('\r') + '\r';
}

/** What became of a message at intake. */
export type IntakeOutcome =
  /**
   * Durably stored (or a duplicate acknowledged again under `ignore`). `dataErrors`: values the
   * source's dataQuality policy fails (the message fails in processing, replayable): the
   * enhanced-mode application ACK is AE with one ERR each.
   */
  | { status: 'accepted'; dataErrors?: AckError[] }
  /** Refused: unparseable, not acceptable, rejected duplicate, too large. */
  | { status: 'rejected'; error: AckError }
  /** Could not be stored (store down): the sender should retry. */
  | { status: 'error'; error: AckError };

export type AckModeSetting = 'auto' | 'original';

function conditionAllows(condition: string, success: boolean): boolean {
  switch (condition) {
    case 'NE':
      return false;
    case 'ER':
      return !success;
    case 'SU':
      return success;
    case 'AL':
    case '':
    default:
      // Empty in enhanced mode, or an unknown value: always answer (a sender is never left waiting).
      return true;
  }
}

/** True when the message asks for enhanced-mode acknowledgment (MSH-15 or MSH-16 valued). */
export function isEnhanced(msh: RawMsh | undefined, mode: AckModeSetting): boolean {
  if (mode === 'original' || !msh) return false;
  return msh.acceptAckType !== '' || msh.appAckType !== '';
}

/**
 * The ACKs to send for one message, in order:
 * - original mode: one ACK, AA / AR / AE.
 * - enhanced mode: an accept ACK (CA / CR / CE) when MSH-15 asks for it, then an application ACK
 *   (AA / AR / AE) when MSH-16 asks for it. Ferry's application responsibility is durable intake,
 *   so the application ACK is sent on the same connection right after the accept ACK.
 */
export function acksFor(msh: RawMsh | undefined, outcome: IntakeOutcome, mode: AckModeSetting, now?: Date): string[] {
  const error = outcome.status === 'accepted' ? undefined : outcome.error;
  const success = outcome.status === 'accepted';
  const appCode: AckCode = outcome.status === 'accepted' ? 'AA' : outcome.status === 'rejected' ? 'AR' : 'AE';
  if (!isEnhanced(msh, mode)) return [buildAck(msh, appCode, { error, now })];
  const out: string[] = [];
  if (conditionAllows(msh!.acceptAckType, success)) {
    const acceptCode: AckCode = outcome.status === 'accepted' ? 'CA' : outcome.status === 'rejected' ? 'CR' : 'CE';
    out.push(buildAck(msh, acceptCode, { error, now }));
  }
  // Committed, but its data fails the source's dataQuality policy: the application error names the fields.
  const dataErrors = outcome.status === 'accepted' ? outcome.dataErrors : undefined;
  if (dataErrors?.length) {
    if (conditionAllows(msh!.appAckType, false)) out.push(buildAck(msh, 'AE', { errors: dataErrors, now }));
    return out;
  }
  if (conditionAllows(msh!.appAckType, success)) out.push(buildAck(msh, appCode, { error, now }));
  return out;
}

/**
 * Acknowledge a batch (FHS/BHS ... BTS/FTS) per the HL7 batch protocol: a batch whose BHS-12 /
 * FHS-12 reference the received batch control ids, containing one ACK per message, with BTS-1 /
 * FTS-1 counts.
 */
export function buildBatchAck(fhs: RawMsh | undefined, bhs: RawMsh | undefined, acks: string[], now?: Date): string {
  const hdr = bhs ?? fhs;
  const fs = hdr?.fieldSep ?? '|';
  const enc = hdr?.encodingChars || DEFAULT_ENC;
  const ts = hl7Timestamp(now ?? new Date());
  const header = (name: 'FHS' | 'BHS', h: RawMsh | undefined) =>
    [
      name,
      enc,
      h?.receivingApplication ?? '',
      h?.receivingFacility ?? '',
      h?.sendingApplication ?? '',
      h?.sendingFacility ?? '',
      ts,
      '',
      '',
      '',
      nextAckControlId(),
      h?.batchControlId ?? '',
    ]
      .join(fs)
      .replace(new RegExp(`\\${fs}+$`), '');
  const segs: string[] = [];
  if (fhs) segs.push(header('FHS', fhs));
  segs.push(header('BHS', bhs ?? fhs));
  for (const a of acks) segs.push(a.replace(/\r$/, ''));
  segs.push(['BTS', String(acks.length)].join(fs));
  if (fhs) segs.push(['FTS', '1'].join(fs));
  return segs.join('\r') + '\r';
}

/** Read MSA-1 and MSA-2 (and MSA-3 text) of an acknowledgment. */
export function readAck(
  ack: Buffer | string,
): { code: string; controlId: string; text: string; errCode?: string } | undefined {
  const text = typeof ack === 'string' ? ack : ack.toString('latin1');
  const start = text.replace(/^\uFEFF|^\xEF\xBB\xBF/, '');
  const withMsh = start.startsWith('MSH');
  const fieldSep = withMsh ? start[3] : '|';
  const lines = start.split(/\r\n|\r|\n/);
  const msa = lines.find((l) => l.startsWith('MSA'));
  if (!msa) return undefined;
  const f = msa.split(fieldSep);
  const err = lines.find((l) => l.startsWith('ERR'));
  let errCode: string | undefined;
  if (err) {
    const ef = err.split(fieldSep);
    // The component and subcomponent separators of the ACK's MSH-2; the standard ones without an
    // MSH (was: the ACK's 8th character, whatever it was, as the subcomponent separator).
    const enc = withMsh ? (start.slice(4).split(fieldSep, 1)[0] ?? '') : '';
    const comp = enc[0] || '^';
    const sub = enc[3] || '&';
    errCode = (ef[3] ?? '').split(comp)[0] || (ef[1] ?? '').split(comp)[3]?.split(sub)[0] || undefined;
  }
  return { code: (f[1] ?? '').trim(), controlId: f[2] ?? '', text: f[3] ?? '', errCode };
}
