// Prefixed, opaque, unguessable object ids (acct_…, ch_…, re_…).
import { randomBytes } from 'node:crypto';

export function newId(prefix: string, bytes = 12): string {
  return `${prefix}_${randomBytes(bytes).toString('base64url')}`;
}
