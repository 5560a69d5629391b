import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Tracks an HTTP(S) server's connections so a stop never waits on a client: Node's
 * `server.close()` waits for every open connection, and closes only keep-alive connections that
 * have finished a request -- not one that never sent a request, nor one part-way through its
 * headers. `close()` stops accepting, closes every connection with no request being handled at
 * once, lets requests being handled finish (their connection closes after the response) and
 * destroys whatever is left after `graceMs`.
 */
export class HttpConnections {
  /** By `address|port`: the TCP socket (under TLS too) and the requests being handled on it. */
  private readonly conns = new Map<string, { raw: Socket; active: number }>();
  private closing = false;

  constructor(server: Server) {
    server.on('connection', (raw: Socket) => {
      if (this.closing) {
        raw.destroy();
        return;
      }
      const key = connKey(raw);
      this.conns.set(key, { raw, active: 0 });
      raw.once('close', () => this.conns.delete(key));
    });
    server.on('request', (req, res) => {
      const s = req.socket;
      const e = this.conns.get(connKey(s));
      if (!e) return;
      e.active += 1;
      if (this.closing) res.setHeader('connection', 'close');
      res.once('close', () => {
        e.active -= 1;
        if (this.closing && e.active === 0) s.destroySoon();
      });
    });
  }

  /** Connections open now. */
  get size(): number {
    return this.conns.size;
  }

  /**
   * Runs `closeServer` (e.g. `fastify.close()`, which stops accepting and waits for requests in
   * flight) while closing every connection that has no request in flight; after `graceMs` the rest
   * are destroyed so the returned promise settles.
   */
  async close(closeServer: () => Promise<void>, graceMs = 5000): Promise<void> {
    this.closing = true;
    const closed = closeServer();
    for (const e of this.conns.values()) if (e.active === 0) e.raw.destroy();
    const t = setTimeout(() => {
      for (const e of this.conns.values()) e.raw.destroy();
    }, graceMs);
    t.unref();
    try {
      await closed;
    } finally {
      clearTimeout(t);
    }
  }
}

function connKey(s: Socket): string {
  return `${s.remoteAddress}|${s.remotePort}`;
}
