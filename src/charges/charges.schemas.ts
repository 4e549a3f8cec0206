import { z } from 'zod';
import { MAX_AMOUNT } from '../payments/payments.schemas.ts';
import { objectId, text } from '../validation.ts';

export const CURRENCIES = ['usd', 'eur', 'gbp', 'cad', 'aud', 'chf', 'sek', 'nok', 'dkk', 'jpy', 'krw'] as const;
export const TEST_SOURCES = [
  'tok_visa',
  'tok_mastercard',
  'tok_chargeDeclined',
  'tok_insufficientFunds',
  'tok_expiredCard',
] as const;

// Keys that name parts of every JavaScript object: refused rather than silently dropped or misread.
const RESERVED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export const metadataSchema = z
  .record(
    text()
      .min(1)
      .max(40)
      .refine((k) => !RESERVED_KEYS.has(k), 'is a reserved name (__proto__, constructor and prototype are refused)'),
    text().max(500),
  )
  .refine((m) => Object.keys(m).length <= 20, 'at most 20 keys');

export const createChargeSchema = z.strictObject({
  amount: z.number().int().min(1).max(MAX_AMOUNT).describe('In the currency’s minor unit (1000 usd is $10.00).'),
  currency: z.enum(CURRENCIES).describe('Lowercase ISO 4217 code.'),
  source: z.enum(TEST_SOURCES).describe('A test card token; the processor simulator decides by it.'),
  description: text().max(500).optional(),
  metadata: metadataSchema.optional().describe('Up to 20 string keys (1–40 characters) with string values.'),
});
export type CreateChargeParams = z.infer<typeof createChargeSchema>;

export const chargeSchema = z.object({
  id: z.string().describe('ch_…'),
  object: z.literal('charge'),
  amount: z.number().int(),
  currency: z.string(),
  status: z.enum(['pending', 'succeeded', 'failed']),
  amount_refunded: z.number().int().describe('Refunded, or held by refunds still in flight.'),
  refunded: z.boolean().describe('True once amount_refunded equals amount.'),
  description: z.string().nullable(),
  metadata: z.record(z.string(), z.string()),
  failure_code: z.string().nullable().describe('card_declined, insufficient_funds, expired_card, processor_unavailable…'),
  failure_message: z.string().nullable(),
  processor_reference: z.string().nullable(),
  created: z.string().describe('RFC 3339, UTC.'),
});
export type Charge = z.infer<typeof chargeSchema>;

export const chargeListSchema = z.object({
  object: z.literal('list'),
  data: z.array(chargeSchema),
  has_more: z.boolean(),
});

export const listChargesQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(10),
  starting_after: objectId('ch').optional(),
});
