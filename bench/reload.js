#!/usr/bin/env node
// `npm run bench -- reload [--n 6000] [--c 8] [--window 1] [--workers auto] [--quick]`: the rate an
// engine sustains through a config reload under MLLP load, against the same load with no reload,
// in one run (issue #19; goal 2,000 msgs/s offered on 8 connections).
//
// The real engine (built core + hl7v2-mllp, SQLite store, transform workers) in this process; the
// load client in its own process (bench/_mllp-sender.js: --c connections, each with --window frames
// unacknowledged). Three phases on fresh stores, the same load each:
//   old       the old config throughout (route r1: women -> sink a)
//   new       the new config throughout (r1: men -> a; r2: everyone -> a new sink b)
//   reload    starts with the old config; the file rewritten to the new one and reloaded when half
//             the messages are acknowledged
// Printed per phase: msgs/s (acknowledged / wall time), ACK latency p50/p99/max, non-AA ACKs,
// disconnects, messages lost (acknowledged but not stored and finished), and for the reload phase
// messages routed by neither config wholly (or whose stored config version disagrees with where
// they went). The ratio of the reload phase's rate to the mean of the other two is the cost of
// the reload itself under load (the new config delivers three times as much).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const args = process.argv.slice(2);
const argOf = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const quick = args.includes('--quick');
const N = Number(argOf('n', quick ? 2000 : 6000));
const C = Number(argOf('c', 8));
const WINDOW = Number(argOf('window', 1));
const WORKERS = argOf('workers', 'auto');

require('reflect-metadata');
const { Engine } = require('../core/dist/index.js');

function config(dir, variant) {
  const a = { type: 'file', dir: path.join(dir, 'a'), format: 'ndjson', envelope: true };
  const b = { type: 'file', dir: path.join(dir, 'b'), format: 'ndjson', envelope: true };
  const base = {
    store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
    plugins: ['@ferry/plugin-hl7v2-mllp'],
    processing: { transformWorkers: WORKERS === 'auto' ? 'auto' : Number(WORKERS) },
    admin: { enabled: false },
    log: { level: 'error' },
    sources: { feed: { type: 'mllp', host: '127.0.0.1', port: 0 } },
  };
  const women = { fhirpath: "Bundle.entry.resource.ofType(Patient).gender = 'female'" };
  const men = { fhirpath: "Bundle.entry.resource.ofType(Patient).gender = 'male'" };
  if (variant === 'old')
    return { ...base, sinks: { a }, routes: [{ id: 'r1', from: ['feed'], when: women, to: ['a'] }] };
  return {
    ...base,
    sinks: { a, b },
    routes: [
      { id: 'r1', from: ['feed'], when: men, to: ['a'] },
      { id: 'r2', from: ['feed'], to: ['b'] },
    ],
  };
}

const controlIds = (file) =>
  fs.existsSync(file)
    ? fs
        .readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).controlId)
    : [];
const pct = (sorted, p) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0;

function runSender(port, n, onProgress) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        path.join(__dirname, '_mllp-sender.js'),
        '--port',
        String(port),
        '--c',
        String(C),
        '--n',
        String(n),
        '--window',
        String(WINDOW),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        if (line.startsWith('progress ')) onProgress(Number(line.slice(9)));
        else if (line.startsWith('{')) resolve(JSON.parse(line));
      }
    });
    child.on('exit', (code) => code && reject(new Error(`sender exited ${code}`)));
  });
}

async function phase(name, withReload, variant = 'old', n = N) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ferry-bench-reload-${name}-`));
  const file = path.join(dir, 'ferry.yaml');
  fs.writeFileSync(file, JSON.stringify(config(dir, variant), null, 2));
  const engine = await Engine.create({ configFile: file });
  await engine.start();
  try {
    const port = engine.source('feed').address().port;
    let reload;
    let reloadAt;
    const res = await runSender(port, n, (acked) => {
      if (withReload && !reload && acked >= N / 2) {
        reloadAt = acked;
        fs.writeFileSync(file, JSON.stringify(config(dir, 'new'), null, 2));
        const t = Date.now();
        reload = engine.reload('bench').then((r) => ({ r, ms: Date.now() - t }));
      }
    });
    const rl = reload ? await reload : undefined;
    await engine.waitForIdle(120_000);
    const results = res.results;
    const lat = results
      .filter((r) => r[3] > 0)
      .map((r) => r[3])
      .sort((x, y) => x - y);
    const acked = results.filter((r) => r[2] !== 'NOACK' && !String(r[2]).startsWith('UNKNOWN'));
    const nonAA = results.filter((r) => r[2] !== 'AA').length;
    const stats = await engine.store.stats();
    const stored = Object.values(stats.messages).reduce((x, y) => x + y, 0);
    const unfinished = ['received', 'transformed', 'routed', 'failed', 'dead'].reduce(
      (x, k) => x + (stats.messages[k] || 0),
      0,
    );
    const out = {
      phase: name,
      messages: results.length,
      msgsPerS: Math.round((acked.length * 1000) / res.wallMs),
      p50ms: +pct(lat, 50).toFixed(1),
      p99ms: +pct(lat, 99).toFixed(1),
      maxms: +(lat[lat.length - 1] || 0).toFixed(1),
      nonAA,
      disconnects: res.disconnects,
      lost: acked.length - stored,
      unfinished,
    };
    if (withReload) {
      const inA = new Set(controlIds(path.join(dir, 'a', 'bundles.ndjson')));
      const inB = new Set(controlIds(path.join(dir, 'b', 'bundles.ndjson')));
      const versionOf = new Map(
        (await engine.store.listMessages({ limit: N * 2 })).map((m) => [m.headers.controlId, m.configVersion]),
      );
      let byOld = 0;
      let byNew = 0;
      let mixed = 0;
      for (const [ctl, i] of acked) {
        const male = i % 2 === 1;
        const byNewCfg = inB.has(ctl);
        if (byNewCfg) byNew++;
        else byOld++;
        if (inA.has(ctl) !== (byNewCfg ? male : !male) || versionOf.get(ctl) !== (byNewCfg ? 2 : 1)) mixed++;
      }
      Object.assign(out, {
        reloadApplied: rl?.r.applied,
        reloadMs: rl?.ms,
        reloadAtAck: reloadAt,
        byOld,
        byNew,
        mixed,
      });
    }
    return out;
  } finally {
    await engine.stop();
  }
}

(async () => {
  console.log(
    `reload bench: ${N} messages per phase on ${C} connections (window ${WINDOW}), transform workers ${WORKERS}, ${os.availableParallelism?.() ?? os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(2)}`,
  );
  // Warm-up (JIT, page cache, FHIR definitions): not counted.
  await phase('warm-up', false, 'old', Math.min(N, 800));
  const base = await phase('old config throughout', false, 'old');
  console.log(JSON.stringify(base));
  const baseNew = await phase('new config throughout', false, 'new');
  console.log(JSON.stringify(baseNew));
  const rel = await phase('reload old -> new', true);
  console.log(JSON.stringify(rel));
  // The reload phase runs half its messages by each config: its baseline is the mean of the two.
  const expected = (base.msgsPerS + baseNew.msgsPerS) / 2;
  const ok =
    rel.reloadApplied &&
    rel.nonAA === 0 &&
    rel.disconnects === 0 &&
    rel.lost === 0 &&
    rel.unfinished === 0 &&
    rel.mixed === 0 &&
    rel.byOld > 0 &&
    rel.byNew > 0;
  console.log(
    `rate: old config ${base.msgsPerS} msgs/s, new config ${baseNew.msgsPerS} msgs/s, through a reload ${rel.msgsPerS} msgs/s (ratio to their mean ${(rel.msgsPerS / expected).toFixed(2)}); ` +
      `reload took ${rel.reloadMs} ms at ack #${rel.reloadAtAck}; max ACK latency ${base.maxms} -> ${rel.maxms} ms; ` +
      `non-AA ${rel.nonAA}, disconnects ${rel.disconnects}, lost ${rel.lost}, mixed ${rel.mixed} (old ${rel.byOld} / new ${rel.byNew}): ${ok ? 'OK' : 'FAILED'}`,
  );
  process.exit(ok ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
