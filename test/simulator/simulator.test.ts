// The processor simulator's reconciliation surface, over HTTP: lookup and void by key, key retention, chaos.
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { type LedgerEntry, type RunningSimulator, SimulatorListenError, startSimulator } from '../../src/simulator/simulator.ts';

const newKey = () => `key-${randomUUID()}`;

describe('the processor simulator', () => {
  let sim: RunningSimulator;
  const api = () => request(sim.url);
  const postCharge = (key: string, source = 'tok_visa') =>
    api().post('/charges').set('Idempotency-Key', key).send({ amount: 1000, currency: 'usd', source });
  const postRefund = (key: string, charge: string) =>
    api().post('/refunds').set('Idempotency-Key', key).send({ charge, amount: 100 });
  const lookup = (type: string, key: string) => api().get(`/lookup/${type}/${encodeURIComponent(key)}`);
  const voidKey = (type: string, key: string) => api().post(`/void/${type}/${encodeURIComponent(key)}`);
  const setChaos = async (chaos: Record<string, unknown>) => expect((await api().put('/chaos').send(chaos)).status).toBe(200);
  const ledger = async () => (await api().get('/ledger')).body as { entries: LedgerEntry[]; voided: unknown[] };
  const entriesFor = async (key: string) => (await ledger()).entries.filter((e) => e.idempotency_key === key);

  beforeAll(async () => {
    sim = await startSimulator(0);
  });
  afterAll(() => sim.close());

  describe('operations', () => {
    it('answers /livez, and /metrics counts requests by endpoint and shows the chaos mode', async () => {
      expect((await api().get('/livez')).body).toEqual({ status: 'ok' });
      const count = async (endpoint: string) => {
        const text = (await api().get('/metrics')).text;
        const line = text.split('\n').find((l) => l.startsWith(`simulator_requests_total{endpoint="${endpoint}"} `));
        return Number(line?.split(' ')[1] ?? 0);
      };
      const before = await count('charges');
      await postCharge(newKey());
      expect(await count('charges')).toBe(before + 1);
      await setChaos({ mode: 'slow', latency_ms: 1 });
      const text = (await api().get('/metrics')).text;
      expect(text).toContain('simulator_chaos_mode{mode="slow"} 1');
      expect(text).not.toContain('simulator_chaos_mode{mode="healthy"}');
      await setChaos({ mode: 'healthy' });
    });
  });

  describe('lookup by idempotency key', () => {
    it('finds a succeeded charge, even when its key needs URL-encoding', async () => {
      const key = `${newKey()}/with space?&%`;
      const charged = await postCharge(key);
      expect(charged.status).toBe(200);
      const res = await lookup('charges', key);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ state: 'succeeded', id: charged.body.id });
      expect(res.body.id).toMatch(/^pr_/);
    });

    it('finds a declined charge with its code and message', async () => {
      const key = newKey();
      const declined = await postCharge(key, 'tok_chargeDeclined');
      expect(declined.status).toBe(402);
      expect((await lookup('charges', key)).body).toEqual({
        state: 'declined',
        id: declined.body.id,
        code: 'card_declined',
        message: 'Your card was declined.',
      });
    });

    it('finds a refund by its key, with its prr_ id, apart from charges with the same key', async () => {
      const key = newKey();
      const charged = await postCharge(newKey());
      const refunded = await postRefund(key, charged.body.id);
      expect(refunded.status).toBe(200);
      expect((await lookup('refunds', key)).body).toEqual({ state: 'succeeded', id: refunded.body.id });
      expect(refunded.body.id).toMatch(/^prr_/);
      expect((await lookup('charges', key)).body).toEqual({ state: 'unknown' });
    });

    it('answers unknown for a key never seen and for a request refused as invalid', async () => {
      expect((await lookup('charges', newKey())).body).toEqual({ state: 'unknown' });
      const key = newKey();
      expect((await postCharge(key, 'tok_nonsense')).status).toBe(400);
      const res = await lookup('charges', key);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ state: 'unknown' });
    });

    it('answers 404 json for a type other than charges or refunds', async () => {
      for (const res of [await lookup('payouts', newKey()), await voidKey('charge', newKey())]) {
        expect(res.status).toBe(404);
        expect(res.body.error.type).toBe('invalid_request_error');
      }
    });
  });

  describe('void by key', () => {
    it('voids an unknown key for good: a charge with it is refused 409 and the ledger is unchanged', async () => {
      const key = newKey();
      expect((await voidKey('charges', key)).body).toEqual({ state: 'voided' });
      const before = (await ledger()).entries.length;
      const refused = await postCharge(key);
      expect(refused.status).toBe(409);
      expect(refused.body).toEqual({
        error: {
          type: 'invalid_request_error',
          code: 'idempotency_key_voided',
          message: 'This idempotency key was voided; no charge will be made with it.',
        },
      });
      const after = await ledger();
      expect(after.entries).toHaveLength(before);
      expect(after.voided).toContainEqual({ type: 'charge', idempotency_key: key });
      expect((await lookup('charges', key)).body).toEqual({ state: 'voided' });
      const again = await voidKey('charges', key);
      expect(again.status).toBe(200);
      expect(again.body).toEqual({ state: 'voided' });
    });

    it('voids a refund key for refunds only', async () => {
      const key = newKey();
      const charged = await postCharge(newKey());
      expect((await voidKey('refunds', key)).body).toEqual({ state: 'voided' });
      expect((await postRefund(key, charged.body.id)).status).toBe(409);
      expect((await postCharge(key)).status).toBe(200);
      expect(await entriesFor(key)).toHaveLength(1);
    });

    it('does not void a charged key: answers the charge as a lookup would', async () => {
      const key = newKey();
      const charged = await postCharge(key);
      const res = await voidKey('charges', key);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ state: 'succeeded', id: charged.body.id });
      expect((await ledger()).voided).not.toContainEqual({ type: 'charge', idempotency_key: key });
      const repeat = await postCharge(key);
      expect(repeat.status).toBe(200);
      expect(repeat.body.id).toBe(charged.body.id);

      const declinedKey = newKey();
      const declined = await postCharge(declinedKey, 'tok_insufficientFunds');
      expect((await voidKey('charges', declinedKey)).body).toEqual({
        state: 'declined',
        id: declined.body.id,
        code: 'insufficient_funds',
        message: 'Your card has insufficient funds.',
      });
    });

    it('refuses a slow charge whose key was voided while it slept', async () => {
      const key = newKey();
      const before = sim.state.requests.charges;
      // The chaos change and the void, a few milliseconds after the charge arrives, must land while it
      // sleeps: 4 s is far above them on a busy machine (and the charge always sleeps all of it).
      await setChaos({ mode: 'slow', latency_ms: 4000, jitter_ms: 0 });
      try {
        const pending = postCharge(key).then((res) => res);
        await expect.poll(() => sim.state.requests.charges, { timeout: 10_000, interval: 10 }).toBe(before + 1);
        await setChaos({ mode: 'healthy' });
        expect((await voidKey('charges', key)).body).toEqual({ state: 'voided' });
        const res = await pending;
        expect(res.status).toBe(409);
        expect(res.body.error.code).toBe('idempotency_key_voided');
        expect(await entriesFor(key)).toHaveLength(0);
      } finally {
        await setChaos({ mode: 'healthy' });
      }
    });
  });

  describe('key retention', () => {
    it('is off unless set; PUT /retention sets it and refuses a bad body', async () => {
      expect((await api().get('/retention')).body).toEqual({ seconds: null });
      expect(sim.state.keyRetentionSeconds).toBeNull();
      for (const body of [{ seconds: -1 }, { seconds: '5' }, {}, { seconds: 5, extra: true }]) {
        const res = await api().put('/retention').send(body);
        expect(res.status).toBe(400);
        expect(res.body.error.type).toBe('invalid_request_error');
      }
      try {
        expect((await api().put('/retention').send({ seconds: 2.5 })).body).toEqual({ seconds: 2.5 });
        expect((await api().get('/retention')).body).toEqual({ seconds: 2.5 });
        expect(sim.state.keyRetentionSeconds).toBe(2.5);
      } finally {
        expect((await api().put('/retention').send({ seconds: null })).body).toEqual({ seconds: null });
      }
    });

    it('can be set when starting the simulator', async () => {
      const other = await startSimulator(0, '127.0.0.1', { keyRetentionSeconds: 86_400 });
      try {
        expect((await request(other.url).get('/retention')).body).toEqual({ seconds: 86_400 });
      } finally {
        await other.close();
      }
    });

    it('forgets a key older than the retention, repeats or not: a repeat then charges again, lookup still finds it', async () => {
      const key = newKey();
      try {
        await api().put('/retention').send({ seconds: 0.5 });
        const first = await postCharge(key);
        expect((await postCharge(key)).body.id).toBe(first.body.id);
        await expect
          .poll(
            async () => {
              await postCharge(key);
              return (await entriesFor(key)).length;
            },
            { timeout: 5000, interval: 100 },
          )
          .toBe(2);
        const [, second] = await entriesFor(key);
        expect(second!.id).not.toBe(first.body.id);
        expect((await lookup('charges', key)).body).toEqual({ state: 'succeeded', id: second!.id });
      } finally {
        await api().put('/retention').send({ seconds: null });
      }
    });
  });

  describe('chaos on lookups and voids', () => {
    it('down answers 503 and flaky 500, as for charges', async () => {
      try {
        await setChaos({ mode: 'down' });
        expect((await lookup('charges', newKey())).status).toBe(503);
        expect((await voidKey('charges', newKey())).status).toBe(503);
        await setChaos({ mode: 'flaky', failure_rate: 1 });
        expect((await lookup('charges', newKey())).status).toBe(500);
        expect((await voidKey('charges', newKey())).status).toBe(500);
      } finally {
        await setChaos({ mode: 'healthy' });
      }
    });

    it('hang never answers', async () => {
      const key = newKey();
      await setChaos({ mode: 'hang' });
      try {
        await expect(lookup('charges', key).timeout(300)).rejects.toMatchObject({ timeout: 300 });
        await expect(voidKey('charges', key).timeout(300)).rejects.toMatchObject({ timeout: 300 });
      } finally {
        await setChaos({ mode: 'healthy' });
      }
      expect((await lookup('charges', key)).body).toEqual({ state: 'unknown' });
    });

    it('lose_response loses the charge answer but not the lookup or void that reconciles it', async () => {
      const key = newKey();
      const unknownKey = newKey();
      await setChaos({ mode: 'lose_response' });
      try {
        await expect(postCharge(key)).rejects.toThrow();
        const [entry] = await entriesFor(key);
        const looked = await lookup('charges', key);
        expect(looked.status).toBe(200);
        expect(looked.body).toEqual({ state: 'succeeded', id: entry!.id });
        expect((await voidKey('charges', key)).body).toEqual({ state: 'succeeded', id: entry!.id });
        expect((await voidKey('charges', unknownKey)).body).toEqual({ state: 'voided' });
        expect((await lookup('charges', unknownKey)).body).toEqual({ state: 'voided' });
      } finally {
        await setChaos({ mode: 'healthy' });
      }
    });

    it('counts lookups and voids among the requests', async () => {
      const { lookups, voids } = sim.state.requests;
      await lookup('charges', newKey());
      await voidKey('refunds', newKey());
      expect(sim.state.requests).toMatchObject({ lookups: lookups + 1, voids: voids + 1 });
      expect((await api().get('/ledger')).body.requests).toMatchObject({ lookups: lookups + 1, voids: voids + 1 });
    });
  });
});

describe('the processor simulator on a port that is taken', () => {
  it('rejects with one line naming the address and why, instead of starting without a server', async () => {
    const first = await startSimulator(0);
    try {
      const port = Number(new URL(first.url).port);
      const second = startSimulator(port);
      await expect(second).rejects.toBeInstanceOf(SimulatorListenError);
      await expect(second).rejects.toThrow(`cannot listen on 127.0.0.1:${port}: the port is taken`);
    } finally {
      await first.close();
    }
  });
});
