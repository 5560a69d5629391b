/** The Epic and Cerner simulators' HTTP server on 127.0.0.1: request log, fault injection, latency, a settable clock. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface LoggedRequest {
  at: number;
  method: string;
  path: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  status?: number;
  /** Why the simulator refused (auth failures hide it from the client, tests can read it here). */
  reason?: string;
}

/** An injected failure: the next `times` matching requests get this answer instead of the real one. */
export interface Fault {
  /** Substring or regexp of the request path (+ query). */
  match: string | RegExp;
  method?: string;
  status: number;
  /** How many requests to fail (default 1). */
  times?: number;
  /** Let this many matching requests through before failing (e.g. a 401 on the 3rd call: skip 2). */
  skip?: number;
  /** `Retry-After` header value (seconds or an HTTP-date). */
  retryAfter?: string;
  body?: unknown;
  contentType?: string;
  headers?: Record<string, string>;
  /** Close the socket without answering (network error). */
  drop?: boolean;
}

export interface SimOptions {
  /** Extra latency on every answer, ms. */
  latencyMs?: number;
  /** Clock (epoch ms); tests move it to expire tokens and sessions deterministically. */
  now?: () => number;
}

export type Handler = (
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  body: Buffer,
  log: LoggedRequest,
) => Promise<void> | void;

export class SimServer {
  readonly requests: LoggedRequest[] = [];
  private readonly faults: (Fault & { hits: number })[] = [];
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;
  latencyMs: number;
  private clockOffsetMs = 0;
  private readonly baseNow: () => number;

  constructor(
    private readonly handler: Handler,
    opts: SimOptions = {},
  ) {
    this.latencyMs = opts.latencyMs ?? 0;
    this.baseNow = opts.now ?? Date.now;
  }

  /** Simulator clock (epoch ms). */
  now(): number {
    return this.baseNow() + this.clockOffsetMs;
  }

  /** Move the simulator clock forward (tokens, paging sessions and jobs age by `ms`). */
  advance(ms: number): void {
    this.clockOffsetMs += ms;
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  inject(fault: Fault): void {
    this.faults.push({ ...fault, hits: 0 });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.dispatch(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.origin);
    const log: LoggedRequest = {
      at: this.now(),
      method: req.method ?? 'GET',
      path: url.pathname,
      url: url.toString(),
      headers: { ...req.headers },
    };
    this.requests.push(log);
    res.on('finish', () => (log.status = res.statusCode));
    try {
      const body = await readBody(req);
      if (this.latencyMs) await new Promise((r) => setTimeout(r, this.latencyMs));
      const target = url.pathname + url.search;
      for (const f of this.faults) {
        const matches =
          (typeof f.match === 'string' ? target.includes(f.match) : f.match.test(target)) &&
          (!f.method || f.method === req.method);
        if (!matches) continue;
        f.hits++;
        if (f.hits <= (f.skip ?? 0)) continue;
        if (f.hits > (f.skip ?? 0) + (f.times ?? 1)) continue;
        log.reason = `injected ${f.drop ? 'drop' : f.status}`;
        if (f.drop) {
          req.socket.destroy();
          return;
        }
        const headers: Record<string, string> = { ...(f.headers ?? {}) };
        if (f.retryAfter !== undefined) headers['retry-after'] = f.retryAfter;
        const payload = f.body === undefined ? '' : typeof f.body === 'string' ? f.body : JSON.stringify(f.body);
        if (payload) headers['content-type'] = f.contentType ?? 'application/fhir+json';
        res.writeHead(f.status, headers).end(payload);
        return;
      }
      await this.handler(req, res, url, body, log);
    } catch (e) {
      if (!res.headersSent)
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`simulator error: ${(e as Error).message}`);
      else res.destroy();
    }
  }
}

export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
  contentType = 'application/fhir+json',
): void {
  const text = JSON.stringify(body);
  res
    .writeHead(status, {
      'content-type': `${contentType}; charset=utf-8`,
      'content-length': String(Buffer.byteLength(text)),
      ...headers,
    })
    .end(text);
}

// ---------------------------------------------------------------------------------------------
// Resources
