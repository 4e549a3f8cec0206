// A Postgres outage, for real, under the all role (api, worker and simulator in one process): clients keep
// charging while the cluster this test owns is stopped for at least 5 s and started again (outage.ts).
// The api+worker topology is in database-outage-split.test.ts, so the two run side by side.
import { describe, it } from 'vitest';
import { releaseOutageWorldAfterEach, runOutage, TEST_TIMEOUT_MS } from './outage.ts';

releaseOutageWorldAfterEach();

describe('a Postgres outage', () => {
  it.each([
    { topology: 'all', mode: 'fast' },
    { topology: 'all', mode: 'immediate' },
  ] as const)(
    '$topology: the cluster stopped ($mode) for 5 s and started again; no process dies, every charge happens once',
    runOutage,
    TEST_TIMEOUT_MS,
  );
});
