import { z } from 'zod';

export const CURRENCIES = ['usd', 'eur', 'gbp', 'cad', 'aud', 'chf', 'sek', 'nok', 'dkk', 'jpy', 'krw'] as const;
export const TEST_SOURCES = [
  'tok_visa',
  'tok_mastercard',
  'tok_chargeDeclined',
  'tok_insufficientFunds',
  'tok_expiredCard',
] as const;

export const MAX_AMOUNT = 99_999_999;

export const metadataSchema = z
  .record(z.string().min(1).max(40), z.string().max(500))
  .refine((m) => Object.keys(m).length <= 20, 'at most 20 keys');

export const createChargeSchema = z.strictObject({
  amount: z.number().int().min(1).max(MAX_AMOUNT),
  currency: z.enum(CURRENCIES),
  source: z.enum(TEST_SOURCES),
  description: z.string().max(500).optional(),
  metadata: metadataSchema.optional(),
});
export type CreateChargeParams = z.infer<typeof createChargeSchema>;

export const listChargesQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(10),
  starting_after: z.string().min(1).max(64).optional(),
});
