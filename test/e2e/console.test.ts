/**
 * The Ferry Console in a real headless Chromium (playwright-core + Debian's chromium) against a
 * real engine: HL7 v2 messages sent over MLLP, the SQLite store, the admin server with role tokens.
 * A phi-reader finds a message by MRN, reads PID-5 in the tree and the Patient in the Bundle, and
 * replays it; an operator holds a sink and sees the dashboard show it; a viewer's network
 * responses never hold the MRN or the name. Screenshots go to a temp folder (printed), never the repo.
 *
 * Skips (visibly) without /usr/bin/chromium; with CI=true its absence fails the suite.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Engine, silentLogger } from '@ferry/core';
import { MllpDeframer, readAck, type MllpSource } from '@ferry/plugin-hl7v2-mllp';
import { chromium, type Browser, type Page } from 'playwright-core';
import { roleTokens, type RoleTokens } from '../support';
import type { Role } from '@ferry/core';

// The functions given to page.waitForFunction / page.evaluate run in the page (the DOM's globals).
declare const document: any, sessionStorage: any;

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  if (process.env.CI === 'true')
    throw new Error(`${CHROMIUM} is missing: CI must install it (apt-get install -y chromium; see .ci/run)`);
  console.warn(`SKIPPED: the console end-to-end suite needs ${CHROMIUM} (apt-get install -y chromium)`);
}
const maybe = haveChromium ? describe : describe.skip;

const MRN = 'MRNC7731';
const FAMILY = 'QUENTINSON';

function adt(ctl: string, mrn: string, family: string): string {
  return (
    [
      `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^A01^ADT_A01|${ctl}|P|2.5.1`,
      'EVN|A01|20240101120000',
      `PID|1||${mrn}^^^HOSP^MR||${family}^JANE\\T\\ANN^Q||19800101|F`,
      'PV1|1|I|WARD1^101^A',
    ].join('\r') + '\r'
  );
}

function oru(ctl: string): string {
  return (
    [
      `MSH|^~\\&|LABAPP|LABFAC|FERRY|HOSP|20240101130000||ORU^R01^ORU_R01|${ctl}|P|2.5.1`,
      'PID|1||MRNLAB1^^^HOSP^MR||LABSON^JOE||19700101|M',
      'OBR|1|ORD1|FIL1|8867-4^Heart rate^LN|||20240101120000',
      'OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F',
    ].join('\r') + '\r'
  );
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Sends each message on one MLLP connection and waits for its ACK. */
async function sendMllp(port: number, msgs: string[]): Promise<string[]> {
  const s = net.connect(port, '127.0.0.1');
  await new Promise<void>((res, rej) => s.once('connect', res).once('error', rej));
  const d = new MllpDeframer({ maxMessageSize: 1 << 20 });
  const acks: string[] = [];
  try {
    for (const m of msgs) {
      const got = new Promise<string>((res, rej) => {
        const on = (c: Buffer) => {
          for (const ev of d.push(c))
            if (ev.kind === 'frame') {
              s.off('data', on);
              res(ev.payload.toString('latin1'));
            }
        };
        s.on('data', on);
        setTimeout(() => rej(new Error('no ACK within 5 s')), 5000).unref();
      });
      s.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(m, 'latin1'), Buffer.from([0x1c, 0x0d])]));
      acks.push(await got);
    }
  } finally {
    s.destroy();
  }
  return acks;
}

maybe('Ferry Console in headless Chromium', () => {
  let engine: Engine;
  let roles: RoleTokens;
  let browser: Browser;
  let base: string;
  let mllpPort: number;
  const shots = mkdtempSync(path.join(os.tmpdir(), 'ferry-console-shots-'));

  beforeAll(async () => {
    roles = await roleTokens();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-console-'));
    engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        processing: { pollIntervalMs: 50 },
        sources: { feed: { type: 'mllp', host: '127.0.0.1', port: 0 } },
        sinks: {
          archive: { type: 'file', dir: path.join(dir, 'archive'), format: 'ndjson' },
          ehr: { type: 'file', dir: path.join(dir, 'ehr'), format: 'ndjson' },
          // Nothing listens there: its deliveries die at the first attempt (the retry-dead action's material).
          lab: {
            type: 'http',
            url: `http://127.0.0.1:${await closedPort()}/in`,
            retry: { maxAttempts: 1 },
            circuitBreaker: { failureThreshold: 0 },
          },
        },
        routes: [
          { id: 'adt', from: ['feed'], when: { messageType: ['ADT^*'] }, to: ['archive', 'ehr'] },
          { id: 'lab', from: ['feed'], when: { messageType: ['ORU^*'] }, to: ['lab'] },
          // Matches every ADT and filters each out in its step: the routes page's filtered count.
          {
            id: 'vip',
            from: ['feed'],
            when: { messageType: ['ADT^*'] },
            steps: [{ filter: "Bundle.entry.resource.ofType(Patient).name.family = 'NOBODY'" }],
            to: ['archive'],
          },
        ],
        admin: { enabled: true, host: '127.0.0.1', port: 0, auth: { tokens: roles.tokens } },
      },
    });
    await engine.start();
    base = engine.adminUrl!;
    mllpPort = engine.source<MllpSource>('feed')!.address()!.port;
    const acks = await sendMllp(mllpPort, [
      adt('CONS1', MRN, FAMILY),
      adt('CONS2', 'MRNOTHER1', 'OTHERSON'),
      oru('LAB1'),
    ]);
    expect(acks.map((a) => readAck(a)?.code)).toEqual(['AA', 'AA', 'AA']);
    await engine.waitForIdle();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    console.log(`console screenshots: ${shots}`);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
  });

  async function signedIn(role: Role): Promise<Page> {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => {
      throw e;
    });
    await page.goto(`${base}/console`);
    await page.fill('#token', roles.secret[role]);
    await page.click('#signin');
    await page.waitForSelector('#view-dashboard:not([hidden])');
    await page.waitForFunction((name) => document.getElementById('who')!.textContent!.includes(name), `test-${role}`);
    return page;
  }

  it('a wrong token is refused with a message; the token is kept in sessionStorage, never a cookie', async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${base}/console`);
    await page.fill('#token', 'ferry_nope_nope');
    await page.click('#signin');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toContain('not accepted');
    expect(await page.isVisible('#view-signin')).toBe(true);
    await page.fill('#token', roles.secret.viewer);
    await page.click('#signin');
    await page.waitForSelector('#view-dashboard:not([hidden])');
    expect(await ctx.cookies()).toEqual([]);
    expect(await page.evaluate(() => Object.keys(sessionStorage))).toEqual(['ferry.console.token']);
    await ctx.close();
  });

  it('phi-reader: finds the message by MRN, reads PID-5 in the tree and the Patient in the Bundle, replays it after a dry run', async () => {
    const page = await signedIn('phi-reader');
    await page.click('#nav-messages');
    await page.waitForSelector('#view-messages:not([hidden])');
    await page.fill('#f-patient', MRN);
    await page.click('#search');
    await page.waitForFunction(
      () =>
        document.querySelectorAll('#messages tbody tr').length === 1 &&
        document.querySelector('#messages tbody')!.textContent!.includes('CONS1'),
    );
    await page.screenshot({ path: path.join(shots, 'messages.png') });
    await page.click('#messages tbody a');
    await page.waitForSelector('#view-detail:not([hidden]) [data-pos="PID-5"]');
    const pid5 = await page.textContent('[data-pos="PID-5"]');
    expect(pid5).toContain('Patient Name');
    expect(pid5).toContain(`${FAMILY}^JANE&ANN^Q`); // escapes decoded (\T\ is &)
    expect(await page.textContent('[data-pos="PID-5.1"]')).toContain(FAMILY);
    expect(await page.textContent('[data-pos="PID-5.2"]')).toContain('JANE&ANN');
    // Names and data types from the plugin's definitions (the v2-to-FHIR IG tables), components too.
    expect(pid5).toContain('Patient Name (XPN):');
    expect(await page.getAttribute('[data-pos="PID-5"]', 'data-type')).toBe('XPN');
    expect(await page.textContent('[data-pos="PID-5.1"]')).toContain('Family Name (FN):');
    expect(await page.textContent('[data-pos="PID-3"]')).toContain('Patient Identifier List (CX):');
    expect(await page.textContent('[data-pos="PV1-3"]')).toContain('Assigned Patient Location (PL):');
    const entry = JSON.parse((await page.textContent('#d-bundle .entry[data-resource-type="Patient"] pre'))!) as {
      fullUrl: string;
      resource: { resourceType: string; name?: { family?: string }[] };
    };
    expect(entry.resource.name?.[0]?.family).toBe(FAMILY);
    // A reference to the Patient is a link: it opens and scrolls to the Patient's entry.
    const ref = page
      .locator(`#d-bundle .entry:not([data-resource-type="Patient"]) a.ref[data-target]`)
      .filter({ hasText: entry.fullUrl })
      .first();
    await ref.click();
    await page.waitForSelector('#d-bundle .entry.target[data-resource-type="Patient"]');
    expect(await page.locator('#d-bundle .entry.target[data-resource-type="Patient"] > summary').isVisible()).toBe(
      true,
    );
    // scrolled to it: its top at the top of the viewport
    expect(
      Math.abs(
        await page.evaluate(() =>
          Math.round(document.querySelector('#d-bundle .entry.target > summary')!.getBoundingClientRect().top),
        ),
      ),
    ).toBeLessThanOrEqual(1);
    expect(await page.textContent('#d-deliveries tbody')).toMatch(/archive[\s\S]*ehr|ehr[\s\S]*archive/);
    // The ACK the MLLP source sent for it, whole.
    const ack = (await page.textContent('#d-ack'))!;
    expect(ack).toMatch(/^MSH\|\^~\\&\|FERRY\|HOSP\|SENDAPP\|SENDFAC\|/);
    expect(ack).toContain('MSA|AA|CONS1');
    await page.screenshot({ path: path.join(shots, 'detail.png'), fullPage: true });

    const id = (await page.textContent('#d-id'))!;
    await page.click('#replay');
    await page.waitForSelector('#replay-confirm:not([hidden])');
    expect(await page.textContent('#replay-count')).toBe('Would replay 1 message.');
    await page.click('#replay-go');
    await page.waitForFunction(() => document.getElementById('replay-result')!.textContent === 'Replayed 1.');
    const trail = await engine.store.auditEntries({ messageId: id });
    expect(trail.map((e) => e.action)).toEqual(
      expect.arrayContaining(['message.search', 'message.body.read', 'replay']),
    );
    expect(trail.find((e) => e.action === 'replay')?.principal).toMatch(/\(test-phi-reader\)$/);
    await engine.waitForIdle();
    // The replayed message is delivered again: the detail shows its new events.
    await page.waitForFunction(
      () => /reprocess|replay/i.test(document.getElementById('d-events')!.textContent!),
      undefined,
      { timeout: 10_000 },
    );
    await page.context().close();
  }, 90_000);

  it('operator: holds a sink with an end time and a reason, and the dashboard shows it; then releases it', async () => {
    const page = await signedIn('operator');
    await page.waitForSelector('#sinks tbody tr[data-key="ehr"]');
    await page.click('#sinks tbody tr[data-key="ehr"] button');
    await page.waitForSelector('#hold-form:not([hidden])');
    await page.fill('#hold-minutes', '30');
    await page.fill('#hold-reason', 'EHR maintenance');
    await page.click('#hold-confirm');
    await page.waitForFunction(() =>
      /HELD until .+ — EHR maintenance/.test(document.querySelector('#sinks tr[data-key="ehr"]')!.textContent!),
    );
    expect(await page.textContent('#sinks tr[data-key="archive"]')).not.toContain('HELD');
    expect(await engine.store.auditEntries({ action: 'sink.hold' })).toEqual([
      expect.objectContaining({ target: 'ehr', principal: expect.stringMatching(/\(test-operator\)$/), result: 'ok' }),
    ]);
    // A message arriving while it is held waits in its backlog, shown with its time.
    expect((await sendMllp(mllpPort, [adt('CONS3', 'MRNHELD1', 'HELDSON')])).map((a) => readAck(a)?.code)).toEqual([
      'AA',
    ]);
    await page.waitForFunction(
      () => /^1 since /.test(document.querySelector('#sinks tr[data-key="ehr"]')!.cells[3].textContent!),
      undefined,
      { timeout: 15_000 },
    );
    // Operators see no PHI areas.
    expect(await page.isVisible('#f-patient')).toBe(false);
    await page.screenshot({ path: path.join(shots, 'dashboard-held.png') });
    page.once('dialog', (d) => void d.accept());
    await page.click('#sinks tbody tr[data-key="ehr"] button');
    await page.waitForFunction(
      () => !document.querySelector('#sinks tr[data-key="ehr"]')!.textContent!.includes('HELD'),
    );
    await page.waitForFunction(
      () => document.querySelector('#sinks tr[data-key="ehr"]')!.cells[3].textContent === '0',
      undefined,
      { timeout: 15_000 },
    );
    await page.context().close();
  }, 90_000);

  it('operator: selects messages in the browser and replays them, retries a dead delivery, replays all matching a filter -- each after its dry-run count, each audited', async () => {
    const page = await signedIn('operator');
    await page.click('#nav-messages');
    await page.waitForSelector('#view-messages:not([hidden])');
    // The lab message's delivery died (nothing listens at the lab sink).
    await page.fill('#f-type', 'ORU^*');
    await page.click('#search');
    await page.waitForFunction(
      () =>
        document.querySelectorAll('#messages tbody tr').length === 1 &&
        document.querySelector('#messages tbody')!.textContent!.includes('LAB1'),
    );
    for (
      let i = 0;
      i < 50 && (await engine.store.listMessages({ controlId: 'LAB1', deliveryStatus: ['dead'] })).length === 0;
      i++
    )
      await new Promise((r) => setTimeout(r, 200));
    expect(await page.isDisabled('#bulk-retry')).toBe(true);
    await page.check('#messages tbody input[type=checkbox]');
    expect(await page.textContent('#sel-count')).toBe('1 selected');
    await page.click('#bulk-retry');
    await page.waitForSelector('#bulk-confirm:not([hidden])');
    expect(await page.textContent('#bulk-count')).toBe('Would retry 1 dead delivery.');
    await page.click('#bulk-go');
    await page.waitForFunction(
      () => document.getElementById('bulk-result')!.textContent === 'Retried 1 dead delivery.',
    );
    const retry = (await engine.store.auditEntries({ action: 'replay' })).find((e) =>
      /^redeliver 1 deliveries/.test(e.detail ?? ''),
    );
    expect(retry).toMatchObject({ principal: expect.stringMatching(/\(test-operator\)$/), result: 'ok' });
    // It dies again; the message's detail retries it too.
    for (
      let i = 0;
      i < 50 && (await engine.store.listMessages({ controlId: 'LAB1', deliveryStatus: ['dead'] })).length === 0;
      i++
    )
      await new Promise((r) => setTimeout(r, 200));
    await page.click('#messages tbody a');
    await page.waitForSelector('#view-detail:not([hidden]) #d-meta tr');
    await page.click('#retry-dead');
    await page.waitForSelector('#replay-confirm:not([hidden])');
    expect(await page.textContent('#replay-count')).toBe('Would retry 1 dead delivery.');
    await page.click('#replay-go');
    await page.waitForFunction(
      () => document.getElementById('replay-result')!.textContent === 'Retried 1 dead delivery.',
    );
    await page.goBack();
    await page.waitForSelector('#view-messages:not([hidden])');

    // Two ADT messages selected (the select-all box tried first), replayed after the count.
    await page.fill('#f-type', 'ADT^A01');
    await page.click('#search');
    await page.waitForFunction(() => document.querySelectorAll('#messages tbody tr').length >= 2);
    const rows = await page.$$eval('#messages tbody tr', (trs: unknown[]) => trs.length);
    await page.check('#sel-all');
    expect(await page.textContent('#sel-count')).toBe(`${rows} selected`);
    await page.uncheck('#sel-all');
    expect(await page.textContent('#sel-count')).toBe('0 selected');
    await page.check('#messages tbody tr:has-text("CONS1") input[type=checkbox]');
    await page.check('#messages tbody tr:has-text("CONS2") input[type=checkbox]');
    expect(await page.textContent('#sel-count')).toBe('2 selected');
    await page.click('#bulk-replay');
    await page.waitForSelector('#bulk-confirm:not([hidden])');
    expect(await page.textContent('#bulk-count')).toBe('Would replay 2 messages.');
    await page.screenshot({ path: path.join(shots, 'messages-selected.png') });
    await page.click('#bulk-go');
    await page.waitForFunction(() => document.getElementById('bulk-result')!.textContent === 'Replayed 2 messages.');
    const ids = (await engine.store.listMessages({ messageType: 'ADT^A01', controlId: undefined }))
      .filter((m) => m.headers.controlId === 'CONS1' || m.headers.controlId === 'CONS2')
      .map((m) => m.id);
    const replayed = (await engine.store.auditEntries({ action: 'replay' })).find((e) => e.detail === 'reprocess 2');
    expect([...(replayed?.messageIds ?? [])].sort()).toEqual(ids.sort());
    await engine.waitForIdle();

    // All matching the filter (control id CONS2): the dry run counts the filter's messages, no selection needed.
    await page.fill('#f-type', '');
    await page.fill('#f-control', 'CONS2');
    await page.click('#search');
    await page.waitForFunction(() => document.querySelectorAll('#messages tbody tr').length === 1);
    expect(await page.textContent('#sel-count')).toBe('0 selected');
    await page.click('#bulk-all');
    await page.waitForSelector('#bulk-confirm:not([hidden])');
    expect(await page.textContent('#bulk-count')).toBe('Would replay 1 message.');
    await page.click('#bulk-cancel');
    expect(await page.isVisible('#bulk-confirm')).toBe(false);
    // Dry runs are audited too (replay.dry-run); the cancelled one changed nothing.
    expect((await engine.store.auditEntries({ action: 'replay.dry-run' })).length).toBeGreaterThanOrEqual(3);
    await engine.waitForIdle();
    await page.context().close();
  }, 90_000);

  it('operator: the routes page lists the routes with their counts; the route tester shows which routes take a pasted message and what each sink would receive, storing nothing', async () => {
    const page = await signedIn('operator');
    await page.click('#nav-routes');
    await page.waitForSelector('#view-routes:not([hidden]) #routes tr[data-key="adt"]');
    const adtRow = await page.$$eval('#routes tr[data-key="adt"] td', (tds: { textContent: string }[]) =>
      tds.map((t) => t.textContent),
    );
    expect(adtRow.slice(0, 5)).toEqual(['adt', 'feed', 'type ADT^*', '—', 'archive, ehr (strict order)']);
    expect(Number(adtRow[5])).toBeGreaterThanOrEqual(2);
    expect(adtRow[6]).toBe('0');
    const vipRow = await page.$$eval('#routes tr[data-key="vip"] td', (tds: { textContent: string }[]) =>
      tds.map((t) => t.textContent),
    );
    expect(vipRow[3]).toBe("filter: Bundle.entry.resource.ofType(Patient).name.family = 'NOBODY'");
    expect(Number(vipRow[6])).toBeGreaterThanOrEqual(2);
    expect(vipRow[6]).toBe(vipRow[5]); // every match filtered
    const before = (await engine.store.stats()).messages;
    // Pasted with LF line ends (as a text area gives them): the server makes them CR.
    await page.fill('#t-message', adt('TEST1', 'MRNTEST9', 'TESTERSON').replace(/\r/g, '\n'));
    await page.click('#t-run');
    await page.waitForSelector('#t-summary');
    expect(await page.textContent('#t-summary')).toBe(
      'application/hl7-v2, type ADT^A01, on source feed: delivered to archive, ehr.',
    );
    expect(await page.textContent('.route-result[data-route="adt"] .verdict')).toBe('matches');
    expect(await page.textContent('.route-result[data-route="lab"] .verdict')).toMatch(
      /^no match — when.messageType: /,
    );
    expect(await page.textContent('.route-result[data-route="vip"] li')).toMatch(/^filter.*: filtered$/);
    expect(await page.$('.route-result[data-route="vip"] details')).toBeNull();
    const bundle = JSON.parse(
      (await page.textContent('.route-result[data-route="adt"] details[data-sink="ehr"] pre'))!,
    ) as { entry: { resource: { resourceType: string; name?: { family?: string }[] } }[] };
    expect(bundle.entry.map((e) => e.resource).find((r) => r.resourceType === 'Patient')?.name?.[0]?.family).toBe(
      'TESTERSON',
    );
    await page.screenshot({ path: path.join(shots, 'routes-tester.png'), fullPage: true });
    // Not a message to convert: the reason, nothing else.
    await page.fill('#t-message', 'hello');
    await page.click('#t-run');
    await page.waitForFunction(() =>
      /^Not tested: 400: contentType: cannot tell/.test(document.getElementById('t-result')!.textContent!),
    );
    expect((await engine.store.stats()).messages).toEqual(before);
    expect((await engine.store.listMessages({ controlId: 'TEST1' })).length).toBe(0);
    expect(await engine.store.auditEntries({ action: 'route.test' })).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          result: 'ok',
          principal: expect.stringMatching(/\(test-operator\)$/),
          detail: 'application/hl7-v2 ADT^A01: matched adt,vip',
        }),
      ]),
    );
    await page.context().close();
  }, 90_000);

  it('viewer: the dashboard, the message list and a message detail, and no network response holds the MRN or the name', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const bodies: Promise<{ url: string; text: string }>[] = [];
    const step = (s: string) => process.env.FERRY_CONSOLE_DEBUG && console.log(s);
    const failed: string[] = [];
    page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.status() >= 400) failed.push(`${r.url()} ${r.status()}`);
      bodies.push(
        r.text().then(
          (text) => ({ url: r.url(), text }),
          () => ({ url: r.url(), text: '' }),
        ),
      );
    });
    await page.goto(`${base}/console`);
    await page.fill('#token', roles.secret.viewer);
    await page.click('#signin');
    await page.waitForSelector('#view-dashboard:not([hidden])');
    // Two polls: a rate and a sparkline point.
    step('dashboard');
    await page.waitForFunction(
      () => document.querySelector('#spark-received polyline')?.getAttribute('points')?.includes(' ') ?? false,
      undefined,
      { timeout: 15_000 },
    );
    step('sparkline');
    // The last hour from the store, per minute: both messages sent (CONS1, CONS2) in the totals and the source's row.
    await page.waitForFunction(
      () => Number(document.getElementById('spark-received')!.getAttribute('data-total')) >= 2,
      undefined,
      { timeout: 15_000 },
    );
    expect(Number(await page.getAttribute('#spark-delivered', 'data-total'))).toBeGreaterThanOrEqual(4);
    await page.waitForSelector('#sources tr[data-key="feed"] svg[data-total]');
    expect(Number(await page.getAttribute('#sources tr[data-key="feed"] svg', 'data-total'))).toBeGreaterThanOrEqual(2);
    // Messages / s since the previous poll: after the second poll.
    await page.waitForFunction(
      () => /^\d+\.\d$/.test(document.querySelector('#sources tr[data-key="feed"]')!.cells[3].textContent!),
      undefined,
      { timeout: 15_000 },
    );
    const feed = await page.$$eval('#sources tr[data-key="feed"] td', (tds: { textContent: string }[]) =>
      tds.map((t) => t.textContent),
    );
    expect(feed[2]).toBe('ready');
    expect(
      Date.parse((await page.getAttribute('#sources tr[data-key="feed"] td:nth-child(6) span', 'title')) ?? ''),
    ).toBeGreaterThan(Date.now() - 3_600_000);
    expect(feed[6]).toBe('0');
    await page.screenshot({ path: path.join(shots, 'dashboard-viewer.png') });
    await page.click('#nav-messages');
    await page.fill('#f-control', 'CONS1');
    await page.click('#search');
    await page.waitForFunction(() => document.querySelectorAll('#messages tbody tr').length === 1);
    await page.click('#messages tbody a');
    await page.waitForSelector('#view-detail:not([hidden]) #d-meta tr');
    expect(await page.isVisible('#d-tree')).toBe(false);
    expect(await page.isVisible('#replay')).toBe(false);
    // The ACK for a viewer: its MSA code and control id only.
    expect(await page.textContent('#d-ack')).toBe('MSA|AA|CONS1');
    await page.screenshot({ path: path.join(shots, 'detail-viewer.png') });
    // The routes page: the table, not the tester (operator and up).
    await page.click('#nav-routes');
    await page.waitForSelector('#view-routes:not([hidden]) #routes tr[data-key="lab"]');
    expect(await page.isVisible('#tester')).toBe(false);
    step('detail');
    const seen = await Promise.all(bodies);
    step('bodies');
    expect(seen.some((b) => b.url.includes('/api/messages/'))).toBe(true);
    expect(seen.some((b) => b.url.endsWith('/metrics'))).toBe(true);
    expect(seen.some((b) => b.url.includes('/api/throughput'))).toBe(true);
    // Nothing refused or broken: no favicon request or forbidden call counts against the address.
    expect(failed).toEqual([]);
    for (const b of seen) {
      expect(`${b.url}: ${b.text.includes(MRN)}`).toBe(`${b.url}: false`);
      expect(`${b.url}: ${b.text.includes(FAMILY)}`).toBe(`${b.url}: false`);
    }
    await ctx.close();
  }, 90_000);
});
