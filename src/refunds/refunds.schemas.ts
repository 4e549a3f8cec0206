import { z } from 'zod';
import { MAX_AMOUNT } from '../payments/payments.schemas.ts';
import { objectId } from '../validation.ts';

export const REFUND_REASONS = ['duplicate', 'fraudulent', 'requested_by_customer'] as const;

export const createRefundSchema = z.strictObject({
  charge: objectId('ch'),
  amount: z.number().int().min(1).max(MAX_AMOUNT).optional().describe('Defaults to what is left to refund.'),
  reason: z.enum(REFUND_REASONS).optional(),
});

export const refundSchema = z.object({
  id: z.string().describe('re_…'),
  object: z.literal('refund'),
  amount: z.number().int(),
  currency: z.string(),
  charge: z.string(),
  reason: z.enum(REFUND_REASONS).nullable(),
  status: z.enum(['pending', 'succeeded', 'failed']),
  failure_code: z.string().nullable(),
  failure_message: z.string().nullable(),
  processor_reference: z.string().nullable(),
  created: z.string(),
});
export type Refund = z.infer<typeof refundSchema>;
export type CreateRefundParams = z.infer<typeof createRefundSchema>;
