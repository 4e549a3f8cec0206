import { spawnSync } from 'node:child_process';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuiltApp, buildApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';

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

const run = (args: string[]) =>
  spawnSync(process.execPath, ['src/cli/account-create.ts', ...args], {
    env: { ...process.env, DATABASE_URL: t.url },
    encoding: 'utf8',
    timeout: 30_000,
  });

describe('npm run account:create', () => {
  it('creates an account and prints a key that authenticates', async () => {
    const out = run(['--name', 'Cli Co']);
    expect(out.status).toBe(0);
    const key = /sk_test_[A-Za-z0-9_-]+/.exec(out.stdout)?.[0];
    expect(key).toBeDefined();
    const res = await request(built.app).get('/v1/account').set('Authorization', `Bearer ${key}`);
    expect(res.status).toBe(200);
    expect(res.body.name).toBe('Cli Co');
  });

  it('refuses to run without a name and creates nothing', async () => {
    const before = await t.db.selectFrom('accounts').select('id').execute();
    const out = run([]);
    expect(out.status).toBe(2);
    expect(out.stderr).toContain('--name');
    expect(await t.db.selectFrom('accounts').select('id').execute()).toHaveLength(before.length);
  });
});
