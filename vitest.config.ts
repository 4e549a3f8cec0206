import { defineConfig } from 'vitest/config';

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
    testTimeout: 30_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
    reporters: ['default'],
  },
});
