// Builds the HTTP face of the service. No ports, no signals: main.ts owns those, tests build it bare.
import express, { type Express, type Request } from 'express';
import { accountRoutes } from './accounts/accounts.routes.ts';
import { chargeRoutes } from './charges/charges.routes.ts';
import type { Config } from './config.ts';
import type { Db } from './db/database.ts';
import { eventRoutes } from './events/events.routes.ts';
import { healthRoutes } from './health/health.routes.ts';
import type { Health, Readiness } from './health/health.service.ts';
import { docsRoutes } from './http/docs.ts';
import { errorHandler, notFoundHandler } from './http/error-handler.ts';
import {
  loadShedding,
  rememberMountPath,
  requestIdAndContext,
  requestLog,
  requireApiKey,
  requireJsonBody,
} from './http/middleware.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { refundRoutes } from './refunds/refunds.routes.ts';
import type { Services } from './services.ts';
import { webhookRoutes } from './webhooks/webhooks.routes.ts';

export interface AppDeps {
  config: Config;
  db: Db;
  logger: Logger;
  readiness: Readiness;
  health: Health;
  services: Services;
  metrics: Metrics;
}

export function createApp(deps: AppDeps): Express {
  const { config, db, logger, services, metrics } = deps;
  const app = express();
  app.disable('x-powered-by');
  // Every answer says Cache-Control: no-store, so an ETag (a hash of each body) would serve no cache.
  app.disable('etag');
  app.set('query parser', 'simple');

  app.use(requestIdAndContext(config.REQUEST_TIMEOUT_MS));
  app.use(requestLog(logger, metrics));

  const v1 = express.Router();
  v1.use(rememberMountPath());
  v1.use(
    loadShedding(
      config.MAX_IN_FLIGHT_REQUESTS,
      () => {
        metrics.loadShed.inc();
        logger.warn('request shed: too many in flight');
      },
      (inFlight) => metrics.inFlight.set(inFlight),
    ),
  );
  const rateLimit = config.RATE_LIMIT_REQUESTS > 0 ? { requests: config.RATE_LIMIT_REQUESTS, windowSeconds: config.RATE_LIMIT_WINDOW_SECONDS } : undefined;
  // An idempotent POST's claiming statement checks the caller's key itself (see requireApiKey).
  const checksItsOwnKey = (req: Request) => req.method === 'POST' && (req.path === '/charges' || req.path === '/refunds');
  v1.use(requireApiKey(db, rateLimit, checksItsOwnKey));
  v1.use(requireJsonBody());
  v1.use(express.json({ limit: '16kb', strict: true, type: ['application/json', 'application/*+json'] }));
  v1.use(accountRoutes());
  v1.use(chargeRoutes({ db, createCharge: services.createCharge }));
  v1.use(refundRoutes({ db, createRefund: services.createRefund }));
  v1.use(eventRoutes({ events: services.events }));
  v1.use(
    webhookRoutes({
      idempotency: services.idempotency,
      createEndpoint: services.createWebhookEndpoint,
      webhooks: services.webhooks,
      allowPrivateUrls: config.WEBHOOK_ALLOW_PRIVATE_URLS,
      lookupTimeoutMs: Math.min(2000, config.REQUEST_TIMEOUT_MS / 2),
    }),
  );
  // The API first: its requests, nearly all of them, then pass no other router on the way.
  app.use('/v1', v1);
  app.use(healthRoutes({ readiness: deps.readiness, health: deps.health }));
  app.use(docsRoutes());
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.use(notFoundHandler());
  app.use(errorHandler(logger));
  return app;
}
