import { defineConfig } from 'vitest/config';
import { LongestFirst } from './test/helpers/sequencer.ts';

/**
 * What `npm run test:fast` leaves out: tests that stop, freeze or fail over real Postgres clusters, kill or
 * signal real processes, and the soak, fuzz and lab runs. `npm test` runs everything.
 */
export const SLOW_TESTS = [
  'test/system/**',
  'test/soak/**',
  'test/fuzz/**',
  'test/lab/**',
  'test/ops/signals.test.ts',
  'test/ops/embedded-postgres.test.ts',
  'test/ops/startup.test.ts',
  'test/ops/readiness.test.ts',
  'test/worker/crash.test.ts',
  'test/db/transactions.test.ts',
  'test/config.test.ts',
];

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    // Three files at a time on two cores: most tests wait (on Postgres, the simulator, a deadline, a
    // cluster coming back) rather than compute, and every wait polls a condition with a bound taken from
    // the settings it tests, so a busy machine makes a test slower, never wrong.
    maxWorkers: 3,
    // A worker process keeps its loaded modules from one file to the next instead of importing the whole
    // service again for each (that was a third of the fast tier's CPU). Every file still builds its own
    // database, simulator and app, and no module keeps state between them.
    isolate: false,
    sequence: { sequencer: LongestFirst },
    testTimeout: 30_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
    reporters: ['default'],
  },
});
