// A database outage is one event, not one log line per request, pool client, poll and loop that runs into it.
import { databaseTrouble } from './errors.ts';
import type { Logger } from './logger.ts';

// The database counts as back after a statement answered this long after the last failure: at the edges
// of an outage some connections still answer while others fail, and attempts begun during it (a connect
// timing out after DB_CONNECTION_TIMEOUT_MS, 2 s by default) still fail after it; that is one outage, not several.
const SETTLED_MS = 3000;

/**
 * `probe` asks the database something trivial: while it is down, the log asks every SETTLED_MS itself, so
 * the line saying it is back comes whether or not any work happens to reach the database.
 */
export function createOutageLog(logger: Logger, probe?: () => Promise<unknown>) {
  let down = false;
  let lastFailureAt = 0;
  let probing: NodeJS.Timeout | undefined;
  const log = {
    /**
     * Logs the first failure of an outage; true when `err` is one (logged now or already). A lock wait or
     * statement cut by its deadline is the work's own trouble, not an outage, and is left to the caller.
     */
    report(err: unknown, where: string): boolean {
      if (databaseTrouble(err) !== 'unavailable') return false;
      lastFailureAt = Date.now();
      if (!down) {
        down = true;
        const e = err as Error & { code?: string };
        logger.error({ where, code: e.code, reason: e.message }, 'database unavailable: requests answer 503, background work waits and retries');
        if (probe) {
          probing = setInterval(() => probe().then(() => log.recovered(), () => undefined), SETTLED_MS);
          probing.unref();
        }
      }
      return true;
    },
    /** A statement got its answer. */
    recovered(): void {
      if (!down || Date.now() - lastFailureAt < SETTLED_MS) return;
      down = false;
      clearInterval(probing);
      logger.info('database reachable again: requests and background work resume');
    },
    get down() {
      return down;
    },
  };
  return log;
}

export type OutageLog = ReturnType<typeof createOutageLog>;
