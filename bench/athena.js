#!/usr/bin/env node
// `npm run bench -- athena [--n 5000] [--page 500]`: the athena-rest source and transform, in one run.
//   feed:      a local athena-like changed-feed server (token endpoint, /departments, dequeuing
//              /patients/changed with relative `next` paging) serves N records;
//              (a) baseline = a bare fetch loop following `next` and JSON.parse, nothing stored;
//              (b) ferry    = the athena-rest source's pollOnce: vendor call policy (token cache,
//                  limiter at 1000 QPS, X-Request-Id), envelopes, inflight checkpoint, SQLite insert.
//   transform: athena patient / appointment JSON -> validated canonical FHIR Bundle, records/s,
//              against (a) JSON.parse + JSON.stringify of the same envelope.
// Requires the built packages (npm run build). Prints a table with the ratios.
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const { argOf, athenaPatient } = require('./_support');
const N = Number(argOf('n', 5000));
const PAGE = Number(argOf('page', 500));
const P = '195900';

const core = require('../core/dist');
const rest = require('../plugins/athena-rest/dist');

const patient = (i) => athenaPatient(i, 10000);

/** A minimal athena-like server: a fresh queue of N records per `reset()`. */
function feedServer() {
  let queue = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    const send = (s, b) => {
      res.writeHead(s, { 'content-type': 'application/json' });
      res.end(JSON.stringify(b));
    };
    if (u.pathname === '/oauth2/v1/token')
      return req.resume().on('end', () => send(200, { access_token: 'tok', token_type: 'Bearer', expires_in: '3600' }));
    if (u.pathname === `/v1/${P}/departments`)
      return send(200, {
        departments: [{ departmentid: '1', name: 'Boston', timezonename: 'US/Eastern' }],
        totalcount: 1,
      });
    if (u.pathname === `/v1/${P}/patients/changed`) {
      const limit = Number(u.searchParams.get('limit') || 1500);
      const items = queue.splice(0, limit);
      const out = { patients: items, totalcount: items.length + queue.length };
      if (queue.length) out.next = `/v1/${P}/patients/changed?limit=${limit}&offset=0`;
      return send(200, out);
    }
    send(404, { error: 'Service not registered with API gateway.' });
  });
  return {
    server,
    reset: () => (queue = Array.from({ length: N }, (_, i) => patient(i))),
  };
}

async function baselineFeed(base) {
  let url = `${base}/v1/${P}/patients/changed?limit=${PAGE}`;
  let n = 0;
  while (url) {
    const b = await (await fetch(url, { headers: { authorization: 'Bearer tok' } })).json();
    n += b.patients.length;
    url = b.next ? `${base}${b.next}` : undefined;
  }
  return n;
}

async function ferryFeed(base, dir, run) {
  const store = new core.SqliteMessageStore({ path: path.join(dir, `ferry-${run}.db`), logger: core.silentLogger() });
  await store.open();
  const problems = [];
  const config = core.validateWithSchema(
    rest.athenaRestSourceSchema,
    {
      baseUrl: base,
      clientId: 'c',
      clientSecret: 's',
      practiceId: P,
      feeds: ['patients'],
      pageLimit: PAGE,
      rateLimit: { qps: 1000 },
    },
    'bench',
    problems,
  );
  if (problems.length) throw new Error(JSON.stringify(problems));
  const abort = new AbortController();
  const id = 'athena';
  const ctx = {
    id,
    config,
    logger: core.silentLogger(),
    signal: abort.signal,
    submit: (messages, opts) =>
      store.insert(
        messages.map((m) => ({ ...m, sourceId: id })),
        { duplicates: { policy: 'ignore', windowMs: 86400000 }, checkpoint: opts && opts.checkpoint },
      ),
    getCheckpoint: (k) => store.getCheckpoint(id, k),
    setCheckpoint: (k, v) => store.setCheckpoint(id, k, v),
    extractHeaders: () => ({}),
    split: (_c, b) => [b],
  };
  const src = new rest.AthenaRestSource(ctx);
  await src.pollOnce();
  const stats = await store.stats();
  await store.close();
  return Object.values(stats.messages).reduce((a, b) => a + b, 0);
}

async function time(fn) {
  const t0 = process.hrtime.bigint();
  const n = await fn();
  return { n, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-athena-'));
  const fs1 = feedServer();
  await new Promise((r) => fs1.server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${fs1.server.address().port}`;
  const rows = [];

  // warm-up (JIT, token, FHIR definitions)
  fs1.reset();
  await baselineFeed(base);
  const t = new rest.AthenaRestTransform();
  t.toFhir(
    {
      contentType: rest.AthenaContentType.patient,
      body: Buffer.from(JSON.stringify({ practiceid: P, kind: 'patient', record: patient(0) })),
    },
    {},
  );

  fs1.reset();
  const a = await time(() => baselineFeed(base));
  fs1.reset();
  const b = await time(() => ferryFeed(base, dir, 1));
  rows.push(['feed: bare fetch loop (baseline)', a.n, a.ms, a.n / (a.ms / 1000)]);
  rows.push(['feed: ferry source -> SQLite', b.n, b.ms, b.n / (b.ms / 1000)]);

  const M = Math.min(N, 3000);
  const envs = Array.from({ length: M }, (_, i) =>
    Buffer.from(JSON.stringify({ practiceid: P, kind: 'patient', record: patient(i) })),
  );
  const appts = Array.from({ length: M }, (_, i) =>
    Buffer.from(
      JSON.stringify({
        practiceid: P,
        kind: 'appointment',
        record: {
          appointmentid: String(i),
          date: '03/08/2026',
          starttime: `${String(i % 24).padStart(2, '0')}:30`,
          duration: 30,
          departmentid: '21',
          appointmentstatus: 'f',
          patientid: '1',
          providerid: '1',
        },
        department: { timezonename: 'US/Pacific' },
      }),
    ),
  );
  const c = await time(async () => {
    for (const e of envs) JSON.stringify(JSON.parse(e.toString()));
    return M;
  });
  const d = await time(async () => {
    for (const e of envs) t.toFhir({ contentType: rest.AthenaContentType.patient, body: e }, {});
    return M;
  });
  const e = await time(async () => {
    for (const x of appts) t.toFhir({ contentType: rest.AthenaContentType.appointment, body: x }, {});
    return M;
  });
  rows.push(['transform: JSON parse+stringify (baseline)', c.n, c.ms, c.n / (c.ms / 1000)]);
  rows.push(['transform: patient -> validated Bundle', d.n, d.ms, d.n / (d.ms / 1000)]);
  rows.push(['transform: appointment (tz) -> validated Bundle', e.n, e.ms, e.n / (e.ms / 1000)]);

  console.log(`athena bench: N=${N} records, page=${PAGE}, node ${process.version}, ${os.cpus().length} cpus`);
  console.log('| case | records | ms | records/s | vs baseline |');
  console.log('|---|---:|---:|---:|---:|');
  const fmt = (r, baseRate) =>
    `| ${r[0]} | ${r[1]} | ${r[2].toFixed(0)} | ${Math.round(r[3])} | ${(r[3] / baseRate).toFixed(3)} |`;
  console.log(fmt(rows[0], rows[0][3]));
  console.log(fmt(rows[1], rows[0][3]));
  console.log(fmt(rows[2], rows[2][3]));
  console.log(fmt(rows[3], rows[2][3]));
  console.log(fmt(rows[4], rows[2][3]));
  fs1.server.close();
  fs.rmSync(dir, { recursive: true, force: true });
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
