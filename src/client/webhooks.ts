// Receiving webhooks: verifies a delivery as the Standard Webhooks specification signs it
// (https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix seconds) and
// `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` entries) over `${id}.${timestamp}.${body}`,
// keyed with the endpoint's secret (`whsec_` + base64). Part of the SDK: nothing from the service.
import { createHmac, timingSafeEqual } from 'node:crypto';

export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError';
}

export interface VerifyOptions {
  /** How far the delivery's timestamp may be from now, either way (replays, clock skew); default 300 s. */
  toleranceSeconds?: number;
  /** The current time in ms (tests); default Date.now(). */
  now?: number;
}

export interface VerifiedWebhook<T = unknown> {
  /** The `webhook-id`: the same on every retry of a delivery, so a receiver deduplicates on it. */
  id: string;
  timestamp: number;
  payload: T;
}

const SECRET_PREFIX = 'whsec_';
const DEFAULT_TOLERANCE_SECONDS = 300;

type HeaderBag = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderBag, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const bag = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(bag).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : bag[key];
  return Array.isArray(value) ? value.join(' ') : value;
}

/** The signature the specification gives `${id}.${timestamp}.${body}` under `secret`, as `v1,<base64>`. */
export function signWebhook(secret: string, id: string, timestamp: number, body: string | Uint8Array): string {
  const key = Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
  const mac = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64');
  return `v1,${mac}`;
}

/**
 * Verifies a delivery and returns its parsed payload; throws a WebhookVerificationError otherwise.
 * `rawBody` must be the bytes as received (before any JSON parsing): re-serialised JSON would not match.
 * Comparison is constant-time; a timestamp outside the tolerance is refused, so a captured delivery
 * cannot be replayed later.
 */
export function verifyWebhook<T = unknown>(
  rawBody: string | Uint8Array,
  headers: HeaderBag,
  secret: string,
  options: VerifyOptions = {},
): VerifiedWebhook<T> {
  const id = header(headers, 'webhook-id');
  const timestampText = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (!id || !timestampText || !signatures) throw new WebhookVerificationError('missing webhook-id, webhook-timestamp or webhook-signature header');
  const timestamp = Number(timestampText);
  if (!/^\d+$/.test(timestampText) || !Number.isSafeInteger(timestamp)) throw new WebhookVerificationError('webhook-timestamp is not a Unix time in seconds');
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  if (Math.abs(now - timestamp) > tolerance) throw new WebhookVerificationError(`webhook-timestamp is more than ${tolerance} s from now`);

  const expected = Buffer.from(signWebhook(secret, id, timestamp, rawBody).slice(3), 'base64');
  const matches = signatures.split(' ').some((entry) => {
    const [version, value] = entry.split(',', 2);
    if (version !== 'v1' || !value) return false;
    const given = Buffer.from(value, 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!matches) throw new WebhookVerificationError('no webhook-signature matches this body and secret');

  const text = typeof rawBody === 'string' ? rawBody : Buffer.from(rawBody).toString('utf8');
  try {
    return { id, timestamp, payload: JSON.parse(text) as T };
  } catch {
    throw new WebhookVerificationError('the body is not JSON');
  }
}
