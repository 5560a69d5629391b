import { readFileSync } from 'node:fs';
import { configError, type CodeSuffix } from '../errors';

/** The config error code of a listener's TLS problems. */
export type TlsErrorCode = CodeSuffix<'CONFIG_'> & `${string}TLS`;

/** The `tls:` block every Ferry HTTPS listener takes (HTTP source, admin API, FHIR facade). */
export interface ListenerTlsConfig {
  cert?: string;
  key?: string;
  passphrase?: string;
  ca?: string;
  requestCert?: boolean;
}

/** A PEM value given inline, or read from the path it names. */
export function pem(value: string, what: string, where: string, code: TlsErrorCode = 'SOURCE_TLS'): string {
  if (value.includes('-----BEGIN')) return value;
  try {
    return readFileSync(value, 'utf8');
  } catch (e) {
    throw configError(
      code,
      `${where}.tls.${what}: cannot read ${value}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

/**
 * Node `https` server options for a listener's `tls:` block (`where` is its config path, e.g.
 * `admin` or `sources.in`; `code` the config error code): undefined when neither cert nor key is
 * set (plain HTTP); both or neither, a CA with `requestCert` (mutual TLS), TLS 1.2 at least.
 */
export function tlsServerOptions(
  tls: ListenerTlsConfig | undefined,
  where: string,
  code: TlsErrorCode,
): Record<string, unknown> | undefined {
  if (!tls || (!tls.cert && !tls.key)) return undefined;
  if (!tls.cert || !tls.key) throw configError(code, `${where}.tls: both cert and key are needed for HTTPS`);
  if (tls.requestCert && !tls.ca)
    throw configError(
      code,
      `${where}.tls.ca: required with requestCert (the CA client certificates must be signed by)`,
    );
  return {
    cert: pem(tls.cert, 'cert', where, code),
    key: pem(tls.key, 'key', where, code),
    ...(tls.passphrase ? { passphrase: tls.passphrase } : {}),
    ...(tls.ca ? { ca: pem(tls.ca, 'ca', where, code) } : {}),
    requestCert: !!tls.requestCert,
    rejectUnauthorized: !!tls.requestCert,
    minVersion: 'TLSv1.2',
  };
}
