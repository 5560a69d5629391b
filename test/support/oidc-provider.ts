/**
 * A tiny OpenID Connect provider for tests, on 127.0.0.1 port 0: discovery
 * (`/.well-known/openid-configuration`), `/authorize` that approves the configured user at once
 * (no login page) and redirects back with a code, `/token` that checks the code, the client
 * (id, and secret when one is set: client_secret_basic or _post), the redirect URI and PKCE S256,
 * and answers an ID token and an access token signed with its own RSA key, and `/jwks`.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';

export interface OidcUser {
  sub: string;
  /** Any further claims of both tokens (roles, preferred_username, ...). */
  claims: Record<string, unknown>;
}

interface Grant {
  clientId: string;
  redirectUri: string;
  challenge: string;
  nonce?: string;
  scope: string;
  user: OidcUser;
  expires: number;
}

export interface OidcProviderOptions {
  clientId: string;
  /** '' or absent: a public client (PKCE only). */
  clientSecret?: string;
  /** The access token's `aud` (default: the client id). */
  accessAudience?: string;
  /** Lifetime of the tokens in seconds (default 300). */
  tokenTtlSec?: number;
}

export class OidcProvider {
  issuer = '';
  /** Who /authorize signs in next. */
  user: OidcUser = { sub: 'user-1', claims: {} };
  /** Changes the `state` sent back (a test's tampering), once. */
  rewriteState?: (state: string) => string;
  /** Changes the `nonce` put in the next ID token (a replayed or foreign ID token), once. */
  rewriteNonce?: (nonce: string) => string;
  /** What /token was asked, in order (grant type and whether PKCE passed), for assertions. */
  readonly tokenRequests: { ok: boolean; error?: string }[] = [];
  tokenTtlSec: number;
  private server?: http.Server;
  private key?: KeyLike;
  private jwk?: Record<string, unknown>;
  private readonly grants = new Map<string, Grant>();

  constructor(readonly opts: OidcProviderOptions) {
    this.tokenTtlSec = opts.tokenTtlSec ?? 300;
  }

  get jwksUrl(): string {
    return `${this.issuer}/jwks`;
  }

  async start(): Promise<this> {
    const pair = await generateKeyPair('RS256');
    this.key = pair.privateKey;
    this.jwk = { ...(await exportJWK(pair.publicKey)), kid: 'test-oidc-1', alg: 'RS256', use: 'sig' };
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        res.statusCode = 500;
        res.end(String((e as Error).message));
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.issuer = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    if (this.server) await new Promise((r) => this.server!.close(r));
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.issuer);
    if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
      return this.json(res, 200, {
        issuer: this.issuer,
        authorization_endpoint: `${this.issuer}/authorize`,
        token_endpoint: `${this.issuer}/token`,
        jwks_uri: this.jwksUrl,
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
        id_token_signing_alg_values_supported: ['RS256'],
        token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'none'],
      });
    }
    if (req.method === 'GET' && url.pathname === '/jwks') return this.json(res, 200, { keys: [this.jwk] });
    if (req.method === 'GET' && url.pathname === '/authorize') return this.authorize(url, res);
    if (req.method === 'POST' && url.pathname === '/token') {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      return this.token(req, new URLSearchParams(Buffer.concat(chunks).toString('utf8')), res);
    }
    return this.json(res, 404, { error: 'not_found' });
  }

  private authorize(url: URL, res: http.ServerResponse): void {
    const q = url.searchParams;
    const redirectUri = q.get('redirect_uri');
    if (q.get('client_id') !== this.opts.clientId || !redirectUri)
      return this.json(res, 400, { error: 'invalid_request', error_description: 'unknown client or no redirect_uri' });
    const back = new URL(redirectUri);
    let state = q.get('state') ?? '';
    if (this.rewriteState) {
      state = this.rewriteState(state);
      this.rewriteState = undefined;
    }
    if (state) back.searchParams.set('state', state);
    if (
      q.get('response_type') !== 'code' ||
      q.get('code_challenge_method') !== 'S256' ||
      !q.get('code_challenge') ||
      !(q.get('scope') ?? '').split(' ').includes('openid')
    ) {
      back.searchParams.set('error', 'invalid_request');
    } else {
      const code = randomBytes(24).toString('base64url');
      let nonce = q.get('nonce') ?? undefined;
      if (nonce && this.rewriteNonce) {
        nonce = this.rewriteNonce(nonce);
        this.rewriteNonce = undefined;
      }
      this.grants.set(code, {
        clientId: this.opts.clientId,
        redirectUri,
        challenge: q.get('code_challenge')!,
        nonce,
        scope: q.get('scope')!,
        user: this.user,
        expires: Date.now() + 60_000,
      });
      back.searchParams.set('code', code);
    }
    res.writeHead(302, { location: back.toString() });
    res.end();
  }

  private async token(req: http.IncomingMessage, form: URLSearchParams, res: http.ServerResponse): Promise<void> {
    const fail = (status: number, error: string) => {
      this.tokenRequests.push({ ok: false, error });
      this.json(res, status, { error });
    };
    let clientId = form.get('client_id');
    let secret = form.get('client_secret');
    const basic = /^Basic\s+(\S+)$/i.exec(String(req.headers.authorization ?? ''));
    if (basic) {
      const [id, s] = Buffer.from(basic[1], 'base64').toString('utf8').split(':');
      clientId = decodeURIComponent(id);
      secret = decodeURIComponent(s ?? '');
    }
    if (clientId !== this.opts.clientId) return fail(401, 'invalid_client');
    if (this.opts.clientSecret && secret !== this.opts.clientSecret) return fail(401, 'invalid_client');
    if (form.get('grant_type') !== 'authorization_code') return fail(400, 'unsupported_grant_type');
    const code = form.get('code') ?? '';
    const g = this.grants.get(code);
    this.grants.delete(code);
    if (!g || g.expires < Date.now() || g.redirectUri !== form.get('redirect_uri')) return fail(400, 'invalid_grant');
    const verifier = form.get('code_verifier') ?? '';
    if (createHash('sha256').update(verifier).digest('base64url') !== g.challenge) return fail(400, 'invalid_grant');
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: Record<string, unknown>, aud: string) =>
      new SignJWT({ ...g.user.claims, ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: 'test-oidc-1' })
        .setIssuer(this.issuer)
        .setSubject(g.user.sub)
        .setAudience(aud)
        .setIssuedAt(now)
        .setExpirationTime(now + this.tokenTtlSec)
        .sign(this.key!);
    const idToken = await sign(g.nonce ? { nonce: g.nonce } : {}, g.clientId);
    const accessToken = await sign({ scope: g.scope }, this.opts.accessAudience ?? g.clientId);
    this.tokenRequests.push({ ok: true });
    this.json(res, 200, {
      token_type: 'Bearer',
      id_token: idToken,
      access_token: accessToken,
      expires_in: this.tokenTtlSec,
      scope: g.scope,
    });
  }
}
