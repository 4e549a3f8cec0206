// `npm run test:fast`: the whole HTTP contract, idempotency, payments, refunds, webhooks and the SDK against
// real Postgres and the real simulator, without the tests that stop clusters or kill processes.
import { configDefaults, defineConfig, mergeConfig } from 'vitest/config';
import base, { SLOW_TESTS } from './vitest.config.ts';

// These files mostly wait (for Postgres, the simulator, a deadline), so four run at a time even on two
// cores; vitest's default there (cores - 1) runs them one by one. The whole suite keeps the default: its
// outages, failovers and soak beside each other starved the waits of the payments tests (timeouts).
export default mergeConfig(
  base,
  defineConfig({ test: { exclude: [...configDefaults.exclude, ...SLOW_TESTS], maxWorkers: 4 } }),
);
