// The drill's clients: steady loops through the SDK, each logical charge one Idempotency-Key retried until
// the service gives a final stored answer (201, 202 or 402). Every HTTP attempt is recorded on the drill's
// clock, so the report can say what clients saw in each second and how long each charge waited.
import { type AttemptInfo, createClient, PaymentsError } from '../../../src/client/index.ts';
import { sleep } from '../stack.ts';

export interface Attempt {
  /** When the answer came (or the attempt gave up), ms on the drill's clock. */
  t: number;
  ms: number;
  status: number;
  code?: string;
  key: string;
}

export interface LogicalCharge {
  key: string;
  client: number;
  body: { amount: number; currency: string; source: string };
  startedAt: number;
  /** When the final answer came; undefined while in flight (or if the drill gave up on it). */
  endedAt?: number;
  /** 201, 202, 402 (or another 4xx the contract does not expect here). */
  final?: number;
  code?: string;
  /** The charge the final answer named. */
  id?: string;
  attempts: number;
  gaveUp?: string;
}

export interface LoadOptions {
  baseUrl: string;
  apiKey: string;
  clients: number;
  /** The drill's clock: ms since its start. */
  now: () => number;
  runId: string;
  /** Pause between one client's logical charges (keeps the load modest on a shared machine). */
  thinkMs: number;
  /** A logical charge still without a final answer after this long is given up (and reported). */
  giveUpMs: number;
}

const SOURCES = [...Array<string>(8).fill('tok_visa'), 'tok_mastercard', 'tok_chargeDeclined'];
/** Answers after which the same key must be sent again: no answer, key in use, rate limited, any 5xx. */
const retryable = (status: number, code?: string) => status === 0 || (status === 409 && code === 'idempotency_key_in_use') || status === 429 || status >= 500;

export class Load {
  readonly attempts: Attempt[] = [];
  readonly charges: LogicalCharge[] = [];
  private stopping = false;
  private loops: Promise<void>[] = [];
  private readonly options: LoadOptions;

  constructor(options: LoadOptions) {
    this.options = options;
  }

  start(): void {
    this.loops = Array.from({ length: this.options.clients }, (_, n) => this.loop(n));
  }

  /** Starts no new logical charge; resolves when every client's current one ended, or after `timeoutMs`. */
  async stop(timeoutMs: number): Promise<boolean> {
    this.stopping = true;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([Promise.all(this.loops).then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)))]);
    clearTimeout(timer);
    return done;
  }

  inFlight(): LogicalCharge[] {
    return this.charges.filter((c) => c.endedAt === undefined && !c.gaveUp);
  }

  private async loop(n: number): Promise<void> {
    const { now } = this.options;
    // The SDK retries a few times with short jittered backoff (and Retry-After); this loop keeps the key
    // going past that, so the wait measured is the service's, not a client's backoff grown to seconds.
    const client = createClient({
      baseUrl: this.options.baseUrl,
      apiKey: this.options.apiKey,
      timeoutMs: 7000,
      maxAttempts: 3,
      retryBaseMs: 100,
      deadlineMs: 15_000,
      onAttempt: (a: AttemptInfo) => {
        if (a.method === 'POST') this.attempts.push({ t: now(), ms: a.ms, status: a.status, code: a.code, key: a.idempotencyKey ?? '' });
      },
    });
    for (let i = 0; !this.stopping; i++) {
      const charge: LogicalCharge = {
        key: `drill-${this.options.runId}-c${n}-${i}`,
        client: n,
        body: { amount: 100 + Math.floor(Math.random() * 9900), currency: 'usd', source: SOURCES[Math.floor(Math.random() * SOURCES.length)]! },
        startedAt: now(),
        attempts: 0,
      };
      this.charges.push(charge);
      for (;;) {
        const before = this.attempts.length;
        try {
          const result = await client.charges.create(charge.body, { idempotencyKey: charge.key });
          Object.assign(charge, { final: result.status === 'pending' ? 202 : 201, id: result.id });
        } catch (err) {
          // Anything but a PaymentsError is the SDK's own failure: retried like no answer, and so it shows.
          if (err instanceof PaymentsError && !retryable(err.status, err.code)) Object.assign(charge, { final: err.status, code: err.code, id: err.payment?.id });
          else if (!(err instanceof PaymentsError)) charge.code = `exception: ${String(err).slice(0, 100)}`;
        }
        charge.attempts += this.attempts.length - before;
        if (charge.final !== undefined) {
          charge.endedAt = now();
          break;
        }
        if (now() - charge.startedAt > this.options.giveUpMs) {
          charge.gaveUp = `no final answer after ${Math.round((now() - charge.startedAt) / 1000)} s`;
          break;
        }
        await sleep(100 + Math.random() * 150);
      }
      await sleep(this.options.thinkMs * (0.5 + Math.random()));
    }
  }
}
