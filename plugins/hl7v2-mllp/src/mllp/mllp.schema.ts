import { readFileSync } from 'node:fs';
import path from 'node:path';
import type tls from 'node:tls';
import {
  cidrListFormat,
  defineSchema,
  FerryError,
  type SchemaInput,
  type SchemaType,
  type SourceCommonConfig,
} from '@ferry/core';
import { receiverProfileSchema } from '../fhir-to-v2/profile';

const tlsSchema = defineSchema({
  enabled: { doc: 'Use TLS (implied when cert and key are set)', format: Boolean, default: false },
  cert: { doc: 'PEM certificate chain, or a path to it (or cert_FILE: path)', format: String, default: '' },
  key: { doc: 'PEM private key, or a path to it (or key_FILE: path)', format: String, default: '', sensitive: true },
  passphrase: { doc: 'Passphrase of the private key', format: String, default: '', sensitive: true },
  ca: { doc: 'PEM CA bundle (or a path) used to verify the peer', format: String, default: '' },
  requestCert: {
    doc: 'Listener: require a client certificate signed by `ca` (mutual TLS)',
    format: Boolean,
    default: false,
  },
  allowedClientNames: {
    doc: 'Listener, mutual TLS: when not empty, only client certificates whose subject CN is listed are served; others are closed after the handshake',
    format: (v: unknown) => {
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !x))
        throw new Error('must be a list of certificate subject common names');
    },
    default: [] as string[],
  },
  rejectUnauthorized: {
    doc: 'Sender: refuse a server whose certificate does not verify',
    format: Boolean,
    default: true,
  },
  servername: {
    doc: 'Sender: SNI / name checked in the server certificate (default: host)',
    format: String,
    default: '',
  },
});

export type TlsConfig = SchemaType<typeof tlsSchema>;

/** `sources.<id>` keys for `type: mllp`. */
export const mllpSourceSchema = defineSchema({
  host: { doc: 'Bind address', format: String, default: '0.0.0.0' },
  port: { doc: 'TCP port (0 = any free port)', format: 'port', default: 2575 },
  maxConnections: { doc: 'Concurrent connections accepted; more are closed on accept', format: 'nat', default: 200 },
  maxConnectionsPerAddress: {
    doc: 'Concurrent connections accepted from one remote address; more are closed on accept, so one misbehaving client cannot take every slot (0 = no cap)',
    format: 'nat',
    default: 20,
  },
  firstFrameTimeoutMs: {
    doc: 'A connection that has not started its first frame within this is closed (connections that never send; 0 = never)',
    format: 'nat',
    default: 10_000,
  },
  idleTimeoutMs: { doc: 'Close a connection silent for this long (0 = never)', format: 'nat', default: 5 * 60_000 },
  allow: {
    doc: 'When not empty: only these IPv4/IPv6 addresses or CIDR blocks may connect (e.g. [10.20.0.0/16, "fd00::/8"]; IPv4 clients of a dual-stack listener match IPv4 blocks); others are closed on accept',
    format: cidrListFormat,
    default: [] as string[],
  },
  maxMessageSize: {
    doc: 'Largest message in bytes; a larger frame is discarded and answered AR',
    format: 'nat',
    default: 10 * 1024 * 1024,
  },
  frameTimeoutMs: {
    doc: 'A frame started but not finished within this time closes the connection (slow senders; 0 = never)',
    format: 'nat',
    default: 120_000,
  },
  maxPendingFrames: {
    doc: 'Frames queued per connection before the socket stops being read',
    format: 'nat',
    default: 64,
  },
  shutdownGraceMs: {
    doc: 'On stop, how long in-flight messages get to be stored and acknowledged',
    format: 'nat',
    default: 5000,
  },
  ackMode: {
    doc: 'auto: enhanced mode when MSH-15/16 are valued, original otherwise; original: always original mode',
    format: ['auto', 'original'],
    default: 'auto',
  },
  contentType: { doc: 'Content type given to received messages', format: String, default: 'application/hl7-v2' },
  tls: tlsSchema,
});

/** The engine also gives a source the common keys (duplicates, dataQuality). */
export type MllpSourceConfig = SchemaType<typeof mllpSourceSchema> & Partial<SourceCommonConfig>;
/** A config given in code: keys left out take the schema's defaults. */
export type MllpSourceInput = SchemaInput<typeof mllpSourceSchema> & {
  duplicates?: Partial<SourceCommonConfig['duplicates']>;
};

/** `sinks.<id>` keys for `type: mllp`. */
export const mllpSinkSchema = defineSchema({
  host: { doc: 'Receiver host', format: String, default: '127.0.0.1' },
  port: { doc: 'Receiver port', format: 'port', default: 2575 },
  connectTimeoutMs: { doc: 'TCP/TLS connect timeout', format: 'nat', default: 5000 },
  ackTimeoutMs: {
    doc: 'How long to wait for the ACK before the attempt fails (retryable)',
    format: 'nat',
    default: 30_000,
  },
  connections: { doc: 'Persistent connections kept open (one message in flight on each)', format: 'nat', default: 1 },
  reconnect: {
    initialDelayMs: { doc: 'First reconnect delay after a failure', format: 'nat', default: 200 },
    maxDelayMs: { doc: 'Upper bound of the reconnect delay', format: 'nat', default: 30_000 },
  },
  onReject: {
    doc: 'What an AR/CR answer does to the delivery: dead (no retry) or retry',
    format: ['dead', 'retry'],
    default: 'dead',
  },
  body: {
    doc: 'original: the received bytes exactly; normalized: re-encoded (standard delimiters, CR segment ends, UTF-8, no BOM)',
    format: ['original', 'normalized'],
    default: 'original',
  },
  maxMessageSize: { doc: 'Largest ACK accepted from the receiver, bytes', format: 'nat', default: 1024 * 1024 },
  format: {
    doc: "passthrough: send the HL7 v2 message as received (see body); hl7v2: build HL7 v2 from the delivery's FHIR Bundle with the receiver profile (FHIR-TO-V2.md)",
    format: ['passthrough', 'hl7v2'],
    default: 'passthrough',
  },
  ...receiverProfileSchema,
  tls: tlsSchema,
});

export type MllpSinkConfig = SchemaType<typeof mllpSinkSchema>;
/** A config given in code: keys left out take the schema's defaults. */
export type MllpSinkInput = SchemaInput<typeof mllpSinkSchema>;

/** A PEM value from the config: PEM text as is, otherwise a path to a PEM file. */
export function readPem(value: string, what: string, baseDir = process.cwd()): string {
  if (!value) return value;
  if (value.includes('-----BEGIN')) return value;
  const file = path.resolve(baseDir, value);
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new FerryError(
      'CONFIG_MLLP_TLS_FILE',
      `cannot read TLS ${what} file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      {
        kind: 'config',
        cause: e,
      },
    );
  }
}

export function tlsEnabled(t: Partial<TlsConfig> | undefined): boolean {
  return !!t && (t.enabled === true || (!!t.cert && !!t.key));
}

/** Listener TLS options from config: key + cert required; `requestCert` refuses clients without a certificate signed by `ca`. */
export function serverTlsOptions(t: TlsConfig, baseDir?: string): tls.TlsOptions {
  if (!t.cert || !t.key)
    throw new FerryError('CONFIG_MLLP_TLS', 'tls needs both cert and key (PEM text, a path, or cert_FILE / key_FILE)', {
      kind: 'config',
    });
  if (t.requestCert && !t.ca)
    throw new FerryError('CONFIG_MLLP_TLS', 'tls.requestCert needs tls.ca (the CA that signs client certificates)', {
      kind: 'config',
    });
  if (t.allowedClientNames?.length && !t.requestCert)
    throw new FerryError('CONFIG_MLLP_TLS', 'tls.allowedClientNames needs tls.requestCert (mutual TLS)', {
      kind: 'config',
    });
  const opts: tls.TlsOptions = {
    cert: readPem(t.cert, 'cert', baseDir),
    key: readPem(t.key, 'key', baseDir),
    minVersion: 'TLSv1.2',
  };
  if (t.passphrase) opts.passphrase = t.passphrase;
  if (t.ca) opts.ca = readPem(t.ca, 'ca', baseDir);
  if (t.requestCert) {
    opts.requestCert = true;
    opts.rejectUnauthorized = true;
  }
  return opts;
}

/** Sender TLS options from config. */
export function clientTlsOptions(t: TlsConfig, host: string, baseDir?: string): tls.ConnectionOptions {
  const opts: tls.ConnectionOptions = { rejectUnauthorized: t.rejectUnauthorized, minVersion: 'TLSv1.2' };
  if (t.ca) opts.ca = readPem(t.ca, 'ca', baseDir);
  if (t.cert) opts.cert = readPem(t.cert, 'cert', baseDir);
  if (t.key) opts.key = readPem(t.key, 'key', baseDir);
  if (t.passphrase) opts.passphrase = t.passphrase;
  const sn = t.servername || host;
  if (!/^[\d.]+$/.test(sn) && !sn.includes(':')) opts.servername = sn;
  return opts;
}
