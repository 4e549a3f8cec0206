// The api and the worker run with bounded V8 heaps and a filled compile cache in every way they are started
// (package.json, the Dockerfile, both compose files), and the bench starts them the way package.json says:
// a bound set in one place and not another would make the bench measure something never shipped.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

/** The node flags of `node <flags> src/main.ts <role>`, from a command given as words. */
function flagsOf(words: string[], role: string): string[] | undefined {
  const at = words.indexOf('src/main.ts');
  if (words[0] !== 'node' || at < 0 || words[at + 1] !== role) return undefined;
  return words.slice(1, at);
}

/** Every exec-form `["node", …, "src/main.ts", "<role>"]` array in a file (Dockerfile CMD, compose command). */
function commandsIn(text: string, role: string): string[][] {
  return [...text.matchAll(/\[("node"[^\]]*)\]/g)]
    .map((m) => JSON.parse(`[${m[1]}]`) as string[])
    .filter((words) => flagsOf(words, role) !== undefined);
}

describe('heap bounds and the compile cache', () => {
  const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
  const shipped = flagsOf(scripts['start:api']!.split(/\s+/), 'api')!;

  it('package.json bounds the api heap: a young generation and an old space of a set size', () => {
    expect(shipped.some((f) => /^--max-semi-space-size=\d+$/.test(f))).toBe(true);
    expect(shipped.some((f) => /^--max-old-space-size=\d+$/.test(f))).toBe(true);
    expect(flagsOf(scripts['start:worker']!.split(/\s+/), 'worker')).toEqual(shipped);
  });

  it('the Dockerfile and both compose files start the api and the worker with the same bounds', () => {
    for (const file of ['Dockerfile', 'docker-compose.yml', 'docker-compose.ha.yml']) {
      const text = read(file);
      const commands = [...commandsIn(text, 'api'), ...commandsIn(text, 'worker')];
      expect(commands.length, `${file} starts the api or the worker`).toBeGreaterThan(0);
      for (const words of commands) expect(words.slice(1, words.indexOf('src/main.ts')), `${file}: ${words.join(' ')}`).toEqual(shipped);
    }
    // No command of either compose file starts the api or the worker without them.
    for (const file of ['docker-compose.yml', 'docker-compose.ha.yml']) {
      expect(read(file)).not.toMatch(/\["node", "src\/main\.ts", "(api|worker)"\]/);
    }
  });

  it('the image fills the compile cache at build time, with the command that loads every module a process runs', () => {
    const dockerfile = read('Dockerfile');
    expect(dockerfile).toMatch(/^ENV NODE_COMPILE_CACHE=(\S+)$/m);
    expect(dockerfile).toMatch(/^RUN node src\/main\.ts --help/m);
    const cache = mkdtempSync(path.join(os.tmpdir(), 'payments-compile-cache-'));
    try {
      const run = spawnSync(process.execPath, ['src/main.ts', '--help'], {
        cwd: ROOT,
        env: { ...process.env, NODE_COMPILE_CACHE: cache },
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/^usage: node src\/main\.ts/);
      expect(readdirSync(cache, { recursive: true }).length, 'the cache holds the compiled modules').toBeGreaterThan(1);
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });
});
