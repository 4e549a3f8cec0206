// The Idempotency-Key header and the request fingerprint.
import { createHash } from 'node:crypto';
import { ProblemError } from '../errors.ts';

const MAX_KEY_LENGTH = 255;
const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

const invalid = (detail: string) =>
  new ProblemError(400, 'idempotency_key_invalid', 'Invalid Idempotency-Key', detail);

/** Reads the key bare (as Stripe clients send it) or as an RFC 8941 quoted string (as the IETF draft says). */
export function parseIdempotencyKey(header: string | undefined): string {
  if (header === undefined) {
    throw new ProblemError(
      400,
      'idempotency_key_missing',
      'Idempotency-Key required',
      'Every POST under /v1 needs an Idempotency-Key header, so a retry cannot act twice.',
    );
  }
  let key = header;
  if (key.length >= 2 && key.startsWith('"') && key.endsWith('"')) {
    const unquoted = unquote(key.slice(1, -1));
    if (unquoted === undefined) throw invalid('The quoted Idempotency-Key is not a valid structured-field string.');
    key = unquoted;
  }
  if (key.length === 0) throw invalid('The Idempotency-Key is empty.');
  if (key.length > MAX_KEY_LENGTH) throw invalid(`The Idempotency-Key is longer than ${MAX_KEY_LENGTH} characters.`);
  if (!PRINTABLE_ASCII.test(key)) throw invalid('The Idempotency-Key must be printable ASCII.');
  return key;
}

/** The content of an RFC 8941 string: only a quote or a backslash may be escaped, and no bare quote may appear. */
function unquote(inner: string): string | undefined {
  let out = '';
  for (let i = 0; i < inner.length; i += 1) {
    const c = inner[i];
    if (c === '"') return undefined;
    if (c === '\\') {
      const next = inner[i + 1];
      if (next !== '"' && next !== '\\') return undefined;
      out += next;
      i += 1;
    } else {
      out += c;
    }
  }
  return out;
}

/** JSON with object keys sorted at every depth: key order and whitespace do not change it. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export function requestFingerprint(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method} ${path}\n${canonicalJson(body)}`).digest('hex');
}
