// The layering a reader relies on: folders import down, never back up, and SQL lives in repositories.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../src');
const files = (readdirSync(SRC, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => path.join(SRC, f));

/** A folder of src/, or a file at its top (compose.ts, errors.ts): what an arrow of the drawing joins. */
const unitOf = (file: string) => path.relative(SRC, file).split(path.sep)[0]!;

/** The units each unit imports from (relative imports only; `import type` counts: it is a dependency too). */
function importGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const file of files) {
    const from = unitOf(file);
    const edges = graph.get(from) ?? new Set<string>();
    graph.set(from, edges);
    for (const [, specifier] of readFileSync(file, 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'/g)) {
      const to = unitOf(path.resolve(path.dirname(file), specifier!));
      if (to !== from && !to.startsWith('..')) edges.add(to);
    }
  }
  return graph;
}

/** Every cycle of the graph, each once, as the path that closes it. */
function cycles(graph: Map<string, Set<string>>): string[][] {
  const found = new Map<string, string[]>();
  const walk = (unit: string, trail: string[]) => {
    const at = trail.indexOf(unit);
    if (at >= 0) {
      const cycle = trail.slice(at);
      found.set([...cycle].sort().join(' '), [...cycle, unit]);
      return;
    }
    for (const next of graph.get(unit) ?? []) walk(next, [...trail, unit]);
  };
  for (const unit of graph.keys()) walk(unit, []);
  return [...found.values()];
}

describe('the source layout', () => {
  it('has no import cycle between folders', () => {
    expect(cycles(importGraph()).map((c) => c.join(' → '))).toEqual([]);
  });

  it('finds a cycle when there is one (the check itself)', () => {
    const graph = new Map([
      ['events', new Set(['webhooks'])],
      ['webhooks', new Set(['events', 'db'])],
      ['db', new Set<string>()],
    ]);
    expect(cycles(graph)).toHaveLength(1);
  });

  it('keeps SQL in repositories and src/db', () => {
    const query = /\bsql(<[^`]*>)?`|\.(selectFrom|updateTable|insertInto|deleteFrom)\(/;
    const outside = files.filter((f) => !f.endsWith('.repository.ts') && unitOf(f) !== 'db' && query.test(readFileSync(f, 'utf8')));
    expect(outside.map((f) => path.relative(SRC, f))).toEqual([]);
  });
});
