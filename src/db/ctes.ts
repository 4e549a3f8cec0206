// One statement built from pieces of its WITH clause that read each other by name (a request's phases are
// one statement each, and their parts come from different modules). Each piece says which names it
// defines and which names of earlier pieces it reads, and the type checker holds every statement that
// joins pieces to that: a renamed CTE is a compile error, not a statement that fails at run time. (No
// export here is named `then`: a module namespace with one is a thenable, and importing it never ends.)
import { CompiledQuery, type QueryExecutorProvider, type RawBuilder, sql } from 'kysely';

/** CTEs that define the names `Defines` and read the names `Reads`, which pieces before them define. */
export interface Ctes<Defines extends string, Reads extends string = never> {
  /** As keys, so a piece that defines more than a statement needs still fits it. */
  readonly defines: { readonly [Name in Defines]: true };
  readonly reads: readonly Reads[];
  readonly sql: RawBuilder<unknown>;
}

/** A reference, inside a CTE's body, to a name that CTE declared it reads. */
export type Ref<Reads extends string> = (name: Reads) => RawBuilder<unknown>;

// Names are the code's own lower-case words, quoted as they are: cheaper than kysely parsing each one on
// every compile, on statements every request sends.
const NAME = /^[a-z_][a-z0-9_]*$/;
const quoted = (name: string): RawBuilder<unknown> => {
  if (!NAME.test(name)) throw new Error(`not a CTE name: ${name}`);
  return sql.raw(`"${name}"`);
};
const ref = quoted;

/** One CTE, `name as (body)`, whose body reads only the names in `reads`, each through `ref`. */
export function cte<const Name extends string, const Reads extends string = never>(
  name: Name,
  reads: readonly Reads[],
  body: (ref: Ref<Reads>) => RawBuilder<unknown>,
): Ctes<Name, Reads> {
  return { defines: { [name]: true } as { readonly [N in Name]: true }, reads, sql: sql`${quoted(name)} as (${body(ref)})` };
}

/** `first`, then `next`, which may read what `first` defines and what `first` reads. */
export function followedBy<A extends string, RA extends string, B extends string, RB extends A | RA>(
  first: Ctes<A, RA>,
  next: Ctes<B, RB>,
): Ctes<A | B, RA> {
  return { defines: { ...first.defines, ...next.defines }, reads: first.reads, sql: sql`${first.sql}, ${next.sql}` };
}

/** A complete WITH clause (it reads nothing from outside), and a reference to any name it defines. */
export function withClause<Defines extends string>(pieces: Ctes<Defines>): { sql: RawBuilder<unknown>; ref: Ref<Defines> } {
  return { sql: sql`with ${pieces.sql}`, ref };
}

/**
 * A value left open in a statement built once: its pieces are module constants that name their values
 * (`slot('amount')`), and every run fills them in (`filled`). Building and compiling a long statement
 * anew for each request allocated about 16 KB a time; a shape built once costs a lookup.
 */
export class Slot {
  readonly name: string;
  constructor(name: string) {
    this.name = name;
  }
}

/** A named value of a statement built once (see Slot); typed as the value it stands for. */
export const slot = <T = unknown>(name: string): T => new Slot(name) as unknown as T;

/** The values of a statement's slots, by name. */
export type SlotValues = Readonly<Record<string, unknown>>;

/** `compiled` with every Slot among its parameters replaced by its value; a slot without one is a bug. */
export function filled(compiled: CompiledQuery, values: SlotValues): CompiledQuery {
  const parameters = compiled.parameters.map((p) => {
    if (!(p instanceof Slot)) return p;
    if (!(p.name in values)) throw new Error(`no value for slot ${p.name}`);
    return values[p.name];
  });
  return CompiledQuery.raw(compiled.sql, parameters);
}

/**
 * The compiled text of a statement, built once per combination of its constant pieces (`shape`: the pieces
 * themselves, compared by identity), then only filled in.
 */
export function compiledOnce(): (shape: readonly object[], db: QueryExecutorProvider, build: () => RawBuilder<unknown>) => CompiledQuery {
  const root: ShapeNode = { next: new WeakMap() };
  return (shape, db, build) => {
    let node = root;
    for (const piece of shape) {
      let next = node.next.get(piece);
      if (!next) node.next.set(piece, (next = { next: new WeakMap() }));
      node = next;
    }
    return (node.compiled ??= build().compile(db));
  };
}

interface ShapeNode {
  next: WeakMap<object, ShapeNode>;
  compiled?: CompiledQuery;
}
