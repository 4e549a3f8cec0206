import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configTable } from '../src/cli/config-table.ts';

describe('README', () => {
  it('documents every configuration variable exactly as the schema says', () => {
    const readme = readFileSync('README.md', 'utf8');
    const table = /<!-- config:start -->\n([\s\S]*?)\n<!-- config:end -->/.exec(readme)?.[1];
    expect(table).toBe(configTable());
  });

  it('shows the two-command quick start', () => {
    const readme = readFileSync('README.md', 'utf8');
    expect(readme).toContain('npm ci && npm start');
    expect(readme).toContain('npm test');
  });
});
