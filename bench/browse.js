#!/usr/bin/env node
// `npm run bench -- browse [--rows N]`: the console's message browser (GET /api/messages, i.e.
// store.listMessages) over a store of 1,000,000 messages, SQLite and PostgreSQL: first page, a
// deep page (keyset `beforeSeq` half way down), and filtered pages (status, message type exact and
// with `*`, control id, source), and the dashboard's throughput series of the last hour. Goal:
// every page < 200 ms. For comparison in the same run, the
// filters the first console version used -- a LIKE over the headers JSON -- timed on the same rows.
// Rows are written straight into the tables (a million inserts through the engine would take the
// bench an hour on a shared machine); the store's migrations make the schema first.
// Requires the built packages (npm run build).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { randomBytes } = require('node:crypto');

const core = require('../core/dist/index.js');
const { SqliteMessageStore, PostgresMessageStore, silentLogger } = core;

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const ROWS = arg('--rows', 1_000_000);
const REPEAT = arg('--repeat', 5);
const PG_URL = process.env.FERRY_BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/test';
const logger = silentLogger();
const PAGE = 50;

// Message mix: 8 types (5 of them ADT^A0*), 4 sources, 5 statuses; control id unique per row.
const TYPES = ['ADT^A01', 'ADT^A04', 'ADT^A08', 'ADT^A03', 'ORU^R01', 'ADT^A02', 'ORM^O01', 'SIU^S12'];
const STATUSES = [
  'delivered',
  'delivered',
  'delivered',
  'routed',
  'delivered',
  'filtered',
  'delivered',
  'failed',
  'delivered',
  'dead',
];
const caseOf = (col, values) => `CASE ${col} ${values.map((v, i) => `WHEN ${i} THEN '${v}'`).join(' ')} END`;

/** The INSERT ... SELECT filling `messages` with n rows from a number series `i` (1..n). */
function fillSql(series) {
  const type = caseOf(`i % ${TYPES.length}`, TYPES);
  const status = caseOf(`i % ${STATUSES.length}`, STATUSES);
  const source = caseOf('i % 4', ['mllp-a', 'mllp-b', 'athena', 'epic']);
  // received_at: one message every 50 ms, ending now.
  return `INSERT INTO messages (id, source_id, content_type, headers, received_at, status, ordering_key, updated_at, message_type, control_id)
    SELECT 'M' || i, ${source}, 'application/hl7-v2',
      '{"messageType":"' || ${type} || '","controlId":"C' || i || '","sendingApplication":"APP","sendingFacility":"FAC"}',
      ${Date.now()} - (${ROWS} - i) * 50, ${status}, 'HOSP|MRN' || (i % 50000), ${Date.now()}, ${type}, 'C' || i
    FROM ${series}`;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function time(fn) {
  const out = [];
  let n = 0;
  await fn(); // warm (plans, caches)
  for (let i = 0; i < REPEAT; i++) {
    const t0 = process.hrtime.bigint();
    n = (await fn()).length;
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { ms: median(out), max: Math.max(...out), rows: n };
}

/** The page queries, against the store's own listMessages. */
async function pages(store, maxSeq, likeScan) {
  const deep = Math.floor(maxSeq / 2);
  const cases = [
    ['first page', { newestFirst: true, limit: PAGE }],
    ['deep page (before = half way)', { newestFirst: true, limit: PAGE, beforeSeq: deep }],
    ['status = dead', { newestFirst: true, limit: PAGE, status: ['dead'] }],
    ['source = athena', { newestFirst: true, limit: PAGE, sourceId: 'athena' }],
    ['type = ORU^R01', { newestFirst: true, limit: PAGE, messageType: 'ORU^R01' }],
    ['type = ADT^A0* (5 types)', { newestFirst: true, limit: PAGE, messageType: 'ADT^A0*' }],
    ['type = ADT^A0*, deep page', { newestFirst: true, limit: PAGE, messageType: 'ADT^A0*', beforeSeq: deep }],
    ['type = SIU^S12 + status = dead', { newestFirst: true, limit: PAGE, messageType: 'SIU^S12', status: ['dead'] }],
    ['control id (exact)', { newestFirst: true, limit: PAGE, controlId: `C${Math.floor(ROWS / 3)}` }],
    ['control id, no such', { newestFirst: true, limit: PAGE, controlId: 'NOPE' }],
    [
      'since last hour + type ADT^A0*',
      { newestFirst: true, limit: PAGE, messageType: 'ADT^A0*', since: new Date(Date.now() - 3_600_000) },
    ],
  ];
  const rows = [];
  for (const [name, f] of cases) rows.push({ query: name, ...(await time(() => store.listMessages(f))) });
  // The dashboard's series: per minute over the last hour (72,000 of these messages).
  rows.push({
    query: 'throughput, last hour per minute',
    ...(await time(async () =>
      Object.values((await store.throughput(new Date(Date.now() - 3_600_000), 60_000)).received),
    )),
  });
  // The first version's filter: a LIKE over the headers JSON (no index can serve it).
  rows.push({
    query: 'old: control id as LIKE over headers',
    ...(await time(() => likeScan(`%"controlId":"C${Math.floor(ROWS / 3)}"%`))),
  });
  return rows;
}

function table(rows) {
  const cols = ['query', 'ms', 'max', 'rows'];
  const fmt = (r, c) => (typeof r[c] === 'number' && c !== 'rows' ? r[c].toFixed(1) : String(r[c] ?? ''));
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r, c).length)));
  console.log(cols.map((c, i) => c.padEnd(w[i])).join('  '));
  for (const r of rows) console.log(cols.map((c, i) => fmt(r, c).padEnd(w[i])).join('  '));
}

async function sqlite() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-browse-'));
  const file = path.join(dir, 'browse.db');
  try {
    let store = new SqliteMessageStore({ path: file, logger });
    await store.open();
    await store.close();
    const Database = require('better-sqlite3');
    const raw = new Database(file);
    const t0 = Date.now();
    raw.exec(
      `BEGIN; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ${ROWS}) ${fillSql('s')}; COMMIT`,
    );
    const maxSeq = raw.prepare('SELECT MAX(seq) AS m FROM messages').get().m;
    raw.close();
    console.log(
      `SQLite: ${ROWS} rows written in ${((Date.now() - t0) / 1000).toFixed(1)} s (${(fs.statSync(file).size / 1e6).toFixed(0)} MB)`,
    );
    store = new SqliteMessageStore({ path: file, logger });
    await store.open();
    const ro = new Database(file, { readonly: true });
    const like = ro.prepare("SELECT id FROM messages WHERE headers LIKE ? ESCAPE '\\' ORDER BY seq DESC LIMIT 50");
    try {
      return await pages(store, maxSeq, async (p) => like.all(p));
    } finally {
      ro.close();
      await store.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function postgres() {
  const pg = require('pg');
  const schema = `ferry_bench_browse_${randomBytes(4).toString('hex')}`;
  const store = new PostgresMessageStore({ url: PG_URL, schema, logger, poolSize: 4 });
  try {
    await store.open();
  } catch (e) {
    return { skipped: `PostgreSQL not reachable at ${PG_URL}: ${e.message}` };
  }
  const c = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
  await c.connect();
  try {
    const t0 = Date.now();
    await c.query(fillSql(`generate_series(1, ${ROWS}) AS s(i)`));
    await c.query('ANALYZE messages');
    const maxSeq = Number((await c.query('SELECT MAX(seq) AS m FROM messages')).rows[0].m);
    console.log(`PostgreSQL: ${ROWS} rows written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return await pages(
      store,
      maxSeq,
      async (p) =>
        (await c.query("SELECT id FROM messages WHERE headers LIKE $1 ESCAPE '\\' ORDER BY seq DESC LIMIT 50", [p]))
          .rows,
    );
  } finally {
    await store.close();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await c.end();
  }
}

(async () => {
  console.log(
    `message browser pages (${PAGE} rows, newest first), ${ROWS} messages; median of ${REPEAT} after one warm-up; load average ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}`,
  );
  const s = await sqlite();
  console.log('\nSQLite');
  table(s);
  const p = await postgres();
  console.log('\nPostgreSQL');
  if (p.skipped) console.log(p.skipped);
  else table(p);
  const all = [...s, ...(p.skipped ? [] : p)].filter(
    (r) => !r.query.startsWith('old:') && !r.query.startsWith('throughput'),
  );
  const worst = Math.max(...all.map((r) => r.ms));
  console.log(`\nslowest page (median): ${worst.toFixed(1)} ms -- goal < 200 ms: ${worst < 200 ? 'met' : 'NOT met'}`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
