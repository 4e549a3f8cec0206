// npm run docs:metrics: prints the README's metrics table from the registry the api and the worker export.
// With --exposition, prints that registry in Prometheus's text format instead (for `promtool check metrics`).
import { createMetrics } from '../metrics.ts';

/** Every metric the api and the worker export, the gauges read from the pool and the database included. */
function fullRegistry() {
  const metrics = createMetrics();
  metrics.watchPool({ totalCount: 0, idleCount: 0, waitingCount: 0 } as Parameters<typeof metrics.watchPool>[0]);
  metrics.watchBacklog(async () => ({ backlog: 0, dead: 0, awaitingReconciliation: 0, oldestPendingSeconds: 0, webhooksPending: 0, webhooksFailed: 0 }));
  return metrics.registry;
}

export function metricsTable(): string {
  const rows = fullRegistry()
    .getMetricsAsArray()
    .filter((m) => !/^(nodejs|process)_/.test(m.name)) // Node's defaults: event-loop lag, heap, CPU...
    .map((m) => {
      const { labelNames = [] } = m as unknown as { labelNames?: readonly string[] };
      const labels = labelNames.map((l) => `\`${l}\``).join(', ');
      return `| \`${m.name}\` | ${m.constructor.name.toLowerCase()} | ${labels} | ${m.help} |`;
    });
  return ['| metric | type | labels | what it counts |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(process.argv.includes('--exposition') ? await fullRegistry().metrics() : `${metricsTable()}\n`);
}
