import net from 'node:net';

export interface TcpProxy {
  /** The port clients connect to (127.0.0.1). */
  port: number;
  /** Drop every connection and refuse new ones (the server "goes away"). */
  cut(): Promise<void>;
  /**
   * Keep every connection open but pass nothing more, either way, and accept new ones that lead
   * nowhere (a network that drops packets: nobody is told anything).
   */
  blackhole(): void;
  /** Back to normal: connections of a black hole are reset; new ones reach the server again. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of a real server (tests of connection loss: a database restarting, a
 * network partition). Bytes pass through untouched.
 */
export async function startTcpProxy(host: string, port: number): Promise<TcpProxy> {
  const pairs = new Set<[net.Socket, net.Socket | undefined]>();
  let dropping = false;
  const server = net.createServer((client) => {
    client.on('error', () => undefined);
    if (dropping) {
      const pair: [net.Socket, undefined] = [client, undefined];
      pairs.add(pair);
      client.on('data', () => undefined);
      client.on('close', () => pairs.delete(pair));
      return;
    }
    const upstream = net.connect(port, host);
    upstream.on('error', () => undefined);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.on('close', () => (upstream.destroy(), pairs.delete(pair)));
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  const listen = (p: number) => new Promise<void>((r) => server.listen(p, '127.0.0.1', () => r()));
  await listen(0);
  const own = (server.address() as net.AddressInfo).port;
  const destroyAll = () => {
    for (const [a, b] of pairs) {
      a.destroy();
      b?.destroy();
    }
  };
  const stop = () =>
    new Promise<void>((r) => {
      destroyAll();
      if (!server.listening) return r();
      server.close(() => r());
    });
  return {
    port: own,
    cut: stop,
    blackhole() {
      dropping = true;
      for (const [a, b] of pairs) {
        a.unpipe();
        b?.unpipe();
        a.on('data', () => undefined);
        b?.on('data', () => undefined);
      }
    },
    async restore() {
      if (dropping) {
        dropping = false;
        destroyAll();
      }
      if (!server.listening) await listen(own);
    },
    close: stop,
  };
}
