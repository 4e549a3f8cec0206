// Row types of our tables, as Kysely sees them.
import type { ColumnType, Generated } from 'kysely';

/** jsonb columns are written as JSON text and read back parsed. */
type Json<T> = ColumnType<T, string, string>;
export type JsonObject = Record<string, unknown>;

type CreatedAt = ColumnType<Date, never, never>;

export interface AccountsTable {
  id: string;
  name: string;
  created_at: CreatedAt;
}

export interface ApiKeysTable {
  id: string;
  account_id: string;
  prefix: string;
  secret_hash: string;
  created_at: CreatedAt;
  revoked_at: Date | null;
}

export type RecoveryPoint = 'intent_recorded' | 'finished';

export interface IdempotencyKeysTable {
  id: Generated<string>;
  account_id: string;
  key: string;
  request_method: string;
  request_path: string;
  request_fingerprint: string;
  request_body: Json<JsonObject>;
  recovery_point: RecoveryPoint;
  locked_at: Date | null;
  lease_token: string | null;
  response_status: number | null;
  response_body: ColumnType<JsonObject | null, string | null, string | null>;
  response_headers: ColumnType<Record<string, string> | null, string | null, string | null>;
  created_at: CreatedAt;
  last_run_at: Generated<Date>;
  expires_at: Date;
}

export type ChargeStatus = 'pending' | 'succeeded' | 'failed';

export interface ChargesTable {
  id: string;
  account_id: string;
  idempotency_key_id: string | null;
  amount: number;
  currency: string;
  source: string;
  description: string | null;
  metadata: Json<Record<string, string>>;
  status: ChargeStatus;
  amount_refunded: Generated<number>;
  failure_code: string | null;
  failure_message: string | null;
  processor_idempotency_key: string;
  processor_reference: string | null;
  /** Set while the processor could not say what became of the payment past its settle window. */
  reconcile_since: Date | null;
  created_at: CreatedAt;
  updated_at: Generated<Date>;
}

export type RefundStatus = 'pending' | 'succeeded' | 'failed';
export type RefundReason = 'duplicate' | 'fraudulent' | 'requested_by_customer';

export interface RefundsTable {
  id: string;
  account_id: string;
  charge_id: string;
  idempotency_key_id: string | null;
  amount: number;
  currency: string;
  reason: RefundReason | null;
  status: RefundStatus;
  failure_code: string | null;
  failure_message: string | null;
  processor_idempotency_key: string;
  processor_reference: string | null;
  /** Set while the processor could not say what became of the payment past its settle window. */
  reconcile_since: Date | null;
  created_at: CreatedAt;
  updated_at: Generated<Date>;
}

export interface EventsTable {
  id: string;
  account_id: string;
  type: string;
  data: Json<JsonObject>;
  created_at: CreatedAt;
}

export type WebhookEndpointStatus = 'enabled' | 'disabled';

export interface WebhookEndpointsTable {
  id: string;
  account_id: string;
  idempotency_key_id: string | null;
  url: string;
  enabled_events: string[];
  secret_ciphertext: string;
  status: Generated<WebhookEndpointStatus>;
  disabled_reason: string | null;
  last_success_at: Date | null;
  created_at: CreatedAt;
  updated_at: Generated<Date>;
}

export type DeliveryStatus = 'pending' | 'succeeded' | 'failed';

export interface WebhookDeliveriesTable {
  id: Generated<string>;
  event_id: string;
  endpoint_id: string;
  account_id: string;
  status: Generated<DeliveryStatus>;
  attempts: Generated<number>;
  next_attempt_at: Generated<Date>;
  window_ends_at: Date;
  last_error: string | null;
  delivered_at: Date | null;
  created_at: CreatedAt;
}

export interface WebhookDeliveryAttemptsTable {
  id: Generated<string>;
  delivery_id: string;
  attempt: number;
  started_at: Date;
  duration_ms: number;
  response_status: number | null;
  error: string | null;
}

export interface Database {
  accounts: AccountsTable;
  api_keys: ApiKeysTable;
  idempotency_keys: IdempotencyKeysTable;
  charges: ChargesTable;
  refunds: RefundsTable;
  events: EventsTable;
  webhook_endpoints: WebhookEndpointsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_delivery_attempts: WebhookDeliveryAttemptsTable;
}
