import type { AccountRow } from '../accounts/accounts.repository.ts';

declare global {
  namespace Express {
    interface Locals {
      requestId: string;
      startedAt: number;
      account?: AccountRow;
      idempotency?: string;
      deadlinePassed?: boolean;
    }
  }
}
