import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ConfigError, configSchema, loadConfig } from '../src/config.ts';
import { createTestDatabase } from './helpers/database.ts';

describe('configuration', () => {
  it('has a default for every variable but DATABASE_URL', () => {
    const config = loadConfig({});
    expect(config.PORT).toBe(3000);
    expect(config.REQUEST_TIMEOUT_MS).toBe(5000);
    expect(config.DATABASE_URL).toBeUndefined();
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('describes every variable, for the README table', () => {
    for (const [name, schema] of Object.entries(configSchema.shape)) {
      expect(schema.description, name).toBeTruthy();
    }
  });

  it('coerces numbers and reads booleans', () => {
    const config = loadConfig({ PORT: '8080', WORKER_ENABLED: 'false' });
    expect(config.PORT).toBe(8080);
    expect(config.WORKER_ENABLED).toBe(false);
  });

  it('names every bad variable in one message', () => {
    const error = (() => {
      try {
        loadConfig({ PORT: 'eighty', LOG_LEVEL: 'loud', DATABASE_URL: 'mysql://x', DB_POOL_MAX: '0' });
      } catch (err) {
        return err;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    for (const name of ['PORT', 'LOG_LEVEL', 'DATABASE_URL', 'DB_POOL_MAX']) expect(message).toContain(name);
    expect(message).not.toContain('\n');
  });

  it('rejects a breaker reset shorter than its window (old failures would reopen it)', () => {
    expect(() => loadConfig({ BREAKER_RESET_TIMEOUT_MS: '1000', BREAKER_ROLLING_WINDOW_MS: '5000' })).toThrow(
      /BREAKER_RESET_TIMEOUT_MS/,
    );
  });

  it('stops the service at start with a one-line message naming the bad variable', () => {
    const run = spawnSync(process.execPath, ['src/main.ts', 'api'], {
      env: { ...process.env, PORT: 'not-a-port', DATABASE_URL: '' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(run.status).toBe(1);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/^invalid configuration: PORT: /);
  });

  it('stops the worker with one line, no stack trace, when its metrics port is taken', async () => {
    await withTakenPort((port) =>
      expectStopsWithOneLine(['src/main.ts', 'worker'], { WORKER_METRICS_PORT: String(port) }, `cannot listen on 127.0.0.1:${port}: the port is taken (set WORKER_METRICS_PORT to another port)`),
    );
  });

  it("stops npm start's command with one line when the processor simulator's port is taken (a second npm start)", async () => {
    await withTakenPort((port) =>
      expectStopsWithOneLine(
        ['src/main.ts', 'all'],
        { PORT: '0', PROCESSOR_PORT: String(port), PROCESSOR_URL: '' },
        `cannot listen on 127.0.0.1:${port}: the port is taken (set PROCESSOR_PORT to another port)`,
      ),
    );
  });

  it('stops npm run start:processor with one line when its port is taken', async () => {
    await withTakenPort(async (port) => {
      const run = spawnSync(process.execPath, ['src/simulator/main.ts', '--port', String(port)], { encoding: 'utf8', timeout: 20_000 });
      expect(run.status).toBe(1);
      expect(run.stderr.trim().split('\n')).toEqual([`cannot listen on 127.0.0.1:${port}: the port is taken (use --port to pick another)`]);
    });
  });
});

/** Runs `node args` on a test database with `env` set, and expects exit 1 with `line` alone on stderr. */
async function expectStopsWithOneLine(args: string[], env: Record<string, string>, line: string): Promise<void> {
  const t = await createTestDatabase();
  try {
    const run = spawnSync(process.execPath, args, { env: { ...process.env, DATABASE_URL: t.url, ...env }, encoding: 'utf8', timeout: 20_000 });
    expect(run.status).toBe(1);
    expect(run.stderr.trim().split('\n')).toEqual([line]);
  } finally {
    await t.destroy();
  }
}

/** `work` with a port some other program listens on. */
async function withTakenPort(work: (port: number) => Promise<void>): Promise<void> {
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  try {
    await work((taken.address() as net.AddressInfo).port);
  } finally {
    taken.close();
  }
}
