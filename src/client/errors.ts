import type { Charge, FieldError, Refund } from './types.ts';

export interface PaymentsErrorInit {
  status: number;
  code: string;
  message?: string;
  type?: string;
  title?: string;
  detail?: string;
  requestId?: string;
  errors?: FieldError[];
  payment?: Charge | Refund;
  idempotencyKey?: string;
  attempts: number;
  body?: unknown;
  cause?: unknown;
}

/** The one error class: an HTTP problem, or no answer at all (status 0, code 'network_error' or 'timeout'). */
export class PaymentsError extends Error {
  override readonly name = 'PaymentsError';
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  /** The problem's stable code (card_declined, validation_failed…), or network_error / timeout. */
  readonly code: string;
  readonly type?: string;
  readonly title?: string;
  readonly detail?: string;
  readonly requestId?: string;
  /** Where a 400 validation_failed request went wrong. */
  readonly errors?: FieldError[];
  /** The failed charge or refund a 402 carries. */
  readonly payment?: Charge | Refund;
  /** The key every attempt of the failed POST carried: retry with it to get the same outcome. */
  readonly idempotencyKey?: string;
  /** HTTP attempts made before giving up. */
  readonly attempts: number;
  /** The parsed response body (or its text when it was not JSON). */
  readonly body?: unknown;

  constructor(init: PaymentsErrorInit) {
    super(init.message ?? init.detail ?? init.title ?? init.code, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.type = init.type;
    this.title = init.title;
    this.detail = init.detail;
    this.requestId = init.requestId;
    this.errors = init.errors;
    this.payment = init.payment;
    this.idempotencyKey = init.idempotencyKey;
    this.attempts = init.attempts;
    this.body = init.body;
  }
}
