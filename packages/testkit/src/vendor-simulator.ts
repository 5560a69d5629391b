/**
 * A small HTTP vendor simulator to build a plugin's test double on: a real server on 127.0.0.1
 * port 0 with an OAuth2 client-credentials token endpoint, bearer checks, FHIR-style paging and
 * injected faults (401, 429 with Retry-After, 5xx, a hung response for timeouts).
 *
 *   const sim = new VendorSimulator({ clients: [{ clientId: 'c', clientSecret: 's' }] });
 *   sim.pages('/fhir/Patient', patients, 2);          // searchset Bundles linked by `next`
 *   sim.route('POST', '/fhir/Observation', (req) => ({ status: 201, json: { ...req.json, id: '1' } }));
 *   sim.fault('/fhir/Patient', { status: 429, retryAfterSec: 1 });  // the next call only
 *   await sim.start();  ...  await sim.stop();
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface SimRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The body parsed as JSON, when it is JSON. */
  json?: any;
  /** The body parsed as a form, when it is one. */
  form?: URLSearchParams;
}

export interface SimResponse {
  status?: number;
  headers?: Record<string, string>;
  json?: unknown;
  text?: string;
}

export type SimHandler = (req: SimRequest) => SimResponse | Promise<SimResponse>;

export interface Fault {
  /** The status to answer with; `'hang'` never answers (the client's timeout must end the call). */
  status: number | 'hang';
  /** Retry-After (seconds) on the response. */
  retryAfterSec?: number;
  /** How many calls it applies to (default 1). */
  times?: number;
}

export interface VendorSimulatorOptions {
  clients?: { clientId: string; clientSecret: string; scopes?: string[] }[];
  /** Lifetime of issued tokens (default 300 s). */
  tokenTtlSec?: number;
  /** Path of the token endpoint (default /oauth2/token). */
  tokenPath?: string;
}

export class VendorSimulator {
  readonly requests: SimRequest[] = [];
  private readonly routes: { method: string; path: string | RegExp; handler: SimHandler }[] = [];
  private readonly faults: { path: string; fault: Fault; left: number }[] = [];
  private readonly tokens = new Map<string, { clientId: string; expiresAt: number }>();
  private readonly hung = new Set<http.ServerResponse>();
  private server?: http.Server;
  /** Tokens issued so far. */
  tokensIssued = 0;

  constructor(private readonly opts: VendorSimulatorOptions = {}) {}

  get url(): string {
    const a = this.server?.address() as AddressInfo | null;
    if (!a) throw new Error('VendorSimulator not started');
    return `http://127.0.0.1:${a.port}`;
  }

  get tokenUrl(): string {
    return this.url + (this.opts.tokenPath ?? '/oauth2/token');
  }

  /** Answer `method path` (an exact path or a RegExp) with `handler`. Later routes win. */
  route(method: string, path: string | RegExp, handler: SimHandler): this {
    this.routes.unshift({ method: method.toUpperCase(), path, handler });
    return this;
  }

  /** GET `path` as a FHIR searchset over `resources`, `pageSize` a page, linked by `next` (`?_page=n`). */
  pages(path: string, resources: unknown[] | (() => unknown[]), pageSize = 50): this {
    return this.route('GET', path, (req) => {
      const all = typeof resources === 'function' ? resources() : resources;
      const page = Number(req.query.get('_page') ?? '0');
      const slice = all.slice(page * pageSize, (page + 1) * pageSize);
      const link = [{ relation: 'self', url: `${this.url}${path}?_page=${page}` }];
      if ((page + 1) * pageSize < all.length)
        link.push({ relation: 'next', url: `${this.url}${path}?_page=${page + 1}` });
      return {
        json: {
          resourceType: 'Bundle',
          type: 'searchset',
          total: all.length,
          link,
          entry: slice.map((resource) => ({ resource })),
        },
      };
    });
  }

  /** Make the next call(s) to `path` (a prefix; `*` = any, the token endpoint included) fail with `fault`. */
  fault(path: string, fault: Fault): this {
    this.faults.push({ path, fault, left: fault.times ?? 1 });
    return this;
  }

  /** Forget every issued token: the next call with one gets a 401 (a revoked or expired token). */
  revokeTokens(): void {
    this.tokens.clear();
  }

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  async stop(): Promise<void> {
    for (const r of this.hung) r.destroy();
    this.hung.clear();
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const u = new URL(req.url ?? '/', 'http://x');
    const body = Buffer.concat(chunks).toString('utf8');
    const type = String(req.headers['content-type'] ?? '');
    const sreq: SimRequest = {
      method: req.method ?? 'GET',
      path: u.pathname,
      query: u.searchParams,
      headers: req.headers,
      body,
    };
    if (/json/.test(type) && body) {
      try {
        sreq.json = JSON.parse(body);
      } catch {
        /* left undefined */
      }
    }
    if (/x-www-form-urlencoded/.test(type)) sreq.form = new URLSearchParams(body);
    this.requests.push(sreq);

    const f = this.faults.find((x) => x.left > 0 && (x.path === '*' || sreq.path.startsWith(x.path)));
    if (f) {
      f.left--;
      if (f.fault.status === 'hang') {
        this.hung.add(res);
        res.on('close', () => this.hung.delete(res));
        return;
      }
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (f.fault.retryAfterSec !== undefined) headers['retry-after'] = String(f.fault.retryAfterSec);
      return this.send(res, { status: f.fault.status, headers, json: { error: `simulated ${f.fault.status}` } });
    }

    if (sreq.method === 'POST' && sreq.path === (this.opts.tokenPath ?? '/oauth2/token'))
      return this.send(res, this.token(sreq));

    const auth = String(req.headers.authorization ?? '');
    const tok = this.tokens.get(auth.replace(/^Bearer /, ''));
    if (this.opts.clients?.length && (!auth.startsWith('Bearer ') || !tok || tok.expiresAt < Date.now()))
      return this.send(res, { status: 401, json: { error: 'invalid_token' } });

    const r = this.routes.find(
      (x) => x.method === sreq.method && (typeof x.path === 'string' ? x.path === sreq.path : x.path.test(sreq.path)),
    );
    if (!r)
      return this.send(res, {
        status: 404,
        json: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] },
      });
    try {
      this.send(res, await r.handler(sreq));
    } catch (e) {
      this.send(res, { status: 500, json: { error: (e as Error).message } });
    }
  }

  private token(req: SimRequest): SimResponse {
    let clientId = req.form?.get('client_id') ?? '';
    let secret = req.form?.get('client_secret') ?? '';
    const basic = /^Basic (.+)$/.exec(String(req.headers.authorization ?? ''));
    if (basic) [clientId, secret] = Buffer.from(basic[1], 'base64').toString('utf8').split(':');
    if (req.form?.get('grant_type') !== 'client_credentials')
      return { status: 400, json: { error: 'unsupported_grant_type' } };
    const client = this.opts.clients?.find(
      (c) => c.clientId === decodeURIComponent(clientId) && c.clientSecret === decodeURIComponent(secret),
    );
    if (this.opts.clients?.length && !client) return { status: 401, json: { error: 'invalid_client' } };
    const ttl = this.opts.tokenTtlSec ?? 300;
    const access = randomBytes(16).toString('hex');
    this.tokens.set(access, { clientId, expiresAt: Date.now() + ttl * 1000 });
    this.tokensIssued++;
    return {
      json: {
        access_token: access,
        token_type: 'Bearer',
        expires_in: ttl,
        scope: req.form?.get('scope') ?? client?.scopes?.join(' ') ?? '',
      },
    };
  }

  private send(res: http.ServerResponse, r: SimResponse): void {
    const text = r.text ?? (r.json === undefined ? '' : JSON.stringify(r.json));
    res.writeHead(r.status ?? 200, {
      'content-type': r.json !== undefined ? 'application/json' : 'text/plain',
      ...r.headers,
    });
    res.end(text);
  }
}
