/** Bulk Data jobs on the simulators: kick-off, NDJSON files generated and streamed on the fly, synthetic volumes. */
import type { ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { changedAt, patientOf, type Res, type ResourceStore } from './resource-store';

export interface BulkFile {
  id: string;
  type: string;
  /** Resources snapshotted at kick-off, plus synthetic ones generated on the fly. */
  lines: string[];
  synthetic?: { from: number; count: number; make: (i: number) => Res };
}

export interface BulkJob {
  id: string;
  clientId: string;
  request: string;
  transactionTime: string;
  createdAt: number;
  pollsLeft: number;
  polls: number;
  lastPollAt?: number;
  /** Polls that came before the Retry-After we gave had elapsed. */
  earlyPolls: number;
  files: BulkFile[];
  errorFiles: BulkFile[];
  deleted: boolean;
}

export interface BulkKickoff {
  clientId: string;
  request: string;
  types: string[];
  since?: string;
  patients?: Set<string>;
  maxLinesPerFile: number;
  pollsUntilDone: number;
  synthetic?: Record<string, { count: number; make: (i: number) => Res }>;
  store: ResourceStore;
  now: number;
}

export function createBulkJob(k: BulkKickoff): BulkJob {
  const id = randomUUID();
  const files: BulkFile[] = [];
  const sinceMs = k.since ? Date.parse(k.since) : undefined;
  for (const type of k.types) {
    const lines = k.store
      .all(type)
      .filter(
        (r) =>
          (sinceMs === undefined || Date.parse(r.meta?.lastUpdated ?? changedAt(r) ?? '') > sinceMs) &&
          (!k.patients || k.patients.has(patientOf(r) ?? '')),
      )
      .map((r) => JSON.stringify(r));
    for (let i = 0; i < lines.length; i += k.maxLinesPerFile)
      files.push({ id: randomUUID(), type, lines: lines.slice(i, i + k.maxLinesPerFile) });
    const syn = k.synthetic?.[type];
    if (syn && sinceMs === undefined) {
      for (let i = 0; i < syn.count; i += k.maxLinesPerFile)
        files.push({
          id: randomUUID(),
          type,
          lines: [],
          synthetic: { from: i, count: Math.min(k.maxLinesPerFile, syn.count - i), make: syn.make },
        });
    }
  }
  return {
    id,
    clientId: k.clientId,
    request: k.request,
    transactionTime: new Date(k.now).toISOString(),
    createdAt: k.now,
    pollsLeft: k.pollsUntilDone,
    polls: 0,
    earlyPolls: 0,
    files,
    errorFiles: [],
    deleted: false,
  };
}

export function fileLineCount(f: BulkFile): number {
  return f.lines.length + (f.synthetic?.count ?? 0);
}

/** Stream a bulk file as NDJSON with backpressure (never builds the whole file in memory). */
export async function streamNdjson(
  res: ServerResponse,
  f: BulkFile,
  opts: { abortAfterLines?: number } = {},
): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
  let written = 0;
  const write = async (line: string) => {
    if (opts.abortAfterLines !== undefined && written >= opts.abortAfterLines) {
      res.destroy();
      throw new Error('aborted');
    }
    written++;
    if (!res.write(line + '\n')) await new Promise<void>((r) => res.once('drain', r));
  };
  try {
    for (const l of f.lines) await write(l);
    if (f.synthetic) {
      let buf = '';
      for (let i = 0; i < f.synthetic.count; i++) {
        if (opts.abortAfterLines !== undefined && written >= opts.abortAfterLines) {
          if (buf) res.write(buf);
          res.destroy();
          return;
        }
        buf += JSON.stringify(f.synthetic.make(f.synthetic.from + i)) + '\n';
        written++;
        if (buf.length > 64 * 1024) {
          const ok = res.write(buf);
          buf = '';
          if (!ok) await new Promise<void>((r) => res.once('drain', r));
        }
      }
      if (buf) res.write(buf);
    }
    res.end();
  } catch {
    /* client went away / aborted on purpose */
  }
}

/** A synthetic Observation (vital sign) for bulk volume tests, in the vendor's dual-coded shape. */
export function syntheticVital(i: number, patientId: string, vendorSystem: string, lastUpdated: string): Res {
  return {
    resourceType: 'Observation',
    id: `syn-${i}`,
    meta: { versionId: '1', lastUpdated },
    status: 'final',
    category: [
      {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/observation-category',
            code: 'vital-signs',
            display: 'Vital Signs',
          },
        ],
        text: 'Vital Signs',
      },
    ],
    code: {
      coding: [
        { system: vendorSystem, code: '8', display: 'Pulse' },
        { system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' },
      ],
      text: 'Pulse',
    },
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: lastUpdated,
    valueQuantity: { value: 60 + (i % 40), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  };
}
