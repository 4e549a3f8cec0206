// Turns zod failures into our ValidationError with one entry per problem.
import type { z } from 'zod';
import { type FieldError, ValidationError } from '../errors.ts';

export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((issue) => {
    const base = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => ({ path: base ? `${base}.${k}` : k, message: 'unknown field' }));
    }
    return [{ path: base, message: issue.message }];
  });
}

export function parseWith<S extends z.ZodType>(schema: S, input: unknown, where = 'body'): z.infer<S> {
  const parsed = schema.safeParse(input ?? (where === 'body' ? undefined : {}));
  if (!parsed.success) {
    throw new ValidationError(fieldErrors(parsed.error), `The request ${where} is not valid; see errors.`);
  }
  return parsed.data;
}
