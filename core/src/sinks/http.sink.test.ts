import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FerryError } from '../errors';
import { defaultAuth, HttpSink, type HttpSinkInput } from './http.sink';
import { delivery, patientBundle, sinkContext } from './__fixtures__/delivery';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

describe('HttpSink (real HTTP server on 127.0.0.1)', () => {
  let server: Server;
  let base: string;
  const seen: Seen[] = [];
  let handler: (req: IncomingMessage, res: ServerResponse, body: string) => void = (_q, res) =>
    res.writeHead(204).end();

  beforeAll(async () => {
    server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      handler(req, res, body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  beforeEach(() => {
    seen.length = 0;
    handler = (_q, res) => res.writeHead(204).end();
  });

  const sink = (over: Partial<HttpSinkInput> = {}) =>
    new HttpSink(
      sinkContext<HttpSinkInput>({
        url: `${base}/ingest`,
        method: 'POST',
        headers: {},
        contentType: 'application/fhir+json',
        envelope: false,
        timeoutMs: 2000,
        ...over,
        auth: { ...defaultAuth(), ...(over.auth ?? {}) },
      }),
    );
  const fail = (s: HttpSink, d = delivery(patientBundle('MRN-SECRET', { family: 'Secretfamily' }))) =>
    s.deliver(d).then(
      () => {
        throw new Error('expected the delivery to fail');
      },
      (e) => e as FerryError,
    );

  it('POSTs the bundle with configured headers, bearer auth and delivery ids', async () => {
    const d = delivery(patientBundle('M1'));
    await sink({
      headers: { 'X-Tenant': 'north' },
      auth: { ...defaultAuth(), type: 'bearer', token: 'tok123' },
    }).deliver(d);
    expect(seen).toHaveLength(1);
    const [r] = seen;
    expect(r.method).toBe('POST');
    expect(r.url).toBe('/ingest');
    expect(r.headers['content-type']).toBe('application/fhir+json');
    expect(r.headers['x-tenant']).toBe('north');
    expect(r.headers.authorization).toBe('Bearer tok123');
    expect(r.headers['x-ferry-message-id']).toBe(d.message.id);
    expect(r.headers['x-ferry-delivery-id']).toBe(d.deliveryId);
    expect(r.headers['x-ferry-attempt']).toBe('1');
    expect(r.headers['idempotency-key']).toBe(d.deliveryId);
    expect(JSON.parse(r.body)).toEqual(d.bundle);
  });

  it('basic auth, PUT and the envelope body', async () => {
    const d = delivery(patientBundle('M2'));
    await sink({
      method: 'PUT',
      envelope: true,
      auth: { ...defaultAuth(), type: 'basic', username: 'ferry', password: 'p:w' },
    }).deliver(d);
    expect(seen[0].method).toBe('PUT');
    expect(seen[0].headers.authorization).toBe(`Basic ${Buffer.from('ferry:p:w').toString('base64')}`);
    expect(JSON.parse(seen[0].body)).toMatchObject({
      messageId: d.message.id,
      deliveryId: d.deliveryId,
      routeId: 'r1',
      bundle: d.bundle,
    });
  });

  it.each([400, 401, 403, 404, 409, 422])('HTTP %i is not retryable', async (status) => {
    handler = (_q, res) => res.writeHead(status, { 'content-type': 'text/plain' }).end('echo: Secretfamily');
    const e = await fail(sink());
    expect(e).toBeInstanceOf(FerryError);
    expect(e.retryable).toBe(false);
    expect(e.details?.status).toBe(status);
    expect(`${e.message} ${JSON.stringify(e.details)}`).not.toMatch(/Secret/);
  });

  it.each([408, 429, 500, 502, 503])('HTTP %i is retryable, Retry-After passed on', async (status) => {
    handler = (_q, res) => res.writeHead(status, { 'retry-after': '3' }).end();
    const e = await fail(sink());
    expect(e.retryable).toBe(true);
    expect(e.kind).toBe('transient');
    expect(e.details).toMatchObject({ status, retryAfterMs: 3000 });
  });

  it('a redirect is not followed and not retried', async () => {
    handler = (_q, res) => res.writeHead(302, { location: '/elsewhere' }).end();
    const e = await fail(sink());
    expect(e.retryable).toBe(false);
    expect(e.details?.location).toBe('/elsewhere');
    expect(seen).toHaveLength(1);
  });

  it('a timeout is retryable', async () => {
    // The server would answer 204 after 500 ms: failing with DELIVERY_TIMEOUT means the 100 ms timeout fired first.
    handler = (_q, res) => setTimeout(() => res.writeHead(204).end(), 500);
    const e = await fail(sink({ timeoutMs: 100 }));
    expect(e.retryable).toBe(true);
    expect(e.code).toBe('FERRY_E_DELIVERY_TIMEOUT');
  });

  it("the delivery's signal (the engine giving the attempt up) aborts the request in flight", async () => {
    let closed = false;
    handler = (req, res) => {
      res.on('close', () => (closed = true));
      setTimeout(() => res.writeHead(204).end(), 5000).unref();
    };
    const abort = new AbortController();
    const d = { ...delivery(patientBundle('MRN-1')), signal: abort.signal };
    const gaveUp = new FerryError('DELIVERY_TIMEOUT', 'given up', { kind: 'transient', retryable: true });
    setTimeout(() => abort.abort(gaveUp), 100);
    // The server answers only after 5 s and the sink's timeout is 4 s: failing with the abort's own error means the abort ended it.
    const e = await fail(sink({ timeoutMs: 4000 }), d);
    expect(e).toBe(gaveUp);
    await new Promise((r) => setTimeout(r, 50));
    expect(closed).toBe(true);
    // Already aborted: nothing is sent.
    seen.length = 0;
    const again = await fail(sink(), { ...delivery(patientBundle('MRN-2')), signal: AbortSignal.abort(gaveUp) });
    expect(again).toBe(gaveUp);
    expect(seen).toHaveLength(0);
  });

  it('connection refused is retryable', async () => {
    const tmp = createServer();
    await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
    const port = (tmp.address() as AddressInfo).port;
    await new Promise((r) => tmp.close(r));
    const e = await fail(sink({ url: `http://127.0.0.1:${port}/x` }));
    expect(e.retryable).toBe(true);
    expect(e.code).toBe('FERRY_E_DELIVERY_NETWORK');
    expect(e.details?.networkCode).toBe('ECONNREFUSED');
  });

  it('client_credentials: fetches a token once, refreshes it after a 401', async () => {
    let issued = 0;
    let valid = '';
    const tokenRequests: { grant: string | null; authorization?: string }[] = [];
    handler = (req, res, body) => {
      if (req.url === '/token') {
        tokenRequests.push({
          grant: new URLSearchParams(body).get('grant_type'),
          authorization: req.headers.authorization,
        });
        valid = `t${++issued}`;
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ access_token: valid, token_type: 'Bearer', expires_in: 3600 }));
        return;
      }
      res.writeHead(req.headers.authorization === `Bearer ${valid}` ? 200 : 401).end();
    };
    const s = sink({
      auth: {
        ...defaultAuth(),
        type: 'client_credentials',
        tokenUrl: `${base}/token`,
        clientId: 'cid',
        clientSecret: 'csecret',
        scope: 'system/*.write',
      },
    });
    await s.deliver(delivery(patientBundle('A')));
    await s.deliver(delivery(patientBundle('B')));
    expect(issued).toBe(1);
    valid = 'rotated-by-server';
    await s.deliver(delivery(patientBundle('C')));
    expect(issued).toBe(2);
    const basic = `Basic ${Buffer.from('cid:csecret').toString('base64')}`;
    expect(tokenRequests).toEqual([
      { grant: 'client_credentials', authorization: basic },
      { grant: 'client_credentials', authorization: basic },
    ]);
    expect(seen.filter((r) => r.url === '/ingest').map((r) => r.headers.authorization)).toEqual([
      'Bearer t1',
      'Bearer t1',
      'Bearer t1',
      'Bearer t2',
    ]);
  });

  it('refuses a config without url or with incomplete auth', () => {
    expect(() => sink({ url: '' })).toThrow(/url: required/);
    expect(() => sink({ auth: { ...defaultAuth(), type: 'bearer' } })).toThrow(/auth.token: required/);
  });
});
