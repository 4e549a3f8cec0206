// The order files start in: the long ones first, so none of them starts last and ends the run alone.
// Vitest's own order runs larger files first until it has timings of its own (never, on a clean clone),
// and a short file can hold a long run: database-outage-split.test.ts is 30 lines.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** The longest files of the whole suite, longest first (measured on two cores; the rest take < 15 s). */
export const LONGEST_FILES = [
  'test/soak/soak.test.ts',
  'test/lab/lab.test.ts',
  'test/system/database-outage-split.test.ts',
  'test/system/database-outage.test.ts',
  'test/payments/unknown-is-not-failed.test.ts',
  'test/system/database-restart.test.ts',
  'test/ops/embedded-postgres.test.ts',
  'test/system/database-failover.test.ts',
  'test/fuzz/fuzz.test.ts',
  'test/worker/crash.test.ts',
  'test/ops/signals.test.ts',
  'test/webhooks/delivery.test.ts',
  'test/ops/startup.test.ts',
];

export class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const gone = LONGEST_FILES.filter((file) => !existsSync(path.join(this.ctx.config.root, file)));
    if (gone.length) throw new Error(`test/helpers/sequencer.ts lists files that do not exist: ${gone.join(', ')}`);
    const rank = (spec: TestSpecification) => {
      const i = LONGEST_FILES.findIndex((file) => spec.moduleId.endsWith(`/${file}`));
      return i < 0 ? LONGEST_FILES.length : i;
    };
    return (await super.sort(files)).map((spec, i) => ({ spec, i })).sort((a, b) => rank(a.spec) - rank(b.spec) || a.i - b.i).map(({ spec }) => spec);
  }
}
