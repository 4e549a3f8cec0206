// Statements built once and filled in per request (src/db/ctes.ts): a shape is compiled once, another shape
// gets its own text, and every slot is filled wherever it appears, or the statement is refused.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compiledOnce, filled, slot } from '../../src/db/ctes.ts';
import { withDeadline } from '../../src/request-context.ts';
import { createTestContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(async () => {
  await ctx?.destroy();
});

describe('statements built once', () => {
  it('compiles a shape once, and another shape on its own', () => {
    const statements = compiledOnce();
    const a = sql<boolean>`${slot('x')}::int > 1`;
    const b = sql<boolean>`${slot('x')}::int < 1`;
    let builds = 0;
    const build = (piece: typeof a) => () => {
      builds += 1;
      return sql`select ${piece} as answer`;
    };
    const first = statements([a], ctx.db, build(a));
    expect(statements([a], ctx.db, build(a))).toBe(first);
    expect(builds).toBe(1);
    const other = statements([b], ctx.db, build(b));
    expect(builds).toBe(2);
    expect(other.sql).not.toBe(first.sql);
  });

  it('fills a slot everywhere it appears, keeps the other values, and runs as the statement it stands for', async () => {
    const twice = sql`select ${slot('n')}::int + ${slot('n')}::int + ${1}::int as total`;
    const compiled = compiledOnce()([twice], ctx.db, () => twice);
    const statement = filled(compiled, { n: 20 });
    expect(statement.parameters).toEqual([20, 20, 1]);
    const { rows } = await withDeadline('filled', 5000, () => ctx.db.executeQuery<{ total: number }>(statement));
    expect(rows[0]!.total).toBe(41);
  });

  it('refuses a statement with a slot left unfilled, naming it', () => {
    const compiled = compiledOnce()([], ctx.db, () => sql`select ${slot('amount')}::int, ${slot('currency')}::text`);
    expect(() => filled(compiled, { amount: 1 })).toThrow(/no value for slot currency/);
  });
});
