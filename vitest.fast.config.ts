// `npm run test:fast`: the whole HTTP contract, idempotency, payments, refunds, webhooks and the SDK against
// real Postgres and the real simulator, without the tests that stop clusters or kill processes.
import { configDefaults, defineConfig, mergeConfig } from 'vitest/config';
import base, { SLOW_TESTS } from './vitest.config.ts';

// Without the clusters and child processes of the slow files, four at a time.
export default mergeConfig(
  base,
  defineConfig({ test: { exclude: [...configDefaults.exclude, ...SLOW_TESTS], maxWorkers: 4 } }),
);
