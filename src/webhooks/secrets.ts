// Webhook signing secrets. Signing needs the secret itself (HMAC is keyed by it), so it cannot be stored
// hashed like an API key: it is stored encrypted (AES-256-GCM, authenticated, a fresh nonce each time)
// under WEBHOOK_SECRET_KEY, and a copy of the database alone does not let anyone sign as us.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

const ALGORITHM = 'aes-256-gcm';
const VERSION = 'v1';
/** Used when WEBHOOK_SECRET_KEY is unset (development, tests): known to everyone, so it protects nothing. */
export const DEVELOPMENT_SECRET_KEY = 'payments-exactly-once development key; set WEBHOOK_SECRET_KEY in production';

/** A new signing secret as the Standard Webhooks specification writes it: `whsec_` and 24 random bytes in base64. */
export function newSigningSecret(): string {
  return `whsec_${randomBytes(24).toString('base64')}`;
}

export function createSecretBox(passphrase: string = DEVELOPMENT_SECRET_KEY) {
  const key = createHash('sha256').update(passphrase).digest();
  return {
    seal(secret: string): string {
      const nonce = randomBytes(12);
      const cipher = createCipheriv(ALGORITHM, key, nonce);
      const sealed = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
      return [VERSION, nonce, sealed, cipher.getAuthTag()].map((part) => (typeof part === 'string' ? part : part.toString('base64url'))).join('.');
    },
    /** Throws when the text was sealed under another key or altered. */
    open(text: string): string {
      const [version, nonce, sealed, tag] = text.split('.');
      if (version !== VERSION || !nonce || !sealed || !tag) throw new Error('not a sealed webhook secret');
      const decipher = createDecipheriv(ALGORITHM, key, Buffer.from(nonce, 'base64url'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(sealed, 'base64url')), decipher.final()]).toString('utf8');
    },
  };
}

export type SecretBox = ReturnType<typeof createSecretBox>;
