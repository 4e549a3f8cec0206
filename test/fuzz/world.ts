// The fuzzer's world outside vitest, built as the tests build theirs: a fresh database (on an embedded
// Postgres under the OS temp dir, or in a database created at DATABASE_URL's server and dropped after),
// the processor simulator over HTTP, the service from compose() listening on port 0, and one account.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import pg from 'pg';
import { createAccount } from '../../src/accounts/accounts.service.ts';
import { compose } from '../../src/compose.ts';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, type Db, migrateToLatest } from '../../src/db/database.ts';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { createLogger } from '../../src/logger.ts';
import { startSimulator } from '../../src/simulator/simulator.ts';
import { freePort } from '../helpers/ports.ts';

/** Keeps the service's error and warn log lines (pino JSON), so a 5xx can be shown with its cause. */
export class ProblemLog extends Writable {
  private lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue;
      try {
        const parsed = JSON.parse(line) as { level?: number };
        if ((parsed.level ?? 0) >= 40) this.lines.push(line);
      } catch {
        this.lines.push(line);
      }
      if (this.lines.length > 200) this.lines.shift();
    }
    done();
  }
  /** The lines kept since the last call. */
  drain(): string[] {
    const out = this.lines;
    this.lines = [];
    return out;
  }
}

/** Rows of one account in the three tables a POST may write. */
export async function accountRowCounts(db: Db, accountId: string): Promise<Record<string, number>> {
  const { rows } = await sql<{ idempotency_keys: string; charges: string; refunds: string }>`
    select (select count(*) from idempotency_keys where account_id = ${accountId}) as idempotency_keys,
           (select count(*) from charges where account_id = ${accountId}) as charges,
           (select count(*) from refunds where account_id = ${accountId}) as refunds`.execute(db);
  const row = rows[0]!;
  return { idempotency_keys: Number(row.idempotency_keys), charges: Number(row.charges), refunds: Number(row.refunds) };
}

export interface World {
  baseUrl: string;
  apiKey: string;
  accountId: string;
  db: Db;
  databaseUrl: string;
  processorUrl: string;
  /** Where the database lives, for the report. */
  where: string;
  serverLog: ProblemLog;
  rowCounts(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

export async function startWorld(env: Record<string, string> = {}): Promise<World> {
  const closers: (() => Promise<unknown>)[] = [];
  let closing: Promise<void> | undefined;
  // Once, however often it is called (the end of the run and a signal may both ask).
  const close = () =>
    (closing ??= (async () => {
      for (const c of closers.reverse()) await c().catch((err) => process.stderr.write(`teardown: ${String(err)}\n`));
    })());
  try {
    let serverUrl = process.env.DATABASE_URL;
    let where = 'DATABASE_URL';
    if (!serverUrl) {
      const dir = await mkdtemp(path.join(tmpdir(), 'payments-fuzz-pg-'));
      await chmod(dir, 0o755); // the server runs as the postgres user when we are root
      closers.push(() => rm(dir, { recursive: true, force: true }));
      const server = await startEmbeddedPostgres({ dir: path.join(dir, 'data'), port: await freePort() });
      closers.push(() => server.stop());
      serverUrl = server.url;
      where = `embedded Postgres in ${dir}`;
    }
    const name = `fuzz_${randomBytes(6).toString('hex')}`;
    const admin = async (statement: string) => {
      const client = new pg.Client({ connectionString: serverUrl });
      await client.connect();
      try {
        await client.query(statement);
      } finally {
        await client.end();
      }
    };
    await admin(`create database ${name}`);
    closers.push(() => admin(`drop database if exists ${name} with (force)`));
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    const databaseUrl = url.toString();

    const simulator = await startSimulator();
    closers.push(() => simulator.close());

    const config = loadConfig({ PROCESSOR_URL: simulator.url, ...env });
    const serverLog = new ProblemLog();
    const logger = createLogger('warn', serverLog);
    const pool = createPool(databaseUrl, config, createLogger('silent'));
    closers.push(() => pool.end());
    await migrateToLatest(createDb(pool));

    const service = await compose({ config, pool, logger, supervise: true });
    closers.push(() => service.close());
    const server: Server = await new Promise((resolve) => {
      const s = service.app().listen(0, '127.0.0.1', () => resolve(s));
    });
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const { port } = server.address() as AddressInfo;
    const { account, apiKey } = await createAccount(service.db, 'Fuzz account');
    return {
      baseUrl: `http://127.0.0.1:${port}`,
      apiKey,
      accountId: account.id,
      db: service.db,
      databaseUrl,
      processorUrl: simulator.url,
      where,
      serverLog,
      rowCounts: () => accountRowCounts(service.db, account.id),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
