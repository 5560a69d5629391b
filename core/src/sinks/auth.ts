import { configError } from '../errors';
import { TokenCache, type TokenFetcher } from '../vendor/token-cache';
import { clientCredentialsFetcher } from '../vendor/http-client';
import { optionalHttpUrl } from './common';
import { defineSchema, type SchemaType } from '../config/schema-type';

/** `auth:` keys shared by the http and fhir sinks. Secrets come from `${ENV}` or `<key>_FILE`. */
export const sinkAuthSchema = defineSchema({
  type: {
    doc: 'none | basic | bearer | client_credentials',
    format: ['none', 'basic', 'bearer', 'client_credentials'],
    default: 'none',
  },
  username: { doc: 'basic: user name', format: String, default: '' },
  password: { doc: 'basic: password (use ${ENV} or password_FILE)', format: String, default: '', sensitive: true },
  token: { doc: 'bearer: the token (use ${ENV} or token_FILE)', format: String, default: '', sensitive: true },
  tokenUrl: { doc: 'client_credentials: OAuth 2.0 token endpoint', format: optionalHttpUrl, default: '' },
  clientId: { doc: 'client_credentials: client id', format: String, default: '' },
  clientSecret: {
    doc: 'client_credentials: client secret (use ${ENV} or clientSecret_FILE)',
    format: String,
    default: '',
    sensitive: true,
  },
  scope: { doc: 'client_credentials: requested scope (space separated)', format: String, default: '' },
  clientAuth: {
    doc: 'client_credentials: how the client authenticates to the token endpoint: basic (HTTP Basic) or post (form fields)',
    format: ['basic', 'post'],
    default: 'basic',
  },
});

export type SinkAuthConfig = SchemaType<typeof sinkAuthSchema>;

/** Produces the Authorization header for a sink; caches client-credentials tokens (single-flight refresh). */
export class SinkAuth {
  private readonly cache = new TokenCache({ skewMs: 30_000 });
  private fetcher?: TokenFetcher;

  constructor(
    private readonly cfg: SinkAuthConfig | undefined,
    where: string,
    timeoutMs: number,
  ) {
    const c = cfg;
    if (!c || c.type === 'none') return;
    switch (c.type) {
      case 'basic':
        if (!c.username) throw configError('SINK_AUTH', `${where}.auth.username: required for basic auth`);
        break;
      case 'bearer':
        if (!c.token) throw configError('SINK_AUTH', `${where}.auth.token: required for bearer auth`);
        break;
      case 'client_credentials':
        if (!c.tokenUrl || !c.clientId || !c.clientSecret)
          throw configError('SINK_AUTH', `${where}.auth: client_credentials needs tokenUrl, clientId and clientSecret`);
        this.fetcher = clientCredentialsFetcher({
          tokenUrl: c.tokenUrl,
          clientId: c.clientId,
          clientSecret: c.clientSecret,
          scope: c.scope || undefined,
          authMethod: c.clientAuth,
          timeoutMs,
          vendor: where,
        });
        break;
      default:
        c.type satisfies never;
    }
  }

  get type(): SinkAuthConfig['type'] {
    return this.cfg ? this.cfg.type : sinkAuthSchema.type.default;
  }

  /** The Authorization header value, or undefined for `none`. */
  async authorization(signal?: AbortSignal): Promise<string | undefined> {
    const c = this.cfg;
    if (!c) return undefined;
    switch (c.type) {
      case 'none':
        return undefined;
      case 'basic':
        return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
      case 'bearer':
        return `Bearer ${c.token}`;
      case 'client_credentials': {
        const t = await this.cache.get('token', this.fetcher!, signal);
        return `Bearer ${t.accessToken}`;
      }
      default:
        return c.type satisfies never;
    }
  }

  /** After a 401: drop a cached client-credentials token so the next call fetches a new one. Returns true if a retry may help. */
  invalidate(authorization: string | undefined): boolean {
    if (this.cfg?.type !== 'client_credentials' || !authorization) return false;
    this.cache.invalidate('token', authorization.replace(/^Bearer /, ''));
    return true;
  }
}
