// Every rule of the README's "Idempotency" section, caused for real against Postgres and the simulator.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertApiKey } from '../../src/accounts/accounts.repository.ts';
import { hashApiKey } from '../../src/accounts/accounts.service.ts';
import { chargePayments } from '../../src/charges/charges.service.ts';
import { newId } from '../../src/ids.ts';
import {
  charge,
  countRows,
  createGatedTestContext,
  ledgerFor,
  newKey,
  postCharge,
  processorKeyFor,
  readCharge,
  type TestContext,
} from '../helpers/context.ts';
import { leaveAbandonedCharge } from '../helpers/factories.ts';
import type { Gate } from '../helpers/gate.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext & { gate: Gate };
beforeAll(async () => {
  // Processor calls go through a gate, so a test can hold one in flight for as long as it needs; one
  // attempt may take most of the request's deadline, so a held call is not retried meanwhile. Both are
  // seconds long, so however busy the machine, the requests a test sends while one is held are answered
  // long before it could time out.
  ctx = await createGatedTestContext({
    IDEMPOTENCY_LEASE_SECONDS: '60',
    DB_POOL_MAX: '20',
    DB_CONNECTION_TIMEOUT_MS: '10000',
    REQUEST_TIMEOUT_MS: '12000',
    PROCESSOR_ATTEMPT_TIMEOUT_MS: '10000',
  });
});
afterAll(() => ctx.destroy());

const keyRow = (accountId: string, key: string) =>
  ctx.t.db
    .selectFrom('idempotency_keys')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('key', '=', key)
    .executeTakeFirst();

const processorEntriesFor = async (accountId: string, key: string) => {
  const row = await keyRow(accountId, key);
  return ledgerFor((await ctx.ledger()).entries, processorKeyFor('charge', row!.id));
};

/** An API key rotation: the account's old key revoked, a new one live. Answers the new key's auth. */
async function rotateApiKey(accountId: string, oldKey: string) {
  await ctx.t.db.updateTable('api_keys').set({ revoked_at: new Date() }).where('secret_hash', '=', hashApiKey(oldKey)).execute();
  const apiKey = `sk_test_${randomBytes(24).toString('base64url')}`;
  await insertApiKey(ctx.t.db, { id: newId('key'), account_id: accountId, prefix: apiKey.slice(0, 12), secret_hash: hashApiKey(apiKey) });
  return { Authorization: `Bearer ${apiKey}` };
}

const outcomesLogged = (requestId: string) =>
  ctx.logs.lines.filter((l) => l.request_id === requestId && l.msg === 'request completed').map((l) => l.idempotency);

describe('POST /v1/charges idempotency', () => {
  it('answers 400 idempotency_key_missing without a key, and stores nothing', async () => {
    const { account, auth } = await ctx.account();
    expectProblem(await postCharge(ctx, auth, null), 400, 'idempotency_key_missing');
    expect(await countRows(ctx, account.id)).toEqual({ keys: 0, charges: 0 });
  });

  it.each([
    ['empty', ''],
    ['longer than 255 characters', 'k'.repeat(256)],
    ['not printable ASCII', 'ключ'],
    ['a quoted string with a bare quote inside', '"a"b"'],
    ['a quoted string with a bad escape', '"a\\nb"'],
    ['an empty quoted string', '""'],
  ])('answers 400 idempotency_key_invalid for a key that is %s', async (_name, key) => {
    const { account, auth } = await ctx.account();
    const res = await request(ctx.app)
      .post('/v1/charges')
      .set(auth)
      .set('Idempotency-Key', Buffer.from(key, 'utf8').toString('latin1'))
      .send(charge());
    expectProblem(res, 400, 'idempotency_key_invalid');
    expect(await countRows(ctx, account.id)).toEqual({ keys: 0, charges: 0 });
  });

  it('accepts a key of exactly 255 printable characters', async () => {
    const { auth } = await ctx.account();
    expect((await postCharge(ctx, auth, `${'k'.repeat(254)}~`)).status).toBe(201);
  });

  it('replays the stored response when the same key and body come again, with no new side effect', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const first = await postCharge(ctx, auth, key).set('X-Request-Id', 'first-req');
    const again = await postCharge(ctx, auth, key).set('X-Request-Id', 'second-req');
    expect(first.status).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    expect(again.status).toBe(201);
    expect(again.text).toBe(first.text);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    expect(again.headers.location).toBe(first.headers.location);
    expect(again.headers['x-request-id']).toBe('second-req');
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
    expect(await processorEntriesFor(account.id, key)).toHaveLength(1);
    expect(outcomesLogged('first-req')).toEqual(['new']);
    expect(outcomesLogged('second-req')).toEqual(['replayed']);
  });

  it('replays a 402 decline exactly, body and problem content type included', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const body = charge({ source: 'tok_chargeDeclined' });
    const first = await postCharge(ctx, auth, key, body);
    const again = await postCharge(ctx, auth, key, body);
    expect(first.status).toBe(402);
    expect(again.status).toBe(402);
    expect(again.text).toBe(first.text);
    expect(again.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(await processorEntriesFor(account.id, key)).toHaveLength(1);
  });

  it('replays a stored 202 pending as 202, even after the processor recovers', async () => {
    const { auth } = await ctx.account();
    const key = newKey();
    await ctx.setChaos({ mode: 'down' });
    const first = await postCharge(ctx, auth, key);
    await ctx.setChaos({ mode: 'healthy' });
    const again = await postCharge(ctx, auth, key);
    expect(first.status).toBe(202);
    expect(again.status).toBe(202);
    expect(again.body).toEqual(first.body);
    expect(again.headers.location).toBe(first.headers.location);
  });

  it('treats a bare key and the same key as an RFC 8941 quoted string as one key', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const bare = await postCharge(ctx, auth, key);
    const quoted = await postCharge(ctx, auth, `"${key}"`);
    expect(quoted.headers['idempotent-replayed']).toBe('true');
    expect(quoted.body.id).toBe(bare.body.id);
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
  });

  it('unescapes a quoted key: "a\\"b" is the key a"b', async () => {
    const { account, auth } = await ctx.account();
    await postCharge(ctx, auth, '"a\\"b\\\\c"');
    expect(await keyRow(account.id, 'a"b\\c')).toBeDefined();
  });

  it('answers 422 idempotency_key_reused for the same key with another body, and changes nothing', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const first = await postCharge(ctx, auth, key, charge({ amount: 1000 }));
    const before = await keyRow(account.id, key);
    const reused = await postCharge(ctx, auth, key, charge({ amount: 2000 })).set('X-Request-Id', 'reuse-1');
    expectProblem(reused, 422, 'idempotency_key_reused');
    expect(reused.body.detail).toContain('POST /v1/charges');
    expect(await keyRow(account.id, key)).toEqual(before);
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
    const read = await request(ctx.app).get(`/v1/charges/${first.body.id}`).set(auth);
    expect(read.body.amount).toBe(1000);
    expect(outcomesLogged('reuse-1')).toEqual(['reused']);
  });

  it('ignores key order and insignificant whitespace in the body', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const send = (raw: string) =>
      request(ctx.app)
        .post('/v1/charges')
        .set(auth)
        .set('Idempotency-Key', key)
        .set('Content-Type', 'application/json')
        .send(raw);
    const first = await send('{"amount":1000,"currency":"usd","source":"tok_visa","metadata":{"a":"1","b":"2"}}');
    const reordered = await send(
      '{\n  "metadata": { "b": "2", "a": "1" },\n  "source" : "tok_visa",\n\t"currency": "usd", "amount": 1000\n}',
    );
    expect(first.status).toBe(201);
    expect(reordered.status).toBe(201);
    expect(reordered.headers['idempotent-replayed']).toBe('true');
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
  });

  it('treats the same body under a different key as a new request', async () => {
    const { account, auth } = await ctx.account();
    const a = await postCharge(ctx, auth, newKey());
    const b = await postCharge(ctx, auth, newKey());
    expect(a.body.id).not.toBe(b.body.id);
    expect(await countRows(ctx, account.id)).toEqual({ keys: 2, charges: 2 });
  });

  it('scopes keys to the account: two accounts with one key make two independent charges', async () => {
    const one = await ctx.account();
    const two = await ctx.account();
    const key = newKey();
    const a = await postCharge(ctx, one.auth, key, charge({ amount: 100 }));
    const b = await postCharge(ctx, two.auth, key, charge({ amount: 200 }));
    expect(a.status).toBe(201);
    expect(b.status).toBe(201);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(a.body.id).not.toBe(b.body.id);
    expect(await processorEntriesFor(one.account.id, key)).toHaveLength(1);
    expect(await processorEntriesFor(two.account.id, key)).toHaveLength(1);
  });

  it('stores nothing for a request that fails validation, so the client can fix it and retry with the same key', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    expectProblem(await postCharge(ctx, auth, key, charge({ amount: -5 })), 400, 'validation_failed');
    expect(await countRows(ctx, account.id)).toEqual({ keys: 0, charges: 0 });
    const fixed = await postCharge(ctx, auth, key, charge({ amount: 5 }));
    expect(fixed.status).toBe(201);
    expect(fixed.headers['idempotent-replayed']).toBeUndefined();
  });

  it('stores nothing for a request that fails authentication, even one naming a real account: a retry with a live key runs it as new', async () => {
    // The revoked key belongs to a live account, so anything the refused request stored would have an
    // account to belong to: the retry below would then be a replay (or a 409 while it ran).
    const { account, apiKey, auth: revoked } = await ctx.account();
    const live = await rotateApiKey(account.id, apiKey);
    const key = newKey();
    const processorCalls = (await ctx.ledger()).requests.charges;
    expectProblem(await postCharge(ctx, revoked, key).set('X-Request-Id', 'revoked-1'), 401, 'unauthenticated');
    expectProblem(await postCharge(ctx, { Authorization: 'Bearer sk_test_unknownunknownunknown00' }, key), 401, 'unauthenticated');
    // Nothing anywhere: no key row with this key in any account, no charge, no processor call.
    expect(await ctx.t.db.selectFrom('idempotency_keys').select('account_id').where('key', '=', key).execute()).toEqual([]);
    expect(await countRows(ctx, account.id)).toEqual({ keys: 0, charges: 0 });
    expect((await ctx.ledger()).requests.charges).toBe(processorCalls);
    expect(outcomesLogged('revoked-1')).toEqual([undefined]);

    const retry = await postCharge(ctx, live, key).set('X-Request-Id', 'revoked-retry-1');
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(outcomesLogged('revoked-retry-1')).toEqual(['new']);
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
    expect(await processorEntriesFor(account.id, key)).toHaveLength(1);
  });

  it('treats an expired key as absent at once, before the reaper removes it', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const first = await postCharge(ctx, auth, key, charge({ amount: 100 }));
    await ctx.t.db
      .updateTable('idempotency_keys')
      .set({ expires_at: sql<Date>`now() - interval '1 second'` })
      .where('account_id', '=', account.id)
      .execute();
    const later = await postCharge(ctx, auth, key, charge({ amount: 300 }));
    expect(later.status).toBe(201);
    expect(later.headers['idempotent-replayed']).toBeUndefined();
    expect(later.body.id).not.toBe(first.body.id);
    expect(later.body.amount).toBe(300);
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 2 });
    const oldCharge = await ctx.t.db
      .selectFrom('charges')
      .selectAll()
      .where('id', '=', first.body.id)
      .executeTakeFirstOrThrow();
    expect(oldCharge.idempotency_key_id).toBeNull();
  });

  it('names the endpoint, not the URL typed: a trailing slash or other letter case is the same request', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const first = await postCharge(ctx, auth, key);
    for (const url of ['/v1/charges/', '/V1/Charges']) {
      const again = await request(ctx.app).post(url).set(auth).set('Idempotency-Key', key).send(charge());
      expect(again.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.id).toBe(first.body.id);
    }
    expect((await keyRow(account.id, key))!.request_path).toBe('/v1/charges');
  });

  it('does not treat an expired key as absent while its request is unfinished: a retry resumes it', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const { chargeId } = await leaveAbandonedCharge(ctx.t.db, {
      accountId: account.id,
      key,
      body: charge(),
      lockedSecondsAgo: 120,
    });
    await ctx.t.db
      .updateTable('idempotency_keys')
      .set({ expires_at: sql<Date>`now() - interval '1 second'` })
      .where('account_id', '=', account.id)
      .execute();
    const retry = await postCharge(ctx, auth, key);
    expect(retry.status).toBe(201);
    expect(retry.body.id).toBe(chargeId);
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
  });

  it('keeps a key for 24 hours by default, by the database clock', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    await postCharge(ctx, auth, key);
    // Exact to the microsecond: both ends come from the same now() of one statement, not from this process.
    const { rows } = await sql<{ exact: boolean }>`
      select expires_at - created_at = interval '86400 seconds' as exact from idempotency_keys
      where account_id = ${account.id} and key = ${key}`.execute(ctx.t.db);
    expect(rows[0]!.exact).toBe(true);
  });

  it('answers 409 idempotency_key_in_use with Retry-After while the first request is in flight', async () => {
    const { auth } = await ctx.account();
    const key = newKey();
    const { gate } = ctx;
    const before = gate.arrived();
    gate.hold();
    try {
      // The first request's processor call is held until the second has its answer.
      const first = postCharge(ctx, auth, key).then((r) => r);
      await expect.poll(() => gate.arrived(), { timeout: 10_000, interval: 20 }).toBe(before + 1);
      const second = await postCharge(ctx, auth, key).set('X-Request-Id', 'in-use-1');
      gate.open();
      expectProblem(second, 409, 'idempotency_key_in_use');
      expect(Number(second.headers['retry-after'])).toBeGreaterThan(0);
      expect(outcomesLogged('in-use-1')).toEqual(['in_use']);
      expect((await first).status).toBe(201);
      const third = await postCharge(ctx, auth, key);
      expect(third.status).toBe(201);
      expect(third.headers['idempotent-replayed']).toBe('true');
    } finally {
      gate.open();
    }
  });

  it('stores the response before sending it, so a retry the instant the answer arrives is a replay', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const server = ctx.app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as AddressInfo;
    try {
      // The retry leaves the moment the first answer's status line arrives, before its body is read.
      const retry = await new Promise<request.Response>((resolve, reject) => {
        const first = http.request(
          { port, method: 'POST', path: '/v1/charges', headers: { ...auth, 'idempotency-key': key, 'content-type': 'application/json' } },
          (res) => {
            expect(res.statusCode).toBe(201);
            postCharge(ctx, auth, key).then(resolve, reject);
            res.resume();
          },
        );
        first.on('error', reject);
        first.end(JSON.stringify(charge()));
      });
      expect(retry.status).toBe(201);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      const row = await keyRow(account.id, key);
      expect(row).toMatchObject({ recovery_point: 'finished', response_status: 201, locked_at: null });
      expect(row!.response_body).toEqual(retry.body);
    } finally {
      server.close();
    }
  });

  it('resumes a request whose lease expired (a crashed request) and completes it exactly once', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    // A request that died after phase 1, its lease just past the 60 s it had.
    const { keyId, chargeId } = await leaveAbandonedCharge(ctx.t.db, {
      accountId: account.id,
      key,
      body: charge(),
      lockedSecondsAgo: 61,
    });

    const resumed = await postCharge(ctx, auth, key).set('X-Request-Id', 'resume-1');
    expect(resumed.status).toBe(201);
    expect(resumed.body.id).toBe(chargeId);
    expect(outcomesLogged('resume-1')).toEqual(['resumed']);
    const again = await postCharge(ctx, auth, key);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
    expect(ledgerFor((await ctx.ledger()).entries, processorKeyFor('charge', keyId))).toHaveLength(1);
  });

  it('answers 409 while the first request waits on a processor that hangs, and never charges twice', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const { gate } = ctx;
    // The processor hangs (the gate holds its calls) for as long as the test needs: the key is leased and
    // no answer has come.
    gate.hold();
    const pending = postCharge(ctx, auth, key).then((r) => r);
    try {
      await expect.poll(() => keyRow(account.id, key), { timeout: 5000, interval: 20 }).toBeDefined();
      expectProblem(await postCharge(ctx, auth, key), 409, 'idempotency_key_in_use');
      // The hang ends in failures that charge nothing, so the first request ends pending (as it would at its
      // deadline); settling it with the processor back makes the one charge this key may ever make,
      // whatever the 409'd request did.
      await ctx.setChaos({ mode: 'down' });
    } finally {
      gate.open();
    }
    const first = await pending;
    expect(first.status).toBe(202);
    await ctx.setChaos({ mode: 'healthy' });
    const settled = await ctx.services.payments.settle(chargePayments, first.body.id, {
      lastAttempt: false,
      deadline: Date.now() + 5000,
    });
    expect(settled).toBe('settled');
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
    const entries = await processorEntriesFor(account.id, key);
    expect(entries).toHaveLength(1);
    expect((await readCharge(ctx, auth, first.body.id)).processor_reference).toBe(entries[0]!.id);
  });

  it('gives exactly one charge and one processor charge for 50 concurrent requests with one key; the 49 others overlap it and get 409', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const { gate } = ctx;
    const processorCallsBefore = gate.arrived();
    let answered = 0;
    // Processor calls are held: whichever request claims the key stays in flight, holding it, until the
    // test opens the gate, and it opens only once the other 49 have all been answered meanwhile.
    gate.hold();
    const all = Promise.all(
      Array.from({ length: 50 }, () =>
        postCharge(ctx, auth, key).then((r) => {
          answered += 1;
          return r;
        }),
      ),
    );
    all.catch(() => undefined); // awaited below
    try {
      await expect
        .poll(() => ({ answered, processorCalls: gate.arrived() - processorCallsBefore }), { timeout: 10_000, interval: 20 })
        .toEqual({ answered: 49, processorCalls: 1 });
    } finally {
      gate.open();
    }
    const answers = await all;
    const [original, ...others] = [...answers].sort((a, b) => a.status - b.status);
    expect(original!.status).toBe(201);
    expect(original!.headers['idempotent-replayed']).toBeUndefined();
    expect(others).toHaveLength(49);
    for (const a of others) {
      expectProblem(a, 409, 'idempotency_key_in_use');
      expect(a.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    }
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
    const entries = await processorEntriesFor(account.id, key);
    expect(entries).toHaveLength(1);
    expect(entries[0]!.id).toBe(original!.body.processor_reference);
    expect(gate.arrived() - processorCallsBefore).toBe(1);
    // Once it is answered, the key replays its answer.
    const again = await postCharge(ctx, auth, key);
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toEqual(original!.body);
  });
});
