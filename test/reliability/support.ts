/**
 * Helpers for the reliability proofs: a real MLLP sender that resends until acknowledged (what a
 * hospital interface engine does), engine processes started from the built CLI, free ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import { readdirSync, readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import type { Logger } from 'winston';
import { createLogger, Engine } from '@ferry/core';
import net from 'node:net';
import path from 'node:path';
import { cliRequirement, TEST_PG_URL } from '../support/requires';

export const root = path.resolve(__dirname, '../..');
export const cli = path.join(root, 'core/dist/cli/main.js');
/** The built CLI and hl7v2-mllp plugin: suites that start engine processes need them (see requires()). */
export const cliBuilt = cliRequirement('hl7v2-mllp');

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The PostgreSQL the proofs that need one use (CI has it at 127.0.0.1:5432, database test). */
export const PG_URL = TEST_PG_URL;

/**
 * For a suite of in-process engines on a throwaway PostgreSQL schema (`<prefix>_<random>`), inside
 * a `requires(pgRequirement())` suite (skipped visibly without PostgreSQL, failed in CI): after the
 * suite stops every engine pushed to `engines` and drops the schema.
 */
export function pgSuite(prefix: string): { schema: string; engines: Engine[] } {
  const schema = `${prefix}_${Math.random().toString(16).slice(2, 10)}`;
  const engines: Engine[] = [];
  afterAll(async () => {
    for (const e of engines) await e.stop().catch(() => undefined);
    await dropSchema(schema);
  });
  return { schema, engines };
}

/** Drops a schema the proof made (and everything in it). */
export async function dropSchema(schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await c.end();
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 50,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** An HL7 v2 ADT^A08 with control id `ctl` for patient `mrn`; `version` goes into the given name and phone. */
export function adt(ctl: string, mrn: string, version: number): string {
  return (
    [
      `MSH|^~\\&|RELY|FAC|FERRY|HOSP|20250101120000||ADT^A08^ADT_A01|${ctl}|P|2.5.1`,
      'EVN|A08|20250101120000',
      `PID|1||${mrn}^^^HOSP^MR||DOE^V${String(version).padStart(4, '0')}||19800101|F|||1 MAIN ST^^TOWN^ST^00000||555-${String(version).padStart(4, '0')}`,
      'PV1|1|I|WARD^101^A',
    ].join('\r') + '\r'
  );
}

const VT = 0x0b;
const FS = 0x1c;
const CR = 0x0d;

/**
 * Sends messages over one MLLP connection, one at a time, waiting for each ACK; on a lost
 * connection or a missing ACK it reconnects and sends the same message again, until AA.
 */
export class ResendingMllpSender {
  private sock?: net.Socket;
  private buf = Buffer.alloc(0);
  private waiter?: { resolve(ack: string): void; reject(e: Error): void };
  stopped = false;
  resends = 0;

  constructor(
    private readonly port: () => number,
    private readonly ackTimeoutMs = 5000,
  ) {}

  private connect(): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host: '127.0.0.1', port: this.port() });
      s.setNoDelay(true);
      s.once('connect', () => {
        s.removeListener('error', reject);
        s.on('error', (e) => this.fail(e));
        s.on('close', () => this.fail(new Error('connection closed')));
        s.on('data', (d) => this.onData(d));
        resolve(s);
      });
      s.once('error', reject);
    });
  }

  private fail(e: Error): void {
    this.sock = undefined;
    this.buf = Buffer.alloc(0);
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(e);
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      const start = this.buf.indexOf(VT);
      const end = this.buf.indexOf(FS, start + 1);
      if (start < 0 || end < 0 || this.buf.length < end + 2) return;
      const frame = this.buf.subarray(start + 1, end).toString('latin1');
      this.buf = this.buf.subarray(end + 2);
      const w = this.waiter;
      this.waiter = undefined;
      w?.resolve(frame);
    }
  }

  /** Resolves with the ACK code once the message is acknowledged with AA (or CA). */
  async send(message: string, controlId: string): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopped) throw new Error('sender stopped');
      if (attempt > 0) this.resends++;
      try {
        if (!this.sock) this.sock = await this.connect();
        const ack = await new Promise<string>((resolve, reject) => {
          const t = setTimeout(() => {
            this.waiter = undefined;
            reject(new Error('ACK timeout'));
            this.sock?.destroy();
          }, this.ackTimeoutMs);
          this.waiter = {
            resolve: (a) => {
              clearTimeout(t);
              resolve(a);
            },
            reject: (e) => {
              clearTimeout(t);
              reject(e);
            },
          };
          this.sock!.write(Buffer.concat([Buffer.from([VT]), Buffer.from(message, 'latin1'), Buffer.from([FS, CR])]));
        });
        const msa =
          ack
            .split('\r')
            .find((s) => s.startsWith('MSA|'))
            ?.split('|') ?? [];
        if ((msa[1] === 'AA' || msa[1] === 'CA') && msa[2] === controlId) return msa[1];
        // AE / AR (e.g. store unavailable while starting): try again shortly
        await sleep(50);
      } catch {
        this.sock?.destroy();
        this.sock = undefined;
        await sleep(50);
      }
    }
  }

  close(): void {
    this.stopped = true;
    this.sock?.destroy();
    this.sock = undefined;
  }
}

export interface EngineProcess {
  child: ChildProcess;
  /** stderr so far (JSON log lines). */
  log(): string;
  exited: Promise<number | null>;
}

/**
 * Starts `ferry start -c <config>` from the built CLI; resolves once `readyPattern` appears in its log. The
 * limit is generous (60 s): a start takes 1-2 s alone and 5-8 s on a loaded 2-core machine, and these tests
 * are about what survives, not how fast it starts (the kill -9 suite failed once at 20 s under load).
 */
export async function startEngine(
  configFile: string,
  cwd: string,
  readyPattern: RegExp,
  timeoutMs = 60_000,
  env: NodeJS.ProcessEnv = {},
): Promise<EngineProcess> {
  const child = spawn(process.execPath, [cli, 'start', '-c', configFile], {
    cwd,
    env: { ...process.env, FERRY_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
    if (err.length > 4_000_000) err = err.slice(-1_000_000);
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      // Not left running behind a failed start: it would keep this jest worker from exiting.
      child.kill('SIGKILL');
      reject(new Error(`engine did not start in ${timeoutMs} ms: ${err.slice(-2000)}`));
    }, timeoutMs);
    const check = () => {
      if (readyPattern.test(err)) {
        clearTimeout(t);
        child.stderr!.off('data', check);
        resolve();
      }
    };
    child.stderr!.on('data', check);
    void exited.then((code) => {
      clearTimeout(t);
      reject(new Error(`engine exited (${code}) before it was ready: ${err.slice(-2000)}`));
    });
  });
  return { child, log: () => err, exited };
}

export async function killHard(p: EngineProcess): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGKILL');
  await p.exited;
}

export async function stopGracefully(p: EngineProcess, timeoutMs = 15_000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  await p.exited;
  clearTimeout(t);
}

/** A JSON logger whose lines are counted by `<level> <message>` (an outage must be told, not flooded). */
export function countingLogger(): { logger: Logger; logs: Record<string, number>; problems(): number } {
  const logs: Record<string, number> = {};
  const logger = createLogger(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) {
          const { level, message } = JSON.parse(line);
          logs[`${level} ${message}`] = (logs[`${level} ${message}`] ?? 0) + 1;
        }
        cb();
      },
    }),
  );
  const problems = () =>
    Object.entries(logs)
      .filter(([k]) => k.startsWith('warn ') || k.startsWith('error '))
      .reduce((n, [, v]) => n + v, 0);
  return { logger, logs, problems };
}

/**
 * `submitters` callers each submitting one HL7 message at a time to an in-process engine's source
 * `feed` until stopped: what was acknowledged (control ids) and what was refused (by error code;
 * a real sender would send it again). `until(n)` waits for `n` acknowledged -- load measured in
 * messages, not seconds, so a slow machine runs longer instead of failing.
 */
export function startLoad(
  engine: Engine,
  hl7: (n: number) => Buffer,
  controlId: (n: number) => string,
  opts: { submitters?: number; first?: number } = {},
) {
  const acked = new Set<string>();
  const refused: Record<string, number> = {};
  let next = opts.first ?? 0;
  let stopped = false;
  const submitter = async () => {
    while (!stopped) {
      const n = next++;
      try {
        const [r] = await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: hl7(n) }]);
        if (r.stored) acked.add(controlId(n));
      } catch (e) {
        const code = (e as { code?: string }).code ?? 'unknown';
        refused[code] = (refused[code] ?? 0) + 1;
        await sleep(20);
      }
    }
  };
  const running = Array.from({ length: opts.submitters ?? 8 }, submitter);
  return {
    acked,
    /** The next message number (where a later load on the same store should start). */
    next: () => next,
    refused,
    refusedCount: () => Object.values(refused).reduce((a, b) => a + b, 0),
    async until(n: number, capMs: number): Promise<void> {
      const end = Date.now() + capMs;
      while (acked.size < n && Date.now() < end) await sleep(20);
    },
    async stop(): Promise<void> {
      stopped = true;
      await Promise.all(running);
    },
  };
}

/** Control ids in the NDJSON files (envelope format) of a file sink's folder. */
export function deliveredControlIds(dir: string): { lines: number; ids: Set<string> } {
  const lines = readdirSync(dir).flatMap((f) => readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean));
  return { lines: lines.length, ids: new Set(lines.map((l) => JSON.parse(l).controlId as string)) };
}

/**
 * A started in-process engine for the outage proofs: HL7 v2 in (source `feed`), an NDJSON file
 * sink with envelopes in `out`, processing on the engine thread, and a one-minute lease -- being
 * idle within seconds of an outage's end shows nothing waited for a lease.
 */
export async function startOutageEngine(store: Record<string, unknown>, out: string, logger: Logger): Promise<Engine> {
  const engine = await Engine.create({
    logger,
    config: {
      store,
      plugins: ['@ferry/plugin-hl7v2-mllp'],
      sinks: { out: { type: 'file', dir: out, format: 'ndjson', envelope: true } },
      routes: [{ id: 'all', to: ['out'] }],
      processing: { pollIntervalMs: 100, leaseMs: 60_000, transformWorkers: 0 },
      admin: { enabled: false },
    },
  });
  await engine.start();
  return engine;
}
