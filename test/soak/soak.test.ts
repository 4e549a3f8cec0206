// The chaos soak, short form: 45 seconds of mixed load through the SDK while the processor, Postgres and
// the service's processes fail in turn (npm run soak runs the long form). Prints its report; fails on any
// breach. SOAK_SEED picks another schedule.
import { expect, it } from 'vitest';
import { runSoak } from './soak.ts';

const SEED = Number(process.env.SOAK_SEED ?? 45);

it(
  `chaos soak, 45 s (seed ${SEED}): every card charged exactly once whatever fails`,
  async () => {
    const { breaches, report } = await runSoak({ durationSeconds: 45, seed: SEED });
    process.stdout.write(`\nchaos soak (45 s, seed ${SEED}):\n${report.map((l) => `  ${l}`).join('\n')}\n`);
    expect(breaches, breaches.slice(0, 20).join('\n')).toEqual([]);
  },
  300_000,
);
