#!/usr/bin/env node
// The load client of `npm run bench -- reload`, in its own process (not competing with the engine
// for its event loop): --c connections, each with up to --window frames unacknowledged, --n
// messages in all (ADT^A08; even numbers women, odd men; control id S<k>-<i>). Prints
// `progress <acked>` lines as it goes and, at the end, one JSON line: per message its ACK code and
// latency, the disconnects, the wall time.
'use strict';
const net = require('node:net');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((a, v, i, arr) => (v.startsWith('--') ? a.concat([[v.slice(2), arr[i + 1]]]) : a), []),
);
const port = Number(args.port);
const C = Number(args.c || 8);
const N = Number(args.n || 4000);
const W = Math.max(1, Number(args.window || 1));
const VT = 0x0b;
const FS = 0x1c;
const CR = 0x0d;

const adt = (ctl, i) =>
  [
    `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^A08^ADT_A01|${ctl}|P|2.5.1`,
    'EVN|A08|20240101120000',
    `PID|1||MRN${i % 997}^^^HOSP^MR||DOE^JANE||19800101|${i % 2 ? 'M' : 'F'}`,
    'PV1|1|I|WARD1^101^A',
  ].join('\r') + '\r';

let next = 0;
let acked = 0;
let lastProgress = 0;
const results = []; // [ctl, i, code, ms]
let disconnects = 0;
const t0 = process.hrtime.bigint();

function connection(k) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    const inFlight = new Map(); // ctl -> { i, start }
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      sock.end();
      resolve();
    };
    const fill = () => {
      while (inFlight.size < W && next < N) {
        const i = next++;
        const ctl = `S${k}-${i}`;
        inFlight.set(ctl, { i, start: process.hrtime.bigint() });
        sock.write(Buffer.concat([Buffer.from([VT]), Buffer.from(adt(ctl, i), 'latin1'), Buffer.from([FS, CR])]));
      }
      if (!inFlight.size && next >= N) finish();
    };
    sock.on('connect', fill);
    sock.on('data', (d) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        const s = buf.indexOf(VT);
        const e = buf.indexOf(FS, s + 1);
        if (s < 0 || e < 0) break;
        const ack = buf.toString('latin1', s + 1, e);
        buf = buf.subarray(e + 2);
        const msa = ack.split(/\r|\n/).find((l) => l.startsWith('MSA')) || '';
        const f = msa.split('|');
        const m = inFlight.get(f[2]);
        if (!m) {
          results.push([f[2] || '?', -1, `UNKNOWN:${f[1]}`, 0]);
          continue;
        }
        inFlight.delete(f[2]);
        results.push([f[2], m.i, f[1] || 'NOMSA', Number(process.hrtime.bigint() - m.start) / 1e6]);
        acked++;
      }
      if (acked - lastProgress >= 200) {
        lastProgress = acked;
        process.stdout.write(`progress ${acked}\n`);
      }
      fill();
    });
    sock.on('close', () => {
      if (!done) {
        disconnects++;
        for (const [ctl, m] of inFlight) results.push([ctl, m.i, 'NOACK', 0]);
        done = true;
        resolve();
      }
    });
    sock.on('error', () => undefined);
  });
}

Promise.all(Array.from({ length: C }, (_, k) => connection(k))).then(() => {
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(`${JSON.stringify({ results, disconnects, wallMs })}\n`);
});
