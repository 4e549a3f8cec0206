// The signature of a delivery, per the Standard Webhooks specification: `v1,` and the base64
// HMAC-SHA256 of `${id}.${timestamp}.${body}`, keyed by the secret's bytes (the base64 after `whsec_`).
// The SDK verifies with its own code (src/client/webhooks.ts shares nothing with the service); the
// delivery tests check the two agree.
import { createHmac } from 'node:crypto';

export function signDelivery(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}
