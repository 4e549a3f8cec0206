import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../../src/accounts/accounts.service.ts';
import { type BuiltApp, buildApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { makeAccount } from '../helpers/factories.ts';

let t: TestDatabase;
let built: BuiltApp;
let app: BuiltApp['app'];

beforeAll(async () => {
  t = await createTestDatabase();
  built = await buildApp(t);
  app = built.app;
});
afterAll(async () => {
  await built.close();
  await t.destroy();
});

function expectUnauthenticated(res: request.Response) {
  expect(res.status).toBe(401);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
  expect(res.body).toMatchObject({
    status: 401,
    code: 'unauthenticated',
    type: expect.stringContaining('unauthenticated'),
  });
  expect(res.body.request_id).toBe(res.headers['x-request-id']);
}

describe('GET /v1/account', () => {
  it('answers the account that owns the API key', async () => {
    const { account, auth } = await makeAccount(t.db, 'Acme');
    const res = await request(app).get('/v1/account').set(auth);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      id: account.id,
      object: 'account',
      name: 'Acme',
      created: expect.any(String),
    });
  });

  it.each(['bearer', 'BEARER', 'BeArEr'])('accepts the scheme in any letter case (RFC 9110): %s', async (scheme) => {
    const { account, apiKey } = await makeAccount(t.db);
    const res = await request(app).get('/v1/account').set('Authorization', `${scheme} ${apiKey}`);
    expect(res.status).toBe(200);
    expect(res.body.id).toBe(account.id);
  });

  it('answers 401 without an Authorization header', async () => {
    expectUnauthenticated(await request(app).get('/v1/account'));
  });

  it.each([
    ['a non-Bearer scheme', 'Basic dXNlcjpwYXNz'],
    ['a Bearer without a key', 'Bearer '],
    ['a key without the sk_test_ prefix', 'Bearer pk_test_0123456789abcdefghij'],
    ['a key too short to be ours', 'Bearer sk_test_short'],
  ])('answers 401 for a malformed header: %s', async (_name, header) => {
    expectUnauthenticated(await request(app).get('/v1/account').set('Authorization', header));
  });

  it('answers 401 for a well-formed key nobody owns', async () => {
    expectUnauthenticated(
      await request(app)
        .get('/v1/account')
        .set('Authorization', 'Bearer sk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'),
    );
  });

  it('answers 401 for a revoked key, from the very next request on', async () => {
    const { apiKey, auth } = await makeAccount(t.db);
    expect((await request(app).get('/v1/account').set(auth)).status).toBe(200);
    await t.db
      .updateTable('api_keys')
      .set({ revoked_at: new Date() })
      .where('secret_hash', '=', hashApiKey(apiKey))
      .execute();
    expectUnauthenticated(await request(app).get('/v1/account').set(auth));
  });

  it('stores only a hash of the key, never the key itself', async () => {
    const { account, apiKey } = await makeAccount(t.db);
    const rows = await t.db.selectFrom('api_keys').selectAll().where('account_id', '=', account.id).execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]!.secret_hash).toBe(hashApiKey(apiKey));
    expect(JSON.stringify(rows)).not.toContain(apiKey);
    expect(rows[0]!.prefix).toBe(apiKey.slice(0, 12));
  });
});
