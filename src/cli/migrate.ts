// npm run migrate: applies every pending migration and says which.
import { migrateToLatest } from '../db/database.ts';
import { withDatabase } from './with-database.ts';

await withDatabase(async (db) => {
  const applied = await migrateToLatest(db);
  process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'schema is up to date\n');
});
