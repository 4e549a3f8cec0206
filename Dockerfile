# One image for every process: api, worker, processor simulator, migrate.
FROM node:24-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY . .
USER node
ENV HOST=0.0.0.0
CMD ["node", "src/main.ts", "api"]
