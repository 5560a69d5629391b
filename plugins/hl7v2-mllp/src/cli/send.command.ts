import { readFileSync } from 'node:fs';
import type { CliCommand } from '@ferry/core';
import { FerryError } from '@ferry/core';
import { readRawHeader } from '../ack/msh';
import { splitHl7Batch } from '../hl7v2';
import { MllpConnection } from '../mllp/mllp.client';
import { clientTlsOptions, type TlsConfig } from '../mllp/mllp.schema';

/** `host:port`, `[v6]:port` or a bare port (localhost). */
export function parseTarget(target: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(target) ?? /^([^:]+):(\d+)$/.exec(target) ?? /^()(\d+)$/.exec(target);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port > 0 && port < 65536))
    throw new FerryError('INPUT_SEND_TARGET', `target must be host:port, got "${target}"`, { kind: 'input' });
  return { host: m[1] || '127.0.0.1', port };
}

/** The messages of a file: batch envelopes dropped, one buffer per MSH, segment ends made CR. */
export function messagesOfFile(bytes: Buffer): Buffer[] {
  return splitHl7Batch(bytes)
    .map((m) => toCrSegments(m))
    .filter((m) => m.length > 0);
}

function toCrSegments(m: Buffer): Buffer {
  // byte level: LF (0x0A) never occurs inside a multi-byte UTF-8 sequence or a single-byte charset's letters
  const out: number[] = [];
  for (let i = 0; i < m.length; i++) {
    const b = m[i];
    if (b === 0x0d) {
      out.push(0x0d);
      if (m[i + 1] === 0x0a) i++;
    } else if (b === 0x0a) out.push(0x0d);
    else out.push(b);
  }
  // drop blank segments at the end, end with exactly one CR
  let end = out.length;
  while (end > 0 && (out[end - 1] === 0x0d || out[end - 1] === 0x20 || out[end - 1] === 0x09)) end--;
  if (end === 0) return Buffer.alloc(0);
  return Buffer.from([...out.slice(0, end), 0x0d]);
}

export interface SendResult {
  file: string;
  index: number;
  controlId: string;
  code: string;
  errCode?: string;
  text?: string;
  ms?: number;
}

/**
 * `ferry send <host:port> <files...>`: send the HL7 v2 messages in the files (batch files split)
 * over one MLLP connection, one at a time, printing each ACK code. Exit code 0 only if every
 * message was answered AA (an enhanced-mode CA is followed by the application ACK when MSH-16 asks for one).
 */
export function sendCommand(out: NodeJS.WritableStream = process.stdout): CliCommand {
  return {
    name: 'send <target> <files...>',
    description:
      'Send HL7 v2 files over MLLP to host:port and print each ACK code; exits non-zero unless every message got AA',
    options: [
      { flags: '--timeout <ms>', description: 'ACK timeout per message', default: '10000' },
      { flags: '--tls', description: 'Connect with TLS', default: false },
      { flags: '--ca <file>', description: 'CA certificate(s) to verify the receiver (PEM)' },
      { flags: '--cert <file>', description: 'Client certificate for mutual TLS (PEM)' },
      { flags: '--key <file>', description: 'Client private key for mutual TLS (PEM)' },
      { flags: '--insecure', description: 'Do not verify the receiver certificate', default: false },
      {
        flags: '--grace <ms>',
        description: 'How long to wait for an error ACK when the message (MSH-15/16 NE/ER) asks for none on success',
        default: '1000',
      },
      { flags: '--json', description: 'Print one JSON line per message', default: false },
    ],
    async run(args, options) {
      const flat = (args as unknown[]).flat() as string[];
      const [target, ...files] = flat;
      if (!target || files.length === 0) {
        out.write('usage: ferry send <host:port> <file...>\n');
        return 2;
      }
      const { host, port } = parseTarget(target);
      const timeoutMs = Number(options.timeout ?? 10000) || 10000;
      const useTls = !!(options.tls || options.ca || options.cert);
      const tlsCfg: TlsConfig = {
        enabled: useTls,
        allowedClientNames: [],
        cert: (options.cert as string) ?? '',
        key: (options.key as string) ?? '',
        passphrase: '',
        ca: (options.ca as string) ?? '',
        requestCert: false,
        rejectUnauthorized: !options.insecure,
        servername: '',
      };
      const conn = new MllpConnection({
        host,
        port,
        connectTimeoutMs: Math.min(timeoutMs, 10000),
        maxMessageSize: 16 * 1024 * 1024,
        tls: useTls ? clientTlsOptions(tlsCfg, host) : undefined,
      });
      const results: SendResult[] = [];
      const print = (r: SendResult) => {
        if (options.json) out.write(JSON.stringify(r) + '\n');
        else
          out.write(
            `${r.file}#${r.index + 1}\t${r.controlId || '-'}\t${r.code}${r.errCode ? `\t${r.errCode}` : ''}${r.ms !== undefined ? `\t${r.ms.toFixed(1)} ms` : ''}${r.code !== 'AA' && r.text ? `\t${r.text}` : ''}\n`,
          );
      };
      let fatal = false;
      try {
        for (const file of files) {
          let messages: Buffer[];
          try {
            messages = messagesOfFile(readFileSync(file));
          } catch (e) {
            const r: SendResult = {
              file,
              index: 0,
              controlId: '',
              code: 'UNREADABLE',
              text: (e as NodeJS.ErrnoException).code ?? (e as Error).message,
            };
            results.push(r);
            print(r);
            continue;
          }
          if (messages.length === 0) {
            const r: SendResult = { file, index: 0, controlId: '', code: 'EMPTY', text: 'no MSH segment found' };
            results.push(r);
            print(r);
            continue;
          }
          for (let i = 0; i < messages.length; i++) {
            const msh = readRawHeader(messages[i]);
            const controlId = msh?.controlId ?? '';
            let r: SendResult;
            if (fatal) r = { file, index: i, controlId, code: 'NOT_SENT' };
            else {
              // Enhanced mode (MSH-15/16 valued): on success the receiver may rightly send no ACK at all.
              const enhanced = !!msh && (msh.acceptAckType !== '' || msh.appAckType !== '');
              const noAckOnSuccess =
                enhanced && ['NE', 'ER'].includes(msh!.acceptAckType) && ['NE', 'ER'].includes(msh!.appAckType);
              const wait = noAckOnSuccess ? Math.min(timeoutMs, Number(options.grace ?? 1000) || 1000) : timeoutMs;
              try {
                let ack = await conn.send(messages[i], controlId || undefined, wait);
                if (ack.code === 'CA' && msh && ['AL', 'SU', ''].includes(msh.appAckType))
                  ack = await conn.awaitAck(controlId || undefined, timeoutMs);
                r = { file, index: i, controlId, code: ack.code, errCode: ack.errCode, text: ack.text, ms: ack.ms };
              } catch (e) {
                const err = FerryError.from(e);
                if (noAckOnSuccess && err.code.includes('ACK_TIMEOUT'))
                  r = {
                    file,
                    index: i,
                    controlId,
                    code: 'NONE',
                    text: `no ACK, as MSH-15/16 (${msh!.acceptAckType}/${msh!.appAckType}) ask`,
                  };
                else
                  r = {
                    file,
                    index: i,
                    controlId,
                    code: err.code.includes('TIMEOUT') ? 'TIMEOUT' : 'ERROR',
                    text: err.message,
                  };
                if (err.code.includes('CONNECT')) fatal = true;
              }
            }
            results.push(r);
            print(r);
          }
        }
      } finally {
        conn.close();
      }
      // Success: AA; or, when the message itself asked for no application ACK on success, CA or no ACK at all.
      const ok = results.filter((r) => r.code === 'AA' || r.code === 'NONE' || r.code === 'CA').length;
      if (!options.json) out.write(`${ok}/${results.length} accepted\n`);
      return ok === results.length ? 0 : 1;
    },
  };
}
