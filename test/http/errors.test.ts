import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuiltApp, buildApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { makeAccount } from '../helpers/factories.ts';
import { expectProblem } from '../helpers/problem.ts';

let t: TestDatabase;
let built: BuiltApp;
let app: BuiltApp['app'];
let auth: Record<string, string>;

beforeAll(async () => {
  t = await createTestDatabase();
  built = await buildApp(t);
  app = built.app;
  auth = (await makeAccount(t.db)).auth;
});
afterAll(async () => {
  await built.close();
  await t.destroy();
});

describe('problem+json for every error', () => {
  it('answers 404 problem+json for an unknown route', async () => {
    const res = await request(app).get('/no/such/route');
    expectProblem(res, 404, 'not_found');
    expect(res.body.request_id).toBe(res.headers['x-request-id']);
  });

  it('answers 404 problem+json for an unknown route under /v1 once authenticated', async () => {
    expectProblem(await request(app).get('/v1/no-such-thing').set(auth), 404, 'not_found');
  });

  it('answers 400 malformed_json for a body that is not JSON', async () => {
    const res = await request(app)
      .post('/v1/account')
      .set(auth)
      .set('Content-Type', 'application/json')
      .send('{"amount": 10,');
    expectProblem(res, 400, 'malformed_json');
  });

  it('answers 400 malformed_json for a bare JSON scalar', async () => {
    const res = await request(app)
      .post('/v1/account')
      .set(auth)
      .set('Content-Type', 'application/json')
      .send('"x"');
    expectProblem(res, 400, 'malformed_json');
  });

  it('answers 415 for a body that is not application/json', async () => {
    const res = await request(app)
      .post('/v1/account')
      .set(auth)
      .set('Content-Type', 'text/plain')
      .send('amount=10');
    expectProblem(res, 415, 'unsupported_media_type');
  });

  it('answers 415 for a form-encoded body', async () => {
    const res = await request(app).post('/v1/account').set(auth).type('form').send({ amount: 10 });
    expectProblem(res, 415, 'unsupported_media_type');
  });

  it('answers 413 for a JSON body over 16 KiB', async () => {
    const res = await request(app)
      .post('/v1/account')
      .set(auth)
      .set('Content-Type', 'application/json')
      .send(JSON.stringify({ description: 'x'.repeat(17 * 1024) }));
    expectProblem(res, 413, 'payload_too_large');
  });

  it('answers 415 for a body in an unsupported charset', async () => {
    const res = await request(app)
      .post('/v1/account')
      .set(auth)
      .set('Content-Type', 'application/json; charset=latin-9000')
      .send('{}');
    expectProblem(res, 415, 'unsupported_media_type');
  });
});
