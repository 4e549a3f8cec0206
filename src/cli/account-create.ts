// npm run account:create -- --name NAME: creates an account and prints its API key once.
import { parseArgs } from 'node:util';
import { createAccount } from '../accounts/accounts.service.ts';
import { withDatabase } from './with-database.ts';

const { values } = parseArgs({ options: { name: { type: 'string' } } });
const name = values.name?.trim();
if (!name || name.length > 200) {
  process.stderr.write('usage: npm run account:create -- --name NAME   (1 to 200 characters)\n');
  process.exit(2);
}
await withDatabase(async (db) => {
  const { account, apiKey } = await createAccount(db, name);
  process.stdout.write(
    `Account ${account.id} ("${account.name}") created.\nAPI key (shown once; only its hash is stored):\n  ${apiKey}\n`,
  );
});
