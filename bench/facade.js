#!/usr/bin/env node
// `npm run bench -- facade [--n 2000] [--concurrency 4] [--latency 0] [--patients 200]`: FHIR facade reads,
// side by side in one run against one local athena-like server (token endpoint, /departments,
// GET /v1/{practice}/patients/{id} answering a one-element array, optional --latency ms per call):
//   (a) direct      = a bare fetch of the vendor's REST patient + JSON.parse (no Ferry);
//   (b) facade miss = GET /fhir/{conn}/Patient/{id} on a connection without a cache: bearer-token
//                     check, scope, rate-limit bucket, the vendor call (token cache, limiter,
//                     X-Request-Id), the athena-rest transform to canonical FHIR + validation,
//                     identity upsert and the audit entry (SQLite);
//   (c) facade hit  = the same on a connection with `facade.cache.ttlSeconds` (memory), warmed;
//   (d) store hit   = the same on a connection with `facade.cache.storeMaxAgeSeconds`, warmed: the
//                     store's canonical copy (what a source bound to the connection delivered, or an
//                     earlier read), read from SQLite, no vendor call.
// Rounds interleave a, b, c, d so machine load hits them alike; prints req/s, p50, p95 and ratios to (a).
// Requires the built packages (npm run build).
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const { argOf, athenaPatient } = require('./_support');
const N = Number(argOf('n', 2000));
const CONC = Number(argOf('concurrency', 4));
const LATENCY = Number(argOf('latency', 0));
const PATIENTS = Number(argOf('patients', 200));
const ROUNDS = 4;
const P = '195900';

const core = require('../core/dist');

const patient = (i) => athenaPatient(i, 1000);

function vendor() {
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    const send = (s, b) =>
      setTimeout(() => {
        res.writeHead(s, { 'content-type': 'application/json' });
        res.end(JSON.stringify(b));
      }, LATENCY);
    if (u.pathname === '/oauth2/v1/token')
      return req.resume().on('end', () => send(200, { access_token: 'tok', token_type: 'Bearer', expires_in: '3600' }));
    if (u.pathname === `/v1/${P}/departments`)
      return send(200, {
        departments: [{ departmentid: '1', name: 'Boston', timezonename: 'US/Eastern' }],
        totalcount: 1,
      });
    const m = new RegExp(`^/v1/${P}/patients/(\\d+)$`).exec(u.pathname);
    if (m) {
      const i = Number(m[1]) - 1000;
      return i >= 0 && i < PATIENTS ? send(200, [patient(i)]) : send(404, { error: 'The patient is not found.' });
    }
    send(404, { error: 'Service not registered with API gateway.' });
  });
  return server;
}

async function run(label, n, one) {
  const lat = [];
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONC }, async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        const s = process.hrtime.bigint();
        await one(i);
        lat.push(Number(process.hrtime.bigint() - s) / 1e6);
      }
    }),
  );
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  lat.sort((a, b) => a - b);
  return { label, n, ms, p50: lat[Math.floor(lat.length * 0.5)], p95: lat[Math.floor(lat.length * 0.95)] };
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-facade-'));
  const v = vendor();
  await new Promise((r) => v.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${v.address().port}`;
  const tok = await core.makeToken({ name: 'bench', roles: ['viewer'], scopes: ['connection:*:read'] }, 'bench');
  const conn = {
    kind: 'athena',
    baseUrl: base,
    clientId: 'c',
    clientSecret: 's',
    practiceId: P,
    rateLimit: { qps: 100000, burst: 100000 },
  };
  const engine = await core.Engine.create({
    config: {
      store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
      plugins: ['@ferry/plugin-athena-rest'],
      connections: {
        nocache: conn,
        cached: { ...conn, facade: { cache: { ttlSeconds: 3600 } } },
        stored: { ...conn, facade: { cache: { storeMaxAgeSeconds: 3600 } } },
      },
      admin: {
        enabled: false,
        auth: {
          tokens: [
            {
              id: tok.record.id,
              name: 'bench',
              roles: ['viewer'],
              hash: tok.record.hash,
              scopes: ['connection:*:read'],
            },
          ],
        },
      },
      api: { enabled: true, port: 0, rateLimit: { qps: 0 } },
      processing: { transformWorkers: 0 },
      log: { level: 'error' },
    },
    logger: core.silentLogger(),
  });
  await engine.start();
  const api = engine.apiUrl;
  const auth = { authorization: `Bearer ${tok.secret}` };
  const pid = (i) => 1000 + (i % PATIENTS);
  const get = async (url, headers) => {
    const r = await fetch(url, { headers });
    if (r.status !== 200) throw new Error(`${url}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const direct = (i) => get(`${base}/v1/${P}/patients/${pid(i)}`, { authorization: 'Bearer tok' });
  const miss = (i) => get(`${api}/fhir/nocache/Patient/athena-${P}-patient-${pid(i)}`, auth);
  const hit = (i) => get(`${api}/fhir/cached/Patient/athena-${P}-patient-${pid(i)}`, auth);
  const stored = (i) => get(`${api}/fhir/stored/Patient/athena-${P}-patient-${pid(i)}`, auth);
  // Same answer either way; warm the cache and both code paths.
  const a = await miss(0);
  const b = await hit(0);
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error('cached answer differs from the vendor answer');
  for (let i = 0; i < PATIENTS; i++) await hit(i);
  for (let i = 0; i < PATIENTS; i++) await stored(i);
  await run('warm', 100, direct);
  await run('warm', 100, miss);

  const totals = { direct: [], miss: [], hit: [], stored: [] };
  const per = Math.ceil(N / ROUNDS);
  for (let r = 0; r < ROUNDS; r++) {
    totals.direct.push(await run('direct', per, direct));
    totals.miss.push(await run('miss', per, miss));
    totals.hit.push(await run('hit', per, hit));
    totals.stored.push(await run('stored', per, stored));
  }
  await engine.stop();
  v.close();
  fs.rmSync(dir, { recursive: true, force: true });

  const sum = (xs) => {
    const n = xs.reduce((s, x) => s + x.n, 0);
    const ms = xs.reduce((s, x) => s + x.ms, 0);
    return {
      rps: (n / ms) * 1000,
      p50: xs.map((x) => x.p50).sort((a, b) => a - b)[Math.floor(xs.length / 2)],
      p95: Math.max(...xs.map((x) => x.p95)),
    };
  };
  const d = sum(totals.direct);
  const rows = [
    ['(a) direct vendor call (fetch + JSON.parse)', d],
    ['(b) facade read, cache miss (vendor + transform + audit)', sum(totals.miss)],
    ['(c) facade read, cache hit (memory)', sum(totals.hit)],
    ['(d) facade read, store copy (storeMaxAgeSeconds)', sum(totals.stored)],
  ];
  console.log(
    `facade read benchmark: ${N} reads per kind, ${CONC} concurrent, vendor latency ${LATENCY} ms, ${PATIENTS} patients, ${ROUNDS} interleaved rounds`,
  );
  console.log(
    'kind'.padEnd(58) + 'req/s'.padStart(10) + 'p50 ms'.padStart(10) + 'p95 ms'.padStart(10) + '  vs direct (req/s)',
  );
  for (const [label, x] of rows)
    console.log(
      label.padEnd(58) +
        x.rps.toFixed(0).padStart(10) +
        x.p50.toFixed(2).padStart(10) +
        x.p95.toFixed(2).padStart(10) +
        `  ${(x.rps / d.rps).toFixed(2)}x`,
    );
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
