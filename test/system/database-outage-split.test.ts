// A Postgres outage, for real, under separate api and worker processes: clients keep charging while the
// cluster this test owns is stopped (fast, immediate) or frozen (stall) for at least 5 s and started again
// (outage.ts).
import { describe, it } from 'vitest';
import { releaseOutageWorldAfterEach, runOutage, TEST_TIMEOUT_MS } from './outage.ts';

releaseOutageWorldAfterEach();

describe('a Postgres outage', () => {
  it.each([
    { topology: 'api+worker', mode: 'fast' },
    { topology: 'api+worker', mode: 'immediate' },
    { topology: 'api+worker', mode: 'stall' },
  ] as const)(
    '$topology: the cluster stopped ($mode) for 5 s and started again; no process dies, every charge happens once',
    runOutage,
    TEST_TIMEOUT_MS,
  );
});
