// A real HTTP forwarder in front of the processor simulator that holds processor calls until the test
// opens it: a request stays in flight exactly as long as the test wants, with no timing guesswork.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Gate {
  url: string;
  /** How many requests arrived (held or forwarded). */
  arrived(): number;
  /** Forwards every held request, and every later one at once. */
  open(): void;
  /** Holds every later request again, until the next open(). */
  hold(): void;
  close(): Promise<void>;
}

export async function startGate(upstream: string): Promise<Gate> {
  let arrived = 0;
  // While held: a promise every arriving request waits on; open() resolves it.
  let held: { opened: Promise<void>; release: () => void } | undefined;
  const hold = () => {
    if (held) return;
    let release!: () => void;
    const opened = new Promise<void>((resolve) => {
      release = resolve;
    });
    held = { opened, release };
  };
  hold();
  const server = http.createServer((req, res) => {
    arrived += 1;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        if (held) await held.opened;
        const headers = Object.fromEntries(
          Object.entries(req.headers).filter(([name]) => !['host', 'connection', 'content-length', 'transfer-encoding'].includes(name)),
        ) as Record<string, string>;
        const body = chunks.length ? Buffer.concat(chunks) : undefined;
        try {
          const answer = await fetch(`${upstream}${req.url}`, { method: req.method, headers, body });
          res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
          res.end(Buffer.from(await answer.arrayBuffer()));
        } catch {
          res.destroy();
        }
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrived: () => arrived,
    open() {
      held?.release();
      held = undefined;
    },
    hold,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
