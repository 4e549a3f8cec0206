// npm run jobs:retry-dead: drives every dead-lettered settle or reconcile job's payment again now, for an
// operator who has fixed what made them fail, without waiting for the sweep. The payment is asked about
// with its own processor idempotency key, so it can still happen only once.
import { createBoss, createJobQueue, RECONCILE_QUEUE, SETTLE_QUEUE } from '../db/job-queue.ts';
import { withDatabase } from './with-database.ts';

await withDatabase(async (db, { pool, config }) => {
  const boss = createBoss(pool, { supervise: false });
  await boss.start();
  try {
    const queue = createJobQueue(boss, config);
    let moved = 0;
    for (let batch = await queue.takeDeadLetters(1000); batch.length; batch = await queue.takeDeadLetters(1000)) {
      for (const { kind, id, queue: from } of batch) {
        await queue.enqueue(db, from === RECONCILE_QUEUE ? RECONCILE_QUEUE : SETTLE_QUEUE, { kind, id });
        moved += 1;
      }
    }
    process.stdout.write(`moved ${moved} dead-lettered job(s) back to their queue\n`);
  } finally {
    await boss.stop({ graceful: false, close: false });
  }
});
