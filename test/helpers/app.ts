// Builds the service as main.ts does (compose), on a test database, with a logger the test can read.
import { Writable } from 'node:stream';
import type pg from 'pg';
import { compose } from '../../src/compose.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { auditLogLine } from './log-audit.ts';

export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue;
      auditLogLine(line);
      this.lines.push(JSON.parse(line));
    }
    done();
  }
}

/**
 * `env` is what the process environment would hold; unset variables take their defaults, except the
 * per-key rate limit, off unless a test sets it: tests send far more than 100 requests a second on one key.
 */
export async function buildApp(database: { pool: pg.Pool }, env: Record<string, string> = {}) {
  const config = loadConfig({ RATE_LIMIT_REQUESTS: '0', ...env });
  const logs = new LogCapture();
  const logger = createLogger('debug', logs);
  const service = await compose({ config, pool: database.pool, logger, supervise: true });
  return { ...service, app: service.app(), service, logs, config, logger };
}

export type BuiltApp = Awaited<ReturnType<typeof buildApp>>;
