import type { AccountRow } from '../accounts/accounts.repository.ts';
import type { TrustedKey } from '../accounts/accounts.service.ts';

declare global {
  namespace Express {
    interface Locals {
      requestId: string;
      startedAt: number;
      account?: AccountRow;
      /** The API key, taken on trust from this process's memory: confirmed before any answer (see requireApiKey). */
      trustedKey?: TrustedKey;
      idempotency?: string;
      deadlinePassed?: boolean;
      /** Where the router that handles the request is mounted (`/v1`); req.baseUrl is reset when an error leaves it. */
      mountPath?: string;
      /** Keeps the request's load-shedding slot taken until `work` settles. */
      holdSlotUntil?: (work: Promise<unknown>) => void;
    }
  }
}
