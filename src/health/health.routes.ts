import { Router } from 'express';
import { ProblemError } from '../errors.ts';
import type { Health, Readiness } from './health.service.ts';

export function healthRoutes(deps: { readiness: Readiness; health: Health }): Router {
  const router = Router();
  router.get('/livez', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const result = await deps.readiness();
    if (!result.ready) {
      throw new ProblemError(503, 'not_ready', 'Not ready', 'The service cannot do its work right now.', {
        retryAfterSeconds: 1,
        extra: { checks: result.checks },
      });
    }
    res.json({ status: 'ready', checks: result.checks });
  });
  router.get('/health', async (_req, res) => {
    const report = await deps.health();
    res
      .status(report.status === 'fail' ? 503 : 200)
      .type('application/health+json')
      .send(JSON.stringify(report));
  });
  return router;
}
