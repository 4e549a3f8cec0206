// The lab's report: the two runs' timelines one above the other on the same axes, as inline SVG (no
// scripts, no fonts, nothing fetched), and the summary table, in HTML and as terminal text.
import type { ClassSecond, PhaseSummary, RunResult, Second } from './lab.ts';

const WIDTH = 960;
const LEFT = 70;
const RIGHT = 20;
const ROW = 92;
const GAP = 18;
const COLORS = { read: '#1f77b4', charge: '#d62728', cap: '#555', hang: '#ff7f0e', down: '#d62728', closed: '#2ca02c', half: '#ffbf00', open: '#d62728', pending: '#9467bd' };
const RUN_TITLE = { off: 'Protections off: one generous timeout, no breaker, no bulkhead, no deadline', on: 'Protections on: the defaults' };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (n: number | null, digits = 0) => (n === null ? '—' : n.toFixed(digits));

interface Row {
  title: string;
  /** Series: label, colour, value per second (null: no value), dashed. */
  series: { label: string; color: string; values: (number | null)[]; dashed?: boolean }[];
  log?: boolean;
  unit: string;
}

/** The timeline of one run: rows sharing the x axis, the fault windows shaded across them. */
function runPanel(run: RunResult, y0: number, duration: number): { svg: string; height: number } {
  const x = (t: number) => LEFT + ((WIDTH - LEFT - RIGHT) * t) / duration;
  const sec = run.seconds;
  const errors = (c: ClassSecond) => Object.values(c.errors).reduce((a, b) => a + b, 0);
  const rows: Row[] = [
    {
      title: 'successes per second (by when offered)',
      unit: '/s',
      series: [
        { label: 'reads 200', color: COLORS.read, values: sec.map((s) => s.read.ok) },
        { label: 'charges answered', color: COLORS.charge, values: sec.map((s) => s.charge.ok) },
      ],
    },
    {
      title: 'failures per second (503, no answer)',
      unit: '/s',
      series: [
        { label: 'reads', color: COLORS.read, values: sec.map((s) => errors(s.read)) },
        { label: 'charges', color: COLORS.charge, values: sec.map((s) => errors(s.charge)) },
      ],
    },
    {
      title: 'p99 latency (log scale)',
      unit: 'ms',
      log: true,
      series: [
        { label: 'reads', color: COLORS.read, values: sec.map((s) => s.read.p99) },
        { label: 'charges', color: COLORS.charge, values: sec.map((s) => s.charge.p99) },
      ],
    },
    {
      title: `api requests in flight, against its cap (${run.inFlightCap})`,
      unit: '',
      series: [
        { label: 'in flight', color: COLORS.cap, values: sec.map((s) => s.inFlight) },
        { label: 'cap', color: COLORS.cap, values: sec.map(() => run.inFlightCap), dashed: true },
      ],
    },
    {
      title: 'charges pending, and settled per second by the worker',
      unit: '',
      series: [
        { label: 'pending', color: COLORS.pending, values: sec.map((s) => s.pending) },
        { label: 'settled/s', color: COLORS.closed, values: sec.map((s) => s.settled) },
      ],
    },
  ];
  const parts: string[] = [];
  let y = y0;
  parts.push(`<text x="${LEFT}" y="${y + 14}" font-size="15" font-weight="bold">${esc(RUN_TITLE[run.mode])}</text>`);
  y += 40; // the title, then the fault windows' names
  const top = y;
  for (const row of rows) {
    parts.push(chartRow(row, sec, x, y));
    y += ROW + GAP;
  }
  // The breaker, as a band.
  parts.push(`<text x="${LEFT}" y="${y + 10}" font-size="11" fill="#333">processor circuit</text>`);
  const noBreaker = run.env.PROCESSOR_BREAKER_ENABLED === 'false';
  if (noBreaker) {
    parts.push(`<rect x="${x(0)}" y="${y + 14}" width="${(x(sec.length) - x(0)).toFixed(1)}" height="12" fill="#ccc"/>`);
    parts.push(`<text x="${LEFT + 4}" y="${y + 24}" font-size="10" fill="#333">no circuit breaker in this run</text>`);
  }
  (noBreaker ? [] : run.breakerChanges).forEach(([t, state], i) => {
    const until = run.breakerChanges[i + 1]?.[0] ?? sec.length;
    const color = state === 2 ? COLORS.open : state === 1 ? COLORS.half : COLORS.closed;
    // A half-open probe takes milliseconds: drawn at least a few pixels wide so it shows.
    const width = Math.max(state === 1 ? 4 : 0, x(until) - x(t));
    parts.push(`<rect x="${x(t).toFixed(1)}" y="${y + 14}" width="${width.toFixed(1)}" height="12" fill="${color}" opacity="0.8"/>`);
  });
  parts.push(`<text x="${WIDTH - RIGHT}" y="${y + 10}" font-size="10" text-anchor="end" fill="#333">green closed · amber half-open · red open</text>`);
  y += 32;
  // Fault windows, shaded behind everything of this run.
  const shade: string[] = [];
  for (const p of run.phases) {
    if (p.name !== 'hang' && p.name !== 'down') continue;
    const color = p.name === 'hang' ? COLORS.hang : COLORS.down;
    shade.push(`<rect x="${x(p.start).toFixed(1)}" y="${top}" width="${(x(p.end) - x(p.start)).toFixed(1)}" height="${y - top}" fill="${color}" opacity="0.10"/>`);
    shade.push(`<text x="${((x(p.start) + x(p.end)) / 2).toFixed(1)}" y="${top - 4}" font-size="11" text-anchor="middle" fill="${color}">processor ${p.name === 'hang' ? 'hangs' : 'down'}</text>`);
  }
  // The time axis.
  const axis: string[] = [];
  for (let t = 0; t <= duration; t += duration > 120 ? 30 : 10) {
    axis.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${y - 4}" y2="${y}" stroke="#333"/><text x="${x(t)}" y="${y + 12}" font-size="10" text-anchor="middle">${t} s</text>`);
  }
  y += 20;
  return { svg: [...shade, ...parts, ...axis].join('\n'), height: y - y0 };
}

function chartRow(row: Row, sec: Second[], x: (t: number) => number, y: number): string {
  const values = row.series.flatMap((s) => s.values.filter((v): v is number => v !== null));
  const max = Math.max(1, ...values);
  const min = row.log ? Math.max(1, Math.min(...values.filter((v) => v > 0), max)) : 0;
  const yOf = (v: number) => {
    const f = row.log ? (Math.log10(Math.max(v, min)) - Math.log10(min)) / Math.max(1e-9, Math.log10(max) - Math.log10(min)) : v / max;
    return y + ROW - f * (ROW - 14);
  };
  const out: string[] = [];
  out.push(`<rect x="${LEFT}" y="${y}" width="${WIDTH - LEFT - RIGHT}" height="${ROW}" fill="none" stroke="#ddd"/>`);
  out.push(`<text x="${LEFT + 4}" y="${y + 11}" font-size="11" fill="#333">${esc(row.title)}</text>`);
  out.push(`<text x="${LEFT - 4}" y="${yOf(max) + 4}" font-size="10" text-anchor="end">${fmt(max)}${row.unit}</text>`);
  out.push(`<text x="${LEFT - 4}" y="${y + ROW}" font-size="10" text-anchor="end">${fmt(min)}${row.unit}</text>`);
  let legendX = WIDTH - RIGHT - 4;
  for (const series of [...row.series].reverse()) {
    out.push(`<text x="${legendX}" y="${y + 11}" font-size="11" text-anchor="end" fill="${series.color}">${esc(series.label)}</text>`);
    legendX -= series.label.length * 6.2 + 14;
  }
  for (const series of row.series) {
    let d = '';
    let pen = false;
    sec.forEach((s, i) => {
      const v = series.values[i];
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${x(s.t + 0.5).toFixed(1)},${yOf(v).toFixed(1)}`;
      pen = true;
    });
    if (d) out.push(`<path d="${d}" fill="none" stroke="${series.color}" stroke-width="1.6"${series.dashed ? ' stroke-dasharray="5,4"' : ''}/>`);
  }
  return out.join('\n');
}

/** Both runs, one above the other, on the same time axis. */
export function timelineSvg(runs: RunResult[]): string {
  const duration = Math.max(...runs.map((r) => r.seconds.length));
  let y = 10;
  const panels: string[] = [];
  for (const run of runs) {
    const panel = runPanel(run, y, duration);
    panels.push(panel.svg);
    y += panel.height + 16;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="sans-serif">`,
    `<rect width="${WIDTH}" height="${y}" fill="white"/>`,
    ...panels,
    '</svg>',
  ].join('\n');
}

const statuses = (s: Record<string, number>) =>
  Object.entries(s)
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([status, n]) => `${status === '0' ? 'no answer' : status} ×${n}`)
    .join(', ') || '—';

export interface TableRow {
  run: string;
  phase: string;
  reads: string;
  readsP99: string;
  charges: string;
  chargesP99: string;
}

export function tableRows(runs: RunResult[]): TableRow[] {
  return runs.flatMap((run) =>
    run.summary.map((p: PhaseSummary) => ({
      run: run.mode,
      phase: p.phase,
      reads: p.read.successRate === null ? '—' : `${(p.read.successRate * 100).toFixed(1)} % of ${p.read.offered}`,
      readsP99: `${fmt(p.read.p99)} ms`,
      charges: statuses(p.charge.statuses),
      chargesP99: `${fmt(p.charge.p99)} ms`,
    })),
  );
}

const settledLine = (run: RunResult) =>
  `${run.mode}: every pending charge settled ${run.settledAfterRecovery === null ? 'NOT within the tail' : `${run.settledAfterRecovery} s after the processor recovered`}; ` +
  `circuit ${run.breakerChanges.map(([t, s]) => `${['closed', 'half-open', 'open'][s] ?? s} at ${t} s`).join(' → ') || 'never sampled'}`;

/** The summary as terminal text. */
export function summaryText(runs: RunResult[]): string {
  const rows = tableRows(runs);
  const header: TableRow = { run: 'run', phase: 'phase', reads: 'reads: success', readsP99: 'reads p99', charges: 'charges: answers', chargesP99: 'charges p99' };
  const all = [header, ...rows];
  const keys = Object.keys(header) as (keyof TableRow)[];
  const widths = keys.map((k) => Math.max(...all.map((r) => r[k].length)));
  const line = (r: TableRow) => keys.map((k, i) => r[k].padEnd(widths[i]!)).join('  ');
  return [line(header), ...rows.map(line), '', ...runs.map(settledLine), ...runs.map((r) => `${r.mode}: ${r.reconciliation.line}`)].join('\n');
}

/** One self-contained HTML file: the timelines and the table. */
export function reportHtml(runs: RunResult[], meta: { command: string; when: string; machine: string; settings: string }): string {
  const rows = tableRows(runs)
    .map((r) => `<tr><td>${r.run}</td><td>${r.phase}</td><td>${esc(r.reads)}</td><td>${r.readsP99}</td><td>${esc(r.charges)}</td><td>${r.chargesP99}</td></tr>`)
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Protection lab: the processor killed, with and without protections</title>
<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f4f4f4; }
code { background: #f4f4f4; padding: 0 3px; }
</style>
</head>
<body>
<h1>Protection lab</h1>
<p>70 % of the requests need only the database (a charge read, a page of charges), 30 % need the payment processor (a new charge), offered open-loop through the client SDK (one attempt each, no retries). The processor is made to hang, then to be down, then to recover. The same timeline runs twice against the same code: once configured without its protections, once with its defaults.</p>
<p><code>${esc(meta.command)}</code> · ${esc(meta.when)} · ${esc(meta.machine)} · ${esc(meta.settings)}</p>
<section id="timeline">
${timelineSvg(runs)}
</section>
<section id="summary">
<h2>Summary</h2>
<table>
<thead><tr><th>run</th><th>phase</th><th>reads: success</th><th>reads p99</th><th>charges: answers</th><th>charges p99</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
<ul>
${runs.map((r) => `<li>${esc(settledLine(r))}</li>`).join('\n')}
${runs.map((r) => `<li class="reconciliation ${r.reconciliation.ok ? 'pass' : 'fail'}">${esc(`${r.mode}: ${r.reconciliation.line}`)}</li>`).join('\n')}
</ul>
</section>
</body>
</html>
`;
}
