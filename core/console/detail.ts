/** One message: its raw content as an HL7 v2 tree, its Bundle, deliveries, and replay / retry of it. */
import { $, api, can, el, showError, timeCell } from './common.js';
import { kvTable } from './dashboard.js';
import { describeReplay, type MessageMeta } from './messages.js';

// ---------- message detail ----------

export interface Detail extends MessageMeta {
  body?: string;
  bundle?: unknown;
  contentType: string;
  events: { at: string; status: string; sinkId?: string; routeId?: string; detail?: string }[];
  deliveries: {
    id: string;
    routeId: string;
    sinkId: string;
    status: string;
    attempts: number;
    lastError?: { code?: string; message?: string };
  }[];
  issues: { location?: string; code?: string; reason?: string; severity?: string; [k: string]: unknown }[];
}
export let currentRaw = '';

export async function loadDetail(id: string): Promise<void> {
  $('d-id').textContent = id;
  $('replay-confirm').hidden = true;
  $('replay-result').textContent = '';
  try {
    const d = await api<Detail>(`/api/messages/${encodeURIComponent(id)}${can('phi-reader') ? '?body=true' : ''}`);
    const meta: [string, string | number][] = [
      ['status', d.status],
      ['source', d.sourceId],
      ['received', new Date(d.receivedAt).toLocaleString()],
      ['content type', d.contentType],
      ['seq', d.seq],
    ];
    for (const [k, v] of Object.entries(d.headers ?? {})) if (v !== undefined) meta.push([k, v]);
    if (d.orderingKey && d.headers?.orderingKey !== d.orderingKey) meta.push(['ordering key', d.orderingKey]);
    if (d.duplicateOf) meta.push(['duplicate of', d.duplicateOf]);
    if (d.error) meta.push(['error', `${d.error.code}${d.error.message ? `: ${d.error.message}` : ''}`]);
    kvTable('d-meta', meta);
    const ol = $('d-events');
    ol.replaceChildren(
      ...d.events.map((e) => {
        const li = el('li');
        // An ACK's text is shown under "ACK sent"; here its code (MSA-1).
        const detail = e.status === 'ack' ? /MSA.(\w+)/.exec(e.detail ?? '')?.[1] : e.detail;
        li.append(
          timeCell(e.at),
          ` ${e.status}`,
          e.routeId ? ` route ${e.routeId}` : '',
          e.sinkId ? ` sink ${e.sinkId}` : '',
          detail ? ` — ${detail}` : '',
        );
        return li;
      }),
    );
    const tbody = ($('d-deliveries') as HTMLTableElement).tBodies[0];
    tbody.replaceChildren();
    for (const x of d.deliveries) {
      const tr = tbody.insertRow();
      for (const v of [
        x.routeId,
        x.sinkId,
        x.status,
        x.attempts,
        x.lastError ? `${x.lastError.code ?? ''} ${x.lastError.message ?? ''}`.trim() : '',
      ])
        tr.insertCell().textContent = String(v);
    }
    // The ACK the source sent (below phi-reader: its MSA code and control id only).
    const acks = d.events
      .filter((e) => e.status === 'ack' && e.detail)
      .map((e) =>
        e
          .detail!.split(/\r\n|\r|\n/)
          .filter(Boolean)
          .join('\n'),
      );
    $('d-ack').textContent = acks.length
      ? acks.join('\n\n')
      : '(none recorded: a source that sends no ACK, or a message stored before ACKs were kept)';
    $('d-issues').replaceChildren(
      ...(d.issues.length
        ? d.issues.map((i) =>
            el(
              'li',
              Object.entries(i)
                .map(([k, v]) => `${k}: ${String(v)}`)
                .join(' · '),
            ),
          )
        : [el('li', 'none')]),
    );
    currentRaw = d.body ?? '';
    if (currentRaw.startsWith('MSH')) await loadDefinitions();
    renderTree(currentRaw, d.contentType);
    renderBundle(d.bundle as BundleView | undefined);
    showError(undefined);
  } catch (e) {
    showError(`Message not loaded: ${(e as Error).message}`);
  }
}

/** Common HL7 v2.5 field names (positions are shown for the others). */
export const FIELD_NAMES: Record<string, string[]> = {
  MSH: [
    '',
    'Field Separator',
    'Encoding Characters',
    'Sending Application',
    'Sending Facility',
    'Receiving Application',
    'Receiving Facility',
    'Date/Time of Message',
    'Security',
    'Message Type',
    'Message Control ID',
    'Processing ID',
    'Version ID',
  ],
  EVN: [
    '',
    'Event Type Code',
    'Recorded Date/Time',
    'Date/Time Planned Event',
    'Event Reason Code',
    'Operator ID',
    'Event Occurred',
  ],
  PID: [
    '',
    'Set ID',
    'Patient ID',
    'Patient Identifier List',
    'Alternate Patient ID',
    'Patient Name',
    "Mother's Maiden Name",
    'Date/Time of Birth',
    'Administrative Sex',
    'Patient Alias',
    'Race',
    'Patient Address',
    'County Code',
    'Phone Number - Home',
    'Phone Number - Business',
    'Primary Language',
    'Marital Status',
    'Religion',
    'Patient Account Number',
    'SSN Number',
  ],
  PV1: [
    '',
    'Set ID',
    'Patient Class',
    'Assigned Patient Location',
    'Admission Type',
    'Preadmit Number',
    'Prior Patient Location',
    'Attending Doctor',
    'Referring Doctor',
    'Consulting Doctor',
    'Hospital Service',
  ],
  OBR: [
    '',
    'Set ID',
    'Placer Order Number',
    'Filler Order Number',
    'Universal Service Identifier',
    'Priority',
    'Requested Date/Time',
    'Observation Date/Time',
  ],
  OBX: [
    '',
    'Set ID',
    'Value Type',
    'Observation Identifier',
    'Observation Sub-ID',
    'Observation Value',
    'Units',
    'References Range',
    'Abnormal Flags',
    'Probability',
    'Nature of Abnormal Test',
    'Observation Result Status',
  ],
};

/** Field and component names and data types (GET /api/hl7/definitions), read once. */
export interface Definitions {
  segments: Record<string, Record<string, [string, string]>>;
  types: Record<string, Record<string, [string, string]>>;
}
export let definitions: Definitions | null | undefined;
export async function loadDefinitions(): Promise<void> {
  if (definitions !== undefined) return;
  try {
    definitions = await api<Definitions>('/api/hl7/definitions');
  } catch {
    definitions = null; // none loaded: the short table below
  }
}

export function fieldLabel(seg: string, i: number): { name?: string; type?: string } {
  const d = definitions?.segments[seg]?.[i];
  if (d) return { name: d[0], type: d[1] || undefined };
  return { name: FIELD_NAMES[seg]?.[i] };
}

export function componentLabel(type: string | undefined, j: number): { name?: string; type?: string } {
  const d = type ? definitions?.types[type]?.[j] : undefined;
  return d ? { name: d[0], type: d[1] || undefined } : {};
}

export const labelText = (l: { name?: string; type?: string }) =>
  l.name ? ` ${l.name}${l.type ? ` (${l.type})` : ''}: ` : ' ';

// ---------- the Bundle: one block per entry, references are links to their entry ----------

export interface BundleView {
  entry?: { fullUrl?: string; resource?: { resourceType?: string; id?: string } }[];
}

export function renderBundle(b: BundleView | undefined): void {
  const root = $('d-bundle');
  root.replaceChildren();
  if (!b) {
    root.textContent = '(no bundle)';
    return;
  }
  const byRef = new Map<string, string>();
  (b.entry ?? []).forEach((e, i) => {
    const key = `entry-${i}`;
    if (e.fullUrl) byRef.set(e.fullUrl, key);
    if (e.resource?.resourceType && e.resource.id) byRef.set(`${e.resource.resourceType}/${e.resource.id}`, key);
  });
  const head = b.entry ? { ...b, entry: undefined } : b;
  root.append(el('pre', JSON.stringify(head, null, 2)));
  (b.entry ?? []).forEach((e, i) => {
    const det = el('details', undefined, 'entry');
    det.open = true;
    det.id = `entry-${i}`;
    det.dataset.resourceType = e.resource?.resourceType ?? '';
    if (e.fullUrl) det.dataset.fullUrl = e.fullUrl;
    det.append(
      el(
        'summary',
        `${e.resource?.resourceType ?? '?'}${e.resource?.id ? `/${e.resource.id}` : ''}${e.fullUrl ? `  ${e.fullUrl}` : ''}`,
      ),
    );
    const pre = el('pre');
    // "reference": "<ref>" lines: the value becomes a link to the entry it names (when in the Bundle).
    for (const line of JSON.stringify(e, null, 2).split('\n')) {
      const m = /^(\s*"reference": ")(.*)(",?)$/.exec(line);
      const target = m ? byRef.get(JSON.parse(`"${m[2]}"`) as string) : undefined;
      if (m && target) {
        const a = el('a', m[2], 'ref');
        a.href = `#${location.hash.slice(1)}`;
        a.dataset.target = target;
        a.addEventListener('click', (ev) => {
          ev.preventDefault();
          const t = document.getElementById(target) as HTMLDetailsElement | null;
          if (!t) return;
          t.open = true;
          for (const x of document.querySelectorAll('#d-bundle .entry.target')) x.classList.remove('target');
          t.classList.add('target');
          t.scrollIntoView({ block: 'start' });
          t.querySelector('summary')?.focus();
        });
        pre.append(m[1], a, `${m[3]}\n`);
      } else pre.append(`${line}\n`);
    }
    det.append(pre);
    root.append(det);
  });
}

export function renderTree(raw: string, contentType: string): void {
  const root = $('d-tree');
  root.replaceChildren();
  if (!raw) {
    root.textContent = '(no body: pruned, or not readable with this role)';
    return;
  }
  if (!raw.startsWith('MSH')) {
    let text = raw;
    if (/json/.test(contentType))
      try {
        text = JSON.stringify(JSON.parse(raw), null, 2);
      } catch {
        /* as is */
      }
    root.append(el('pre', text));
    return;
  }
  const fs = raw[3];
  const [cs, rs, esc, ss] = [raw[4] ?? '^', raw[5] ?? '~', raw[6] ?? '\\', raw[7] ?? '&'];
  const unescape = (v: string) =>
    v.replace(
      new RegExp(`\\${esc}([FSTRE])\\${esc}`, 'g'),
      (_m, c: string) => ({ F: fs, S: cs, T: ss, R: rs, E: esc })[c] ?? _m,
    );
  for (const seg of raw.split(/\r\n|\r|\n/).filter(Boolean)) {
    const name = seg.slice(0, 3);
    const fields = seg.split(fs);
    const det = el('details');
    det.open = true;
    const sum = el('summary', name);
    det.append(sum);
    // MSH-1 is the field separator itself: MSH's fields are numbered one on.
    const values = name === 'MSH' ? ['', fs, ...fields.slice(1)] : fields;
    for (let i = 1; i < values.length; i++) {
      const v = values[i];
      if (!v) continue;
      const pos = `${name}-${i}`;
      const label = fieldLabel(name, i);
      const line = el('div', undefined, 'field');
      line.dataset.pos = pos;
      if (label.type) line.dataset.type = label.type;
      line.append(
        el('span', pos, 'pos'),
        label.name ? el('span', labelText(label), 'fname') : ' ',
        name === 'MSH' && i <= 2 ? v : unescape(v),
      );
      det.append(line);
      if (!(name === 'MSH' && i <= 2) && v.includes(cs)) {
        v.split(rs)[0]
          .split(cs)
          .forEach((c, j) => {
            if (!c) return;
            const sub = el('div', undefined, 'field comp');
            sub.dataset.pos = `${pos}.${j + 1}`;
            const cl = componentLabel(label.type, j + 1);
            sub.append(
              el('span', `  ${pos}.${j + 1}`, 'pos'),
              cl.name ? el('span', labelText(cl), 'fname') : ' ',
              unescape(c),
            );
            det.append(sub);
          });
      }
    }
    root.append(det);
  }
}

/** The detail's pending action: replay (reprocess) or retry its dead deliveries (redeliver). */
export let detailBody: Record<string, unknown> | undefined;

export async function replayDry(mode: 'reprocess' | 'redeliver'): Promise<void> {
  const id = $('d-id').textContent!;
  const body = mode === 'reprocess' ? { ids: [id] } : { ids: [id], mode, deliveryStatus: 'dead' };
  try {
    const r = await api<{ count: number }>('/api/replay', { method: 'POST', body: { ...body, dryRun: true } });
    detailBody = body;
    $('replay-count').textContent = describeReplay(body, r.count, false);
    $('replay-confirm').hidden = false;
    ($('replay-go') as HTMLButtonElement).disabled = r.count === 0;
    $(r.count ? 'replay-go' : 'replay-cancel').focus();
  } catch (e) {
    showError(`Replay (dry run) failed: ${(e as Error).message}`);
  }
}

export async function replayGo(): Promise<void> {
  const id = $('d-id').textContent!;
  const body = detailBody;
  $('replay-confirm').hidden = true;
  if (!body) return;
  try {
    const r = await api<{ count: number }>('/api/replay', { method: 'POST', body });
    $('replay-result').textContent =
      body.mode === 'redeliver' ? describeReplay(body, r.count, true) : `Replayed ${r.count}.`;
    setTimeout(() => void loadDetail(id), 1000);
  } catch (e) {
    showError(`Replay failed: ${(e as Error).message}`);
  }
}
