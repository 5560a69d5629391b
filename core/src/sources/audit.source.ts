import os from 'node:os';
import type { AuditEvent } from '@medplum/fhirtypes';
import { inject, injectable } from 'tsyringe';
import { configError } from '../errors';
import { errorFields } from '../logging/logger';
import type { MessageSource, SourceContext } from '../plugin/api';
import { coreTokens } from '../plugin/tokens';
import type { StoredAuditEntry } from '../store/message-store';
import { WakeableSleep } from '../util/wakeable-sleep';
import { defineSchema, withSchemaDefaults, type SchemaInput, type SchemaType } from '../config/schema-type';

/** `sources.<id>` keys of a `type: audit` source. */
export const auditSourceSchema = defineSchema({
  pollIntervalMs: { doc: 'How often the audit trail is read for new entries', format: 'nat', default: 1000 },
  batch: { doc: 'Entries turned into AuditEvents and stored per read', format: 'nat', default: 100 },
  from: {
    doc: "Where a source with no cursor yet starts: 'now' (entries from its first start on) or 'start' (the whole trail kept)",
    format: ['now', 'start'],
    default: 'now',
  },
});

export type AuditSourceConfig = SchemaType<typeof auditSourceSchema>;
/** A config given in code: keys left out take the schema's defaults. */
export type AuditSourceInput = SchemaInput<typeof auditSourceSchema>;

const CHECKPOINT = 'seq';

/** R4 AuditEvent.action: C create, R read, U update, D delete, E execute. */
function actionCode(action: string): AuditEvent['action'] {
  if (/\.(read|list|search)$/.test(action)) return 'R';
  if (action === 'token.create') return 'C';
  if (action === 'token.revoke') return 'D';
  return 'E';
}

/** An audit entry as a FHIR R4 AuditEvent (no PHI: ids, principals, addresses, codes). */
export function toAuditEvent(e: StoredAuditEntry, observer = os.hostname()): AuditEvent {
  const human = e.principal.startsWith('oidc:') || e.principal.startsWith('cli:');
  return {
    resourceType: 'AuditEvent',
    id: `ferry-audit-${e.seq}`,
    type: {
      system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
      code: 'rest',
      display: 'RESTful Operation',
    },
    subtype: [{ system: 'urn:ferry:audit-action', code: e.action }],
    action: actionCode(e.action),
    recorded: e.at.toISOString(),
    outcome: e.result === 'ok' ? '0' : e.result === 'failed' ? '8' : '4',
    outcomeDesc: [e.result, e.detail].filter(Boolean).join(': '),
    agent: [
      {
        type: {
          coding: [
            {
              system: 'http://terminology.hl7.org/CodeSystem/extra-security-role-type',
              code: human ? 'humanuser' : 'dataprocessor',
            },
          ],
        },
        who: { identifier: { system: 'urn:ferry:principal', value: e.principal } },
        requestor: true,
        ...(e.role ? { role: [{ text: e.role }] } : {}),
        ...(e.remote ? { network: { address: e.remote, type: /^[0-9.:a-f]+$/i.test(e.remote) ? '2' : '1' } } : {}),
      },
    ],
    source: {
      observer: { display: `Ferry on ${observer}` },
      type: [
        {
          system: 'http://terminology.hl7.org/CodeSystem/security-source-type',
          code: '4',
          display: 'Application Server',
        },
      ],
    },
    entity: [
      ...(e.target
        ? [
            {
              what: { display: e.target },
              type: {
                system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
                code: '2',
                display: 'System Object',
              },
            },
          ]
        : []),
      ...(e.messageIds ?? []).map((id) => ({
        what: { identifier: { system: 'urn:ferry:message', value: id } },
        type: {
          system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
          code: '2',
          display: 'System Object',
        },
      })),
    ],
  };
}

/**
 * Emits the audit trail as FHIR R4 AuditEvents: reads new entries from the store (the admin API's
 * and every `ferry` command's, on any instance sharing it), stores each as an
 * `application/fhir+json` message, and moves its cursor in the same commit. Route it like any
 * source -- to a FHIR server's AuditEvent endpoint or a SIEM over HTTP.
 */
@injectable()
export class AuditSource implements MessageSource {
  private readonly cfg: AuditSourceConfig;
  private loop?: Promise<void>;
  private readonly sleep = new WakeableSleep();
  private running = false;
  private emitted = 0;

  constructor(@inject(coreTokens.SourceContext) private readonly ctx: SourceContext<AuditSourceInput>) {
    this.cfg = withSchemaDefaults(auditSourceSchema, ctx.config);
  }

  async start(): Promise<void> {
    if (!this.ctx.auditEntries)
      throw configError(
        'SOURCE_AUDIT',
        `sources.${this.ctx.id}: this engine gives sources no access to the audit trail`,
      );
    if ((await this.ctx.getCheckpoint(CHECKPOINT)) === undefined) {
      // First start: from now on (the newest entry's seq), or from the start of the trail.
      const newest =
        this.cfg.from === 'now' ? ((await this.ctx.auditEntries({ newestFirst: true, limit: 1 }))[0]?.seq ?? 0) : 0;
      await this.ctx.setCheckpoint(CHECKPOINT, String(newest));
    }
    this.running = true;
    this.loop = this.run();
  }

  isReady(): boolean {
    return this.running;
  }

  stats(): object {
    return { emitted: this.emitted };
  }

  private async run(): Promise<void> {
    while (this.running && !this.ctx.signal.aborted) {
      let full = false;
      try {
        full = await this.pollOnce();
      } catch (e) {
        this.ctx.logger.warn('audit source: read failed; retrying', { source: this.ctx.id, ...errorFields(e) });
      }
      if (!full && this.running) await this.sleep.sleep(this.cfg.pollIntervalMs);
    }
  }

  /** One read: true when it found a full batch (more may be waiting). */
  async pollOnce(): Promise<boolean> {
    const after = Number((await this.ctx.getCheckpoint(CHECKPOINT)) ?? 0);
    const entries = await this.ctx.auditEntries!({ afterSeq: after, limit: this.cfg.batch || 100 });
    if (!entries.length) return false;
    const last = entries[entries.length - 1].seq;
    await this.ctx.submit(
      entries.map((e) => ({
        contentType: 'application/fhir+json',
        body: Buffer.from(JSON.stringify(toAuditEvent(e))),
        headers: {
          messageType: 'AuditEvent',
          controlId: `ferry-audit-${e.seq}`,
          sendingApplication: 'ferry-audit',
          orderingKey: 'ferry-audit',
        },
        receivedAt: new Date(),
      })),
      { checkpoint: { sourceId: this.ctx.id, key: CHECKPOINT, value: String(last) } },
    );
    this.emitted += entries.length;
    return entries.length >= (this.cfg.batch || 100);
  }

  async stop(): Promise<void> {
    this.running = false;
    this.sleep.wake();
    await this.loop;
  }
}
