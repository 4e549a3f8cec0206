// The card processor simulator: a separate small HTTP server standing in for the real processor.
// Idempotent by its own Idempotency-Key header, keeps a ledger, and can be told to misbehave.
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import express, { type Express, type Request, type Response } from 'express';
import { z } from 'zod';

export const CHAOS_MODES = ['healthy', 'slow', 'flaky', 'down', 'hang', 'lose_response'] as const;
export type ChaosMode = (typeof CHAOS_MODES)[number];

const chaosSchema = z.strictObject({
  mode: z.enum(CHAOS_MODES),
  latency_ms: z.number().int().min(0).max(60_000).default(500),
  jitter_ms: z.number().int().min(0).max(60_000).default(100),
  failure_rate: z.number().min(0).max(1).default(0.5),
  seed: z.number().int().default(1),
});
export type Chaos = z.infer<typeof chaosSchema>;

const DECISIONS: Record<string, { approved: true } | { approved: false; code: string; message: string }> = {
  tok_visa: { approved: true },
  tok_mastercard: { approved: true },
  tok_chargeDeclined: { approved: false, code: 'card_declined', message: 'Your card was declined.' },
  tok_insufficientFunds: { approved: false, code: 'insufficient_funds', message: 'Your card has insufficient funds.' },
  tok_expiredCard: { approved: false, code: 'expired_card', message: 'Your card has expired.' },
};

const chargeSchema = z.object({
  amount: z.number().int().positive(),
  currency: z.string().min(3).max(3),
  source: z.string(),
  description: z.string().nullish(),
});
const refundSchema = z.object({ charge: z.string().min(1), amount: z.number().int().positive() });
const retentionSchema = z.strictObject({ seconds: z.number().min(0).nullable() });

const DECLINE_MESSAGES = new Map(
  Object.values(DECISIONS).flatMap((d) => (d.approved ? [] : [[d.code, d.message] as const])),
);

export interface LedgerEntry {
  id: string;
  type: 'charge' | 'refund';
  idempotency_key: string;
  amount: number;
  currency?: string;
  charge?: string;
  status: 'succeeded' | 'declined';
  decline_code?: string;
  /** The caller's X-Request-Id, so a charge can be traced back to the request that made it. */
  request_id: string | null;
  created: string;
}

export interface VoidedKey {
  type: 'charge' | 'refund';
  idempotency_key: string;
}

/** What the processor knows about an idempotency key, from its ledger and its voids. */
export type Lookup =
  | { state: 'succeeded'; id: string }
  | { state: 'declined'; id: string; code: string; message: string }
  | { state: 'voided' }
  | { state: 'unknown' };

export interface SimulatorOptions {
  /** How long a key's stored answer is kept; unset keeps it forever. */
  keyRetentionSeconds?: number;
}

interface StoredAnswer {
  status: number;
  body: unknown;
}

/** Small seeded PRNG (mulberry32), so a flaky run can be replayed exactly. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SimulatorState {
  chaos: Chaos;
  ledger: LedgerEntry[];
  voided: VoidedKey[];
  keyRetentionSeconds: number | null;
  requests: { charges: number; refunds: number; lookups: number; voids: number };
}

const TYPES: Record<string, 'charge' | 'refund'> = { charges: 'charge', refunds: 'refund' };

export function createSimulatorApp(options: SimulatorOptions = {}): { app: Express; state: SimulatorState } {
  const state: SimulatorState = {
    chaos: chaosSchema.parse({ mode: 'healthy' }),
    ledger: [],
    voided: [],
    keyRetentionSeconds: options.keyRetentionSeconds ?? null,
    requests: { charges: 0, refunds: 0, lookups: 0, voids: 0 },
  };
  let random = seededRandom(state.chaos.seed);
  const answers = new Map<string, StoredAnswer & { storedAt: number }>();
  const voidedKeys = new Set<string>();
  const refundedByCharge = new Map<string, number>();
  const charges = new Map<string, LedgerEntry>();

  const app = express();
  app.disable('x-powered-by');
  app.use(express.json());

  // What an operator scrapes from the simulator: requests by endpoint (the ledger's counts) and the chaos mode.
  const registry = new Registry();
  new Counter({
    name: 'simulator_requests_total',
    help: 'Requests the simulator received, by endpoint.',
    labelNames: ['endpoint'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [endpoint, n] of Object.entries(state.requests)) this.inc({ endpoint }, n);
    },
  });
  new Gauge({
    name: 'simulator_chaos_mode',
    help: 'The chaos mode the simulator is in (1 for the current one).',
    labelNames: ['mode'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.set({ mode: state.chaos.mode }, 1);
    },
  });
  app.get('/livez', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });

  const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  /** Applies the chaos mode; returns false when the request was already dealt with. */
  async function misbehave(res: Response): Promise<boolean> {
    const { mode, latency_ms, jitter_ms, failure_rate } = state.chaos;
    if (mode === 'down') {
      res.status(503).json({ error: { type: 'api_error', message: 'processor down' } });
      return false;
    }
    if (mode === 'hang') return false; // never answers; the socket stays open until the caller gives up
    if (mode === 'slow') await delay(latency_ms + Math.floor(random() * jitter_ms));
    if (mode === 'flaky' && random() < failure_rate) {
      res.status(500).json({ error: { type: 'api_error', message: 'transient processor error' } });
      return false;
    }
    return true;
  }

  function idempotencyKey(req: Request, res: Response): string | undefined {
    const key = req.get('idempotency-key');
    if (!key) res.status(400).json({ error: { type: 'invalid_request_error', message: 'Idempotency-Key required' } });
    return key;
  }

  /** The stored answer for a key, unless retention has since forgotten it (as Stripe does after 24 h). */
  function remembered(cacheKey: string): StoredAnswer | undefined {
    const stored = answers.get(cacheKey);
    const retention = state.keyRetentionSeconds;
    if (stored && retention !== null && Date.now() - stored.storedAt > retention * 1000) {
      answers.delete(cacheKey);
      return undefined;
    }
    return stored;
  }

  /** Refuses a voided key. Called after any chaos delay, so a void landing mid-sleep still stops the request. */
  function refuseVoided(res: Response, cacheKey: string): boolean {
    if (!voidedKeys.has(cacheKey)) return false;
    res.status(409).json({
      error: {
        type: 'invalid_request_error',
        code: 'idempotency_key_voided',
        message: 'This idempotency key was voided; no charge will be made with it.',
      },
    });
    return true;
  }

  /** Reads the permanent ledger, not the answer cache, so a key retention forgot is still found. */
  function lookup(type: 'charge' | 'refund', key: string): Lookup {
    const entry = state.ledger.findLast((e) => e.type === type && e.idempotency_key === key);
    if (entry?.status === 'succeeded') return { state: 'succeeded', id: entry.id };
    if (entry) {
      const code = entry.decline_code ?? 'card_declined';
      return { state: 'declined', id: entry.id, code, message: DECLINE_MESSAGES.get(code) ?? 'Your card was declined.' };
    }
    return voidedKeys.has(`${type}:${key}`) ? { state: 'voided' } : { state: 'unknown' };
  }

  /**
   * Answers. In lose_response mode the first answer for a key is lost after the work is recorded;
   * a repeat of the key is answered from what was recorded, as a real idempotent processor would.
   */
  function answer(req: Request, res: Response, stored: StoredAnswer, firstTime: boolean): void {
    if (firstTime && state.chaos.mode === 'lose_response') {
      req.socket.destroy();
      return;
    }
    res.status(stored.status).json(stored.body);
  }

  app.post('/charges', async (req, res) => {
    state.requests.charges += 1;
    if (!(await misbehave(res))) return;
    const key = idempotencyKey(req, res);
    if (!key) return;
    if (refuseVoided(res, `charge:${key}`)) return;
    const seen = remembered(`charge:${key}`);
    if (seen) return answer(req, res, seen, false);
    const parsed = chargeSchema.safeParse(req.body);
    const decision = parsed.success ? DECISIONS[parsed.data.source] : undefined;
    if (!parsed.success || !decision) {
      res.status(400).json({ error: { type: 'invalid_request_error', message: 'invalid charge request' } });
      return;
    }
    const entry: LedgerEntry = {
      id: `pr_${randomBytes(10).toString('hex')}`,
      type: 'charge',
      idempotency_key: key,
      amount: parsed.data.amount,
      currency: parsed.data.currency,
      status: decision.approved ? 'succeeded' : 'declined',
      ...(decision.approved ? {} : { decline_code: decision.code }),
      request_id: req.get('x-request-id') ?? null,
      created: new Date().toISOString(),
    };
    state.ledger.push(entry);
    charges.set(entry.id, entry);
    const stored: StoredAnswer = decision.approved
      ? { status: 200, body: { id: entry.id, object: 'charge', status: 'succeeded', amount: entry.amount } }
      : {
          status: 402,
          body: { id: entry.id, error: { type: 'card_error', code: decision.code, message: decision.message } },
        };
    answers.set(`charge:${key}`, { ...stored, storedAt: Date.now() });
    answer(req, res, stored, true);
  });

  app.post('/refunds', async (req, res) => {
    state.requests.refunds += 1;
    if (!(await misbehave(res))) return;
    const key = idempotencyKey(req, res);
    if (!key) return;
    if (refuseVoided(res, `refund:${key}`)) return;
    const seen = remembered(`refund:${key}`);
    if (seen) return answer(req, res, seen, false);
    const parsed = refundSchema.safeParse(req.body);
    const charge = parsed.success ? charges.get(parsed.data.charge) : undefined;
    if (!parsed.success || !charge || charge.status !== 'succeeded') {
      res.status(400).json({ error: { type: 'invalid_request_error', message: 'invalid refund request' } });
      return;
    }
    const refunded = refundedByCharge.get(charge.id) ?? 0;
    if (refunded + parsed.data.amount > charge.amount) {
      res.status(400).json({ error: { type: 'invalid_request_error', message: 'refund exceeds charge' } });
      return;
    }
    refundedByCharge.set(charge.id, refunded + parsed.data.amount);
    const entry: LedgerEntry = {
      id: `prr_${randomBytes(10).toString('hex')}`,
      type: 'refund',
      idempotency_key: key,
      amount: parsed.data.amount,
      charge: charge.id,
      status: 'succeeded',
      request_id: req.get('x-request-id') ?? null,
      created: new Date().toISOString(),
    };
    state.ledger.push(entry);
    const stored = { status: 200, body: { id: entry.id, object: 'refund', status: 'succeeded', amount: entry.amount } };
    answers.set(`refund:${key}`, { ...stored, storedAt: Date.now() });
    answer(req, res, stored, true);
  });

  function ledgerType(req: Request, res: Response): 'charge' | 'refund' | undefined {
    const type = TYPES[String(req.params.type)];
    if (!type) res.status(404).json({ error: { type: 'invalid_request_error', message: 'unknown type' } });
    return type;
  }

  // Neither goes through answer(): lose_response only loses answers to work that moves money.
  app.get('/lookup/:type/:key', async (req, res) => {
    const type = ledgerType(req, res);
    if (!type) return;
    state.requests.lookups += 1;
    if (!(await misbehave(res))) return;
    res.json(lookup(type, req.params.key));
  });

  app.post('/void/:type/:key', async (req, res) => {
    const type = ledgerType(req, res);
    if (!type) return;
    state.requests.voids += 1;
    if (!(await misbehave(res))) return;
    const key = req.params.key;
    const known = lookup(type, key);
    if (known.state === 'unknown') {
      voidedKeys.add(`${type}:${key}`);
      state.voided.push({ type, idempotency_key: key });
      res.json({ state: 'voided' });
      return;
    }
    res.json(known);
  });

  app.get('/ledger', (_req, res) => {
    res.json({ entries: state.ledger, requests: state.requests, voided: state.voided });
  });

  app.get('/retention', (_req, res) => {
    res.json({ seconds: state.keyRetentionSeconds });
  });

  app.put('/retention', (req, res) => {
    const parsed = retentionSchema.safeParse(req.body);
    if (!parsed.success) {
      res.status(400).json({ error: { type: 'invalid_request_error', message: z.prettifyError(parsed.error) } });
      return;
    }
    state.keyRetentionSeconds = parsed.data.seconds;
    res.json({ seconds: state.keyRetentionSeconds });
  });

  app.get('/chaos', (_req, res) => {
    res.json(state.chaos);
  });

  app.put('/chaos', (req, res) => {
    const parsed = chaosSchema.safeParse(req.body);
    if (!parsed.success) {
      res.status(400).json({ error: { type: 'invalid_request_error', message: z.prettifyError(parsed.error) } });
      return;
    }
    state.chaos = parsed.data;
    random = seededRandom(parsed.data.seed);
    res.json(state.chaos);
  });

  return { app, state };
}

export interface RunningSimulator {
  url: string;
  state: SimulatorState;
  close(): Promise<void>;
}

/** Why a server could not listen on host:port, in a few words ("the port is taken"). */
export const listenFailure = (err: NodeJS.ErrnoException): string =>
  err.code === 'EADDRINUSE' ? 'the port is taken' : err.code === 'EACCES' ? 'permission denied' : err.message;

/** The simulator could not listen: its message names the address and why, in one line. */
export class SimulatorListenError extends Error {}

/**
 * Starts the simulator on a port (0 picks a free one); rejects with a SimulatorListenError when it cannot
 * listen there. Closing also drops hung connections.
 */
export async function startSimulator(
  port = 0,
  host = '127.0.0.1',
  options: SimulatorOptions = {},
): Promise<RunningSimulator> {
  const { app, state } = createSimulatorApp(options);
  const sockets = new Set<Socket>();
  // A server of our own rather than app.listen: express 5 hands a listen error to the callback, which
  // would take it for success.
  const server: Server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) =>
      reject(new SimulatorListenError(`cannot listen on ${host}:${port}: ${listenFailure(err)}`, { cause: err }));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${host}:${address.port}`,
    state,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
