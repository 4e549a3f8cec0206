// npm run jobs:retry-dead: moves every dead-lettered settle job back to the settle queue, for after the
// processor has recovered. A charge or refund given up on (failed, processor_unavailable) is settled
// again with its own processor idempotency key, so it can still happen only once.
import { createBoss, SETTLE_DEAD_QUEUE, SETTLE_QUEUE } from '../jobs/queue.ts';
import { withDatabase } from './with-database.ts';

await withDatabase(async (_db, { pool }) => {
  const boss = createBoss(pool, { supervise: false });
  await boss.start();
  try {
    const moved = await boss.redrive(SETTLE_DEAD_QUEUE, { destination: SETTLE_QUEUE, limit: 100_000 });
    process.stdout.write(`moved ${moved} dead-lettered settle job(s) back to the settle queue\n`);
  } finally {
    await boss.stop({ graceful: false, close: false });
  }
});
