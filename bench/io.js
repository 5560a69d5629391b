#!/usr/bin/env node
// `npm run bench -- io [--quick]`: the core sinks and sources.
//  - file sink NDJSON: single-writer group commit (fsync on / off) vs one write+fsync per line
//  - file sink JSON: atomic one-file-per-message writes (temp + fsync + rename + dir fsync)
//  - http sink: POSTs/s to a local HTTP server
//  - http source: messages/s accepted (202 after the SQLite commit) vs store.insert directly
// Requires the built packages (npm run build).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const { randomUUID } = require('node:crypto');

const core = require('../core/dist/index.js');
const { FileSink } = require('../core/dist/sinks/file.sink.js');
const { HttpSink, defaultAuth } = require('../core/dist/sinks/http.sink.js');
const { HttpSource } = require('../core/dist/sources/http.source.js');
const { FileSource } = require('../core/dist/sources/file.source.js');
const { SqliteMessageStore, silentLogger } = core;

const quick = process.argv.includes('--quick');
const logger = silentLogger();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-io-'));

function bundle(i) {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [
      {
        fullUrl: `urn:uuid:${randomUUID()}`,
        resource: {
          resourceType: 'Patient',
          identifier: [{ system: 'urn:oid:1.2.3', value: `MRN${i}` }],
          name: [{ family: 'Bench', given: ['Mark'] }],
          text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(3000)}</div>` },
        },
      },
    ],
  };
}
function delivery(i) {
  const id = randomUUID();
  return {
    deliveryId: `d-${id}`,
    attempt: 1,
    routeId: 'r',
    bundle: bundle(i),
    message: {
      id,
      seq: i,
      sourceId: 's',
      contentType: 'application/hl7-v2',
      headers: {},
      receivedAt: new Date(),
      status: 'routed',
    },
  };
}
const hl7 = (i) =>
  `MSH|^~\\&|BENCH|FAC|FERRY|DEST|20250101120000||ADT^A08^ADT_A01|B${i}|P|2.5.1\rEVN|A08|20250101120000\rPID|1||MRN${i}^^^HOSP^MR||DOE^JANE||19800101|F\r`;

async function pool(n, concurrency, fn) {
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await fn(next++);
    }),
  );
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return { n, secs, rate: n / secs };
}

const rows = [];
const row = (what, r, base) =>
  rows.push({
    what,
    n: r.n,
    'per s': Math.round(r.rate),
    'ms total': Math.round(r.secs * 1000),
    'x baseline': base ? (r.rate / base.rate).toFixed(2) : '',
  });

async function main() {
  const N = quick ? 1000 : 5000;
  const C = 32;
  const ds = Array.from({ length: N }, (_, i) => delivery(i));

  // Baseline: what a naive sink does -- its own append + fsync for every line.
  const naiveFile = path.join(tmp, 'naive.ndjson');
  const fh = await fs.promises.open(naiveFile, 'a');
  let chain = Promise.resolve();
  const naive = await pool(N, C, (i) => {
    const line = JSON.stringify(ds[i].bundle) + '\n';
    chain = chain.then(async () => {
      await fh.write(line);
      await fh.sync();
    });
    return chain;
  });
  await fh.close();
  row('ndjson: write+fsync per line (baseline)', naive);

  for (const fsync of [true, false]) {
    const s = new FileSink({
      id: 'b',
      logger,
      config: {
        dir: path.join(tmp, `nd-${fsync}`),
        format: 'ndjson',
        file: 'b.ndjson',
        fsync,
        envelope: false,
        indent: 0,
      },
    });
    await s.start();
    const r = await pool(N, C, (i) => s.deliver(ds[i]));
    await s.stop();
    row(`ndjson file sink, group commit, fsync ${fsync ? 'on' : 'off'}`, r, naive);
  }

  const J = quick ? 300 : 1000;
  const js = new FileSink({
    id: 'j',
    logger,
    config: { dir: path.join(tmp, 'json'), format: 'json', file: 'x', fsync: true, envelope: false, indent: 0 },
  });
  await js.start();
  row('json file sink (temp+fsync+rename+dir fsync)', await pool(J, 8, (i) => js.deliver(ds[i])), naive);

  // http sink against a local server that accepts everything.
  const srv = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const hs = new HttpSink({
    id: 'h',
    logger,
    config: {
      url: `http://127.0.0.1:${srv.address().port}/in`,
      method: 'POST',
      headers: {},
      contentType: 'application/fhir+json',
      envelope: false,
      timeoutMs: 5000,
      auth: defaultAuth(),
    },
  });
  const H = quick ? 1000 : 3000;
  row('http sink POSTs (8 in flight)', await pool(H, 8, (i) => hs.deliver(ds[i % N])));
  srv.closeAllConnections();
  await new Promise((r) => srv.close(r));

  // http source into the real SQLite store, vs inserting directly.
  const M = quick ? 1000 : 3000;
  const store = new SqliteMessageStore({ path: path.join(tmp, 'ferry.db'), logger });
  await store.open();
  const direct = await pool(M, 16, (i) =>
    store.insert([
      {
        sourceId: 'direct',
        contentType: 'application/hl7-v2',
        body: Buffer.from(hl7(i)),
        headers: { messageType: 'ADT^A08', controlId: `D${i}` },
      },
    ]),
  );
  row('store.insert directly, 16 callers (baseline for the source)', direct);
  const ctx = {
    id: 'web',
    logger,
    config: { host: '127.0.0.1', port: 0, path: '/in', token: '', bodyLimit: 1 << 20, batch: true },
    signal: new AbortController().signal,
    submit: (ms) => store.insert(ms.map((m) => ({ ...m, sourceId: 'web' }))),
    getCheckpoint: async () => undefined,
    setCheckpoint: async () => undefined,
    extractHeaders: () => ({ messageType: 'ADT^A08' }),
    split: (_ct, b) => [b],
  };
  const src = new HttpSource(ctx);
  await src.start();
  // Client: node http with keep-alive (cheaper than fetch, so the figure is the source's, not the client's).
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const viaHttp = await pool(
    M,
    16,
    (i) =>
      new Promise((resolve, reject) => {
        const q = http.request(
          src.url,
          { method: 'POST', agent, headers: { 'content-type': 'application/hl7-v2' } },
          (r) => {
            r.resume();
            r.on('end', () => (r.statusCode === 202 ? resolve() : reject(new Error(`status ${r.statusCode}`))));
          },
        );
        q.on('error', reject);
        q.end(hl7(i));
      }),
  );
  agent.destroy();
  row('http source: POST -> 202 after commit, 16 clients', viaHttp, direct);
  await src.stop();

  // file source: files dropped in a folder -> stored -> moved to done/.
  const F = quick ? 300 : 1000;
  const inbox = path.join(tmp, 'inbox');
  fs.mkdirSync(inbox, { recursive: true });
  for (let i = 0; i < F; i++) fs.writeFileSync(path.join(inbox, `m${i}.hl7`), hl7(100000 + i));
  const fsrc = new FileSource({
    ...ctx,
    id: 'drop',
    config: {
      dir: inbox,
      contentType: '',
      pattern: '*.hl7',
      pollIntervalMs: 50,
      batch: false,
      stableMs: 0,
      doneDir: 'done',
      errorDir: 'error',
      maxFileBytes: 1 << 20,
    },
    submit: (ms) => store.insert(ms.map((m) => ({ ...m, sourceId: 'drop' }))),
  });
  const t0 = process.hrtime.bigint();
  await fsrc.start();
  while (fsrc.counts.files < F) await new Promise((r) => setTimeout(r, 5));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await fsrc.stop();
  row('file source: files stored + moved to done/ (one at a time)', { n: F, secs, rate: F / secs }, direct);
  await store.close();

  console.table(rows);
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
