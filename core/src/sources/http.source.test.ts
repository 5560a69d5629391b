import Database from 'better-sqlite3';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../logging/logger';
import { SqliteMessageStore } from '../store/sqlite.store';
import { hashToken, newTokenSecret } from '../admin/tokens';
import { adt, storeContext } from './__fixtures__/context';
import { HttpSource, type HttpSourceInput } from './http.source';

describe('HttpSource (real fastify listener, real SQLite store)', () => {
  let tmp: string;
  let store: SqliteMessageStore;
  let source: HttpSource;
  let url: string;

  const cfg = (over: Partial<HttpSourceInput> = {}): HttpSourceInput => ({
    host: '127.0.0.1',
    port: 0,
    path: '/in',
    token: '',
    bodyLimit: 64 * 1024,
    batch: true,
    ...over,
  });

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-http-source-'));
    store = new SqliteMessageStore({ path: path.join(tmp, 'ferry.db'), logger: silentLogger() });
    await store.open();
    source = new HttpSource(storeContext(store, cfg()));
    await source.start();
    url = source.url;
  });
  afterAll(async () => {
    await source.stop();
    if (store.isOpen()) await store.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const post = (body: string | Buffer, contentType?: string, headers: Record<string, string> = {}, to = url) =>
    fetch(to, {
      method: 'POST',
      headers: { ...(contentType ? { 'content-type': contentType } : {}), ...headers },
      body,
    });
  const json = async (r: Response) => (await r.json()) as any;

  it('is ready while listening and answers 202 { id } only once the message is stored', async () => {
    expect(source.isReady()).toBe(true);
    const r = await post(adt('H1'), 'application/hl7-v2');
    expect(r.status).toBe(202);
    const { id } = await json(r);
    const m = await store.getMessage(id, { body: true });
    expect(m).toMatchObject({ sourceId: 'src', contentType: 'application/hl7-v2', status: 'received' });
    expect(m!.headers.controlId).toBe('H1');
    expect(m!.body!.toString('latin1')).toBe(adt('H1'));
  });

  it('answers nothing while the commit is held: a second connection holds the SQLite write lock for 300 ms', async () => {
    const other = new Database(path.join(tmp, 'ferry.db'));
    let answered: number | undefined;
    let r: Promise<Response>;
    try {
      other.exec('BEGIN IMMEDIATE');
      r = post(adt('HOLD1'), 'application/hl7-v2');
      void r.then(() => (answered = Date.now()));
      await new Promise((res) => setTimeout(res, 300));
      // The insert is waiting for the lock: no answer yet, and nothing stored.
      expect(answered).toBeUndefined();
    } finally {
      other.exec('COMMIT');
      other.close();
    }
    const res = await r;
    expect(res.status).toBe(202);
    const { id } = await json(res);
    expect((await store.getMessage(id))!.headers.controlId).toBe('HOLD1');
  });

  it.each(['text/plain; charset=utf-8', 'x-application/hl7-v2+er7'])('accepts HL7 as %s', async (ct) => {
    const r = await post(adt(`CT-${ct.length}`), ct);
    expect(r.status).toBe(202);
    expect((await store.getMessage((await json(r)).id))!.contentType).toBe('application/hl7-v2');
  });

  it.each(['application/fhir+json', 'application/json'])('accepts a FHIR resource or Bundle as %s', async (ct) => {
    const r1 = await post(JSON.stringify({ resourceType: 'Patient', name: [{ family: 'X' }] }), ct);
    expect(r1.status).toBe(202);
    const r2 = await post(JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] }), ct);
    expect(r2.status).toBe(202);
    const m = await store.getMessage((await json(r2)).id);
    expect(m!.contentType).toBe('application/fhir+json');
    expect(m!.headers.messageType).toBe('Bundle');
  });

  it('an HL7 batch gives { ids }, one stored message each', async () => {
    const r = await post(`BHS|^~\\&\r${adt('BA1')}${adt('BA2')}BTS|2\r`, 'application/hl7-v2');
    expect(r.status).toBe(202);
    const { ids } = await json(r);
    expect(ids).toHaveLength(2);
    const ms = await Promise.all(ids.map((id: string) => store.getMessage(id)));
    expect(ms.map((m) => m!.headers.controlId)).toEqual(['BA1', 'BA2']);
  });

  it.each([
    ['empty body', '', 'application/hl7-v2', /empty/],
    ['not HL7', 'PID|1||123\r', 'application/hl7-v2', /does not start with an MSH segment/],
    ['bad JSON', '{"resourceType":"Patient", "name": [', 'application/fhir+json', /not valid JSON/],
    ['JSON without resourceType', '{"name":"x"}', 'application/json', /no resourceType/],
    ['JSON array', '[1,2]', 'application/json', /must be an object/],
    ['unknown content type', '<xml/>', 'application/xml', /unsupported content type "application\/xml"/],
    ['no content type', Buffer.from(adt('NC')), undefined, /no Content-Type/],
  ])('400 for %s, with the reason', async (_n, body, ct, re) => {
    const before = (await store.listMessages({})).length;
    const r = await post(body, ct);
    expect(r.status).toBe(400);
    const b = await json(r);
    expect(b.error).toMatch(re);
    expect((await store.listMessages({})).length).toBe(before);
  });

  it('413 above bodyLimit, 405 for GET on the path, 404 elsewhere', async () => {
    expect((await post(Buffer.alloc(70 * 1024, 'M'), 'application/hl7-v2')).status).toBe(413);
    expect((await fetch(url)).status).toBe(405);
    expect((await post(adt('X'), 'application/hl7-v2', {}, url.replace('/in', '/other'))).status).toBe(404);
  });

  it('an HL7 client asking for application/hl7-v2 gets an ACK: AA after the commit, AR for bad input', async () => {
    const r = await post(adt('ACK1'), 'application/hl7-v2', { accept: 'application/hl7-v2' });
    expect(r.status).toBe(202);
    expect(r.headers.get('content-type')).toMatch(/^application\/hl7-v2/);
    const [msh, msa] = (await r.text()).split('\r');
    const f = msh.split('|');
    expect(f.slice(2, 6)).toEqual(['RECVAPP', 'RECVFAC', 'SENDAPP', 'SENDFAC']);
    expect(f[8]).toBe('ACK^A01^ACK');
    expect(f[11]).toBe('2.5');
    expect(msa).toBe('MSA|AA|ACK1');
    expect((await store.listMessages({})).some((m) => m.headers.controlId === 'ACK1')).toBe(true);

    // junk before the MSH: refused, and the MSH is still readable, so the answer is an AR ACK
    const bad = await post(`XYZ|1\r${adt('ACK2')}`, 'application/hl7-v2', { accept: 'application/hl7-v2' });
    expect(bad.status).toBe(400);
    expect((await bad.text()).split('\r')[1]).toBe(
      'MSA|AR|ACK2|not an HL7 v2 message: it does not start with an MSH segment',
    );
    // no MSH at all: nothing to acknowledge in HL7, so the answer is JSON
    const none = await post('PID|1||X\r', 'application/hl7-v2', { accept: 'application/hl7-v2' });
    expect(none.status).toBe(400);
    expect(((await none.json()) as any).error).toMatch(/MSH/);
  });

  it('503 when the store cannot take the message, 202 again once it is back', async () => {
    await store.close();
    const r = await post(adt('DOWN1'), 'application/hl7-v2');
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('1');
    const ack = await post(adt('DOWN2'), 'application/hl7-v2', {
      accept: 'x-application/hl7-v2+er7, application/json;q=0.5',
    });
    expect(ack.status).toBe(503);
    expect((await ack.text()).split('\r')[1]).toBe('MSA|AE|DOWN2|not stored; retry later');
    await store.open();
    expect((await post(adt('DOWN1'), 'application/hl7-v2')).status).toBe(202);
  });
});

describe('HttpSource with hashed API tokens', () => {
  it('202 with a listed token (any scheme case), 401 otherwise, 429 after repeated failures from one address', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-http-source-tokens-'));
    const store = new SqliteMessageStore({ path: path.join(tmp, 'ferry.db'), logger: silentLogger() });
    await store.open();
    const lab = newTokenSecret();
    const src = new HttpSource(
      storeContext(store, {
        host: '127.0.0.1',
        port: 0,
        path: '/hl7',
        token: '',
        tokens: [{ id: lab.id, name: 'lab-system', hash: await hashToken(lab.secret) }],
        failedAuth: { maxFailures: 3, windowMs: 60_000 },
        bodyLimit: 1024 * 1024,
        batch: true,
      }),
    );
    await src.start();
    try {
      const send = (auth?: string) =>
        fetch(src.url, {
          method: 'POST',
          headers: { 'content-type': 'application/hl7-v2', ...(auth ? { authorization: auth } : {}) },
          body: adt(`T${Math.random()}`),
        });
      expect((await send(`Bearer ${lab.secret}`)).status).toBe(202);
      expect((await send(`bearer ${lab.secret}`)).status).toBe(202);
      const no = await send();
      expect(no.status).toBe(401);
      expect(no.headers.get('www-authenticate')).toBe('Bearer');
      expect((await send('Bearer ferry_abcd_nope')).status).toBe(401);
      expect((await send(`Bearer ${lab.secret}x`)).status).toBe(401);
      const blocked = await send(`Bearer ${lab.secret}`);
      expect(blocked.status).toBe(429);
      expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(src.stats()).toMatchObject({ authFailures: 3, authRateLimited: 1 });
    } finally {
      await src.stop();
      await store.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('HttpSource with a bearer token', () => {
  it('401 without the token, 202 with it; not ready after stop', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-http-source-auth-'));
    const store = new SqliteMessageStore({ path: path.join(tmp, 'ferry.db'), logger: silentLogger() });
    await store.open();
    const src = new HttpSource(
      storeContext(store, {
        host: '127.0.0.1',
        port: 0,
        path: '/hl7',
        token: 'tkn',
        bodyLimit: 1024 * 1024,
        batch: true,
      }),
    );
    await src.start();
    try {
      const send = (auth?: string) =>
        fetch(src.url, {
          method: 'POST',
          headers: { 'content-type': 'application/hl7-v2', ...(auth ? { authorization: auth } : {}) },
          body: adt('A1'),
        });
      expect((await send()).status).toBe(401);
      expect((await send('Bearer nope')).status).toBe(401);
      expect((await send('Bearer tkn')).status).toBe(202);
      expect((await send('bearer tkn')).status).toBe(202);
      expect((await send('BEARER  tkn')).status).toBe(202);
      expect((await send('Basic tkn')).status).toBe(401);
      expect((await send('tkn')).status).toBe(401);
    } finally {
      await src.stop();
      await store.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    expect(src.isReady()).toBe(false);
  });
});
