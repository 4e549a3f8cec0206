// GET /docs: the API reference, rendered from openapi.yaml by files this service serves itself.
import { readFileSync } from 'node:fs';
import request from 'supertest';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.destroy());

it('serves the reference page, its scripts and styles, and openapi.yaml, with nothing from another origin', async () => {
  const page = await request(ctx.app).get('/docs');
  expect(page.status).toBe(200);
  expect(page.headers['content-type']).toMatch(/^text\/html/);
  const sources = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  expect(sources.length).toBeGreaterThanOrEqual(3);
  for (const source of sources) {
    expect(source.startsWith('/'), source).toBe(true);
    const asset = await request(ctx.app).get(source);
    expect(asset.status, source).toBe(200);
    expect(asset.headers['content-type'], source).toMatch(/javascript|css/);
  }
  const start = await request(ctx.app).get('/docs/start.js');
  expect(start.text).toContain("url: '/openapi.yaml'");

  const spec = await request(ctx.app).get('/openapi.yaml');
  expect(spec.status).toBe(200);
  expect(spec.headers['content-type']).toMatch(/^application\/yaml/);
  expect(spec.text).toBe(readFileSync('openapi.yaml', 'utf8'));
  expect((await request(ctx.app).get('/docs/assets/no-such-file.js')).status).toBe(404);
});
