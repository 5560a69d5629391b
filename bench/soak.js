#!/usr/bin/env node
/**
 * `npm run bench -- soak [--minutes 10] [--c 4] [--sample-s 10] [--rate N]`: memory soak of the full engine.
 * The engine (MLLP -> SQLite store -> convert -> validate -> route -> NDJSON file sink, ACK after
 * commit, as `npm run bench -- mllp` runs it) runs in a child process of its own; this process
 *   1. measures the engine's peak **sustained** rate with the independent load client: 6,000
 *      messages over 16 connections, timed until the engine is idle again (every message
 *      processed and delivered) -- not the ACK rate alone, which runs ahead of processing while
 *      a backlog builds (printed beside it);
 *   2. then sends at 50 % of that rate (or --rate) for --minutes (paced over --c connections, each
 *      one message at a time, waiting for its ACK),
 * and samples the child's RSS (/proc/<pid>/status VmRSS) and its backlog (messages not processed
 * + deliveries due) every --sample-s seconds. Prints the samples, whether the sender kept the pace
 * (messages acknowledged against those due), the least-squares slope (MB per minute) over the run
 * after its first fifth (warm-up: heap and SQLite page cache grow to their working size), and the
 * largest deviation from the mean of those samples (goal: within +-10 %). Requires the built
 * packages (npm run build) and Linux (/proc).
 */
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFile } = require('node:child_process');

const args = process.argv.slice(2);
const argOf = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};

// ------------------------------------------------------------------------------------------
// child: the engine
if (args.includes('--child')) {
  const core = require('../core/dist/index.js');
  const dir = argOf('dir');
  (async () => {
    const engine = await core.Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        admin: { enabled: false },
        sources: { feed: { type: 'mllp', host: '127.0.0.1', port: 0, duplicates: { policy: 'accept' } } },
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
        routes: [{ id: 'all', from: ['feed'], to: ['out'] }],
        log: { level: 'error' },
      },
      logger: core.silentLogger(),
    });
    await engine.start();
    // The parent's questions over IPC: the backlog now; when the engine is idle again.
    process.on('message', (q) => {
      const answer =
        q.ask === 'idle'
          ? engine.waitForIdle(600_000).then(() => ({}))
          : engine.store.backlog().then((b) => ({ backlog: b.unprocessedMessages + b.deliveriesDue }));
      answer.then(
        (a) => process.send({ id: q.id, ...a }),
        (e) => process.send({ id: q.id, error: String(e) }),
      );
    });
    process.stdout.write(JSON.stringify({ port: engine.source('feed').address().port }) + '\n');
    process.on('SIGTERM', () => engine.stop().then(() => process.exit(0)));
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
  return;
}

// ------------------------------------------------------------------------------------------
// parent: load and sampling
const LOAD = path.resolve(__dirname, '../../shared/tools/mllp-load.js');
const minutes = Number(argOf('minutes', 10));
const conns = Number(argOf('c', 4));
const sampleS = Number(argOf('sample-s', 10));
// V8 options for the engine's process (e.g. --node-args "--max-semi-space-size=32"), to compare GC settings;
// not the heap growing factor, which the engine sets at start: FERRY_HEAP_GROWTH_PERCENT for that
const nodeArgs = (argOf('node-args', '') ?? '').split(' ').filter(Boolean);
const fixedRate = argOf('rate') ? Number(argOf('rate')) : undefined;
if (!fs.existsSync('/proc/self/status')) {
  console.log('skipped: /proc is not available (Linux only)');
  process.exit(0);
}
if (!fs.existsSync(LOAD)) {
  console.log(`skipped: ../shared absent (${LOAD}); the peak rate is measured with its load client`);
  process.exit(0);
}

/** The process's CPU time so far (all its threads: the engine, the transform worker, GC helpers), in seconds. */
function cpuSeconds(pid) {
  // /proc/<pid>/stat: fields 14 and 15 (utime, stime) in clock ticks, after the command in parentheses
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function loadClient(port, n, c) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [LOAD, '--host', '127.0.0.1', '--port', String(port), '--n', String(n), '--c', String(c), '--timeout', '10000'],
      { maxBuffer: 1 << 20 },
      (err, stdout) => {
        if (err) return reject(err);
        resolve(JSON.parse(stdout.trim().split('\n').pop()));
      },
    );
  });
}

function adt(i) {
  const ts = '20240101' + String(120000 + (i % 5000)).padStart(6, '0');
  return (
    [
      `MSH|^~\\&|SOAK|HOSP|ENGINE|HOSP|${ts}||ADT^A08^ADT_A01|SOAK${i}|P|2.5.1`,
      `EVN|A08|${ts}`,
      `PID|1||MRN${100000 + (i % 997)}^^^HOSP^MR||DOE^JOHN^Q^JR||19800101|M|||123 MAIN ST^^ANYTOWN^CA^90210^USA||(555)555-1234|||M`,
      `PV1|1|I|WARD1^101^A^HOSP||||1234^SMITH^JANE^^^DR|||MED||||ADM|||||V${i}`,
    ].join('\r') + '\r'
  );
}

/** `conns` connections, one message at a time each, paced to `rate` msgs/s in total until `until`. */
function paced(port, rate, until, progress = { acked: 0 }) {
  let next = 0;
  let acked = 0;
  let errors = 0;
  const t0 = Date.now();
  const one = () =>
    new Promise((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      sock.setNoDelay(true);
      let buf = Buffer.alloc(0);
      const send = () => {
        if (Date.now() >= until) {
          sock.end();
          return resolve();
        }
        const i = next++;
        // the i-th message is due at t0 + i/rate: wait for it (or send at once when behind)
        const wait = t0 + (i * 1000) / rate - Date.now();
        setTimeout(
          () =>
            sock.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(adt(i), 'latin1'), Buffer.from([0x1c, 0x0d])])),
          Math.max(0, wait),
        );
      };
      sock.on('connect', send);
      sock.on('data', (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        for (;;) {
          const e = buf.indexOf(0x1c);
          if (e < 0) break;
          const ack = buf.toString('latin1', 0, e);
          buf = buf.subarray(e + 2);
          if (/\rMSA\|AA\|/.test(ack)) progress.acked = ++acked;
          else errors++;
          send();
        }
      });
      sock.on('error', () => {
        errors++;
        resolve();
      });
    });
  return Promise.all(Array.from({ length: conns }, one)).then(() => ({ sent: next, acked, errors }));
}

function slope(points) {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxy = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  return { slope: sxx ? sxy / sxx : 0, mean: my };
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-soak-'));
  const child = spawn(process.execPath, [...nodeArgs, __filename, '--child', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  let asked = 0;
  const ask = (what) =>
    new Promise((resolve, reject) => {
      const id = ++asked;
      const on = (m) => {
        if (m.id !== id) return;
        child.off('message', on);
        if (m.error) reject(new Error(m.error));
        else resolve(m);
      };
      child.on('message', on);
      child.send({ id, ask: what });
    });
  try {
    const port = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve(JSON.parse(line).port);
      });
      child.on('exit', (code) => reject(new Error(`engine exited (${code})`)));
    });
    console.log(
      `soak: full engine (SQLite, validate on, NDJSON file sink) in process ${child.pid}; node ${process.version}; ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(1)}`,
    );
    await loadClient(port, 300, 16); // warm-up
    await ask('idle');
    const t0 = Date.now();
    const peak = await loadClient(port, 6000, 16);
    await ask('idle');
    const sustained = Math.round((peak.acked * 1000) / (Date.now() - t0));
    const rate = fixedRate ?? Math.max(10, Math.round(sustained / 2));
    console.log(
      `peak (16 connections, ${peak.sent} msgs): ACKs ${peak.msgs_per_s} msgs/s while a backlog built; sustained (until every message was processed and delivered) ${sustained} msgs/s`,
    );
    console.log(
      `soak at ${fixedRate ? '--rate' : '50 % of sustained'}: ${rate} msgs/s over ${conns} connections for ${minutes} min`,
    );
    const start = Date.now();
    const until = start + minutes * 60_000;
    const samples = [];
    const progress = { acked: 0 };
    let last = { t: 0, acked: 0 };
    const sample = async () => {
      const s = { t: (Date.now() - start) / 1000, rss: rssMb(child.pid) };
      s.backlog = (await ask('backlog').catch(() => ({ backlog: NaN }))).backlog;
      samples.push(s);
      const recent = s.t > last.t ? Math.round((progress.acked - last.acked) / (s.t - last.t)) : 0;
      last = { t: s.t, acked: progress.acked };
      console.log(
        `  t=${s.t.toFixed(0).padStart(5)} s  RSS ${s.rss.toFixed(1)} MB  backlog ${s.backlog}  acked ${recent} msgs/s since the last sample`,
      );
    };
    await sample();
    const cpu0 = cpuSeconds(child.pid);
    const timer = setInterval(() => void sample(), sampleS * 1000);
    const r = await paced(port, rate, until, progress);
    clearInterval(timer);
    const cpu = cpuSeconds(child.pid) - cpu0;
    await sample();
    const steady = samples.filter((s) => s.t >= (minutes * 60) / 5);
    const { slope: perSec, mean } = slope(steady.map((s) => ({ x: s.t, y: s.rss })));
    const dev = Math.max(...steady.map((s) => Math.abs(s.rss - mean) / mean));
    const secs = (Date.now() - start) / 1000;
    const due = Math.round(rate * minutes * 60);
    console.log(
      `\nsent ${r.sent}, acked AA ${r.acked}, errors ${r.errors}: ${Math.round(r.acked / secs)} msgs/s; ` +
        `kept the pace: ${r.acked} of ${due} due (${((r.acked * 100) / due).toFixed(1)} %); ` +
        `backlog largest ${Math.max(...samples.map((x) => x.backlog))}, last ${samples[samples.length - 1].backlog}; ` +
        `engine CPU ${((cpu * 1000) / Math.max(1, r.acked)).toFixed(2)} ms per message (${((cpu * 100) / secs).toFixed(0)} % of one core)`,
    );
    console.log(
      `RSS after warm-up (${steady.length} samples from t=${steady[0]?.t.toFixed(0)} s): mean ${mean.toFixed(1)} MB, slope ${(perSec * 60).toFixed(2)} MB/min ` +
        `(${((perSec * 60 * 100) / mean).toFixed(2)} %/min), largest deviation from the mean ${(dev * 100).toFixed(1)} % (goal <= 10 %: ${dev <= 0.1 ? 'met' : 'NOT met'})`,
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r).once('error', r) && setTimeout(r, 5000));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
