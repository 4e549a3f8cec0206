// The small HTTP face of a process that serves no API (the worker): /livez and /metrics for its operators.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { PROBLEM_TYPE_BASE } from '../errors.ts';

/** A problem+json answer written without express: for the ops listener and for errors Node meets first. */
export function rawProblem(status: number, code: string, title: string, detail: string, extra: Record<string, unknown> = {}) {
  const requestId = `req_${randomUUID().replaceAll('-', '')}`;
  const body = JSON.stringify({ type: `${PROBLEM_TYPE_BASE}${code.replaceAll('_', '-')}`, title, status, detail, code, request_id: requestId, ...extra });
  const head = {
    'Content-Type': 'application/problem+json',
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': 'no-store',
    'X-Request-Id': requestId,
    'Content-Length': String(Buffer.byteLength(body)),
  };
  return { head, body };
}

/** GET /livez: the process runs; checks nothing else. True when it was that request (and is answered). */
function answeredLivez(req: IncomingMessage, res: ServerResponse, path: string | undefined): boolean {
  if (!((req.method === 'GET' || req.method === 'HEAD') && path === '/livez')) return false;
  res.writeHead(200, { 'Cache-Control': 'no-store', 'Content-Type': 'application/json' }).end(req.method === 'HEAD' ? undefined : JSON.stringify({ status: 'ok' }));
  return true;
}

/** Answers GET /livez and GET /metrics; anything else is a 404 problem. */
export function opsListener(registry: Registry) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, head: Record<string, string>, body: string) =>
      res.writeHead(status, { 'Cache-Control': 'no-store', ...head }).end(req.method === 'HEAD' ? undefined : body);
    if (answeredLivez(req, res, path)) return;
    if ((req.method === 'GET' || req.method === 'HEAD') && path === '/metrics') {
      registry.metrics().then(
        (text) => send(200, { 'Content-Type': registry.contentType }, text),
        () => send(500, { 'Content-Type': 'text/plain' }, 'metrics unavailable\n'),
      );
      return;
    }
    const { head, body } = rawProblem(404, 'not_found', 'Not found', `No ${req.method} ${path} here: this process serves /livez and /metrics.`);
    return send(404, head, body);
  };
}

/**
 * The face of a process still waiting for its database: alive, not ready, and every other request told
 * that nothing was done. Swapped for the real one once the process has started.
 */
export function startingListener() {
  return (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (answeredLivez(req, res, path)) return;
    const ready = path === '/readyz';
    const { head, body } = rawProblem(
      503,
      ready ? 'not_ready' : 'database_unavailable',
      ready ? 'Not ready' : 'Database unavailable',
      ready
        ? 'The service is starting: it waits for its database.'
        : 'The service is starting and cannot reach its database yet. Nothing was written: retry later.',
      ready ? { checks: { database: { status: 'fail', code: 'database_unreachable' } } } : {},
    );
    res.writeHead(503, { ...head, 'Retry-After': '1' }).end(req.method === 'HEAD' ? undefined : body);
  };
}
