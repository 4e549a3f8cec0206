// The embedded Postgres belongs to its data directory. `node src/main.ts` without DATABASE_URL, as
// `npm start` runs it: a server left running for its directory is reused (on whatever port it has);
// another directory's server, or another program, on the port stops the start with one line naming
// both; a directory it cannot use stops it with one line too. Never a stack trace, and nothing written.
import { createServer, type Server } from 'node:net';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isAlive } from '../../src/db/embedded.ts';
import { freePort } from '../helpers/ports.ts';
import { startService, stopAllServices } from '../helpers/processes.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'payments-embedded-'));
  await chmod(root, 0o755); // as root the server runs as `postgres`, who must reach its data directory
});
afterEach(async () => {
  await stopAllServices();
});
afterAll(async () => {
  // A server this file left running (the reused one) stops with its directory.
  for (const entry of await readdir(root)) {
    const pid = Number((await readFile(path.join(root, entry, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0]);
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGINT');
      } catch {
        // already gone
      }
      for (let waited = 0; isAlive(pid) && waited < 30_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await rm(root, { recursive: true, force: true });
});


/** `node src/main.ts <role>` on the embedded Postgres in `dir` at `pgPort`. */
function startOn(dir: string, pgPort: number, extra: Record<string, string> = {}) {
  return startService(
    'worker',
    { EMBEDDED_PG_DIR: dir, EMBEDDED_PG_PORT: String(pgPort), ...extra },
    { without: ['DATABASE_URL'] },
  );
}

/** Starts `dir`'s server with a worker, and leaves it running as a killed process would. */
async function serverLeftRunning(dir: string, pgPort: number): Promise<number> {
  const metricsPort = await freePort();
  const first = startOn(dir, pgPort, { WORKER_METRICS_PORT: String(metricsPort) });
  await waitForLivez(`http://127.0.0.1:${metricsPort}`, first);
  first.child.kill('SIGKILL');
  await first.exited;
  const pid = Number((await readFile(path.join(dir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  expect(isAlive(pid)).toBe(true);
  return pid;
}

async function waitForLivez(baseUrl: string, service: ReturnType<typeof startService>) {
  // The worker serves /livez, not /readyz; the shared helper polls /readyz, so this asks /livez itself.
  await expect
    .poll(
      async () => {
        if (!service.alive()) throw new Error(`exited before it was live\n${service.describe()}`);
        return fetch(`${baseUrl}/livez`).then(
          (r) => r.status,
          () => 0,
        );
      },
      { timeout: 90_000, interval: 100 },
    )
    .toBe(200);
}

/** The process stopped at once with exit code 1 and exactly one line on stderr, no stack trace. */
async function oneLineFailure(service: ReturnType<typeof startService>): Promise<string> {
  const exit = await service.exited;
  expect(exit, service.describe()).toEqual({ code: 1, signal: null });
  const lines = service.stderr.trimEnd().split('\n');
  expect(lines, service.stderr).toHaveLength(1);
  expect(service.stderr).not.toMatch(/\n\s+at /);
  return lines[0]!;
}

// Each case starts real processes and an initdb of its own: bounded generously, for a machine under load.
describe('the embedded Postgres', { timeout: 180_000 }, () => {
  it("reuses the server still running for its own directory, on that server's port", async () => {
    const dir = path.join(root, 'reused');
    const pgPort = await freePort();
    const pid = await serverLeftRunning(dir, pgPort);

    // Started again with another port configured: the running server of this directory is found by its
    // postmaster.pid, not by the port.
    const metricsPort = await freePort();
    const again = startOn(dir, await freePort(), { WORKER_METRICS_PORT: String(metricsPort) });
    await waitForLivez(`http://127.0.0.1:${metricsPort}`, again);
    expect(again.lines.find((l) => l.msg === 'embedded postgres running')).toMatchObject({ port: pgPort });
    expect(again.lines.some((l) => l.msg === 'migrations applied')).toBe(false); // same data: nothing to apply
    expect(isAlive(pid)).toBe(true);
  });

  it("refuses a port held by another directory's server, naming the port and that directory", async () => {
    const first = path.join(root, 'first');
    const pgPort = await freePort();
    await serverLeftRunning(first, pgPort);

    const second = path.join(root, 'second');
    const line = await oneLineFailure(startOn(second, pgPort));
    expect(line).toContain(`EMBEDDED_PG_PORT ${pgPort} is taken by another Postgres`);
    expect(line).toContain(first);
    await expect(readdir(second)).rejects.toThrow(/ENOENT/); // nothing was written for it
  });

  it('refuses a port held by another program', async () => {
    const other: Server = createServer((socket) => socket.end());
    const port = await new Promise<number>((resolve) => other.listen(0, '127.0.0.1', () => resolve((other.address() as { port: number }).port)));
    try {
      const line = await oneLineFailure(startOn(path.join(root, 'busy'), port));
      expect(line).toBe(`EMBEDDED_PG_PORT ${port} is taken by another program: set EMBEDDED_PG_PORT to a free port`);
    } finally {
      other.close();
    }
  });

  it('says in one line when its directory cannot be created', async () => {
    const file = path.join(root, 'a-file');
    await writeFile(file, 'not a directory');
    const dir = path.join(file, 'data');
    const line = await oneLineFailure(startOn(dir, await freePort()));
    expect(line).toBe(`cannot create the embedded Postgres directory ${dir} (EMBEDDED_PG_DIR): a part of the path is a file`);
  });

  it('says in one line when the server could not reach its directory', async () => {
    // A parent closed to everyone else: as root, the `postgres` user the server runs as cannot enter it;
    // as anyone else, it is the process itself that cannot create the directory.
    const closed = path.join(root, 'closed');
    await mkdir(closed, { mode: userInfo().uid === 0 ? 0o700 : 0o500 });
    const dir = path.join(closed, 'data');
    const line = await oneLineFailure(startOn(dir, await freePort()));
    expect(line).toContain(dir);
    expect(line).toMatch(userInfo().uid === 0 ? /the postgres system user .* cannot write to/ : /permission denied/);
  });
});
