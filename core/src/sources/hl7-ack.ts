import { randomUUID } from 'node:crypto';

/** HL7 v2 acknowledgement codes (original mode). */
export type AckCode = 'AA' | 'AE' | 'AR';

function hl7Timestamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}+0000`;
}

/**
 * An original-mode ACK for a received HL7 v2 message: MSH with sender and receiver swapped, the
 * same version and processing id, `ACK^<trigger>^ACK`, and `MSA|<code>|<control id>|<text>`.
 * `text` must be PHI-free (it is a reason such as "does not start with an MSH segment").
 * Returns undefined when the body has no readable MSH.
 */
export function buildAck(body: Buffer, code: AckCode, text = '', now = new Date()): string | undefined {
  const s = body
    .toString('latin1')
    .replace(/^\uFEFF/, '')
    .replace(/^[\r\n\t ]+/, '');
  const mshLine = s.split(/\r\n|\r|\n/).find((l) => l.startsWith('MSH'));
  if (!mshLine || mshLine.length < 8) return undefined;
  const fs = mshLine[3];
  const enc = mshLine.slice(4).split(fs)[0] || '^~\\&';
  const f = mshLine.split(fs); // f[1] = encoding chars, f[n] = MSH-(n+1)
  const msh = (n: number) => f[n - 1] ?? '';
  const comp = enc[0] ?? '^';
  const trigger = msh(9).split(comp)[1] ?? '';
  const clean = (t: string) =>
    t.replace(new RegExp(`[${[fs, ...enc].map((c) => `\\${c}`).join('')}\\r\\n]`, 'g'), ' ').slice(0, 80);
  const ackMsh = [
    'MSH',
    enc,
    msh(5),
    msh(6),
    msh(3),
    msh(4),
    hl7Timestamp(now),
    '',
    `ACK${trigger ? `${comp}${trigger}${comp}ACK` : ''}`,
    randomUUID().replace(/-/g, '').slice(0, 20),
    msh(11) || 'P',
    msh(12) || '2.5',
  ].join(fs);
  const msa = ['MSA', code, msh(10), clean(text)].join(fs).replace(new RegExp(`\\${fs}+$`), '');
  return `${ackMsh}\r${msa}\r`;
}
