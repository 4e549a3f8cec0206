// A database outage is one event, not one log line per pool client, poll and loop that runs into it.
import { databaseTrouble } from './errors.ts';
import type { Logger } from './logger.ts';

export function createOutageLog(logger: Logger) {
  let down = false;
  return {
    /**
     * Logs the first failure of an outage; true when `err` is one (logged now or already). A lock wait or
     * statement cut by its deadline is the work's own trouble, not an outage, and is left to the caller.
     */
    report(err: unknown, where: string): boolean {
      if (databaseTrouble(err) !== 'unavailable') return false;
      if (!down) {
        down = true;
        const e = err as Error & { code?: string };
        logger.error({ where, code: e.code, reason: e.message }, 'database unavailable: background work waits and retries');
      }
      return true;
    },
    /** Background work reached the database again. */
    recovered(): void {
      if (!down) return;
      down = false;
      logger.info('database reachable again: background work resumes');
    },
    get down() {
      return down;
    },
  };
}

export type OutageLog = ReturnType<typeof createOutageLog>;
