// The reference service of `npm run bench`: the simplest service that does the same job correctly, the
// floor any real service is judged against. express + pg and a durable idempotency-key table with a unique
// key: insert the key (the first request wins it), call the processor with it, store the answer; a repeat
// gets the stored answer, or 409 while the first is still in flight. No authentication, events, logs,
// metrics, deadlines, breaker, retries or recovery: everything the service does on top of this is what the
// bench sets against it.
// node bench/reference-server.ts --port N --database-url URL --processor-url URL
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import express from 'express';
import pg from 'pg';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    'database-url': { type: 'string' },
    'processor-url': { type: 'string' },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !values['database-url'] || !values['processor-url']) {
  process.stderr.write('usage: node bench/reference-server.ts --port N --database-url URL --processor-url URL\n');
  process.exit(2);
}
const processorUrl = values['processor-url'];
const pool = new pg.Pool({ connectionString: values['database-url'], max: 10 });

await pool.query(`
  create table if not exists reference_charges (
    idempotency_key text primary key,
    id text not null unique,
    response_status int,
    response jsonb,
    created_at timestamptz not null default now()
  )`);

const app = express();
app.disable('x-powered-by');
app.use(express.json());

app.post('/v1/charges', async (req, res) => {
  const key = req.get('idempotency-key');
  const { amount, currency, source } = (req.body ?? {}) as { amount?: number; currency?: string; source?: string };
  if (!key || !Number.isInteger(amount) || typeof currency !== 'string' || typeof source !== 'string') {
    res.status(400).json({ error: 'Idempotency-Key, amount, currency and source are required' });
    return;
  }
  const id = `ch_${randomBytes(12).toString('hex')}`;
  const inserted = await pool.query('insert into reference_charges (idempotency_key, id) values ($1, $2) on conflict do nothing', [key, id]);
  if (inserted.rowCount === 0) {
    const { rows } = await pool.query<{ response_status: number | null; response: unknown }>(
      'select response_status, response from reference_charges where idempotency_key = $1',
      [key],
    );
    if (rows[0]?.response_status == null) {
      res.status(409).json({ error: 'a request with this Idempotency-Key is in flight' });
      return;
    }
    res.set('Idempotent-Replayed', 'true').status(rows[0].response_status).json(rows[0].response);
    return;
  }
  const answer = await fetch(`${processorUrl}/charges`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': `reference_${key}` },
    body: JSON.stringify({ amount, currency, source }),
  });
  const processed = (await answer.json()) as { id?: string };
  const charge = {
    id,
    object: 'charge',
    amount,
    currency,
    status: answer.ok ? 'succeeded' : 'failed',
    processor_reference: processed.id ?? null,
    created: new Date().toISOString(),
  };
  const status = answer.ok ? 201 : 402;
  await pool.query('update reference_charges set response_status = $2, response = $3 where idempotency_key = $1', [key, status, charge]);
  res.status(status).json(charge);
});

app.get('/v1/charges/:id', async (req, res) => {
  const { rows } = await pool.query<{ response: unknown }>('select response from reference_charges where id = $1', [req.params.id]);
  if (!rows[0]) res.status(404).json({ error: 'no such charge' });
  else res.json(rows[0].response);
});

app.get('/v1/charges', async (req, res) => {
  const limit = Math.min(100, Number(req.query.limit) || 10);
  const { rows } = await pool.query<{ response: unknown }>(
    'select response from reference_charges where response is not null order by created_at desc limit $1',
    [limit],
  );
  res.json({ object: 'list', data: rows.map((r) => r.response) });
});

const server = app.listen(port, values.host, () => {
  process.stdout.write(`reference service listening on http://${values.host}:${port}\n`);
});
const stop = () => {
  server.close(() => void pool.end().then(() => process.exit(0)));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
