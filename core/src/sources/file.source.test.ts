import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../logging/logger';
import { SqliteMessageStore } from '../store/sqlite.store';
import { adt, storeContext } from './__fixtures__/context';
import { FileSource, type FileSourceConfig } from './file.source';

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await wait(20);
  }
}

describe('FileSource (real directory, real SQLite store)', () => {
  let tmp: string;
  let inbox: string;
  let store: SqliteMessageStore;
  let source: FileSource | undefined;

  beforeEach(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-file-source-'));
    inbox = path.join(tmp, 'in');
    store = new SqliteMessageStore({ path: path.join(tmp, 'ferry.db'), logger: silentLogger() });
    await store.open();
  });
  afterEach(async () => {
    await source?.stop();
    source = undefined;
    if (store.isOpen()) await store.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const cfg = (over: Partial<FileSourceConfig> = {}): FileSourceConfig => ({
    dir: inbox,
    contentType: '',
    pattern: '*',
    pollIntervalMs: 50,
    batch: true,
    stableMs: 60,
    doneDir: 'done',
    errorDir: 'error',
    maxFileBytes: 1024 * 1024,
    keepDoneDays: 0,
    ...over,
  });
  const startSource = async (
    over: Partial<FileSourceConfig> = {},
    ctxOver: Partial<ReturnType<typeof storeContext<FileSourceConfig>>> = {},
  ) => {
    const ctx = { ...storeContext<FileSourceConfig>(store, cfg(over)), ...ctxOver };
    source = new FileSource(ctx);
    await source.start();
    return source;
  };
  const stored = () => store.listMessages({});
  const ls = (d: string) => (fs.existsSync(d) ? fs.readdirSync(d).sort() : []);

  it('stores one HL7 file, and moves it to done/ only after the store commit', async () => {
    let presentAtSubmit: boolean | undefined;
    const base = storeContext(store, cfg());
    await startSource(
      {},
      {
        submit: async (m, o) => {
          presentAtSubmit = fs.existsSync(path.join(inbox, 'a01.hl7'));
          const r = await base.submit(m, o);
          expect(fs.existsSync(path.join(inbox, 'done', 'a01.hl7'))).toBe(false);
          return r;
        },
      },
    );
    fs.writeFileSync(path.join(inbox, 'a01.hl7'), adt('C1'));
    await until(() => ls(path.join(inbox, 'done')).includes('a01.hl7'));
    expect(presentAtSubmit).toBe(true);
    const msgs = await stored();
    expect(msgs).toHaveLength(1);
    expect(msgs[0]).toMatchObject({ sourceId: 'src', contentType: 'application/hl7-v2', status: 'received' });
    expect(msgs[0].headers).toMatchObject({ messageType: 'ADT^A01', controlId: 'C1' });
    const full = await store.getMessage(msgs[0].id, { body: true });
    expect(full!.body!.toString('latin1')).toBe(adt('C1'));
    expect(ls(inbox)).toEqual(['done', 'error']);
  });

  it('a batch file becomes one message per MSH; FHIR JSON files get application/fhir+json', async () => {
    await startSource();
    fs.writeFileSync(
      path.join(inbox, 'batch.hl7'),
      `FHS|^~\\&\rBHS|^~\\&\r${adt('B1')}${adt('B2')}${adt('B3')}BTS|3\rFTS|1\r`,
    );
    fs.writeFileSync(path.join(inbox, 'patient.json'), JSON.stringify({ resourceType: 'Patient', id: 'p1' }));
    await until(() => ls(path.join(inbox, 'done')).length === 2);
    const msgs = await stored();
    expect(
      msgs
        .filter((m) => m.contentType === 'application/hl7-v2')
        .map((m) => m.headers.controlId)
        .sort(),
    ).toEqual(['B1', 'B2', 'B3']);
    expect(msgs.filter((m) => m.contentType === 'application/fhir+json')).toHaveLength(1);
  });

  it('batch: false keeps the whole file as one message', async () => {
    await startSource({ batch: false });
    fs.writeFileSync(path.join(inbox, 'two.hl7'), adt('X1') + adt('X2'));
    await until(() => ls(path.join(inbox, 'done')).length === 1);
    expect(await stored()).toHaveLength(1);
  });

  it('bad input goes to error/ with a .reason file, and nothing is stored', async () => {
    await startSource();
    fs.writeFileSync(path.join(inbox, 'garbage.hl7'), 'PID|1||123\r');
    fs.writeFileSync(path.join(inbox, 'broken.json'), '{"resourceType": "Patient", ');
    fs.writeFileSync(path.join(inbox, 'empty.hl7'), '');
    fs.writeFileSync(path.join(inbox, 'notes.doc'), 'MSH|whatever');
    const err = path.join(inbox, 'error');
    await until(() => ls(err).length === 8);
    expect(ls(err)).toEqual(
      ['broken.json', 'empty.hl7', 'garbage.hl7', 'notes.doc'].flatMap((n) => [n, `${n}.reason`]).sort(),
    );
    expect(fs.readFileSync(path.join(err, 'garbage.hl7.reason'), 'utf8')).toMatch(/does not start with an MSH segment/);
    expect(fs.readFileSync(path.join(err, 'broken.json.reason'), 'utf8')).toMatch(/not valid JSON/);
    expect(fs.readFileSync(path.join(err, 'empty.hl7.reason'), 'utf8')).toMatch(/empty/);
    expect(fs.readFileSync(path.join(err, 'notes.doc.reason'), 'utf8')).toMatch(/no content type for extension ".doc"/);
    expect(await stored()).toHaveLength(0);
  });

  it('a file still being written is not read half-way; temp and dot files are ignored until renamed', async () => {
    await startSource({ stableMs: 400 });
    const f = path.join(inbox, 'slow.hl7');
    const msg = adt('S1', 'MRN9');
    fs.writeFileSync(f, msg.slice(0, 30));
    await wait(100);
    fs.appendFileSync(f, msg.slice(30, 60));
    await wait(100);
    fs.appendFileSync(f, msg.slice(60));
    fs.writeFileSync(path.join(inbox, '.hidden.hl7'), adt('H1'));
    fs.writeFileSync(path.join(inbox, 'upload.hl7.part'), adt('P1'));
    await until(() => ls(path.join(inbox, 'done')).includes('slow.hl7'));
    const msgs = await stored();
    expect(msgs).toHaveLength(1);
    expect((await store.getMessage(msgs[0].id, { body: true }))!.body!.toString('latin1')).toBe(msg);
    fs.renameSync(path.join(inbox, 'upload.hl7.part'), path.join(inbox, 'upload.hl7'));
    await until(() => !ls(inbox).includes('upload.hl7'));
    expect(ls(path.join(inbox, 'done'))).toContain('upload.hl7');
    expect(await stored()).toHaveLength(2);
    expect(ls(inbox)).toEqual(['.hidden.hl7', 'done', 'error']);
  });

  it('when the store is down the file stays and is stored once the store is back', async () => {
    await store.close();
    await startSource({ pattern: '*.hl7' });
    fs.writeFileSync(path.join(inbox, 'later.hl7'), adt('L1'));
    await until(() => source!.counts.transientFailures > 0);
    expect(ls(inbox)).toContain('later.hl7');
    expect(ls(path.join(inbox, 'error'))).toEqual([]);
    await store.open();
    await until(() => ls(path.join(inbox, 'done')).includes('later.hl7'), 5000);
    expect(await stored()).toHaveLength(1);
  });

  it('a name already in done/ is not overwritten; pattern filters names', async () => {
    await startSource({ pattern: '*.{hl7,er7}' });
    fs.writeFileSync(path.join(inbox, 'same.hl7'), adt('D1'));
    await until(() => ls(path.join(inbox, 'done')).length === 1);
    fs.writeFileSync(path.join(inbox, 'same.hl7'), adt('D2'));
    fs.writeFileSync(path.join(inbox, 'other.er7'), adt('D3'));
    fs.writeFileSync(path.join(inbox, 'skip.json'), '{"resourceType":"Patient"}');
    await until(() => ls(path.join(inbox, 'done')).length === 3);
    expect(ls(path.join(inbox, 'done'))).toEqual(['other.er7', 'same.hl7', 'same.hl7.1']);
    expect(ls(inbox)).toContain('skip.json');
    expect((await stored()).map((m) => m.headers.controlId).sort()).toEqual(['D1', 'D2', 'D3']);
  });

  it('keepDoneDays prunes old files from done/ and never touches error/', async () => {
    const done = path.join(inbox, 'done');
    const err = path.join(inbox, 'error');
    fs.mkdirSync(done, { recursive: true });
    fs.mkdirSync(err, { recursive: true });
    const old = new Date(Date.now() - 10 * 86_400_000);
    for (const [d, n] of [
      [done, 'old.hl7'],
      [err, 'old-bad.hl7'],
    ] as const) {
      fs.writeFileSync(path.join(d, n), 'x');
      fs.utimesSync(path.join(d, n), old, old);
    }
    await startSource({ keepDoneDays: 2 });
    // a new file with an old mtime: retention counts from when it was stored
    fs.writeFileSync(path.join(inbox, 'fresh.hl7'), adt('K1'));
    fs.utimesSync(path.join(inbox, 'fresh.hl7'), old, old);
    await until(() => ls(done).includes('fresh.hl7'));
    expect(ls(done)).toEqual(['fresh.hl7']);
    expect(ls(err)).toEqual(['old-bad.hl7']);
  });
});
