// The SDK's webhook receiver helper against the Standard Webhooks specification: its published example,
// a real HTTP delivery read as raw bytes, and every way a delivery must be refused.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { signWebhook, verifyWebhook, WebhookVerificationError } from '../../src/client/index.ts';

// The example of the specification (standard-webhooks, "Verifying webhooks").
const SPEC = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};
const specHeaders = (overrides: Record<string, string> = {}) => ({
  'webhook-id': SPEC.id,
  'webhook-timestamp': String(SPEC.timestamp),
  'webhook-signature': SPEC.signature,
  ...overrides,
});
const atSpecTime = { now: SPEC.timestamp * 1000 + 10_000 };

describe('verifyWebhook', () => {
  it("accepts the specification's example, and signWebhook produces its signature", () => {
    expect(signWebhook(SPEC.secret, SPEC.id, SPEC.timestamp, SPEC.body)).toBe(SPEC.signature);
    expect(verifyWebhook(SPEC.body, specHeaders(), SPEC.secret, atSpecTime)).toEqual({ id: SPEC.id, timestamp: SPEC.timestamp, payload: { test: 2432232314 } });
  });

  it('refuses a tampered body, a wrong secret, an old or future timestamp, and missing headers', () => {
    const refused = (body: string, headers: Record<string, string>, secret = SPEC.secret, options = atSpecTime) => {
      expect(() => verifyWebhook(body, headers, secret, options)).toThrow(WebhookVerificationError);
    };
    refused('{"test": 2432232315}', specHeaders());
    refused(`${SPEC.body} `, specHeaders());
    refused(SPEC.body, specHeaders(), 'whsec_' + Buffer.from('another secret').toString('base64'));
    refused(SPEC.body, specHeaders(), SPEC.secret, { now: (SPEC.timestamp + 301) * 1000 });
    refused(SPEC.body, specHeaders(), SPEC.secret, { now: (SPEC.timestamp - 301) * 1000 });
    refused(SPEC.body, specHeaders({ 'webhook-id': 'msg_another' }));
    refused(SPEC.body, specHeaders({ 'webhook-timestamp': String(SPEC.timestamp + 1) }), SPEC.secret, atSpecTime);
    refused(SPEC.body, specHeaders({ 'webhook-signature': 'v2,' + SPEC.signature.slice(3) }));
    refused(SPEC.body, specHeaders({ 'webhook-signature': 'v1,' + SPEC.signature.slice(3, -4) }));
    refused(SPEC.body, { 'webhook-id': SPEC.id, 'webhook-timestamp': String(SPEC.timestamp) });
    refused(SPEC.body, specHeaders({ 'webhook-timestamp': '1614265330.5' }));
    // Within a wider tolerance the old one passes: the window is the receiver's choice.
    expect(verifyWebhook(SPEC.body, specHeaders(), SPEC.secret, { now: (SPEC.timestamp + 3600) * 1000, toleranceSeconds: 7200 }).id).toBe(SPEC.id);
  });

  it('accepts any one valid signature among several (a secret being rotated), and headers in any case', () => {
    const headers = new Headers({
      'Webhook-Id': SPEC.id,
      'Webhook-Timestamp': String(SPEC.timestamp),
      'Webhook-Signature': `v1,${Buffer.alloc(32).toString('base64')} ${SPEC.signature}`,
    });
    expect(verifyWebhook(new TextEncoder().encode(SPEC.body), headers, SPEC.secret, atSpecTime).payload).toEqual({ test: 2432232314 });
    expect(verifyWebhook(SPEC.body, { 'WEBHOOK-ID': SPEC.id, 'Webhook-Timestamp': String(SPEC.timestamp), 'webhook-signature': SPEC.signature }, SPEC.secret, atSpecTime).id).toBe(SPEC.id);
  });

  it('verifies a real delivery read as raw bytes by an HTTP receiver, and refuses the same one altered on the way', async () => {
    const secret = `whsec_${Buffer.from('a receiver secret of 24 bytes!!').toString('base64')}`;
    const outcomes: string[] = [];
    const receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const { payload } = verifyWebhook<{ type: string }>(Buffer.concat(chunks), req.headers, secret);
          outcomes.push(`accepted ${payload.type}`);
          res.writeHead(204).end();
        } catch (err) {
          outcomes.push(`refused: ${(err as Error).message}`);
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    try {
      const body = JSON.stringify({ type: 'charge.succeeded', data: { id: 'ch_1', amount: 1000 } });
      const timestamp = Math.floor(Date.now() / 1000);
      const headers = { 'content-type': 'application/json', 'webhook-id': 'evt_1', 'webhook-timestamp': String(timestamp), 'webhook-signature': signWebhook(secret, 'evt_1', timestamp, body) };
      expect((await fetch(url, { method: 'POST', headers, body })).status).toBe(204);
      expect((await fetch(url, { method: 'POST', headers, body: body.replace('1000', '100000') })).status).toBe(400);
      expect(outcomes).toEqual(['accepted charge.succeeded', 'refused: no webhook-signature matches this body and secret']);
    } finally {
      receiver.close();
    }
  });
});
