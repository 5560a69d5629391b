import net from 'node:net';

export interface TcpProxy {
  /** The port clients connect to (127.0.0.1). */
  port: number;
  /** Drop every connection and refuse new ones (the server "goes away"). */
  cut(): Promise<void>;
  /** Accept connections again on the same port. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of a real server (tests of connection loss: a database restarting, a
 * network partition). Bytes pass through untouched.
 */
export async function startTcpProxy(host: string, port: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  const listen = (p: number) => new Promise<void>((r) => server.listen(p, '127.0.0.1', () => r()));
  await listen(0);
  const own = (server.address() as net.AddressInfo).port;
  const stop = () =>
    new Promise<void>((r) => {
      if (!server.listening) return r();
      server.close(() => r());
      for (const s of sockets) s.destroy();
    });
  return { port: own, cut: stop, restore: () => listen(own), close: stop };
}
