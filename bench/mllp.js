#!/usr/bin/env node
// `npm run bench -- mllp [--n 5000] [--warmup 300] [--quick] [--only ceiling,nodehl7,ferry,engine,ferrypg,enginepg]`: MLLP throughput and latency, in one run, measured by
// an independent client (../shared/tools/mllp-load.js, its own process) at 1 and 16 connections
// against three peers on this machine:
//   (a) ceiling  - a minimal Node MLLP server that ACKs without storing anything
//   (b) node-hl7-server - the npm package, ACKing AA from its handler
//   (c) ferry    - Ferry's mllp source with the SQLite store, ACK only after commit
//   (d) the full Engine (listener + store + convert + validate + route + NDJSON file sink) on SQLite and on
//       PostgreSQL, and the listener with PostgreSQL
// Every peer gets the same number of messages per connection. Prints msgs/s, p50/p99 latency, wrong ACKs (MSA-2 mismatch, timeouts, errors, non-AA) and the ratios;
// for the full engine also the end-to-end rate: until every message of the run is processed and delivered (ACKs run ahead while a backlog builds).
// Requires the built packages (npm run build).
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { execFile } = require('node:child_process');

const LOAD = path.resolve(__dirname, '../../shared/tools/mllp-load.js');
const args = process.argv.slice(2);
const argOf = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const quick = args.includes('--quick');
const only = argOf('only', '') ? argOf('only', '').split(',') : undefined;
// The same number of messages per connection in every run (N1 = N16 / 16 ... at least 100), for
// every peer: node-hl7-server slows down with each message a connection has carried, so an unequal
// count would not be a fair comparison.
const N16 = Number(argOf('n', quick ? 1600 : 4800));
const N1 = Math.max(100, Math.round(N16 / 16));
// Messages each peer is sent before each measured run (node-hl7-server: 50, see below). The full
// engine's JIT is not warm after a few hundred: its V8 background threads still compile ~0.5 ms of
// CPU per message after 500 and ~0.2 after 10,000 at one connection -- `--warmup 10000` measures an
// engine that has been running.
const WARMUP = Number(argOf('warmup', 300));

if (!fs.existsSync(LOAD)) {
  console.log(`skipped: ../shared absent (${LOAD}); the benchmark needs its independent load client`);
  process.exit(0);
}

const core = require('../core/dist/index.js');

// ------------------------------------------------------------------------------------------
// (a) the ceiling: frame, read MSH-10, answer AA. No parsing beyond that, no storage.
function minimalServer() {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        const s = buf.indexOf(0x0b);
        const e = buf.indexOf(0x1c, s + 1);
        if (s < 0 || e < 0 || buf[e + 1] !== 0x0d) break;
        const msg = buf.toString('latin1', s + 1, e);
        buf = buf.subarray(e + 2);
        const msh = msg.slice(0, msg.indexOf('\r'));
        const f = msh.split('|');
        const ack = `MSH|^~\\&|${f[4]}|${f[5]}|${f[2]}|${f[3]}|${f[6]}||ACK^${(f[8] || '').split('^')[1] || ''}^ACK|A${f[9]}|P|${f[11]}\rMSA|AA|${f[9]}\r`;
        sock.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(ack, 'latin1'), Buffer.from([0x1c, 0x0d])]));
      }
    });
    sock.on('error', () => undefined);
  });
  return {
    name: 'ceiling (minimal Node server, no store)',
    key: 'ceiling',
    async start() {
      await new Promise((r) => server.listen(0, '127.0.0.1', r));
      return server.address().port;
    },
    async stop() {
      server.close();
    },
  };
}

// ------------------------------------------------------------------------------------------
// (b) node-hl7-server
function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}
function nodeHl7Server() {
  let inbound;
  return {
    name: 'node-hl7-server 2.5 (AA from handler, no store)',
    key: 'nodehl7',
    // Its cost per message grows with every message a connection has carried (it re-reads its
    // whole receive buffer): a short warm-up, on its own connections.
    warmup: 50,
    async start() {
      const { Server } = require('node-hl7-server');
      const port = await freePort();
      const server = new Server({ bindAddress: '127.0.0.1' });
      inbound = server.createInbound({ port }, async (_req, res) => {
        await res.sendResponse('AA');
      });
      await new Promise((r) => setTimeout(r, 200));
      return port;
    },
    async stop() {
      await inbound?.close().catch(() => undefined);
    },
  };
}

// ------------------------------------------------------------------------------------------
// (c) Ferry's listener: the mllp source, headers from the plugin's codec, the SQLite store
// (WAL, synchronous=FULL for inserts, group commit), ACK only after the commit resolves.
const PG_URL = process.env.FERRY_BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/test';

function ferryListener(kind = 'sqlite') {
  const mllp = require('../plugins/hl7v2-mllp/dist/index.js');
  let store;
  let src;
  let dir;
  let schema;
  return {
    name:
      kind === 'sqlite'
        ? 'ferry listener + SQLite store (ACK after commit)'
        : 'ferry listener + PostgreSQL store (ACK after commit)',
    key: kind === 'sqlite' ? 'ferry' : 'ferrypg',
    async start() {
      if (kind === 'sqlite') {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-mllp-'));
        store = new core.SqliteMessageStore({ path: path.join(dir, 'ferry.db'), logger: core.silentLogger() });
      } else {
        schema = `ferry_bench_mllp_${process.pid}`;
        store = new core.PostgresMessageStore({ url: PG_URL, schema, logger: core.silentLogger(), poolSize: 8 });
      }
      await store.open();
      const config = {
        host: '127.0.0.1',
        port: 0,
        maxConnections: 200,
        idleTimeoutMs: 0,
        maxMessageSize: 10 << 20,
        maxPendingFrames: 64,
        shutdownGraceMs: 2000,
        ackMode: 'auto',
        contentType: 'application/hl7-v2',
        tls: {
          enabled: false,
          cert: '',
          key: '',
          passphrase: '',
          ca: '',
          requestCert: false,
          rejectUnauthorized: true,
          servername: '',
        },
      };
      const ctx = {
        id: 'feed',
        config,
        logger: core.silentLogger(),
        signal: new AbortController().signal,
        submit: (messages) =>
          store.insert(
            messages.map((m) => ({ ...m, sourceId: 'feed' })),
            { duplicates: { policy: 'accept', windowMs: 3600_000 } },
          ),
        getCheckpoint: async () => undefined,
        setCheckpoint: async () => undefined,
        extractHeaders: (_ct, body) => mllp.extractHeaders(body),
        split: (_ct, body) => mllp.splitHl7Batch(body),
      };
      src = new mllp.MllpSource(ctx);
      await src.start();
      return src.address().port;
    },
    async stop() {
      await src?.stop();
      await store.close().catch(() => undefined);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      if (schema) {
        const pg = require('pg');
        const c = new pg.Client({ connectionString: PG_URL });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      }
    },
  };
}

// ------------------------------------------------------------------------------------------
// (d) Ferry: the real engine (MLLP -> store -> convert -> validate -> route -> NDJSON file sink), ACK
// after commit; SQLite (WAL, group commit) or PostgreSQL.
function ferry(kind = 'sqlite') {
  let engine;
  let dir;
  let schema;
  return {
    name: `ferry full Engine (processing + file sink, ${kind === 'sqlite' ? 'SQLite' : 'PostgreSQL'})`,
    key: kind === 'sqlite' ? 'engine' : 'enginepg',
    async start() {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-mllp-'));
      schema = kind === 'sqlite' ? undefined : `ferry_bench_engine_${process.pid}`;
      engine = await core.Engine.create({
        config: {
          store:
            kind === 'sqlite'
              ? { kind: 'sqlite', path: path.join(dir, 'ferry.db') }
              : { kind: 'postgres', url: PG_URL, schema },
          plugins: ['@ferry/plugin-hl7v2-mllp'],
          admin: { enabled: false },
          // duplicates: the load client reuses control ids across runs; accept keeps every message
          sources: { feed: { type: 'mllp', host: '127.0.0.1', port: 0, duplicates: { policy: 'accept' } } },
          sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
          routes: [{ id: 'all', from: ['feed'], to: ['out'] }],
          log: { level: 'error' },
        },
        logger: core.silentLogger(),
      });
      await engine.start();
      return engine.source('feed').address().port;
    },
    /** Resolves when every message taken so far is processed and delivered. */
    idle: () => engine.waitForIdle(300_000),
    async stop() {
      await engine?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
      if (schema) {
        const pg = require('pg');
        const c = new pg.Client({ connectionString: PG_URL });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      }
    },
  };
}

// ------------------------------------------------------------------------------------------
function load(port, n, c) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [LOAD, '--host', '127.0.0.1', '--port', String(port), '--n', String(n), '--c', String(c), '--timeout', '10000'],
      { maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`load client failed: ${err.message} ${stderr}`));
        const line = stdout.trim().split('\n').pop();
        try {
          resolve(JSON.parse(line));
        } catch {
          reject(new Error(`load client printed: ${stdout}`));
        }
      },
    );
  });
}

function wrongAcks(r) {
  const nonAA = Object.entries(r.ack_codes || {})
    .filter(([k]) => k !== 'AA')
    .reduce((s, [, v]) => s + v, 0);
  return Math.max(r.bad, 0) + nonAA + Math.max(0, r.sent - r.acked - (r.ack_codes?.TIMEOUT || 0));
}

/** fdatasync latency of the temp dir's disk: the floor under any ACK-after-durable-commit latency. */
function fsyncProbe(n = 200) {
  const file = path.join(os.tmpdir(), `ferry-bench-fsync-${process.pid}`);
  const fd = fs.openSync(file, 'w');
  const ts = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    fs.writeSync(fd, Buffer.alloc(512, 0x41));
    fs.fdatasyncSync(fd);
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  fs.closeSync(fd);
  fs.rmSync(file, { force: true });
  ts.sort((a, b) => a - b);
  return { p50: ts[Math.floor(n * 0.5)].toFixed(2), p99: ts[Math.floor(n * 0.99)].toFixed(2) };
}

async function main() {
  console.log(
    `MLLP benchmark on ${os.cpus().length} CPU(s), node ${process.version}; client: ${path.relative(process.cwd(), LOAD)} (own process)`,
  );
  const fsync = fsyncProbe();
  console.log(
    `machine: load average ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' / ')}; fdatasync p50 ${fsync.p50} ms, p99 ${fsync.p99} ms`,
  );
  console.log(
    `messages: ${N1} at 1 connection, ${N16} at 16 connections (${N1} per connection for every peer; warm-up ${WARMUP}, node-hl7-server 50)\n`,
  );
  const peers = [
    minimalServer(),
    nodeHl7Server(),
    ferryListener('sqlite'),
    ferry(),
    ferryListener('postgres'),
    ferry('postgres'),
  ].filter((p) => !only || only.includes(p.key));
  const results = {};
  for (const p of peers) {
    let port;
    try {
      port = await p.start();
    } catch (e) {
      console.log(`  ${p.name}: skipped (${e.message})`);
      await p.stop().catch(() => undefined);
      continue;
    }
    try {
      for (const c of [1, 16]) {
        await load(port, p.warmup ?? WARMUP, c).catch(() => undefined); // warm-up (separate connections)
        const n = c === 1 ? N1 : N16;
        let r;
        try {
          if (p.idle) await p.idle(); // the warm-up's backlog is not this run's
          const t0 = Date.now();
          r = await load(port, n, c);
          // The full engine: ACKs run ahead of processing while a backlog builds; end to end is
          // until the last message is processed and delivered (the load client's start included).
          if (p.idle) {
            await p.idle();
            r.e2e = Math.round((r.acked * 1000) / (Date.now() - t0));
          }
        } catch (e) {
          r = {
            sent: n,
            acked: 0,
            ack_codes: { ERROR: n },
            bad: n,
            msgs_per_s: 0,
            p50_ms: null,
            p99_ms: null,
            error: e.message,
          };
        }
        results[`${p.key}:${c}`] = r;
        console.log(
          `  ${p.name.padEnd(52)} c=${String(c).padStart(2)}  ${String(r.msgs_per_s).padStart(9)} msg/s${r.e2e ? ` (end to end ${r.e2e})` : ''}  p50 ${r.p50_ms} ms  p99 ${r.p99_ms} ms  wrong ${wrongAcks(r)}  codes ${JSON.stringify(r.ack_codes)}`,
        );
      }
    } finally {
      await p.stop();
    }
  }

  const rows = [];
  for (const p of peers)
    for (const c of [1, 16]) {
      const r = results[`${p.key}:${c}`];
      if (!r) continue;
      rows.push({
        peer: p.name,
        c,
        mps: r.msgs_per_s,
        e2e: r.e2e,
        p50: r.p50_ms,
        p99: r.p99_ms,
        wrong: wrongAcks(r),
        acked: `${r.acked}/${r.sent}`,
      });
    }
  console.log('\n| peer | conns | msgs/s (ACKs) | end to end msgs/s | p50 ms | p99 ms | wrong ACKs | acked |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows)
    console.log(
      `| ${r.peer} | ${r.c} | ${r.mps} | ${r.e2e ?? '-'} | ${r.p50 ?? '-'} | ${r.p99 ?? '-'} | ${r.wrong} | ${r.acked} |`,
    );

  const ratio = (a, b) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
  console.log('\n| ratio | c=1 | c=16 | goal (c=16) |');
  console.log('|---|---:|---:|---|');
  // --only may leave peers out: the ratios of those measured
  if (!results['ferry:1'] || !results['ceiling:1']) return;
  const f1 = results['ferry:1'].msgs_per_s,
    f16 = results['ferry:16'].msgs_per_s;
  console.log(
    `| ferry / ceiling | ${ratio(f1, results['ceiling:1'].msgs_per_s)} | ${ratio(f16, results['ceiling:16'].msgs_per_s)} | >= 0.25 |`,
  );
  if (results['nodehl7:1'])
    console.log(
      `| ferry / node-hl7-server | ${ratio(f1, results['nodehl7:1'].msgs_per_s)} | ${ratio(f16, results['nodehl7:16'].msgs_per_s)} | >= 10 |`,
    );
  console.log(`| ferry p99 ms | ${results['ferry:1'].p99_ms} | ${results['ferry:16'].p99_ms} | < 10 |`);
  console.log(`| ferry wrong ACKs | ${wrongAcks(results['ferry:1'])} | ${wrongAcks(results['ferry:16'])} | 0 |`);
  if (results['ferrypg:16'])
    console.log(
      `| ferry (PostgreSQL) / ceiling | ${ratio(results['ferrypg:1'].msgs_per_s, results['ceiling:1'].msgs_per_s)} | ${ratio(results['ferrypg:16'].msgs_per_s, results['ceiling:16'].msgs_per_s)} | (context) |`,
    );
  if (results['engine:16']) {
    console.log(
      `| full engine / ceiling | ${ratio(results['engine:1'].msgs_per_s, results['ceiling:1'].msgs_per_s)} | ${ratio(results['engine:16'].msgs_per_s, results['ceiling:16'].msgs_per_s)} | >= 0.25 |`,
    );
    console.log(
      `| full engine / listener + SQLite | ${ratio(results['engine:1'].msgs_per_s, f1)} (goal >= 0.8) | ${ratio(results['engine:16'].msgs_per_s, f16)} | c=1 >= 0.8 |`,
    );
    console.log(`| full engine p99 ms | ${results['engine:1'].p99_ms} | ${results['engine:16'].p99_ms} | < 25 |`);
    console.log(
      `| full engine end to end / ceiling | ${ratio(results['engine:1'].e2e, results['ceiling:1'].msgs_per_s)} | ${ratio(results['engine:16'].e2e, results['ceiling:16'].msgs_per_s)} | (processed and delivered) |`,
    );
  }
  if (results['enginepg:16'])
    console.log(
      `| full engine (PostgreSQL) / ceiling | ${ratio(results['enginepg:1'].msgs_per_s, results['ceiling:1'].msgs_per_s)} | ${ratio(results['enginepg:16'].msgs_per_s, results['ceiling:16'].msgs_per_s)} | >= 0.15 |`,
    );
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
