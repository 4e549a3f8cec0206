// npm run webhooks:redeliver -- <evt_… | we_…>: an operator's redelivery once a receiver is fixed. Every
// dead-lettered delivery of the event (or of the endpoint) is pending again, due now, with a new retry
// window; its endpoint is enabled again if it had been disabled. Deliveries already made are not repeated.
import { redeliverFailed } from '../webhooks/webhooks.repository.ts';
import { withDatabase } from './with-database.ts';

const target = process.argv[2] ?? '';
const which = /^evt_[A-Za-z0-9_-]+$/.test(target) ? { eventId: target } : /^we_[A-Za-z0-9_-]+$/.test(target) ? { endpointId: target } : undefined;
if (!which) {
  process.stderr.write('usage: npm run webhooks:redeliver -- <evt_… | we_…> (an event id, or a webhook endpoint id)\n');
  process.exit(2);
}

await withDatabase(async (db, { config }) => {
  const redelivered = await redeliverFailed(db, which, config.WEBHOOK_RETRY_WINDOW_SECONDS);
  process.stdout.write(`${redelivered} dead-lettered webhook deliver${redelivered === 1 ? 'y' : 'ies'} of ${target} pending again\n`);
});
