# One image for every process: api (the default), worker, processor simulator, migrate.
#   docker build -t payments .
#   docker run -e DATABASE_URL=postgres://… -e PROCESSOR_URL=http://… -p 3000:3000 payments
#   docker run … payments node --max-semi-space-size=4 --max-old-space-size=96 src/main.ts worker   (its /livez and /metrics on 9464)
# Node runs the TypeScript sources itself: no build step, no loader.

# Production dependencies only: no dev tools, and not the embedded Postgres (an optional dependency,
# for `npm start` on a laptop; in a container DATABASE_URL names a real server).
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force

FROM node:24-slim
ENV NODE_ENV=production HOST=0.0.0.0
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json openapi.yaml ./
COPY src ./src
COPY migrations ./migrations
# Node's compile cache, filled here by loading every module a process runs: a process then starts without
# stripping types or compiling (and ~20 MB smaller: the type stripper is never loaded). It stays read-only
# to the processes: none of them can plant code in it for the next start.
ENV NODE_COMPILE_CACHE=/app/.compile-cache
RUN node src/main.ts --help > /dev/null
# The image's own unprivileged user; nothing in /app is writable by it.
USER node
EXPOSE 3000 9464
# /livez of the api (PORT); the worker's compose service points its check at WORKER_METRICS_PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT ?? 3000}/livez`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Node itself is PID 1 and handles SIGTERM: `docker stop` drains in-flight requests, then exits 0. The heap
# bounds are package.json's start:api (see docs/SCALING.md, Memory): semi-spaces of 4 MB and an old space of
# 96 MB, which hold the api's RSS around 150 MB at saturation (322 MB and more without them).
CMD ["node", "--max-semi-space-size=4", "--max-old-space-size=96", "src/main.ts", "api"]
