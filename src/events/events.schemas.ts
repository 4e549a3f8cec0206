import { z } from 'zod';
import { objectId } from '../validation.ts';

/**
 * Every state change of a charge or refund, a charge's refunded amount changing (`charge.refunded` when a
 * refund holds it, `charge.updated` when a failed refund gives it back), and an endpoint turned off for
 * failing (see docs/API.md).
 */
export const EVENT_TYPES = [
  'charge.pending',
  'charge.succeeded',
  'charge.failed',
  'charge.refunded',
  'charge.updated',
  'refund.pending',
  'refund.succeeded',
  'refund.failed',
  'webhook_endpoint.disabled',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export const eventSchema = z.object({
  id: z.string().describe('evt_…; also the webhook-id of its deliveries'),
  object: z.literal('event'),
  type: z.enum(EVENT_TYPES),
  created: z.string().describe('RFC 3339, UTC.'),
  data: z.object({ object: z.record(z.string(), z.unknown()).describe('The charge, refund or endpoint as it was after the change.') }),
});
export type Event = z.infer<typeof eventSchema>;

export const eventListSchema = z.object({
  object: z.literal('list'),
  data: z.array(eventSchema),
  has_more: z.boolean(),
});

export const listEventsQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(10),
  starting_after: objectId('evt').optional(),
  type: z.enum(EVENT_TYPES).optional(),
});
