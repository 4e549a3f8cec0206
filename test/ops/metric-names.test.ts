// Metric names as Prometheus's own lint (promtool check metrics) wants them: counters end in _total and
// nothing else does, names are snake_case. The api and the worker export this registry.
import { expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.ts';

it('names every counter *_total and no other metric so', async () => {
  const metrics = await createMetrics().registry.getMetricsAsJSON();
  expect(metrics.length).toBeGreaterThan(20);
  const wrong = metrics.filter((m) => (String(m.type) === 'counter') !== m.name.endsWith('_total') || !/^[a-z_][a-z0-9_]*$/.test(m.name));
  expect(wrong.map((m) => `${m.name} (${m.type})`)).toEqual([]);
});
