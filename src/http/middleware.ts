// Cross-cutting request handling: ids and context, request logs, load shedding, media types, auth.
import { randomUUID } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import type { AccountRow, RateLimit } from '../accounts/accounts.repository.ts';
import { API_KEY_PATTERN, authenticate, hashApiKey, trustedKey, UNKNOWN_KEY } from '../accounts/accounts.service.ts';
import type { Db } from '../db/database.ts';
import { OverloadedError, ProblemError, RateLimitedError, RequestTimeoutError, UnauthenticatedError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { requestContext } from '../request-context.ts';
import { sendProblem } from './problem.ts';

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Accepts a well-formed X-Request-Id, makes one otherwise, echoes it, and runs the rest inside its
 * context. Holds the request to its deadline: whatever is still waiting then (a locked row, a slow
 * database) gets 503 request_timeout, and its work, if it goes on, still stores its own answer for a retry.
 */
export function requestIdAndContext(requestTimeoutMs: number): RequestHandler {
  return (req, res, next) => {
    const sent = req.get('x-request-id');
    const requestId = sent && REQUEST_ID_PATTERN.test(sent) ? sent : `req_${randomUUID().replaceAll('-', '')}`;
    res.locals.requestId = requestId;
    res.locals.startedAt = performance.now();
    res.set('X-Request-Id', requestId);
    // No browser may guess another content type than the one sent; no cache may keep an answer that
    // carries account data (or a health reading that is stale a second later).
    res.set({ 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-store' });
    const timer = setTimeout(() => {
      if (res.headersSent) return;
      res.locals.deadlinePassed = true;
      sendProblem(res, new RequestTimeoutError());
    }, requestTimeoutMs);
    res.on('finish', () => clearTimeout(timer));
    res.on('close', () => clearTimeout(timer));
    requestContext.run({ requestId, deadline: Date.now() + requestTimeoutMs }, next);
  };
}

const PAYMENT_ROUTES: Record<string, string> = { '/v1/charges': 'charge', '/v1/refunds': 'refund' };

/** One log line and one set of metrics per request, when the response is finished or the client went away. */
export function requestLog(logger: Logger, metrics: Metrics): RequestHandler {
  // The line holds only the fields below, none of them a secret, so it is written without the redaction
  // every other line goes through: matching its paths cost ten times writing the line itself.
  const lines = logger.child({}, { redact: [] });
  return (req, res, next) => {
    let logged = false;
    const done = () => {
      if (logged) return;
      logged = true;
      const status = res.writableFinished ? res.statusCode : 499;
      const route = req.route ? `${res.locals.mountPath ?? req.baseUrl}${req.route.path}` : 'unmatched';
      const seconds = (performance.now() - res.locals.startedAt) / 1000;
      metrics.httpDuration.observe({ method: req.method, route, status }, seconds);
      if (res.locals.idempotency) metrics.idempotencyOutcomes.inc({ outcome: res.locals.idempotency });
      const kind = PAYMENT_ROUTES[route];
      if (kind && req.method === 'POST' && [201, 202, 402].includes(status)) metrics.paymentOutcomes.inc({ kind, status });
      const line = {
        request_id: res.locals.requestId,
        method: req.method,
        route: req.route ? route : req.originalUrl.split('?')[0],
        status,
        duration_ms: Math.round(seconds * 10000) / 10,
        account_id: res.locals.account?.id,
        idempotency: res.locals.idempotency,
      };
      const level = status >= 500 ? 'error' : status >= 400 ? 'warn' : 'info';
      lines[level](line, 'request completed');
    };
    res.on('finish', done);
    res.on('close', done);
    next();
  };
}

/**
 * Caps requests in flight. Past the cap a request is answered 503 at once instead of queuing,
 * so a slow dependency cannot pile up unbounded work. Per process: it protects this process. A slot is
 * free again when the response is done and the work it holds (res.locals.holdSlotUntil) has ended.
 */
export function loadShedding(maxInFlight: number, onShed: () => void, onCount: (inFlight: number) => void = () => undefined): RequestHandler {
  let inFlight = 0;
  return (_req, res, next) => {
    if (inFlight >= maxInFlight) {
      onShed();
      throw new OverloadedError();
    }
    inFlight += 1;
    onCount(inFlight);
    let holders = 1; // the response itself
    const letGo = () => {
      holders -= 1;
      if (holders === 0) onCount((inFlight -= 1));
    };
    let answered = false;
    const onAnswered = () => {
      if (answered) return;
      answered = true;
      letGo();
    };
    res.on('finish', onAnswered);
    res.on('close', onAnswered);
    res.locals.holdSlotUntil = (work) => {
      if (holders === 0) return;
      holders += 1;
      work.then(letGo, letGo);
    };
    next();
  };
}

/**
 * Remembers where this router is mounted, so an answer given after an error left the router (when express
 * has already reset req.baseUrl) is still labelled with its whole route template: `/v1/charges`.
 */
export function rememberMountPath(): RequestHandler {
  return (req, res, next) => {
    res.locals.mountPath = req.baseUrl;
    next();
  };
}

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** A request that carries a body must say it is JSON. */
export function requireJsonBody(): RequestHandler {
  return (req, _res, next) => {
    const length = req.get('content-length');
    const hasBody = req.get('transfer-encoding') !== undefined || (length !== undefined && length !== '0');
    if (BODY_METHODS.has(req.method) && hasBody && !req.is('application/json')) {
      throw new ProblemError(
        415,
        'unsupported_media_type',
        'Unsupported media type',
        `Send the body as application/json (got ${req.get('content-type') ?? 'no Content-Type'}).`,
      );
    }
    next();
  };
}

// Keys a process remembers as seen live (see requireApiKey): enough for every active key of a busy
// service; past it, the key seen longest ago is forgotten.
const TRUSTED_KEYS_MAX = 10_000;

/**
 * Resolves `Authorization: Bearer sk_test_…` to its account, or answers 401; with a rate limit, counts the
 * request against the key in the same statement and answers 429 past it (RateLimit headers as the IETF
 * draft has them, on every answer).
 *
 * Without a rate limit, a request that `checksItsOwnKey` (an idempotent POST, whose claiming statement
 * checks the key in its own snapshot) and brings a key this process saw live before skips the statement
 * that authenticates: it is taken on trust (res.locals.trustedKey) and confirmed by the database before any
 * answer goes out, by the claim or, on any other way, by the error handler. So a revoked key is refused from
 * its very next request on every api copy, whatever this process remembers. Every other request asks the
 * database every time.
 */
export function requireApiKey(db: Db, limit?: RateLimit, checksItsOwnKey: (req: Request) => boolean = () => false): RequestHandler {
  const seenLive = new Map<string, AccountRow>();
  const remember = (hash: string, account: AccountRow) => {
    seenLive.delete(hash);
    if (seenLive.size >= TRUSTED_KEYS_MAX) seenLive.delete(seenLive.keys().next().value!);
    seenLive.set(hash, account);
  };
  return async (req, res, next) => {
    const header = req.get('authorization');
    if (!header) {
      throw new UnauthenticatedError('Send your API key in the Authorization header: "Bearer sk_test_…".');
    }
    // The scheme is case-insensitive (RFC 9110): "bearer" works as well as "Bearer".
    const match = /^bearer +(\S+)$/i.exec(header);
    if (!match?.[1] || !API_KEY_PATTERN.test(match[1])) {
      throw new UnauthenticatedError('The Authorization header is malformed; expected "Bearer sk_test_…".');
    }
    const hash = hashApiKey(match[1]);
    const seen = !limit && checksItsOwnKey(req) ? seenLive.get(hash) : undefined;
    if (seen) {
      res.locals.account = seen;
      res.locals.trustedKey = trustedKey(db, hash, seen.id, () => seenLive.delete(hash));
      return next();
    }
    const found = await authenticate(db, hash, limit);
    if (!found) {
      seenLive.delete(hash);
      throw new UnauthenticatedError(UNKNOWN_KEY);
    }
    const { limit: counted, ...account } = found;
    if (limit && counted) {
      res.set({
        'RateLimit-Policy': `"per-key";q=${limit.requests};w=${limit.windowSeconds}`,
        RateLimit: `"per-key";r=${Math.max(0, limit.requests - counted.hits)};t=${counted.reset_seconds}`,
      });
      if (!counted.counted) throw new RateLimitedError(limit, counted.reset_seconds);
    }
    if (!limit) remember(hash, account);
    res.locals.account = account;
    next();
  };
}
