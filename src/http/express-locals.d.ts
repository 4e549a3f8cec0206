import type { AccountRow } from '../accounts/accounts.repository.ts';

declare global {
  namespace Express {
    interface Locals {
      requestId: string;
      startedAt: number;
      account?: AccountRow;
      idempotency?: string;
      deadlinePassed?: boolean;
      /** Where the router that handles the request is mounted (`/v1`); req.baseUrl is reset when an error leaves it. */
      mountPath?: string;
      /** Keeps the request's load-shedding slot taken until `work` settles. */
      holdSlotUntil?: (work: Promise<unknown>) => void;
    }
  }
}
