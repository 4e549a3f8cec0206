// The lab's machinery on a tiny timeline (seconds): both runs on real processes, the report's structure,
// and the reconciliation. Timings are the lab's findings, never asserted here.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PHASES, type RunResult } from '../../lab/lab.ts';
import { summaryText } from '../../lab/report.ts';
import { runLab } from '../../lab/run.ts';

let out: string;
let runs: RunResult[];
const lines: string[] = [];
beforeAll(async () => {
  out = await mkdtemp(path.join(tmpdir(), 'payments-lab-test-'));
  runs = await runLab(
    {
      timeline: { warmup: 2, hang: 3, down: 2, recovery: 2, tailMax: 30 },
      rate: 10,
      seed: 7,
      inFlightCap: 8,
      offAttemptTimeoutMs: 2000,
      clientTimeoutMs: 10_000,
      out,
    },
    (line) => lines.push(line),
  );
}, 180_000);
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
  if (runs) process.stdout.write(`\nlab on a tiny timeline:\n${summaryText(runs)}\n`);
});

describe('npm run lab, on a tiny timeline', () => {
  it('runs protections off, then on, through every phase, with a sample for every second', () => {
    expect(runs.map((r) => r.mode)).toEqual(['off', 'on']);
    expect(runs[0]!.env).toMatchObject({ PROCESSOR_BREAKER_ENABLED: 'false' });
    expect(runs[1]!.env).toEqual({});
    for (const run of runs) {
      expect(run.phases.map((p) => p.name)).toEqual([...PHASES]);
      expect(run.seconds.length).toBe(run.phases.at(-1)!.end);
      expect(run.seconds.map((s) => s.t)).toEqual(run.seconds.map((_, i) => i));
      // Every second of load offered both classes' share, and the processes answered the sampler (not
      // necessarily every second: on a saturated machine a scrape may miss its second, and says so as null).
      const loaded = run.seconds.filter((s) => s.phase !== 'tail');
      expect(loaded.reduce((n, s) => n + s.read.offered + s.charge.offered, 0)).toBe(9 * 10);
      expect(loaded.some((s) => s.inFlight !== null && s.pending !== null)).toBe(true);
      expect(run.summary.map((p) => p.phase)).toEqual(['warm-up', 'hang', 'down', 'recovery']);
    }
  });

  it('accounts for every charge once, in both runs', () => {
    for (const run of runs) {
      expect(run.reconciliation.problems, run.reconciliation.line).toEqual([]);
      expect(run.reconciliation.line).toMatch(/every charge accounted for once/);
    }
    expect(lines.filter((l) => l.includes('reconciliation:'))).toHaveLength(2);
  });

  it('writes one self-contained HTML report and the timeline as SVG', async () => {
    const html = await readFile(path.join(out, 'report.html'), 'utf8');
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).not.toMatch(/<script|<link|@import|src="http|href="http|url\(/i);
    expect(html.match(/<svg /g)).toHaveLength(1);
    // The two runs on the same axes, the fault windows shaded, the breaker band.
    expect(html).toContain('Protections off');
    expect(html).toContain('Protections on');
    expect(html.match(/processor hangs/g)).toHaveLength(2);
    expect(html.match(/processor down/g)).toHaveLength(2);
    expect(html).toContain('processor circuit');
    // The summary: a row per run and phase, and each run's settle time and reconciliation.
    const rows = html.match(/<tr><td>(off|on)<\/td><td>[a-z-]+<\/td>/g) ?? [];
    expect(rows).toHaveLength(8);
    expect(html.match(/class="reconciliation pass"/g)).toHaveLength(2);
    const svg = await readFile(path.join(out, 'timeline.svg'), 'utf8');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg.trimEnd()).toMatch(/<\/svg>$/);
    const results = JSON.parse(await readFile(path.join(out, 'results.json'), 'utf8')) as { runs: RunResult[] };
    expect(results.runs.map((r) => r.mode)).toEqual(['off', 'on']);
  });
});
