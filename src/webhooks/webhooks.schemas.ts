import { z } from 'zod';
import { EVENT_TYPES } from '../events/events.schemas.ts';
import { text } from '../validation.ts';

const url = text()
  .max(2048)
  .refine((value) => URL.canParse(value), 'must be an absolute URL')
  .refine((value) => !URL.canParse(value) || ['http:', 'https:'].includes(new URL(value).protocol), 'must be an http or https URL')
  .refine((value) => !URL.canParse(value) || (!new URL(value).username && !new URL(value).password), 'must not carry a user name or password')
  .describe('Where events are POSTed: http(s) only, to a public address unless WEBHOOK_ALLOW_PRIVATE_URLS is set.');

export const createWebhookEndpointSchema = z.strictObject({
  url,
  enabled_events: z
    .array(z.enum([...EVENT_TYPES, '*']))
    .min(1)
    .max(EVENT_TYPES.length)
    .refine((events) => new Set(events).size === events.length, 'must not repeat an event type')
    .refine((events) => !events.includes('*') || events.length === 1, '"*" (every event) stands alone')
    .describe('The event types sent to this endpoint; ["*"] for all of them.'),
});
export type CreateWebhookEndpointParams = z.infer<typeof createWebhookEndpointSchema>;

export const webhookEndpointSchema = z.object({
  id: z.string().describe('we_…'),
  object: z.literal('webhook_endpoint'),
  url: z.string(),
  enabled_events: z.array(z.string()),
  status: z.enum(['enabled', 'disabled']).describe('disabled after failing every delivery for a whole retry window'),
  disabled_reason: z.string().nullable(),
  created: z.string().describe('RFC 3339, UTC.'),
});
export type WebhookEndpoint = z.infer<typeof webhookEndpointSchema>;

export const createdWebhookEndpointSchema = webhookEndpointSchema.extend({
  secret: z.string().describe('whsec_…: the signing secret, shown only in this answer (and its idempotent replays).'),
});

export const webhookEndpointListSchema = z.object({
  object: z.literal('list'),
  data: z.array(webhookEndpointSchema),
  has_more: z.boolean(),
});

export const deletedWebhookEndpointSchema = z.object({
  id: z.string(),
  object: z.literal('webhook_endpoint'),
  deleted: z.literal(true),
});

export const webhookDeliverySchema = z.object({
  id: z
    .string()
    .regex(/^whd_[0-9a-f]{32}$/)
    .describe('whd_…, the delivery'),
  object: z.literal('webhook_delivery'),
  event: z.string(),
  endpoint: z.string(),
  status: z.enum(['pending', 'succeeded', 'failed']).describe('failed: dead-lettered after its retry window; an operator can redeliver it'),
  attempt_count: z.number().int(),
  next_attempt: z.string().nullable().describe('When a pending delivery is tried next.'),
  delivered: z.string().nullable(),
  last_error: z.string().nullable(),
  attempts: z.array(
    z.object({
      attempt: z.number().int(),
      started: z.string(),
      duration_ms: z.number().int(),
      response_status: z.number().int().nullable(),
      error: z.string().nullable(),
    }),
  ),
});

export const webhookDeliveryListSchema = z.object({
  object: z.literal('list'),
  data: z.array(webhookDeliverySchema),
  has_more: z.boolean(),
});
