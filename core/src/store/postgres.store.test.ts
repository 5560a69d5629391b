import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startTcpProxy, type TcpProxy } from '../../../test/support/tcp-proxy';
import { silentLogger } from '../logging/logger';
import { storeConformance } from './conformance';
import { createStore } from './create-store';
import { PostgresMessageStore } from './postgres.store';
import { migrations, SCHEMA_VERSION } from './schema';

const URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const prefix = `ferry_test_${randomBytes(4).toString('hex')}`;
const schemas = new Map<PostgresMessageStore, string>();
let n = 0;

afterAll(async () => {
  const c = new pg.Client({ connectionString: URL });
  await c.connect();
  try {
    for (const s of new Set(schemas.values())) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await c.end();
  }
});

function make(schema: string, groupCommit?: { maxBatch?: number }): PostgresMessageStore {
  const s = new PostgresMessageStore({ url: URL, schema, logger: silentLogger(), groupCommit, poolSize: 3 });
  schemas.set(s, schema);
  return s;
}

storeConformance('postgres', {
  make: (opts) => make(`${prefix}_${++n}`, opts?.groupCommit),
  sibling: (s) => make(schemas.get(s as PostgresMessageStore)!),
  commits: (s) => (s as PostgresMessageStore).insertCommits,
});

describe('PostgresMessageStore specifics', () => {
  it('two processes migrating at once apply each migration once', async () => {
    const schema = `${prefix}_mig`;
    const a = make(schema);
    const b = make(schema);
    await Promise.all([a.open(), b.open()]);
    expect(await a.schemaVersion()).toBe(SCHEMA_VERSION);
    const c = new pg.Client({ connectionString: URL });
    await c.connect();
    const r = await c.query(`SELECT COUNT(*)::int AS n FROM ${schema}.schema_migrations`);
    await c.end();
    expect(r.rows[0].n).toBe(migrations.length);
    await a.close();
    await b.close();
  });

  it('createStore puts the tables in the configured schema (store.schema), creating it', async () => {
    const schema = `${prefix}_cfg`;
    const s = createStore({ kind: 'postgres', url: URL, schema }, silentLogger()) as PostgresMessageStore;
    schemas.set(s, schema);
    await s.open();
    try {
      const [m] = await s.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }]);
      const c = new pg.Client({ connectionString: URL });
      await c.connect();
      const r = await c.query(`SELECT id FROM ${schema}.messages`);
      await c.end();
      expect(r.rows.map((x) => x.id)).toEqual([m.id]);
    } finally {
      await s.close();
    }
  });

  /** A store reaching the server through a real TCP proxy the test can cut, black-hole and restore. */
  async function behindProxy(name: string, opts: { poolSize?: number; queryTimeoutMs?: number } = {}) {
    const upstream = new globalThis.URL(URL);
    const proxy = await startTcpProxy(upstream.hostname, Number(upstream.port || 5432));
    const schema = `${prefix}_${name}`;
    const store = new PostgresMessageStore({ url: `postgres://${upstream.username || 'postgres'}@127.0.0.1:${proxy.port}${upstream.pathname}`, schema, logger: silentLogger(), ...opts });
    schemas.set(store, schema);
    await store.open();
    const close = async () => {
      await store.close();
      await proxy.close();
    };
    return { store, proxy, close };
  }
  const oneMsg = () => [{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }];
  /** The network back: the next insert works, the store is reachable again, both messages stored. */
  async function backAfterRestore(s: PostgresMessageStore, proxy: TcpProxy) {
    await proxy.restore();
    await s.insert(oneMsg());
    expect(s.reachable()).toBe(true);
    expect((await s.stats()).messages).toEqual({ received: 2 });
  }

  it('is unreachable while its server cannot be reached, reachable again after the first success, and never crashes on it', async () => {
    // Cutting the proxy drops every connection and refuses new ones.
    const { store: s, proxy, close } = await behindProxy('reach', { poolSize: 2 });
    try {
      await s.insert(oneMsg());
      expect(s.reachable()).toBe(true);
      await proxy.cut();
      await expect(s.insert(oneMsg())).rejects.toMatchObject({ kind: 'transient' });
      await expect(s.backlog()).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CONNECTION' });
      expect(s.reachable()).toBe(false);
      await backAfterRestore(s, proxy);
    } finally {
      await close();
    }
  });

  it('fails a statement the server does not answer within queryTimeoutMs (a network dropping packets), as a lost connection', async () => {
    const { store: s, proxy, close } = await behindProxy('hole', { poolSize: 1, queryTimeoutMs: 500 });
    try {
      await s.insert(oneMsg());
      proxy.blackhole();
      const t0 = Date.now();
      await expect(s.insert(oneMsg())).rejects.toMatchObject({ kind: 'transient' });
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(s.reachable()).toBe(false);
      await backAfterRestore(s, proxy);
    } finally {
      await close();
    }
  });

  it('createStore needs a url for postgres', () => {
    expect(() => createStore({ kind: 'postgres', url: '' }, silentLogger())).toThrow(expect.objectContaining({ kind: 'config' }));
  });

  it('reports an unreachable server as a transient error', async () => {
    const s = new PostgresMessageStore({ url: 'postgres://postgres@127.0.0.1:1/test', logger: silentLogger() });
    await expect(s.open()).rejects.toMatchObject({ kind: 'transient', code: 'FERRY_E_TRANSIENT_STORE_CONNECT' });
  });
});
