// A real webhook receiver over HTTP, as a client would run one: reads the raw body, verifies it with the
// SDK, deduplicates on webhook-id, and can be told to fail its next N deliveries, every Nth, or to stop
// listening.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifyWebhook } from '../../src/client/index.ts';

export interface Delivery {
  id: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** What the receiver answered. */
  status: number;
}

export interface Receiver {
  url: string;
  port: number;
  /** Every request received, in order, answered or not. */
  received: Delivery[];
  /** Events accepted once each (verified, first time their webhook-id was seen), by webhook-id. */
  accepted: Map<string, unknown>;
  /** Deliveries refused by verification (should stay empty). */
  unverified: string[];
  /** Deliveries that verified but carried a webhook-id already accepted (the retries of at-least-once). */
  duplicates: number;
  setSecret(secret: string): void;
  /** Answers the next `n` deliveries with `status` instead of 200. */
  failNext(n: number, status?: number): void;
  close(): Promise<void>;
  /** Listens again on the same port after close(). */
  reopen(): Promise<void>;
}

export async function startReceiver(options: { port?: number; host?: string; secret?: string; failEvery?: number } = {}): Promise<Receiver> {
  let secret = options.secret;
  let failing = 0;
  let failStatus = 500;
  const received: Delivery[] = [];
  const accepted = new Map<string, unknown>();
  const unverified: string[] = [];
  let duplicates = 0;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const id = String(req.headers['webhook-id'] ?? '');
      let status = 200;
      if (options.failEvery && (received.length + 1) % options.failEvery === 0) {
        status = 500; // now and then, as a real receiver under load does
      } else if (failing > 0) {
        failing -= 1;
        status = failStatus;
      } else if (secret) {
        try {
          const verified = verifyWebhook(body, req.headers as Record<string, string>, secret);
          if (accepted.has(verified.id)) duplicates += 1;
          else accepted.set(verified.id, verified.payload);
        } catch {
          unverified.push(id);
          status = 400;
        }
      }
      received.push({ id, headers: req.headers, body, status });
      res.writeHead(status).end();
    });
  });
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, options.host ?? '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
    });
  const port = await listen(options.port ?? 0);

  return {
    url: `http://127.0.0.1:${port}/hooks`,
    port,
    received,
    accepted,
    unverified,
    get duplicates() {
      return duplicates;
    },
    setSecret(value) {
      secret = value;
    },
    failNext(n, status = 500) {
      failing = n;
      failStatus = status;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
    reopen: async () => {
      await listen(port);
    },
  };
}
