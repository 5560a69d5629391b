import type { MessageStore } from '../../message-store';
import type { ConformanceContext } from './helpers';

/** Sink holds, the audit trail and API tokens. */
export function adminRecordsConformance(c: ConformanceContext): void {
  let store: MessageStore;
  beforeEach(() => {
    store = c.store();
  });

  describe('sink holds', () => {
    it('holds a sink until released or until a set time; holding again replaces the hold', async () => {
      expect(await store.sinkHolds()).toEqual([]);
      const before = Date.now();
      const h = await store.holdSink('fhir', { reason: 'EHR maintenance' });
      expect(h).toMatchObject({ sinkId: 'fhir', reason: 'EHR maintenance' });
      expect(h.since.getTime()).toBeGreaterThanOrEqual(before - 1000);
      const until = new Date(Date.now() + 60_000);
      await store.holdSink('archive', { until });
      expect(await store.sinkHolds()).toEqual([
        { sinkId: 'archive', since: expect.any(Date), until },
        { sinkId: 'fhir', since: h.since, reason: 'EHR maintenance' },
      ]);
      // Again: replaced (no reason now, an end in the past: over at once).
      await store.holdSink('archive', { until: new Date(Date.now() - 1) });
      expect((await store.sinkHolds()).map((x) => x.sinkId)).toEqual(['fhir']);
      expect(await store.releaseSink('fhir')).toBe(true);
      expect(await store.releaseSink('fhir')).toBe(false);
      expect(await store.sinkHolds()).toEqual([]);
      await expect(store.holdSink('', {})).rejects.toMatchObject({ kind: 'input' });
      await expect(store.holdSink('x', { until: new Date(NaN) })).rejects.toMatchObject({ kind: 'input' });
    });
  });

  describe('audit trail and API tokens', () => {
    it('appends audit entries, queries them by principal, action, message id, time and seq, and prunes only by its own retention', async () => {
      const t0 = Date.now();
      await store.appendAudit([
        {
          principal: 'token:abc (ops)',
          role: 'operator',
          remote: '127.0.0.1',
          action: 'replay',
          messageIds: ['M1', 'M2'],
          result: 'ok',
          detail: 'reprocess 2',
        },
        { principal: 'anonymous', remote: '10.0.0.9', action: 'auth.failed', result: 'denied', detail: 'wrong-secret' },
      ]);
      await store.appendAudit([
        { principal: 'cli:alice', action: 'prune', result: 'ok', at: new Date(t0 - 86_400_000) },
      ]);
      const all = await store.auditEntries();
      expect(all.map((e) => e.action)).toEqual(['replay', 'auth.failed', 'prune']);
      expect(all[0]).toMatchObject({
        principal: 'token:abc (ops)',
        role: 'operator',
        remote: '127.0.0.1',
        messageIds: ['M1', 'M2'],
        result: 'ok',
        detail: 'reprocess 2',
      });
      expect(all[0].at.getTime()).toBeGreaterThanOrEqual(t0 - 1000);
      expect(all[1].messageIds).toBeUndefined();
      expect((await store.auditEntries({ messageId: 'M2' })).map((e) => e.action)).toEqual(['replay']);
      expect((await store.auditEntries({ principal: 'anonymous' })).map((e) => e.detail)).toEqual(['wrong-secret']);
      expect((await store.auditEntries({ since: new Date(t0 - 1000) })).length).toBe(2);
      expect((await store.auditEntries({ newestFirst: true, limit: 1 }))[0].action).toBe('prune');
      expect((await store.auditEntries({ afterSeq: all[0].seq })).map((e) => e.action)).toEqual([
        'auth.failed',
        'prune',
      ]);
      await expect(store.appendAudit([{ principal: '', action: 'x', result: 'ok' }])).rejects.toMatchObject({
        kind: 'input',
      });
      // Message retention does not touch it; its own does.
      expect((await store.prune({ bodiesBefore: new Date() })).auditDeleted).toBeUndefined();
      expect(
        (await store.prune({ bodiesBefore: new Date(), auditBefore: new Date(t0 - 3_600_000) })).auditDeleted,
      ).toBe(1);
      expect((await store.auditEntries()).map((e) => e.action)).toEqual(['replay', 'auth.failed']);
    });

    it('keeps API tokens as given (hash only), lists them, revokes once', async () => {
      const expiresAt = new Date(Date.now() + 86_400_000);
      await store.createApiToken({
        id: 'tok1',
        name: 'ops',
        roles: ['operator'],
        hash: 'scrypt$x',
        createdAt: new Date(1000),
        createdBy: 'cli:alice',
        expiresAt,
      });
      await store.createApiToken({
        id: 'tok2',
        name: 'audit',
        roles: ['viewer', 'phi-reader'],
        hash: 'scrypt$y',
        createdAt: new Date(2000),
      });
      await expect(
        store.createApiToken({ id: 'tok1', name: 'again', roles: ['admin'], hash: 'h', createdAt: new Date() }),
      ).rejects.toMatchObject({ kind: 'input' });
      expect(await store.apiToken('tok1')).toEqual({
        id: 'tok1',
        name: 'ops',
        roles: ['operator'],
        hash: 'scrypt$x',
        createdAt: new Date(1000),
        createdBy: 'cli:alice',
        expiresAt,
      });
      expect((await store.apiTokens()).map((t) => t.id)).toEqual(['tok1', 'tok2']);
      expect(await store.apiToken('nope')).toBeUndefined();
      expect(await store.revokeApiToken('tok2', 'cli:bob')).toBe(true);
      expect(await store.revokeApiToken('tok2')).toBe(false);
      expect(await store.revokeApiToken('nope')).toBe(false);
      expect(await store.apiToken('tok2')).toMatchObject({ revokedBy: 'cli:bob', revokedAt: expect.any(Date) });
    });
  });
}
