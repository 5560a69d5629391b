#!/usr/bin/env node
// `npm run bench -- store [--quick]`: durable insert throughput of the message store --
// one transaction per message vs group commit, SQLite and PostgreSQL -- and end-to-end
// messages/s through the engine into a file sink. Requires the built packages (npm run build).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { randomBytes } = require('node:crypto');

const core = require('../core/dist/index.js');
const { SqliteMessageStore, PostgresMessageStore, silentLogger } = core;

const quick = process.argv.includes('--quick');
const PG_URL = process.env.FERRY_BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/test';
// Silent unless FERRY_BENCH_LOG=<level>: then JSON lines on stderr, as an engine in service writes them.
const logger = process.env.FERRY_BENCH_LOG ? core.createLogger({ level: process.env.FERRY_BENCH_LOG }) : silentLogger();

function hl7(i) {
  const ts = '20250101120000';
  return Buffer.from(
    [
      `MSH|^~\\&|BENCH|FAC|FERRY|DEST|${ts}||ADT^A08^ADT_A01|B${i}|P|2.5.1`,
      `EVN|A08|${ts}`,
      `PID|1||MRN${i % 500}^^^HOSP^MR||DOE^JANE^Q||19800101|F|||1 MAIN ST^^TOWN^ST^00000||555-0100|||S||ACC${i}`,
      `PV1|1|I|WARD^101^A|||||1234^SMITH^JOHN|||MED||||1|||1234^SMITH^JOHN|IN|V${i}`,
      'AL1|1||^PENICILLIN||RASH',
      `OBX|1|NM|8867-4^Heart rate^LN||${60 + (i % 40)}|/min|||||F`,
    ].join('\r') + '\r',
  );
}

/** `concurrency` callers each insert one message at a time until `n` are stored. */
async function insertRun(store, n, concurrency) {
  let next = 0;
  const t0 = process.hrtime.bigint();
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await store.insert(
        [
          {
            sourceId: 'bench',
            contentType: 'application/hl7-v2',
            body: hl7(i),
            headers: {
              messageType: 'ADT^A08',
              controlId: `B${i}`,
              sendingApplication: 'BENCH',
              sendingFacility: 'FAC',
            },
          },
        ],
        {
          duplicates: { policy: 'ignore', windowMs: 3600_000 },
        },
      );
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return { n, secs, rate: n / secs, commits: store.insertCommits };
}

async function sqliteRun(dir, label, groupCommit, n, concurrency) {
  const file = path.join(dir, `${label}.db`);
  const store = new SqliteMessageStore({ path: file, logger, groupCommit });
  await store.open();
  const r = await insertRun(store, n, concurrency);
  await store.close();
  return r;
}

async function createSchema(schema) {
  const pg = require('pg');
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`CREATE SCHEMA ${schema}`);
  } finally {
    await c.end();
  }
}

async function dropSchema(schema) {
  const pg = require('pg');
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
}

async function pgRun(label, groupCommit, n, concurrency) {
  const schema = `ferry_bench_${randomBytes(4).toString('hex')}`;
  const store = new PostgresMessageStore({ url: PG_URL, schema, logger, groupCommit, poolSize: 8 });
  try {
    await store.open();
  } catch (e) {
    return { skipped: `PostgreSQL not reachable at ${PG_URL}: ${e.message}` };
  }
  try {
    return await insertRun(store, n, concurrency);
  } finally {
    await store.close();
    await dropSchema(schema);
  }
}

function table(rows, cols) {
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (vals) => vals.map((v, i) => String(v ?? '').padEnd(w[i])).join('  ');
  console.log(line(cols));
  console.log(line(w.map((x) => '-'.repeat(x))));
  for (const r of rows) console.log(line(cols.map((c) => r[c])));
}

/**
 * `second`: route every message to a second sink as well -- 'healthy' (another NDJSON file) or
 * 'down' (HTTP to a closed port: every attempt refused; paused by its circuit breaker) or
 * 'down-always' (the same with the breaker off: every delivery retried with backoff). Then the run is
 * timed until the first sink has every message (SQLite only), whatever the second's backlog.
 */
let e2eRuns = 0;
/** Lines (newline bytes) in a file, read in chunks: a long run's NDJSON is larger than a string can be. */
function countLines(file) {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  let n = 0;
  try {
    for (let got; (got = fs.readSync(fd, buf, 0, buf.length, null)) > 0;)
      for (let i = buf.indexOf(10); i >= 0 && i < got; i = buf.indexOf(10, i + 1)) n++;
  } finally {
    fs.closeSync(fd);
  }
  return n;
}

async function endToEnd(dir, n, transformWorkers, storeKind = 'sqlite', inFlight = 64, second = undefined, warmup = 0) {
  if (!core.Engine) return { skipped: 'Engine not built' };
  const run = `${storeKind}-${transformWorkers}-${inFlight}${second ? `-${second}` : ''}-${warmup}-${++e2eRuns}`;
  const out = path.join(dir, `out-${run}`);
  const dbFile = path.join(dir, `e2e-${run}.db`);
  const sinks = { archive: { type: 'file', dir: out, format: 'ndjson' } };
  if (second === 'healthy') sinks.second = { type: 'file', dir: `${out}-second`, format: 'ndjson' };
  if (second === 'down' || second === 'down-always') {
    const net = require('node:net');
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const port = srv.address().port;
    await new Promise((r) => srv.close(r));
    sinks.second = {
      type: 'http',
      url: `http://127.0.0.1:${port}/in`,
      retry: { initialDelayMs: 1000, maxDelayMs: 30000, maxAttempts: 1000 },
    };
    // 'down-always': the circuit breaker off -- every delivery attempted on its own backoff.
    if (second === 'down-always') sinks.second.circuitBreaker = { failureThreshold: 0 };
  }
  // An in-memory source that submits messages as fast as the store acknowledges them, with up to
  // `inFlight` submits in flight (like as many MLLP connections, each waiting for its ACK). The
  // bench drives it: `feed(count)` resolves once all `count` are acknowledged (ms taken).
  let feed;
  let t0;
  let cpu0;
  let elu0;
  const { performance } = require('node:perf_hooks');
  const { injectable, inject } = require('tsyringe');
  class BenchSource {
    constructor(ctx) {
      this.ctx = ctx;
    }
    async start() {
      let seq = 0; // control ids unique across the warm-up and the timed run
      feed = async (count) => {
        const started = Date.now();
        let left = count;
        const worker = async () => {
          while (left > 0) {
            left--;
            const body = hl7(seq++);
            await this.ctx.submit([
              { contentType: 'application/hl7-v2', body, headers: this.ctx.extractHeaders('application/hl7-v2', body) },
            ]);
          }
        };
        await Promise.all(Array.from({ length: inFlight }, worker));
        return Date.now() - started;
      };
    }
    async stop() {}
  }
  inject(core.coreTokens.SourceContext)(BenchSource, undefined, 0);
  injectable()(BenchSource);
  const plugin = core.definePlugin({
    manifest: { id: 'bench-source', version: '1.0.0', engine: '*' },
    configSchema: {},
    register(reg) {
      reg.addSourceType('bench', BenchSource, {});
    },
  });
  const pgSchema = storeKind === 'postgres' ? `ferry_bench_e2e_${randomBytes(4).toString('hex')}` : undefined;
  if (pgSchema) await createSchema(pgSchema);
  try {
    const engine = await core.Engine.create({
      config: {
        store:
          storeKind === 'postgres'
            ? {
                kind: 'postgres',
                url: `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${pgSchema}`)}`,
              }
            : { kind: 'sqlite', path: dbFile },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sources: { feed: { type: 'bench', duplicates: { policy: 'accept' } } },
        sinks,
        processing: { transformWorkers },
        routes: [{ id: 'all', from: ['feed'], to: Object.keys(sinks) }],
        admin: { enabled: false },
        log: { level: 'error' },
      },
      plugins: [plugin],
      logger,
    });
    const started = Date.now();
    await engine.start();
    const startupMs = Date.now() - started;
    // The warm-up (untimed): the engine's code compiled and optimised by V8 as in an engine that
    // has been running a while, its caches and store pages warm. Then timed from the first submit.
    if (warmup) {
      await feed(warmup);
      await engine.waitForIdle(600_000);
    }
    const counts = () => ({
      insertCommits: engine.store.insertCommits,
      writeCommits: engine.store.writeCommits,
      writeOps: engine.store.writeOps,
    });
    const counts0 = counts();
    t0 = Date.now();
    cpu0 = process.cpuUsage();
    elu0 = performance.eventLoopUtilization();
    const ingestMs = await feed(n);
    let secondOpen;
    let secondAttempts;
    if (second) {
      // Until the first sink has every message (a read-only connection of its own, every 20 ms).
      const Database = require('better-sqlite3');
      const db = new Database(dbFile, { readonly: true });
      const count = db.prepare(
        `SELECT COUNT(*) AS n FROM deliveries WHERE sink_id = 'archive' AND status = 'delivered'`,
      );
      while (count.get().n < n + warmup) await new Promise((r) => setTimeout(r, 20));
      secondOpen = db
        .prepare(`SELECT COUNT(*) AS n FROM deliveries WHERE sink_id = 'second' AND status IN ('pending', 'failed')`)
        .get().n;
      secondAttempts = db
        .prepare(`SELECT COALESCE(SUM(attempts), 0) AS n FROM deliveries WHERE sink_id = 'second'`)
        .get().n;
      db.close();
    } else await engine.waitForIdle(600_000);
    const secs = (Date.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const engineThreadBusy = performance.eventLoopUtilization(elu0).utilization;
    const stats = await engine.store.stats();
    const workersRan = engine.transformWorkers;
    const counts1 = counts();
    const commits = Object.fromEntries(
      Object.entries(counts1).map(([k, v]) => [k, v === undefined ? undefined : v - counts0[k]]),
    );
    await engine.stop();
    let lines = 0;
    for (const f of fs.readdirSync(out)) lines += countLines(path.join(out, f));
    // Delivered and lines of the timed run (the warm-up's taken off), to set beside `n`.
    return {
      n,
      warmup,
      transformWorkers: workersRan,
      secs,
      rate: n / secs,
      ingestRate: n / (ingestMs / 1000),
      delivered: (stats.deliveries.delivered ?? 0) - warmup,
      lines: lines - warmup,
      cpuMsPerMsg: (cpu.user + cpu.system) / 1000 / n,
      engineThreadBusy,
      startupMs,
      secondOpen,
      secondAttempts,
      ...commits,
    };
  } finally {
    if (pgSchema) await dropSchema(pgSchema).catch(() => undefined);
  }
}

/**
 * Claims for a sink that is down with a large backlog: `n` open deliveries over `keys` patients,
 * each patient's first failed and due again in an hour, the rest held behind it (strict order),
 * plus 64 pending for a healthy sink. Written straight into a SQLite file, the heads set by the
 * migration's own statement. Then, on that file, claims with the key-heads index (SQLite's
 * default) and with the full check of every open delivery (what the store did before, and what
 * PostgreSQL does), side by side: for the down sink (nothing to take), for the healthy one, and
 * for the down sink once it is back and every key's retry is due.
 */
async function claimsWithBacklog(dir, n, keys) {
  const Database = require('better-sqlite3');
  const { migrations } = require('../core/dist/store/schema.js');
  const file = path.join(dir, `claims-${n}.db`);
  const init = new SqliteMessageStore({ path: file, logger });
  await init.open();
  await init.close();
  const db = new Database(file);
  const now = Date.now();
  const im = db.prepare(
    `INSERT INTO messages (id, source_id, content_type, headers, received_at, status, updated_at, ordering_key) VALUES (?, 'bench', 'x', '{}', ?, ?, ?, ?)`,
  );
  const ic = db.prepare(`INSERT INTO message_content (message_id, body, bundle) VALUES (?, x'00', '{}')`);
  const idl = db.prepare(
    `INSERT INTO deliveries (id, message_id, message_seq, route_id, sink_id, status, attempts, ordering_key, strict_order, created_at, next_attempt_at) VALUES (?, ?, ?, 'r', ?, ?, ?, ?, 1, ?, ?)`,
  );
  db.transaction(() => {
    for (let i = 0; i < n + 64; i++) {
      const up = i >= n;
      const key = up ? `u${i}` : `p${i % keys}`;
      const seq = im.run(`M${i}`, now, 'routed', now, key).lastInsertRowid;
      ic.run(`M${i}`);
      const first = !up && i < keys;
      idl.run(
        `D${i}`,
        `M${i}`,
        seq,
        up ? 'up' : 'down',
        first ? 'failed' : 'pending',
        first ? 1 : 0,
        key,
        now,
        first ? now + 3_600_000 : null,
      );
    }
  })();
  db.exec(migrations.find((m) => m.version === 5).only.sqlite[0]);
  db.close();
  // Alternating, twice each (the first pass warms the file's pages for the second); the median
  // of all claims per mode.
  const samples = { true: { down: [], up: [], back: [] }, false: { down: [], up: [], back: [] } };
  let tick = 0;
  for (const heads of [true, false, true, false]) {
    const store = new SqliteMessageStore({ path: file, logger });
    if (!heads) store.keyHeads = false; // the full check (an experiment's switch, not a setting)
    await store.open();
    const time = async (k, filter, at) => {
      for (let r = 0; r < 5; r++) {
        const t0 = process.hrtime.bigint();
        // A 1 ms lease, each claim 10 ms after the last (on the store's clock): the same
        // deliveries every time.
        const got = await store.claimDeliveries('bench', 64, 1, at(), filter);
        samples[heads][k].push({ ms: Number(process.hrtime.bigint() - t0) / 1e6, found: got.length });
      }
    };
    await time('down', { sinkIds: ['down'] }, () => new Date(now));
    await time('up', { sinkIds: ['up'] }, () => new Date(now + 10 * ++tick));
    // The sink is back and every key's retry is due.
    await time('back', { sinkIds: ['down'] }, () => new Date(now + 3_600_000 + 10 * ++tick));
    await store.close();
  }
  const med = (xs) => {
    const ms = xs.map((x) => x.ms).sort((a, b) => a - b);
    return { ms: ms[Math.floor(ms.length / 2)], found: xs[0].found };
  };
  const results = [true, false].map((heads) => ({
    heads,
    down: med(samples[heads].down),
    up: med(samples[heads].up),
    back: med(samples[heads].back),
  }));
  return results;
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-store-'));
  const nSingle = quick ? 300 : 2000;
  const nGroup = quick ? 3000 : 20000;
  const conc = 64;
  console.log(
    `ferry store benchmark  (node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(1)}; each caller inserts one ~420-byte HL7 ADT at a time and awaits its commit; duplicate check on; group commit maxBatch 256)`,
  );
  const rows = [];
  const add = (store, mode, r, base) =>
    rows.push(
      r.skipped
        ? { store, mode, 'msgs/s': 'skipped', note: r.skipped }
        : {
            store,
            mode,
            messages: r.n,
            seconds: r.secs.toFixed(2),
            'msgs/s': Math.round(r.rate),
            commits: r.commits,
            'msgs/commit': (r.n / r.commits).toFixed(1),
            'vs 1/commit': base ? `${(r.rate / base.rate).toFixed(1)}x` : '1.0x',
          },
    );
  for (const c of [conc, 256]) {
    const s1 = await sqliteRun(dir, `single${c}`, { maxBatch: 1 }, nSingle, c);
    add('sqlite', `one commit per message, ${c} callers`, s1);
    const sg = await sqliteRun(dir, `group${c}`, { maxBatch: 256 }, nGroup, c);
    add('sqlite', `group commit, ${c} callers`, sg, s1);
  }
  for (const c of [conc, 256]) {
    const p1 = await pgRun('single', { maxBatch: 1 }, nSingle, c);
    add('postgres', `one commit per message, ${c} callers`, p1);
    const pgr = await pgRun('group', { maxBatch: 256 }, nGroup, c);
    add('postgres', `group commit, ${c} callers`, pgr, p1.skipped ? undefined : p1);
  }
  console.log('\nDurable inserts (each caller resolves only after its commit):');
  table(rows, ['store', 'mode', 'messages', 'seconds', 'msgs/s', 'commits', 'msgs/commit', 'vs 1/commit']);
  for (const r of rows) if (r.note) console.log(`  ${r.store}: ${r.note}`);

  console.log(
    '\nEnd to end (in-process source, 64 submits in flight unless noted -> store -> HL7v2->FHIR transform -> route -> NDJSON file sink; timed from the first submit until idle). ' +
      'Cold: the first messages after the engine started (V8 still compiling and optimising the code on the same two cores); ' +
      'warm: after a warm-up of as many messages, untimed, once the engine is idle again -- the steady state of an engine that has been running a while; ' +
      'sustained: ten times as many from the start, cold included (the store grows by them, the backlog with intake outrunning processing):',
  );
  const e2eRows = [];
  const base = {};
  // SQLite with processing on the engine thread (the baseline) and on the transform workers, cold
  // and warm; warm with 256 submits in flight (intake then outruns processing: how fast the
  // backlog goes through); then one engine on PostgreSQL (every statement a round trip), fewer messages.
  const runs = [
    ['sqlite', 0, 10000, 64, false],
    ['sqlite', 'auto', 10000, 64, false],
    ['sqlite', 0, 10000, 64, true],
    ['sqlite', 'auto', 10000, 64, true],
    ['sqlite', 'auto', 10000, 256, true],
    ['sqlite', 'auto', 100000, 64, false],
    ['postgres', 'auto', 5000, 64, true],
  ];
  for (const [kind, tw, n0, inFlight, warm] of runs) {
    const n = quick ? n0 / 5 : n0;
    let e2e;
    try {
      e2e = await endToEnd(dir, n, tw, kind, inFlight, undefined, warm ? n : 0);
    } catch (e) {
      e2e = { skipped: `${kind}: ${e.message}` };
    }
    if (e2e.skipped) {
      console.log(`  skipped: ${e2e.skipped}`);
      continue;
    }
    if (kind === 'sqlite' && n0 < 50000) base[warm] ??= e2e;
    e2eRows.push({
      store: kind,
      'transform on': e2e.transformWorkers ? `${e2e.transformWorkers} worker thread(s)` : 'engine thread',
      'in flight': inFlight,
      run: warm ? `warm (${e2e.warmup} before)` : n0 >= 50000 ? 'sustained' : 'cold',
      messages: e2e.n,
      seconds: e2e.secs.toFixed(2),
      'msgs/s end to end': Math.round(e2e.rate),
      // The engine-thread baseline is SQLite's, cold or warm; the sustained and PostgreSQL rows are compared with nothing.
      'vs engine thread': kind === 'sqlite' && n0 < 50000 ? `${(e2e.rate / base[warm].rate).toFixed(2)}x` : '-',
      'msgs/s acknowledged': Math.round(e2e.ingestRate),
      'cpu ms/msg (all threads)': e2e.cpuMsPerMsg.toFixed(2),
      'engine thread busy': `${Math.round(e2e.engineThreadBusy * 100)} %`,
      'transition commits/msg': ((e2e.writeCommits ?? 0) / e2e.n).toFixed(3),
      delivered: e2e.delivered,
      'lines in files': e2e.lines,
    });
  }
  if (e2eRows.length) table(e2eRows, Object.keys(e2eRows[0]));

  await printOutage(dir, quick ? 2000 : 10000, quick ? 1 : 2);
  await printClaims(dir, quick ? 50_000 : 200_000);
  fs.rmSync(dir, { recursive: true, force: true });
}

async function printOutage(dir, n, rounds) {
  console.log(
    `\nA second sink on the same route (SQLite, the transform worker, 64 submits in flight, ${n} messages; timed until the file sink has every message): ` +
      'another NDJSON file, or HTTP to a closed port (every attempt refused; its backlog grows with every message) paused by its circuit breaker (the default), or with the breaker off (every delivery retried from 1 s with backoff), alternating:',
  );
  const rows = [];
  const base = [];
  for (let r = 0; r < rounds; r++)
    for (const second of ['healthy', 'down', 'down-always']) {
      const e = await endToEnd(dir, n, 'auto', 'sqlite', 64, second);
      if (second === 'healthy') base[r] = e.rate;
      rows.push({
        'second sink': {
          healthy: 'healthy (a file)',
          down: 'down (refused), paused',
          'down-always': 'down (refused), breaker off',
        }[second],
        'msgs/s to the file sink': Math.round(e.rate),
        'vs healthy': `${(e.rate / base[r]).toFixed(2)}x`,
        'cpu ms/msg': e.cpuMsPerMsg.toFixed(2),
        'open deliveries of the second sink at the end': e.secondOpen,
        'attempts on the second sink': e.secondAttempts,
      });
    }
  table(rows, Object.keys(rows[0]));
}

async function printClaims(dir, n) {
  const keys = n / 10;
  console.log(
    `\nClaims for a sink that is down (SQLite; ${n} open deliveries over ${keys} ordering keys, each key's first failed and due in an hour, the rest held; ` +
      '64 pending for a healthy sink; median of 10 claims of up to 64, ms, the two kinds alternating; the full check is what the store did before the key heads, and what PostgreSQL does):',
  );
  const r = await claimsWithBacklog(dir, n, keys);
  const [h, f] = r;
  const row = (name, k) => ({
    claim: name,
    'key heads ms': h[k].ms.toFixed(2),
    'full check ms': f[k].ms.toFixed(2),
    'full / heads': `${(f[k].ms / h[k].ms).toFixed(1)}x`,
    found: `${h[k].found} / ${f[k].found}`,
  });
  table(
    [row('the down sink', 'down'), row('a healthy sink', 'up'), row('the sink back, every retry due', 'back')],
    ['claim', 'key heads ms', 'full check ms', 'full / heads', 'found'],
  );
}

if (process.env.FERRY_BENCH_OUTAGE_ONLY) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-outage-'));
  printOutage(dir, Number(process.env.FERRY_BENCH_OUTAGE_ONLY) || 10000, 2).finally(() =>
    fs.rmSync(dir, { recursive: true, force: true }),
  );
} else if (process.env.FERRY_BENCH_CLAIMS_ONLY) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-claims-'));
  printClaims(dir, Number(process.env.FERRY_BENCH_CLAIMS_ONLY) || 200_000).finally(() =>
    fs.rmSync(dir, { recursive: true, force: true }),
  );
} else if (process.env.FERRY_BENCH_E2E_ONLY) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-e2e-'));
  endToEnd(
    dir,
    Number(process.env.FERRY_BENCH_E2E_ONLY) || 5000,
    process.env.FERRY_TRANSFORM_WORKERS ?? 'auto',
    process.env.FERRY_BENCH_E2E_STORE || 'sqlite',
    Number(process.env.FERRY_BENCH_E2E_IN_FLIGHT) || 64,
    undefined,
    Number(process.env.FERRY_BENCH_E2E_WARMUP) || 0,
  )
    .then((r) => console.log(r))
    .finally(() => fs.rmSync(dir, { recursive: true, force: true }));
} else
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
