// The bench's own Postgres cluster, with pg_stat_statements loaded so every statement the service sends is
// counted by the server itself, and the pgbench run that gives the database ceiling.
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { freePort, runCommand, type Teardown } from './processes.ts';

export const BENCH_DATABASE = 'bench';
// The port the project's own embedded Postgres uses: never this one.
const PROJECT_PG_PORT = 54329;

export interface StatementStats {
  query: string;
  calls: number;
  meanMs: number;
}

export interface Cluster {
  /** URL of the bench database. */
  url: string;
  version: string;
  /** The server's postmaster: its backends are its children. */
  pid: number;
  /** Forgets every statement counted so far. */
  resetStatements(): Promise<void>;
  /** Statements sent to the bench database since the last reset. */
  statementCalls(): Promise<number>;
  /** The most called statements since the last reset, most called first. */
  topStatements(limit: number): Promise<StatementStats[]>;
  query<T extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<T[]>;
}

async function freePortBut(excluded: number): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port !== excluded) return port;
  }
}

async function connect(url: string, teardown: Teardown): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined); // the server stopping under an idle client is not news
  await client.connect();
  teardown.add(`connection to ${new URL(url).pathname}`, () => client.end());
  return client;
}

/**
 * Starts a cluster in `dir` (its log in `dir`/postgres.log), creates the bench database and
 * pg_stat_statements. The statistics are read from the `postgres` database on a connection of their own
 * and only statements of the bench database are counted, so the bench's own statements never are.
 */
export async function startCluster(dir: string, teardown: Teardown): Promise<Cluster> {
  const log = createWriteStream(path.join(dir, 'postgres.log'));
  teardown.add('postgres log', () => new Promise((resolve) => log.end(resolve)));
  const server = await startEmbeddedPostgres({
    dir: path.join(dir, 'data'),
    port: await freePortBut(PROJECT_PG_PORT),
    onLog: (line) => log.write(line),
    extraFlags: ['-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.track_utility=on'],
  });
  teardown.add('postgres', () => server.stop());

  const admin = await connect(server.url, teardown);
  await admin.query(`create database ${BENCH_DATABASE}`);
  await admin.query('create extension pg_stat_statements');
  const url = new URL(server.url);
  url.pathname = `/${BENCH_DATABASE}`;
  const bench = await connect(url.toString(), teardown);
  await bench.query('create extension pg_stat_statements');

  const inBench = `dbid = (select oid from pg_database where datname = '${BENCH_DATABASE}')`;
  const version = (await admin.query<{ server_version: string }>('show server_version')).rows[0]!.server_version;
  return {
    url: url.toString(),
    version,
    pid: Number((await readFile(path.join(dir, 'data', 'postmaster.pid'), 'utf8')).split('\n')[0]),
    async resetStatements() {
      await admin.query('select pg_stat_statements_reset()');
    },
    async statementCalls() {
      const { rows } = await admin.query<{ calls: string }>(`select coalesce(sum(calls), 0) as calls from pg_stat_statements where ${inBench}`);
      return Number(rows[0]!.calls);
    },
    async topStatements(limit) {
      const { rows } = await admin.query<{ query: string; calls: string; mean_exec_time: number }>(
        `select query, calls, mean_exec_time from pg_stat_statements where ${inBench} order by calls desc, query limit $1`,
        [limit],
      );
      return rows.map((r) => ({ query: r.query, calls: Number(r.calls), meanMs: r.mean_exec_time }));
    },
    async query(text, values) {
      return (await bench.query(text, values)).rows;
    },
  };
}

export interface PgbenchResult {
  transactionsPerSecond: number;
  transactions: number;
  latencyAverageMs: number | undefined;
}

/** Whether pgbench is on PATH. */
export async function hasPgbench(): Promise<boolean> {
  return runCommand('pgbench', ['--version']).then(
    (r) => r.code === 0,
    () => false,
  );
}

/** pgbench running `script` with 32 clients for `seconds` against the bench database. */
export async function runPgbench(
  cluster: Cluster,
  options: { script: string; seconds: number; variables: Record<string, string> },
): Promise<PgbenchResult> {
  const url = new URL(cluster.url);
  const args = ['-n', '-M', 'prepared', '-c', '32', '-j', '2', '-T', String(options.seconds), '-f', options.script];
  for (const [name, value] of Object.entries(options.variables)) args.push('-D', `${name}=${value}`);
  args.push('-h', url.hostname, '-p', url.port, '-U', decodeURIComponent(url.username), BENCH_DATABASE);
  const { code, stdout, stderr } = await runCommand('pgbench', args, { ...process.env, PGPASSWORD: decodeURIComponent(url.password) });
  const tps = /^tps = ([\d.]+)/m.exec(stdout)?.[1];
  const transactions = /^number of transactions actually processed: (\d+)/m.exec(stdout)?.[1];
  const failed = /^number of failed transactions: (\d+)/m.exec(stdout)?.[1];
  if (code !== 0 || !tps || !transactions || Number(failed ?? 0) > 0) {
    throw new Error(`pgbench failed (exit ${code}):\n${stdout}\n${stderr}`);
  }
  const latency = /^latency average = ([\d.]+) ms/m.exec(stdout)?.[1];
  return {
    transactionsPerSecond: Number(tps),
    transactions: Number(transactions),
    latencyAverageMs: latency === undefined ? undefined : Number(latency),
  };
}
