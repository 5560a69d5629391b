/**
 * "Sign in with <provider>" in a real headless Chromium (playwright-core + Debian's chromium)
 * against a real engine and the tiny OIDC provider of test/support (port 0): authorization code
 * + PKCE through the browser's own redirects. A viewer lands on the dashboard and still receives
 * no identifier or body from the server; a phi-reader reads a message body; a tampered state is
 * refused; an expired sign-in goes back to the sign-in page.
 *
 * Skips (visibly) without /usr/bin/chromium; with CI=true its absence fails the suite.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine, silentLogger } from '@ferry/core';
import { chromium, type Browser, type Page } from 'playwright-core';
import { OidcProvider, type OidcUser } from '../support';

declare const document: any, sessionStorage: any;

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  if (process.env.CI === 'true')
    throw new Error(`${CHROMIUM} is missing: CI must install it (apt-get install -y chromium; see .ci/run)`);
  console.warn(`SKIPPED: the console OIDC end-to-end suite needs ${CHROMIUM} (apt-get install -y chromium)`);
}
const maybe = haveChromium ? describe : describe.skip;

const MRN = 'MRNOIDC4411';
const FAMILY = 'OIDCWORTH';
const adt = (ctl: string) => ({
  contentType: 'application/hl7-v2',
  body: Buffer.from(
    [
      `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^A01^ADT_A01|${ctl}|P|2.5.1`,
      'EVN|A01|20240101120000',
      `PID|1||${MRN}^^^HOSP^MR||${FAMILY}^JANE||19800101|F`,
      'PV1|1|I|WARD1^101^A',
    ].join('\r') + '\r',
  ),
});

const VIEWER: OidcUser = { sub: 'u-viewer', claims: { preferred_username: 'val.viewer', groups: ['ferry-viewers'] } };
const PHI: OidcUser = { sub: 'u-phi', claims: { preferred_username: 'pat.reader', groups: ['ferry-phi'] } };

maybe('Console sign-in with the OIDC provider in headless Chromium', () => {
  const provider = new OidcProvider({ clientId: 'ferry-console' });
  let engine: Engine;
  let browser: Browser;
  let base: string;
  const shots = mkdtempSync(path.join(os.tmpdir(), 'ferry-console-oidc-shots-'));

  beforeAll(async () => {
    await provider.start();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-console-oidc-e2e-'));
    engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        processing: { pollIntervalMs: 50 },
        sinks: { archive: { type: 'file', dir: path.join(dir, 'archive'), format: 'ndjson' } },
        routes: [{ id: 'adt', when: { messageType: ['ADT^*'] }, to: ['archive'] }],
        admin: {
          enabled: true,
          host: '127.0.0.1',
          port: 0,
          auth: {
            oidc: {
              issuer: provider.issuer,
              audience: 'ferry-console',
              jwksUrl: provider.jwksUrl,
              rolesClaim: 'groups',
              roleMap: { 'ferry-viewers': 'viewer', 'ferry-phi': 'phi-reader' },
              console: { clientId: 'ferry-console', displayName: 'Hospital SSO' },
            },
          },
        },
      },
    });
    await engine.start();
    base = engine.adminUrl!;
    await engine.submit('feed', [adt('OIDC1')]);
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
    console.log(`console OIDC screenshots: ${shots}`);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    await provider.stop();
  });

  /** A new tab on the sign-in page, its button clicked: through the provider and back. */
  async function viaProvider(user: OidcUser, watch?: (p: Page) => void): Promise<Page> {
    provider.user = user;
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => {
      throw e;
    });
    watch?.(page);
    await page.goto(`${base}/console`);
    await page.waitForSelector('#oidc-signin:visible');
    expect(await page.textContent('#oidc-signin')).toBe('Sign in with Hospital SSO');
    await page.click('#oidc-signin');
    return page;
  }

  async function openMessage(page: Page): Promise<void> {
    await page.click('#nav-messages');
    await page.fill('#f-control', 'OIDC1');
    await page.click('#search');
    await page.waitForFunction(() => document.querySelectorAll('#messages tbody tr').length === 1);
    await page.click('#messages tbody a');
    await page.waitForSelector('#view-detail:not([hidden]) #d-meta tr');
  }

  it('viewer: signs in through the provider to the dashboard; the server still sends no identifier or body', async () => {
    const bodies: Promise<{ url: string; text: string }>[] = [];
    const page = await viaProvider(VIEWER, (p) =>
      p.on('response', (r) => {
        if (r.url().startsWith(base) && r.status() < 300)
          bodies.push(
            r.text().then(
              (text) => ({ url: r.url(), text }),
              () => ({ url: r.url(), text: '' }),
            ),
          );
      }),
    );
    await page.waitForSelector('#view-dashboard:not([hidden])');
    await page.waitForFunction(() => document.getElementById('who')!.textContent!.includes('val.viewer (viewer)'));
    // The code and state are gone from the address bar; the token and its expiry in this tab only.
    expect(page.url()).toBe(`${base}/console#/dashboard`);
    expect(await page.evaluate(() => Object.keys(sessionStorage).sort())).toEqual([
      'ferry.console.expires',
      'ferry.console.token',
    ]);
    expect(await page.context().cookies()).toEqual([]);
    await page.screenshot({ path: path.join(shots, 'dashboard-oidc-viewer.png') });
    await openMessage(page);
    expect(await page.isVisible('#d-tree')).toBe(false);
    const seen = await Promise.all(bodies);
    expect(seen.some((b) => b.url.includes('/console/oidc/token'))).toBe(true);
    expect(seen.some((b) => b.url.includes('/api/messages/'))).toBe(true);
    for (const b of seen) {
      expect(`${b.url}: ${b.text.includes(MRN)}`).toBe(`${b.url}: false`);
      expect(`${b.url}: ${b.text.includes(FAMILY)}`).toBe(`${b.url}: false`);
    }
    const signins = await engine.store.auditEntries({ action: 'console.signin' });
    expect(signins.find((e) => e.result === 'ok')).toMatchObject({
      principal: 'oidc:u-viewer (val.viewer)',
      role: 'viewer',
    });
    await page.context().close();
  }, 60_000);

  it('phi-reader: signs in through the provider and reads the message body', async () => {
    const page = await viaProvider(PHI);
    await page.waitForFunction(() => document.getElementById('who')!.textContent!.includes('pat.reader (phi-reader)'));
    await openMessage(page);
    await page.waitForSelector('#view-detail:not([hidden]) [data-pos="PID-5"]');
    expect(await page.textContent('[data-pos="PID-5"]')).toContain(`${FAMILY}^JANE`);
    expect(await page.textContent('[data-pos="PID-3"]')).toContain(MRN);
    await page.screenshot({ path: path.join(shots, 'detail-oidc-phi-reader.png') });
    const reads = await engine.store.auditEntries({ action: 'message.body.read' });
    expect(reads.some((e) => e.principal === 'oidc:u-phi (pat.reader)')).toBe(true);
    await page.context().close();
  }, 60_000);

  it('a tampered state is refused in the page; the code is never exchanged', async () => {
    const before = provider.tokenRequests.length;
    provider.rewriteState = (s) => `${s.slice(0, -2)}AA`;
    const exchanges: string[] = [];
    const page = await viaProvider(VIEWER, (p) =>
      p.on('request', (r) => r.url().includes('/console/oidc/token') && exchanges.push(r.url())),
    );
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toMatch(/state mismatch/);
    expect(await page.isVisible('#view-signin')).toBe(true);
    expect(await page.isVisible('#view-dashboard')).toBe(false);
    expect(page.url()).toBe(`${base}/console`);
    expect(exchanges).toEqual([]);
    expect(provider.tokenRequests.length).toBe(before);
    expect(await page.evaluate(() => Object.keys(sessionStorage))).toEqual([]);
    await page.screenshot({ path: path.join(shots, 'signin-oidc-refused.png') });
    await page.context().close();
  }, 60_000);

  it('an expired sign-in goes back to the sign-in page', async () => {
    // Long enough to reach the dashboard on a loaded machine, short enough to wait for.
    provider.tokenTtlSec = 8;
    try {
      const page = await viaProvider(VIEWER);
      await page.waitForSelector('#view-dashboard:not([hidden])');
      await page.waitForSelector('#view-signin:not([hidden])', { timeout: 20_000 });
      expect(await page.textContent('#error')).toMatch(/expired/);
      expect(await page.evaluate(() => Object.keys(sessionStorage))).toEqual([]);
      // Reloading does not bring it back.
      await page.reload();
      await page.waitForSelector('#view-signin:not([hidden])');
      await page.context().close();
    } finally {
      provider.tokenTtlSec = 300;
    }
  }, 60_000);
});
