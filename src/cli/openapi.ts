// npm run docs:openapi: writes openapi.yaml from the same zod schemas that validate requests.
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { chargeListSchema, chargeSchema, createChargeSchema } from '../charges/charges.schemas.ts';
import { EVENT_TYPES, eventListSchema, eventSchema } from '../events/events.schemas.ts';
import { createRefundSchema, refundSchema } from '../refunds/refunds.schemas.ts';
import {
  createdWebhookEndpointSchema,
  createWebhookEndpointSchema,
  deletedWebhookEndpointSchema,
  webhookDeliveryListSchema,
  webhookEndpointListSchema,
  webhookEndpointSchema,
} from '../webhooks/webhooks.schemas.ts';

const jsonSchema = (schema: z.ZodType, io: 'input' | 'output' = 'output') => {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' });
  return rest;
};

const problemSchema = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
  detail: z.string(),
  code: z.string().describe('Stable and machine-readable.'),
  request_id: z.string(),
  errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
});

/** A declined charge: the problem, and the charge as stored (failed, with its failure code). */
const declinedSchema = problemSchema.extend({ charge: chargeSchema });
/** A refund the processor refused: the problem, and the refund as stored (failed). */
const refundFailedSchema = problemSchema.extend({ refund: refundSchema });

/** /readyz when not ready: the problem, and each check with a stable code when it fails. */
const check = z.object({ status: z.enum(['pass', 'fail']), code: z.string().optional() });
const notReadySchema = problemSchema.extend({ checks: z.object({ database: check, migrations: check.optional() }) });

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ 'application/json': { schema } });
const problem = (description: string, schema = 'Problem') => ({
  description,
  content: { 'application/problem+json': { schema: ref(schema) } },
});
const ERRORS = {
  '400': problem('validation_failed, malformed_json, idempotency_key_missing or idempotency_key_invalid'),
  '401': problem('unauthenticated'),
  '413': problem('payload_too_large'),
  '415': problem('unsupported_media_type'),
  '429': problem(
    'rate_limited: this API key sent more than RATE_LIMIT_REQUESTS in its window; nothing was done. Carries ' +
      'Retry-After; RateLimit and RateLimit-Policy (IETF draft) ride on every answer while a limit is set.',
  ),
  '503': problem(
    'Carries Retry-After. overloaded: shed before anything ran, nothing was written. database_unavailable: ' +
      'the detail says whether nothing was written (the key was never claimed) or the outcome is unknown. ' +
      'request_timeout: the deadline passed while work was in flight, the outcome is unknown. After any 5xx, ' +
      'or no answer, retry with the same Idempotency-Key: the request then happens exactly once.',
  ),
};
// What any read under /v1 can answer besides its own statuses.
const READ_ERRORS = {
  '401': ERRORS['401'],
  '429': ERRORS['429'],
  '503': problem('overloaded (shed before anything ran) or database_unavailable; carries Retry-After. Nothing was changed: retry.'),
};
// Any path, the operations endpoints included: a request Node's HTTP parser cannot read.
const UNREADABLE = problem('bad_request: the HTTP request itself could not be read (headers_too_large is a 431)');
const IDEMPOTENT_ERRORS = {
  '409': problem('idempotency_key_in_use (carries Retry-After), or a refund rule: charge_not_refundable, refund_exceeds_charge'),
  '422': problem('idempotency_key_reused: the key was used with another method, path or body'),
};
const replayed = {
  'Idempotent-Replayed': { description: 'true when this is the stored answer of an earlier request', schema: { type: 'string' } },
  Location: { schema: { type: 'string' } },
};

export function openApiDocument() {
  return {
    openapi: '3.1.0',
    info: {
      title: 'payments-exactly-once',
      version: '0.1.0',
      description:
        'Stripe-style charges and refunds that happen exactly once. Every POST needs an Idempotency-Key; ' +
        'a repeat with the same key and body gets the stored answer back.',
    },
    servers: [{ url: 'http://127.0.0.1:3000' }],
    security: [{ bearer: [] }],
    paths: {
      '/v1/account': {
        get: {
          operationId: 'getAccount',
          summary: 'The account that owns the API key',
          responses: { '200': { description: 'The account', content: json(ref('Account')) }, ...READ_ERRORS },
        },
      },
      '/v1/charges': {
        post: {
          operationId: 'createCharge',
          summary: 'Charge a card, exactly once per Idempotency-Key',
          parameters: [{ $ref: '#/components/parameters/IdempotencyKey' }],
          requestBody: { required: true, content: json(ref('CreateCharge')) },
          responses: {
            '201': { description: 'Succeeded', headers: replayed, content: json(ref('Charge')) },
            '202': {
              description:
                'Pending: the processor could not answer in time; the worker settles it. Follow Location. A pending ' +
                'payment is never reported failed unless the processor confirms it holds none and voids the key.',
              headers: replayed,
              content: json(ref('Charge')),
            },
            '402': problem('Declined (card_declined, insufficient_funds, expired_card); the body has the failed charge', 'Declined'),
            ...ERRORS,
            ...IDEMPOTENT_ERRORS,
          },
        },
        get: {
          operationId: 'listCharges',
          summary: 'List charges, newest first',
          parameters: [
            { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 10 } },
            { name: 'starting_after', in: 'query', schema: { type: 'string' }, description: 'A charge id: the cursor' },
          ],
          responses: { '200': { description: 'A page', content: json(ref('ChargeList')) }, '400': ERRORS['400'], ...READ_ERRORS },
        },
      },
      '/v1/charges/{id}': {
        get: {
          operationId: 'getCharge',
          summary: 'Read a charge',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: {
            '200': { description: 'The charge', content: json(ref('Charge')) },
            ...READ_ERRORS,
            '404': problem('not_found: unknown, or another account’s'),
          },
        },
      },
      '/v1/refunds': {
        post: {
          operationId: 'createRefund',
          summary: 'Refund all or part of a succeeded charge, exactly once per Idempotency-Key',
          parameters: [{ $ref: '#/components/parameters/IdempotencyKey' }],
          requestBody: { required: true, content: json(ref('CreateRefund')) },
          responses: {
            '201': { description: 'Succeeded', headers: replayed, content: json(ref('Refund')) },
            '202': { description: 'Pending; the worker settles it', headers: replayed, content: json(ref('Refund')) },
            '402': problem('The processor refused the refund; the body has the failed refund', 'RefundFailed'),
            '404': problem('not_found: no such charge for this account'),
            ...ERRORS,
            ...IDEMPOTENT_ERRORS,
          },
        },
      },
      '/v1/refunds/{id}': {
        get: {
          operationId: 'getRefund',
          summary: 'Read a refund',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: {
            '200': { description: 'The refund', content: json(ref('Refund')) },
            ...READ_ERRORS,
            '404': problem('not_found'),
          },
        },
      },
      '/v1/events': {
        get: {
          operationId: 'listEvents',
          summary: 'List events, newest first: every state change of a charge or refund, kept EVENT_RETENTION_SECONDS (30 days)',
          parameters: [
            { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 10 } },
            { name: 'starting_after', in: 'query', schema: { type: 'string' }, description: 'An event id: the cursor' },
            { name: 'type', in: 'query', schema: { type: 'string', enum: [...EVENT_TYPES] }, description: 'Only events of this type' },
          ],
          responses: { '200': { description: 'A page', content: json(ref('EventList')) }, '400': ERRORS['400'], ...READ_ERRORS },
        },
      },
      '/v1/events/{id}': {
        get: {
          operationId: 'getEvent',
          summary: 'Read an event: the body its webhook deliveries carry',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'The event', content: json(ref('Event')) }, ...READ_ERRORS, '404': problem('not_found') },
        },
      },
      '/v1/events/{id}/deliveries': {
        get: {
          operationId: 'listEventDeliveries',
          summary: 'The webhook deliveries of an event, one per endpoint, with every attempt',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'Its deliveries', content: json(ref('WebhookDeliveryList')) }, ...READ_ERRORS, '404': problem('not_found') },
        },
      },
      '/v1/webhook_endpoints': {
        post: {
          operationId: 'createWebhookEndpoint',
          summary: 'Receive events at a URL; answers the signing secret, once per Idempotency-Key',
          parameters: [{ $ref: '#/components/parameters/IdempotencyKey' }],
          requestBody: { required: true, content: json(ref('CreateWebhookEndpoint')) },
          responses: {
            '201': { description: 'Made; the only answer that shows the secret', headers: replayed, content: json(ref('CreatedWebhookEndpoint')) },
            ...ERRORS,
            '400': problem(
              'validation_failed (a URL that is not http(s), does not resolve, or resolves to an address that is not public), ' +
                'malformed_json, idempotency_key_missing or idempotency_key_invalid',
            ),
            ...IDEMPOTENT_ERRORS,
            '404': problem('not_found: the endpoint this request made was deleted before its answer could be given (a resumed request)'),
            '409': problem('idempotency_key_in_use (carries Retry-After), or too_many_webhook_endpoints (16 per account)'),
          },
        },
        get: {
          operationId: 'listWebhookEndpoints',
          summary: 'List webhook endpoints, newest first (secrets are never shown again)',
          responses: { '200': { description: 'All of them', content: json(ref('WebhookEndpointList')) }, ...READ_ERRORS },
        },
      },
      '/v1/webhook_endpoints/{id}': {
        get: {
          operationId: 'getWebhookEndpoint',
          summary: 'Read a webhook endpoint',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'The endpoint', content: json(ref('WebhookEndpoint')) }, ...READ_ERRORS, '404': problem('not_found') },
        },
        delete: {
          operationId: 'deleteWebhookEndpoint',
          summary: 'Delete a webhook endpoint; deliveries to it stop',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: {
            '200': { description: 'Deleted', content: json(ref('DeletedWebhookEndpoint')) },
            ...READ_ERRORS,
            '404': problem('not_found'),
          },
        },
      },
      '/livez': {
        get: { operationId: 'getLiveness', summary: 'Liveness: the process runs', security: [], responses: { '200': { description: 'Alive' }, '400': UNREADABLE } },
      },
      '/readyz': {
        get: {
          operationId: 'getReadiness',
          summary: 'Readiness: the database answers in time and the schema is migrated',
          security: [],
          responses: { '200': { description: 'Ready' }, '400': UNREADABLE, '503': problem('not_ready, with the failing checks', 'NotReady') },
        },
      },
      '/health': {
        get: {
          operationId: 'getHealth',
          summary: 'Deep health (IETF health+json): database, processor circuit, job queue; cached about a second',
          security: [],
          responses: {
            '200': { description: 'pass or warn (an open circuit or a backlog is a warning)' },
            '400': UNREADABLE,
            '503': { description: 'fail: the database does not answer' },
          },
        },
      },
      '/metrics': {
        get: { operationId: 'getMetrics', summary: 'Prometheus metrics', security: [], responses: { '200': { description: 'Text format' }, '400': UNREADABLE } },
      },
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'sk_test_… API key' } },
      parameters: {
        IdempotencyKey: {
          name: 'Idempotency-Key',
          in: 'header',
          required: true,
          description: 'Bare or an RFC 8941 quoted string; 1–255 printable ASCII characters; scoped to the account.',
          schema: { type: 'string', maxLength: 255 },
        },
      },
      schemas: {
        Account: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            object: { const: 'account' },
            name: { type: 'string' },
            created: { type: 'string' },
          },
        },
        CreateCharge: jsonSchema(createChargeSchema, 'input'),
        Charge: jsonSchema(chargeSchema),
        ChargeList: { ...jsonSchema(chargeListSchema), properties: { ...jsonSchema(chargeListSchema).properties, data: { type: 'array', items: ref('Charge') } } },
        CreateRefund: jsonSchema(createRefundSchema, 'input'),
        Refund: jsonSchema(refundSchema),
        Problem: jsonSchema(problemSchema),
        Declined: { ...jsonSchema(declinedSchema), properties: { ...jsonSchema(declinedSchema).properties, charge: ref('Charge') } },
        RefundFailed: { ...jsonSchema(refundFailedSchema), properties: { ...jsonSchema(refundFailedSchema).properties, refund: ref('Refund') } },
        NotReady: jsonSchema(notReadySchema),
        Event: jsonSchema(eventSchema),
        EventList: { ...jsonSchema(eventListSchema), properties: { ...jsonSchema(eventListSchema).properties, data: { type: 'array', items: ref('Event') } } },
        CreateWebhookEndpoint: jsonSchema(createWebhookEndpointSchema, 'input'),
        WebhookEndpoint: jsonSchema(webhookEndpointSchema),
        CreatedWebhookEndpoint: jsonSchema(createdWebhookEndpointSchema),
        WebhookEndpointList: {
          ...jsonSchema(webhookEndpointListSchema),
          properties: { ...jsonSchema(webhookEndpointListSchema).properties, data: { type: 'array', items: ref('WebhookEndpoint') } },
        },
        DeletedWebhookEndpoint: jsonSchema(deletedWebhookEndpointSchema),
        WebhookDeliveryList: jsonSchema(webhookDeliveryListSchema),
      },
    },
  };
}

const PLAIN = /^[A-Za-z_/][A-Za-z0-9_ ./-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|y|n|~)$/i;

function scalar(value: unknown): string {
  if (typeof value === 'string') return PLAIN.test(value) && !RESERVED.test(value) && !value.endsWith(' ') ? value : JSON.stringify(value);
  return JSON.stringify(value);
}

/** YAML for plain JSON data: enough for this document, with no dependency. */
export function toYaml(value: unknown, indent = ''): string {
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return value
      .map((item) => {
        const inner = toYaml(item, `${indent}  `);
        return isBlock(item) ? `${indent}- ${inner.trimStart()}` : `${indent}- ${inner}`;
      })
      .join('\n');
  }
  if (value && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (entries.length === 0) return '{}';
    return entries
      .map(([k, v]) => {
        const key = PLAIN.test(k) && !RESERVED.test(k) ? k : JSON.stringify(k);
        return isBlock(v) ? `${indent}${key}:\n${toYaml(v, `${indent}  `)}` : `${indent}${key}: ${toYaml(v, indent)}`;
      })
      .join('\n');
  }
  return scalar(value);
}

function isBlock(value: unknown): boolean {
  return (Array.isArray(value) && value.length > 0) || (!!value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0);
}

export const openApiYaml = () =>
  `# Generated by \`npm run docs:openapi\` from the zod schemas in src/; edit those, not this file.\n${toYaml(openApiDocument())}\n`;

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync('openapi.yaml', openApiYaml());
  process.stdout.write('wrote openapi.yaml\n');
}
