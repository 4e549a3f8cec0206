// GET /docs: the interactive API reference, Swagger UI rendering openapi.yaml, every file served from the
// installed package (no CDN: it works offline and leaks no visitor to a third party).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router } from 'express';

const require = createRequire(import.meta.url);
// The package's folder, found from its package.json: requiring the package itself would load and compile
// its 2 MB of browser bundles in every process, only to answer where they are.
const assets = path.dirname(require.resolve('swagger-ui-dist/package.json'));
const spec = fileURLToPath(new URL('../../openapi.yaml', import.meta.url));

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Payments API reference</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="reference"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/start.js"></script>
</body>
</html>
`;

// A script file of its own rather than inline, so the page runs under a strict Content-Security-Policy.
const START = `window.ui = SwaggerUIBundle({ url: '/openapi.yaml', dom_id: '#reference', deepLinking: true });\n`;

export function docsRoutes(): Router {
  const router = Router();
  router.get('/docs', (_req, res) => {
    res.set('Content-Security-Policy', "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'");
    res.type('html').send(PAGE);
  });
  router.get('/docs/start.js', (_req, res) => {
    res.type('text/javascript').send(START);
  });
  router.use('/docs/assets', express.static(assets, { index: false }));
  router.get('/openapi.yaml', (_req, res) => {
    res.type('application/yaml').sendFile(spec);
  });
  return router;
}
