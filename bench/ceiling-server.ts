// The HTTP ceiling of `npm run bench`: a bare express 5 server on the same Node, answering POST /v1/charges
// (body parsed by express.json()) and GET /v1/charges[/:id] with the JSON of a charge, status 201, and no
// authentication, database or processor behind it. What the api serves is measured against this: whatever
// it loses below it is the cost of its own work.
// node bench/ceiling-server.ts --port N
import { parseArgs } from 'node:util';
import express from 'express';

const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: node bench/ceiling-server.ts --port N\n');
  process.exit(2);
}

const charge = (amount: number, currency: string, description: string | null) => ({
  id: 'ch_0123456789abcdef0123456789ab',
  object: 'charge',
  amount,
  currency,
  status: 'succeeded',
  amount_refunded: 0,
  refunded: false,
  description,
  metadata: {},
  failure_code: null,
  failure_message: null,
  processor_reference: 'pr_0123456789abcdef0123456789ab',
  created: new Date().toISOString(),
});

const app = express();
app.disable('x-powered-by');
app.use(express.json());
app.post('/v1/charges', (req, res) => {
  const body = (req.body ?? {}) as { amount?: number; currency?: string; description?: string };
  res.status(201).json(charge(body.amount ?? 1000, body.currency ?? 'usd', body.description ?? null));
});
app.get(['/v1/charges', '/v1/charges/:id'], (_req, res) => {
  res.status(201).json(charge(1000, 'usd', null));
});

const server = app.listen(port, values.host, () => {
  process.stdout.write(`ceiling server listening on http://${values.host}:${port}\n`);
});
const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
