// Input rules shared by every resource, and zod failures turned into our ValidationError.
import { z } from 'zod';
import { type FieldError, ValidationError } from './errors.ts';

/** Text Postgres can store: well-formed UTF-16 (no lone surrogates) and no NUL character. */
export const text = () =>
  z.string().refine((s) => s.isWellFormed() && !s.includes('\u0000'), 'must be text without NUL or lone surrogates');

/** An object id as we make them: a prefix and up to 64 URL-safe characters. */
export const objectId = (prefix: string) =>
  z.string().regex(new RegExp(`^${prefix}_[A-Za-z0-9_-]{1,64}$`), `must be an id like ${prefix}_…`);

export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((issue) => {
    const base = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => ({ path: base ? `${base}.${k}` : k, message: 'unknown field' }));
    }
    return [{ path: base, message: issue.message }];
  });
}

/**
 * Where `value` holds an own "__proto__" key. JSON.parse makes one an ordinary property, but zod skips it
 * without a word, so it would vanish from what we store instead of being refused.
 */
function protoKeys(value: unknown, path: string[] = []): FieldError[] {
  if (!value || typeof value !== 'object') return [];
  return Object.keys(value).flatMap((key) =>
    key === '__proto__'
      ? [{ path: [...path, key].join('.'), message: 'is a reserved name' }]
      : protoKeys((value as Record<string, unknown>)[key], [...path, key]),
  );
}

export function parseWith<S extends z.ZodType>(schema: S, input: unknown, where = 'body'): z.infer<S> {
  const reserved = protoKeys(input);
  if (reserved.length) throw new ValidationError(reserved, `The request ${where} is not valid; see errors.`);
  const parsed = schema.safeParse(input ?? (where === 'body' ? undefined : {}));
  if (!parsed.success) {
    throw new ValidationError(fieldErrors(parsed.error), `The request ${where} is not valid; see errors.`);
  }
  return parsed.data;
}
