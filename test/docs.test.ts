import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configTable } from '../src/cli/config-table.ts';
import { metricsTable } from '../src/cli/metrics-table.ts';
import { openApiDocument, openApiYaml } from '../src/cli/openapi.ts';

describe('README', () => {
  it('documents every configuration variable exactly as the schema says', () => {
    const readme = readFileSync('README.md', 'utf8');
    const table = /<!-- config:start -->\n([\s\S]*?)\n<!-- config:end -->/.exec(readme)?.[1];
    expect(table).toBe(configTable());
  });

  it('lists every metric the api and the worker export, as the registry says (npm run docs:metrics)', () => {
    const readme = readFileSync('README.md', 'utf8');
    const table = /<!-- metrics:start -->\n([\s\S]*?)\n<!-- metrics:end -->/.exec(readme)?.[1];
    expect(table).toBe(metricsTable());
  });

  it('shows the two-command quick start', () => {
    const readme = readFileSync('README.md', 'utf8');
    expect(readme).toContain('npm ci && npm start');
    expect(readme).toContain('npm test');
  });
});

describe('openapi.yaml', () => {
  it('is what the zod schemas generate (npm run docs:openapi)', () => {
    expect(readFileSync('openapi.yaml', 'utf8')).toBe(openApiYaml());
  });

  it('requires an Idempotency-Key on every POST and documents its conflicts', () => {
    for (const [path, item] of Object.entries(openApiDocument().paths)) {
      const post = (item as { post?: { parameters: unknown[]; responses: Record<string, unknown> } }).post;
      if (!post) continue;
      expect(post.parameters, path).toContainEqual({ $ref: '#/components/parameters/IdempotencyKey' });
      expect(Object.keys(post.responses), path).toEqual(expect.arrayContaining(['409', '422']));
      // A payment the processor could not answer for in time is accepted, pending.
      if (path === '/v1/charges' || path === '/v1/refunds') expect(Object.keys(post.responses), path).toContain('202');
    }
  });
});
