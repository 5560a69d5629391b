import type { MessageHeaders } from '../../model/message';
import { silentLogger } from '../../logging/logger';
import type { SourceContext } from '../../plugin/api';
import type { MessageStore } from '../../store/message-store';

/**
 * A SourceContext over a real store, as the engine builds it, with a minimal HL7 header reader and
 * batch splitter standing in for the hl7v2 plugin's transform (the source is what is under test).
 */
export function storeContext<C>(
  store: MessageStore,
  config: C,
  id = 'src',
  opts: { split?: (ct: string, b: Buffer) => Buffer[] } = {},
): SourceContext<C> & { abort: AbortController } {
  const abort = new AbortController();
  return {
    id,
    config,
    logger: silentLogger(),
    signal: abort.signal,
    abort,
    submit: (messages, o) =>
      store.insert(
        messages.map((m) => ({ ...m, sourceId: id })),
        o?.checkpoint ? { checkpoint: o.checkpoint } : undefined,
      ),
    getCheckpoint: (key) => store.getCheckpoint(id, key),
    setCheckpoint: (key, value) => store.setCheckpoint(id, key, value),
    extractHeaders: (ct, body) => headersOf(ct, body),
    split: opts.split ?? ((ct, body) => (ct === 'application/hl7-v2' ? splitHl7(body) : [body])),
  };
}

export function headersOf(ct: string, body: Buffer): MessageHeaders {
  if (ct === 'application/hl7-v2') {
    const msh = body
      .toString('latin1')
      .split(/\r\n|\r|\n/)
      .find((l) => l.startsWith('MSH'));
    if (!msh) return {};
    const f = msh.split('|');
    const [type, trigger] = (f[8] ?? '').split('^');
    return {
      messageType: trigger ? `${type}^${trigger}` : type,
      trigger,
      controlId: f[9],
      sendingApplication: f[2],
      sendingFacility: f[3],
    };
  }
  try {
    const doc = JSON.parse(body.toString('utf8'));
    return { messageType: doc.resourceType };
  } catch {
    return {};
  }
}

/** Split an HL7 batch (FHS/BHS/.../BTS/FTS) into its MSH messages. */
export function splitHl7(body: Buffer): Buffer[] {
  const segs = body
    .toString('latin1')
    .split(/\r\n|\r|\n/)
    .filter((l) => l.length);
  const out: string[][] = [];
  for (const s of segs) {
    if (/^(FHS|BHS|BTS|FTS)/.test(s)) continue;
    if (s.startsWith('MSH')) out.push([s]);
    else if (out.length) out[out.length - 1].push(s);
  }
  return out.map((m) => Buffer.from(m.join('\r') + '\r', 'latin1'));
}

export const adt = (ctrl: string, mrn = 'MRN1', family = 'Doe') =>
  `MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20261129120000||ADT^A01|${ctrl}|P|2.5\rEVN|A01|20261129120000\rPID|1||${mrn}^^^HOSP^MR||${family}^Jan\r`;
