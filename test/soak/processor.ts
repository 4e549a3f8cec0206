// The processor simulator, in this process, exactly as startSimulator() runs it, with one addition: every
// request it receives is written down (when, what, with which key, the chaos mode it met, how it ended),
// so a breach can be told as a timeline of what the processor saw.
import type { Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import express from 'express';
import { createSimulatorApp, type RunningSimulator } from '../../src/simulator/simulator.ts';

export interface ProcessorRequest {
  at: number;
  method: string;
  path: string;
  /** The Idempotency-Key header (charges and refunds); lookups and voids carry the key in the path. */
  key?: string;
  requestId?: string;
  /** The chaos mode when it arrived. */
  mode: string;
  /** The HTTP status, once an answer was sent. */
  status?: number;
  /** Until the answer was sent, or until the connection closed without one. */
  ms?: number;
}

export type LoggedSimulator = RunningSimulator & { requests: ProcessorRequest[] };

export async function startLoggedSimulator(): Promise<LoggedSimulator> {
  const { app, state } = createSimulatorApp();
  const requests: ProcessorRequest[] = [];
  const outer = express();
  outer.disable('x-powered-by');
  outer.use((req, res, next) => {
    if (req.path === '/ledger' || req.path === '/chaos' || req.path === '/retention') return next();
    const rec: ProcessorRequest = {
      at: Date.now(),
      method: req.method,
      path: req.path,
      mode: state.chaos.mode,
      ...(req.get('idempotency-key') ? { key: req.get('idempotency-key') } : {}),
      ...(req.get('x-request-id') ? { requestId: req.get('x-request-id') } : {}),
    };
    requests.push(rec);
    res.on('finish', () => {
      rec.status = res.statusCode;
      rec.ms = Date.now() - rec.at;
    });
    res.on('close', () => {
      rec.ms ??= Date.now() - rec.at;
    });
    next();
  });
  outer.use(app);

  const sockets = new Set<Socket>();
  const server: Server = await new Promise((resolve) => {
    const s = outer.listen(0, '127.0.0.1', () => resolve(s));
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    state,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
