import { z } from 'zod';
import { MAX_AMOUNT } from '../charges/charges.schemas.ts';

export const REFUND_REASONS = ['duplicate', 'fraudulent', 'requested_by_customer'] as const;

export const createRefundSchema = z.strictObject({
  charge: z.string().regex(/^ch_[A-Za-z0-9_-]{1,64}$/, 'must be a charge id (ch_…)'),
  amount: z.number().int().min(1).max(MAX_AMOUNT).optional(),
  reason: z.enum(REFUND_REASONS).optional(),
});
export type CreateRefundParams = z.infer<typeof createRefundSchema>;
