import express from 'express';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestIdAndContext } from '../../src/http/middleware.ts';
import { type BuiltApp, buildApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { makeAccount } from '../helpers/factories.ts';

let t: TestDatabase;
let built: BuiltApp;

beforeAll(async () => {
  t = await createTestDatabase();
  built = await buildApp(t);
});
afterAll(async () => {
  await built.close();
  await t.destroy();
});

describe('X-Request-Id', () => {
  it('echoes a well-formed id the client sent', async () => {
    const res = await request(built.app).get('/livez').set('X-Request-Id', 'client-1.2:abc_DEF');
    expect(res.headers['x-request-id']).toBe('client-1.2:abc_DEF');
  });

  it('generates an id when the client sent none', async () => {
    const res = await request(built.app).get('/livez');
    expect(res.headers['x-request-id']).toMatch(/^req_[0-9a-f]{32}$/);
  });

  it.each([
    ['characters outside [A-Za-z0-9._:-]', 'bad id with spaces'],
    ['more than 128 characters', 'a'.repeat(129)],
    ['a header injection attempt', 'abc<script>'],
  ])('ignores an id with %s and generates a fresh one', async (_name, id) => {
    const res = await request(built.app).get('/livez').set('X-Request-Id', id);
    expect(res.headers['x-request-id']).toMatch(/^req_[0-9a-f]{32}$/);
  });

  it('gives each request its own id', async () => {
    const a = await request(built.app).get('/livez');
    const b = await request(built.app).get('/livez');
    expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id']);
  });

  it('puts the id on error responses too', async () => {
    const res = await request(built.app).get('/v1/account').set('X-Request-Id', 'err-req-1');
    expect(res.status).toBe(401);
    expect(res.headers['x-request-id']).toBe('err-req-1');
    expect(res.body.request_id).toBe('err-req-1');
  });
});

describe('request logs', () => {
  it('writes one line per request with its id, route, status, duration and account', async () => {
    const { account, auth } = await makeAccount(t.db);
    await request(built.app).get('/v1/account').set(auth).set('X-Request-Id', 'log-line-1');
    const lines = built.logs.lines.filter(
      (l) => l.request_id === 'log-line-1' && l.msg === 'request completed',
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      method: 'GET',
      route: '/v1/account',
      status: 200,
      account_id: account.id,
      duration_ms: expect.any(Number),
    });
  });

  it('tags lines written anywhere while serving a request with its request_id', async () => {
    const probe = express();
    probe.use(requestIdAndContext(5000));
    probe.get('/probe', async (_req, res) => {
      await new Promise((r) => setTimeout(r, 5));
      built.logger.info('written deep inside a handler, after an await');
      res.json({ ok: true });
    });
    await request(probe).get('/probe').set('X-Request-Id', 'deep-log-1');
    const deep = built.logs.lines.find((l) => l.msg === 'written deep inside a handler, after an await');
    expect(deep?.request_id).toBe('deep-log-1');
  });

  it('never writes the API key or the Authorization header', async () => {
    const { apiKey, auth } = await makeAccount(t.db);
    built.logger.info({ req: { headers: auth } }, 'headers logged by mistake');
    await request(built.app).get('/v1/account').set(auth);
    const all = JSON.stringify(built.logs.lines);
    expect(all).toContain('headers logged by mistake');
    expect(all).toContain('[redacted]');
    expect(all).not.toContain(apiKey);
  });
});
