// Public addresses are written as such (93.184.215.14): tests run without DNS for public names.
// Webhook endpoints through the API: made idempotently with their secret shown once (and stored
// encrypted), listed, read and deleted per account; URLs that would point the service inward refused
// with nothing written.
import { sql } from 'kysely';
import os from 'node:os';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createSecretBox } from '../../src/webhooks/secrets.ts';
import { buildApp } from '../helpers/app.ts';
import { createTestContext, newKey, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

// One world for the file (every test makes accounts of its own and counts only their rows); the test
// that allows private addresses builds its own.
let shared: TestContext;
let ctx: TestContext | undefined;
beforeAll(async () => {
  shared = await createTestContext();
});
afterAll(() => shared.destroy());
afterEach(async () => {
  if (ctx !== shared) await ctx?.destroy();
  ctx = undefined;
});

const post = (c: TestContext, auth: Record<string, string>, body: object, key = newKey()) =>
  request(c.app).post('/v1/webhook_endpoints').set(auth).set('Idempotency-Key', key).send(body);

/** The account's endpoints and idempotency keys. */
const rows = async (c: TestContext, accountId: string) => ({
  endpoints: (await sql<{ n: number }>`select count(*)::int as n from webhook_endpoints where account_id = ${accountId}`.execute(c.t.db)).rows[0]!.n,
  keys: (await sql<{ n: number }>`select count(*)::int as n from idempotency_keys where account_id = ${accountId}`.execute(c.t.db)).rows[0]!.n,
});

describe('webhook endpoints', () => {
  it('answers 201 with the secret once, replays the same answer for the same key, and keeps the secret only encrypted', async () => {
    ctx = shared;
    const { account, auth } = await ctx.account();
    const key = newKey();
    const body = { url: 'https://93.184.215.14/hooks', enabled_events: ['charge.succeeded', 'refund.succeeded'] };
    const created = await post(ctx, auth, body, key);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ object: 'webhook_endpoint', url: body.url, enabled_events: body.enabled_events, status: 'enabled' });
    expect(created.body.id).toMatch(/^we_/);
    expect(created.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(created.headers.location).toBe(`/v1/webhook_endpoints/${created.body.id}`);

    const replay = await post(ctx, auth, body, key);
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toEqual(created.body);
    expect((await rows(ctx, account.id)).endpoints).toBe(1);

    // Nowhere in the clear: not in the endpoint's row, not in the answer stored with the key for replays.
    const keyRow = await ctx.t.db
      .selectFrom('idempotency_keys')
      .select(sql<string>`response_body::text`.as('body'))
      .where('account_id', '=', account.id)
      .executeTakeFirstOrThrow();
    expect(keyRow.body).not.toContain(created.body.secret.slice('whsec_'.length));
    const stored = await ctx.t.db.selectFrom('webhook_endpoints').select('secret_ciphertext').where('id', '=', created.body.id).executeTakeFirstOrThrow();
    expect(stored.secret_ciphertext).not.toContain(created.body.secret.slice('whsec_'.length));
    expect(createSecretBox().open(stored.secret_ciphertext)).toBe(created.body.secret);
    expect(() => createSecretBox('another key of at least 16 characters').open(stored.secret_ciphertext)).toThrow();

    const { secret: _secret, ...shown } = created.body;
    expect((await request(ctx.app).get(`/v1/webhook_endpoints/${created.body.id}`).set(auth)).body).toEqual(shown);
    expect((await request(ctx.app).get('/v1/webhook_endpoints').set(auth)).body).toEqual({ object: 'list', data: [shown], has_more: false });
    expectProblem(await post(ctx, auth, { ...body, url: 'https://93.184.215.14/other' }, key), 422, 'idempotency_key_reused');

    const deleted = await request(ctx.app).delete(`/v1/webhook_endpoints/${created.body.id}`).set(auth);
    expect(deleted.status).toBe(200);
    expect(deleted.body).toEqual({ id: created.body.id, object: 'webhook_endpoint', deleted: true });
    expectProblem(await request(ctx.app).get(`/v1/webhook_endpoints/${created.body.id}`).set(auth), 404, 'not_found');
    expectProblem(await request(ctx.app).delete(`/v1/webhook_endpoints/${created.body.id}`).set(auth), 404, 'not_found');
  });

  it('refuses loopback, private, link-local and non-http URLs, and a name that resolves to loopback, writing nothing', async () => {
    ctx = shared;
    const { account, auth } = await ctx.account();
    const refused = [
      'http://127.0.0.1:8080/hooks',
      'http://localhost:8080/hooks',
      'http://[::1]/hooks',
      'http://10.1.2.3/hooks',
      'http://172.16.0.1/hooks',
      'http://192.168.1.1/hooks',
      'http://169.254.169.254/latest/meta-data',
      'http://0.0.0.0/hooks',
      'http://[::ffff:127.0.0.1]/hooks',
      'http://[fd00::1]/hooks',
      'http://[2002:7f00:1::]/hooks',
      'http://[::127.0.0.1]/hooks',
      'http://2130706433/hooks',
      // Documentation and relay ranges, in every spelling the URL parser turns into one of them.
      'http://192.0.2.2:8080/hooks',
      'http://3221225986:8080/hooks',
      'http://0xc0.0.2.2:8080/hooks',
      'http://192.0.2.2.:8080/hooks',
      'http://198.51.100.7/hooks',
      'http://203.0.113.9/hooks',
      'http://192.88.99.1/hooks',
      'http://[2001:db8::1]/hooks',
      // This host's own interfaces, whatever their range.
      ...Object.values(os.networkInterfaces())
        .flat()
        .filter((a) => a && !a.internal)
        .map((a) => (a!.family === 'IPv6' ? `http://[${a!.address.split('%')[0]}]/hooks` : `http://${a!.address}/hooks`)),
    ];
    for (const url of refused) {
      const res = await post(ctx, auth, { url, enabled_events: ['*'] });
      expectProblem(res, 400, 'validation_failed');
      expect(res.body.errors[0].path).toBe('url');
      expect(res.body.errors[0].message, url).toMatch(
        /^(\S+ is not a public address|localhost resolves to an address that is not public) \(WEBHOOK_ALLOW_PRIVATE_URLS=true allows such addresses, for development\)$/,
      );
    }
    for (const [url, message] of [
      ['ftp://example.com/hooks', /http or https/],
      ['/relative', /absolute URL/],
      ['https://user:pass@example.com/hooks', /user name or password/],
    ] as const) {
      const res = await post(ctx, auth, { url, enabled_events: ['*'] });
      expectProblem(res, 400, 'validation_failed');
      expect(res.body.errors[0].message).toMatch(message);
    }
    for (const enabled_events of [[], ['charge.exploded'], ['*', 'charge.succeeded'], ['charge.failed', 'charge.failed']]) {
      expectProblem(await post(ctx, auth, { url: 'https://93.184.215.14/hooks', enabled_events }), 400, 'validation_failed');
    }
    expectProblem(await post(ctx, auth, { url: 'https://93.184.215.14/hooks', enabled_events: ['*'], extra: 1 }), 400, 'validation_failed');
    expect(await rows(ctx, account.id)).toEqual({ endpoints: 0, keys: 0 });
  });

  it('allows private addresses when WEBHOOK_ALLOW_PRIVATE_URLS is set; a repeat of that request elsewhere still gets its answer', async () => {
    ctx = await createTestContext({ WEBHOOK_ALLOW_PRIVATE_URLS: 'true' });
    const { auth } = await ctx.account();
    const key = newKey();
    const body = { url: 'http://localhost:8080/hooks', enabled_events: ['*'] };
    const created = await post(ctx, auth, body, key);
    expect(created.status).toBe(201);
    // An api copy that refuses the address (or where the name now resolves inward) replays the stored answer.
    const strict = await buildApp({ pool: ctx.t.pool }, { PROCESSOR_URL: ctx.simulator.url });
    try {
      const replay = await request(strict.app).post('/v1/webhook_endpoints').set(auth).set('Idempotency-Key', key).send(body);
      expect([replay.status, replay.headers['idempotent-replayed']]).toEqual([201, 'true']);
      expect(replay.body).toEqual(created.body);
      const fresh = await request(strict.app).post('/v1/webhook_endpoints').set(auth).set('Idempotency-Key', newKey()).send(body);
      expectProblem(fresh, 400, 'validation_failed');
    } finally {
      await strict.close();
    }
  });

  it('holds the limit of 16 under concurrent creates on two api copies', async () => {
    ctx = shared;
    const { account, auth } = await ctx.account();
    const other = await buildApp({ pool: ctx.t.pool }, { PROCESSOR_URL: ctx.simulator.url });
    try {
      const answers = await Promise.all(
        Array.from({ length: 24 }, (_, i) =>
          request(i % 2 ? other.app : ctx!.app).post('/v1/webhook_endpoints').set(auth).set('Idempotency-Key', newKey()).send({ url: `https://93.184.215.14/hooks/${i}`, enabled_events: ['*'] }),
        ),
      );
      expect(answers.map((a) => a.status).sort()).toEqual([...Array(16).fill(201), ...Array(8).fill(409)]);
      expect(answers.filter((a) => a.status === 409).map((a) => a.body.code)).toEqual(Array(8).fill('too_many_webhook_endpoints'));
      expect((await rows(ctx, account.id)).endpoints).toBe(16);
    } finally {
      await other.close();
    }
  });

  it('answers 404 for a create whose endpoint was deleted before the request finished (its process died after writing it)', async () => {
    ctx = shared;
    const { account, auth } = await ctx.account();
    const key = newKey();
    const body = { url: 'https://93.184.215.14/hooks', enabled_events: ['*'] };
    const created = (await post(ctx, auth, body, key)).body;
    // As a process that died after phase 1 leaves it: the endpoint written, the key unfinished and free.
    await sql`update idempotency_keys set recovery_point = 'intent_recorded', locked_at = null, lease_token = null,
              response_status = null, response_body = null, response_headers = null
              where account_id = ${account.id}`.execute(ctx.t.db);
    expect((await request(ctx.app).delete(`/v1/webhook_endpoints/${created.id}`).set(auth)).status).toBe(200);
    const retry = await post(ctx, auth, body, key);
    expectProblem(retry, 404, 'not_found');
    const replay = await post(ctx, auth, body, key);
    expect([replay.status, replay.body.code, replay.headers['idempotent-replayed']]).toEqual([404, 'not_found', 'true']);
    const keys = await ctx.t.db.selectFrom('idempotency_keys').select('recovery_point').where('account_id', '=', account.id).execute();
    expect(keys).toEqual([{ recovery_point: 'finished' }]);
  });

  it('keeps each account to its own endpoints, and to 16 of them', async () => {
    ctx = shared;
    const mine = await ctx.account();
    const theirs = await ctx.account();
    const created = (await post(ctx, mine.auth, { url: 'https://93.184.215.14/hooks', enabled_events: ['*'] })).body;
    expect((await request(ctx.app).get('/v1/webhook_endpoints').set(theirs.auth)).body.data).toEqual([]);
    expectProblem(await request(ctx.app).get(`/v1/webhook_endpoints/${created.id}`).set(theirs.auth), 404, 'not_found');
    expectProblem(await request(ctx.app).delete(`/v1/webhook_endpoints/${created.id}`).set(theirs.auth), 404, 'not_found');
    expect((await request(ctx.app).get(`/v1/webhook_endpoints/${created.id}`).set(mine.auth)).status).toBe(200);

    for (let i = 1; i < 16; i++) expect((await post(ctx, mine.auth, { url: `https://93.184.215.14/hooks/${i}`, enabled_events: ['*'] })).status).toBe(201);
    expectProblem(await post(ctx, mine.auth, { url: 'https://93.184.215.14/hooks/17', enabled_events: ['*'] }), 409, 'too_many_webhook_endpoints');
    expect((await post(ctx, theirs.auth, { url: 'https://93.184.215.14/hooks', enabled_events: ['*'] })).status).toBe(201);
  });
});
