// Input rules shared by every resource, and zod failures turned into our ValidationError.
import { z } from 'zod';
import { type FieldError, ValidationError } from './errors.ts';

/** Text Postgres can store: well-formed UTF-16 (no lone surrogates) and no NUL character. */
export const text = () =>
  z.string().refine((s) => s.isWellFormed() && !s.includes('\u0000'), 'must be text without NUL or lone surrogates');

/** An object id as we make them: a prefix and up to 64 URL-safe characters. */
const objectIds = new Map<string, z.ZodString>();

/** The schema of an object id with this prefix (`ch_…`); built once per prefix, as it is read on every GET. */
export function objectId(prefix: string): z.ZodString {
  let schema = objectIds.get(prefix);
  if (!schema) {
    schema = z.string().regex(new RegExp(`^${prefix}_[A-Za-z0-9_-]{1,64}$`), `must be an id like ${prefix}_…`);
    objectIds.set(prefix, schema);
  }
  return schema;
}

export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((issue) => {
    const base = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => ({ path: base ? `${base}.${k}` : k, message: 'unknown field' }));
    }
    return [{ path: base, message: issue.message }];
  });
}

// No valid body nests deeper than a few levels; a deeper one is refused before anything walks it.
const MAX_DEPTH = 32;

/**
 * Where `value` holds an own "__proto__" key (JSON.parse makes one an ordinary property, but zod skips it
 * without a word, so it would vanish from what we store instead of being refused), and whether it nests
 * deeper than any valid body. Walked with a stack of its own, never by recursion: depth costs no stack.
 */
function reservedOrDeep(input: unknown): FieldError[] {
  const found: FieldError[] = [];
  const stack: { value: unknown; path: string[] }[] = [{ value: input, path: [] }];
  while (stack.length) {
    const { value, path } = stack.pop()!;
    if (!value || typeof value !== 'object') continue;
    if (path.length > MAX_DEPTH) return [{ path: '', message: `nests deeper than ${MAX_DEPTH} levels` }];
    for (const key of Object.keys(value)) {
      if (key === '__proto__') found.push({ path: [...path, key].join('.'), message: 'is a reserved name' });
      else stack.push({ value: (value as Record<string, unknown>)[key], path: [...path, key] });
    }
  }
  return found;
}

export function parseWith<S extends z.ZodType>(schema: S, input: unknown, where = 'body'): z.infer<S> {
  const reserved = reservedOrDeep(input);
  if (reserved.length) throw new ValidationError(reserved, `The request ${where} is not valid; see errors.`);
  const parsed = schema.safeParse(input ?? (where === 'body' ? undefined : {}));
  if (!parsed.success) {
    throw new ValidationError(fieldErrors(parsed.error), `The request ${where} is not valid; see errors.`);
  }
  return parsed.data;
}
