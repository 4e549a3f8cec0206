// Builds the app as main.ts does, on a test database, with a logger the test can read.
import { Writable } from 'node:stream';
import { createApp } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import type { Db } from '../../src/db/database.ts';
import { createReadiness } from '../../src/health/health.service.ts';
import { createLogger } from '../../src/logger.ts';
import { createProcessorClient } from '../../src/processor/processor.client.ts';
import { createServices } from '../../src/services.ts';

export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    for (const line of chunk.toString().split('\n')) if (line) this.lines.push(JSON.parse(line));
    done();
  }
}

/** `env` is what the process environment would hold; unset variables take their defaults. */
export function buildApp(db: Db, env: Record<string, string> = {}) {
  const config = loadConfig(env);
  const logs = new LogCapture();
  const logger = createLogger('debug', logs);
  const readiness = createReadiness({ db, timeoutMs: config.READINESS_TIMEOUT_MS, isShuttingDown: () => false });
  const processor = createProcessorClient(config, logger);
  const services = createServices({ config, db, logger, processor });
  const app = createApp({ config, db, logger, readiness, services });
  return { app, logs, config, logger, services, processor, close: () => processor.shutdown() };
}

export type BuiltApp = ReturnType<typeof buildApp>;
