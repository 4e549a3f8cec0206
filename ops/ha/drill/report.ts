// The drill's report: one self-contained HTML file (inline SVG timeline, no scripts, nothing fetched) and
// the same summary as terminal text.
import type { Fault, FaultFigures } from './faults.ts';
import type { Attempt } from './load.ts';
import type { LeaderSample, ProbeSample } from './probe.ts';
import type { Reconciliation } from './reconcile.ts';

export interface Target {
  name: string;
  pass: boolean;
  value: string;
}

export interface DrillResult {
  meta: { command: string; when: string; machine: string; settings: string };
  bringUpMs: number;
  /** Drill-clock ms when the clients started and stopped. */
  loadStart: number;
  loadEnd: number;
  faults: (Fault & FaultFigures)[];
  attempts: Attempt[];
  charges: number;
  chargeFinals: Record<string, number>;
  /** Logical charges without a final answer at the end of each second of the drill clock. */
  inFlightPerSecond: number[];
  probe: ProbeSample[];
  leaders: LeaderSample[];
  unexpected: { t: number; name: string }[];
  /** Undefined when it could not run (the database never came back). */
  reconciliation?: Reconciliation;
  targets: Target[];
}

const WIDTH = 1100;
const LEFT = 80;
const RIGHT = 20;
const STATUS_CLASSES = [
  { name: '201', color: '#2ca02c', test: (s: number) => s === 201 },
  { name: '202', color: '#17becf', test: (s: number) => s === 202 },
  { name: '402', color: '#9a9a9a', test: (s: number) => s === 402 },
  { name: '409', color: '#ff7f0e', test: (s: number) => s === 409 },
  { name: '503', color: '#d62728', test: (s: number) => s === 503 },
  { name: '500', color: '#8c1aff', test: (s: number) => s === 500 },
  { name: 'other 5xx', color: '#e377c2', test: (s: number) => s > 500 && s !== 503 },
  { name: 'no answer', color: '#111', test: (s: number) => s === 0 },
  { name: 'other', color: '#8c564b', test: () => true },
];
const NODE_COLORS: Record<string, string> = { pg1: '#1f77b4', pg2: '#ff7f0e', pg3: '#9467bd' };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const secs = (ms: number | undefined) => (ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`);
const since = (t: number | undefined, from: number | undefined) => (t === undefined || from === undefined ? '—' : secs(t - from));

function classOf(status: number) {
  return STATUS_CLASSES.find((c) => c.test(status))!;
}

export function timelineSvg(r: DrillResult): string {
  const start = r.loadStart;
  const end = Math.max(r.loadEnd, ...r.attempts.map((a) => a.t)) + 1000;
  const x = (t: number) => LEFT + ((WIDTH - LEFT - RIGHT) * (t - start)) / (end - start);
  const parts: string[] = [];
  // Fault names on four staggered lines above the rows.
  let y = 92;

  // Answers per second, stacked by status.
  const seconds = Math.ceil((end - start) / 1000);
  const buckets = Array.from({ length: seconds }, () => new Map<string, number>());
  for (const a of r.attempts) {
    const i = Math.floor((a.t - start) / 1000);
    if (i < 0 || i >= seconds) continue;
    const c = classOf(a.status).name;
    buckets[i]!.set(c, (buckets[i]!.get(c) ?? 0) + 1);
  }
  const max = Math.max(1, ...buckets.map((b) => [...b.values()].reduce((s, n) => s + n, 0)));
  const H = 150;
  parts.push(`<text x="${LEFT}" y="${y - 6}" font-size="12" fill="#333">answers per second, by status (every HTTP attempt of the clients)</text>`);
  parts.push(`<rect x="${LEFT}" y="${y}" width="${WIDTH - LEFT - RIGHT}" height="${H}" fill="none" stroke="#ddd"/>`);
  parts.push(`<text x="${LEFT - 4}" y="${y + 10}" font-size="10" text-anchor="end">${max}/s</text><text x="${LEFT - 4}" y="${y + H}" font-size="10" text-anchor="end">0</text>`);
  const bw = Math.max(1, x(start + 1000) - x(start) - 0.5);
  buckets.forEach((b, i) => {
    let top = y + H;
    for (const c of STATUS_CLASSES) {
      const n = b.get(c.name);
      if (!n) continue;
      const h = (n / max) * H;
      top -= h;
      parts.push(`<rect x="${x(start + i * 1000).toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${c.color}"><title>${i} s: ${n} × ${c.name}</title></rect>`);
    }
  });
  let lx = LEFT;
  const legendY = y + H + 17;
  for (const c of STATUS_CLASSES) {
    parts.push(`<rect x="${lx}" y="${y + H + 8}" width="10" height="10" fill="${c.color}"/><text x="${lx + 14}" y="${y + H + 17}" font-size="11">${c.name}</text>`);
    lx += 24 + c.name.length * 7;
  }
  y += H + 40;

  // Charges waiting for a final answer.
  const H2 = 70;
  const inFlight = r.inFlightPerSecond.map((n, i) => [i * 1000 + 999, n] as const).filter(([t]) => t >= start && t <= end);
  const max2 = Math.max(1, ...inFlight.map(([, n]) => n));
  parts.push(`<text x="${LEFT}" y="${y - 6}" font-size="12" fill="#333">logical charges without a final answer yet</text>`);
  parts.push(`<rect x="${LEFT}" y="${y}" width="${WIDTH - LEFT - RIGHT}" height="${H2}" fill="none" stroke="#ddd"/>`);
  parts.push(`<text x="${LEFT - 4}" y="${y + 10}" font-size="10" text-anchor="end">${max2}</text>`);
  parts.push(`<path d="${inFlight.map(([t, n], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${(y + H2 - (n / max2) * (H2 - 6)).toFixed(1)}`).join('')}" fill="none" stroke="#333" stroke-width="1.4"/>`);
  y += H2 + 26;

  // The probe: each commit through HAProxy in the colour of the node that took it; each failure, red.
  const legend = Object.entries(NODE_COLORS).map(([n, c]) => `<tspan fill="${c}">■ ${n}</tspan>`).join(' ');
  parts.push(`<text x="${LEFT}" y="${y - 6}" font-size="12" fill="#333">writes committed through HAProxy, by the node that took them (probe every 200 ms): ${legend} <tspan fill="#d62728">■ failed</tspan></text>`);
  for (const p of r.probe) {
    if (p.t < start || p.t > end) continue;
    const fill = p.ok ? (NODE_COLORS[p.node ?? ''] ?? '#2ca02c') : '#d62728';
    parts.push(`<rect x="${x(p.t - 200).toFixed(1)}" y="${y}" width="${Math.max(0.8, x(p.t) - x(p.t - 200)).toFixed(1)}" height="14" fill="${fill}"/>`);
  }
  y += 40;

  // Who leads, as Patroni says.
  parts.push(`<text x="${LEFT}" y="${y - 6}" font-size="12" fill="#333">leader as Patroni says (/cluster every 500 ms; a dead leader keeps its lock until the ttl runs out): ${legend} · blank: none</text>`);
  r.leaders.forEach((l, i) => {
    const next = r.leaders[i + 1]?.t ?? l.t + 500;
    if (!l.leader || next < start || l.t > end) return;
    parts.push(`<rect x="${x(Math.max(l.t, start)).toFixed(1)}" y="${y}" width="${Math.max(0.5, x(Math.min(next, end)) - x(Math.max(l.t, start))).toFixed(1)}" height="14" fill="${NODE_COLORS[l.leader] ?? '#999'}"/>`);
  });
  y += 30;

  // Faults across every row, and when writes came back.
  const top = 12;
  r.faults.forEach((f, i) => {
    const line = top + 10 + (i % 4) * 12;
    parts.push(`<line x1="${x(f.at).toFixed(1)}" x2="${x(f.at).toFixed(1)}" y1="${line + 2}" y2="${y}" stroke="#000" stroke-dasharray="3,3"/>`);
    const nearEnd = x(f.at) > WIDTH - RIGHT - 120;
    parts.push(`<text x="${(x(f.at) + (nearEnd ? -2 : 2)).toFixed(1)}" y="${line}" font-size="10"${nearEnd ? ' text-anchor="end"' : ''}>${esc(`${f.label} (${f.target})`)}</text>`);
    if (f.writesBackAt !== undefined && (f.kind === 'leader kill' || f.kind === 'switchover')) {
      parts.push(`<line x1="${x(f.writesBackAt).toFixed(1)}" x2="${x(f.writesBackAt).toFixed(1)}" y1="${top + 56}" y2="${y}" stroke="#2ca02c" stroke-width="1.5"><title>writes back ${secs(f.writesBackAt - f.at)} after the fault</title></line>`);
    }
  });
  parts.push(`<text x="${WIDTH - RIGHT}" y="${legendY}" font-size="11" text-anchor="end" fill="#2ca02c">│ writes committed on the new primary</text>`);
  for (const u of r.unexpected) parts.push(`<text x="${x(u.t).toFixed(1)}" y="${y + 4}" font-size="10" fill="#d62728">✕ ${esc(u.name)}</text>`);
  // The time axis, from the start of the load.
  const step = end - start > 200_000 ? 30_000 : 10_000;
  for (let t = 0; t <= end - start; t += step) {
    parts.push(`<line x1="${x(start + t)}" x2="${x(start + t)}" y1="${y + 8}" y2="${y + 12}" stroke="#333"/><text x="${x(start + t)}" y="${y + 24}" font-size="10" text-anchor="middle">${t / 1000} s</text>`);
  }
  y += 34;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="sans-serif"><rect width="${WIDTH}" height="${y}" fill="white"/>${parts.join('\n')}</svg>`;
}

interface Row {
  fault: string;
  target: string;
  leader: string;
  writesBack: string;
  allFinal: string;
  inFlight: string;
  answers: string;
  pause: string;
  rejoin: string;
}

const HEADER: Row = {
  fault: 'fault',
  target: 'target',
  leader: 'new leader (Patroni)',
  writesBack: 'writes back',
  allFinal: 'all final after writes back',
  inFlight: 'in flight',
  answers: 'answers meanwhile (503/500/409/none)',
  pause: 'longest write pause',
  rejoin: 'restart → healthy / ready',
};

function rows(r: DrillResult): Row[] {
  return r.faults.map((f) => {
    const st = (s: string) => f.statuses[s] ?? 0;
    const changes = f.kind === 'leader kill' || f.kind === 'switchover';
    const after = f.inFlight === 0 ? '0.0 s' : f.allFinalAt === undefined ? `${f.notFinal} never` : secs(Math.max(0, f.allFinalAt - (changes ? f.writesBackAt ?? f.at : f.at)));
    return {
      fault: f.label,
      target: f.target,
      leader: changes ? `${f.newLeader ?? '—'} (${since(f.leaderAt, f.at)})` : '—',
      writesBack: changes ? since(f.writesBackAt, f.at) : '—',
      allFinal: changes ? after : `${after} after the kill`,
      inFlight: String(f.inFlight),
      answers: `${st('503')}/${st('500')}/${st('409')}/${st('0')}`,
      pause: secs(f.writePauseMs),
      rejoin: f.restartedAt === undefined ? '—' : since(f.healthyAt, f.restartedAt),
    };
  });
}

function statusLine(r: DrillResult): string {
  const counts = new Map<string, number>();
  for (const a of r.attempts) counts.set(a.status === 0 ? 'no answer' : String(a.status), (counts.get(a.status === 0 ? 'no answer' : String(a.status)) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([s, n]) => `${s} ×${n}`).join(', ');
}

function facts(r: DrillResult): string[] {
  const rec = r.reconciliation;
  const finals = Object.entries(r.chargeFinals).map(([s, n]) => `${s} ×${n}`).join(', ');
  return [
    `bring-up ${secs(r.bringUpMs)}; load ${secs(r.loadEnd - r.loadStart)}: ${r.charges} logical charges (final answers ${finals}) in ${r.attempts.length} attempts (${statusLine(r)})`,
    `restarts not caused by the drill: ${r.unexpected.length ? r.unexpected.map((u) => `${u.name} at ${secs(u.t - r.loadStart)}`).join(', ') : 'none'}`,
    rec
      ? `reconciliation: ${rec.charges} charges (${Object.entries(rec.byStatus).map(([s, n]) => `${s} ${n}`).join(', ')}), processor ledger ${rec.ledgerCharges} charges; lost ${rec.lost.length}, doubled ${rec.doubled.length}, pending ${rec.pending} (${rec.pendingWithoutJob.length} without a job), keys left locked ${rec.keysLocked.length}, unanswered ${rec.unanswered.length}`
      : 'reconciliation: could not run',
    ...(rec ? [...rec.lost, ...rec.doubled, ...rec.pendingWithoutJob, ...rec.keysLocked, ...rec.unanswered] : []).slice(0, 12).map((d) => `  ${d}`),
    ...r.faults.flatMap((f) => f.notes.map((n) => `${f.label}: ${n}`)),
  ];
}

export function summaryText(r: DrillResult): string {
  const all = [HEADER, ...rows(r)];
  const keys = Object.keys(HEADER) as (keyof Row)[];
  const widths = keys.map((k) => Math.max(...all.map((row) => row[k].length)));
  const line = (row: Row) => keys.map((k, i) => row[k].padEnd(widths[i]!)).join('  ').trimEnd();
  const width = Math.max(...r.targets.map((t) => t.name.length));
  return [
    line(HEADER),
    ...rows(r).map(line),
    '',
    ...facts(r),
    '',
    'targets:',
    ...r.targets.map((t) => `  ${t.pass ? 'PASS' : 'FAIL'}  ${t.name.padEnd(width)}  ${t.value}`),
  ].join('\n');
}

export function reportHtml(r: DrillResult): string {
  const body = rows(r)
    .map((row) => `<tr>${(Object.keys(HEADER) as (keyof Row)[]).map((k) => `<td>${esc(row[k])}</td>`).join('')}</tr>`)
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Failover drill</title>
<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 1140px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f4f4f4; }
code { background: #f4f4f4; padding: 0 3px; }
.pass { color: #2ca02c; font-weight: bold; } .fail { color: #d62728; font-weight: bold; }
</style>
</head>
<body>
<h1>Failover drill</h1>
<p>Three Patroni + Postgres 15 nodes (synchronous replication), one etcd member, HAProxy routing writes to the running primary and requests to two api copies; two workers; the processor simulator. Clients charge through the SDK, each charge one Idempotency-Key retried until a final answer, while leaders are killed, a switchover is requested, the synchronous standby, an api copy and a worker are killed.</p>
<p><code>${esc(r.meta.command)}</code> · ${esc(r.meta.when)} · ${esc(r.meta.machine)} · ${esc(r.meta.settings)}</p>
<section id="timeline">
${timelineSvg(r)}
</section>
<section id="summary">
<h2>Faults</h2>
<table>
<thead><tr>${Object.values(HEADER).map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>
<tbody>
${body}
</tbody>
</table>
<p>Times from the fault. "Writes back": the first row committed (synchronously replicated) through HAProxy on the new primary. "All final": when the last logical charge that was in flight during the outage got its final answer (201, 202 or 402).</p>
<ul>
${facts(r).map((f) => `<li>${esc(f)}</li>`).join('\n')}
</ul>
<h2>Targets</h2>
<table>
<tbody>
${r.targets.map((t) => `<tr><td class="${t.pass ? 'pass' : 'fail'}">${t.pass ? 'PASS' : 'FAIL'}</td><td>${esc(t.name)}</td><td>${esc(t.value)}</td></tr>`).join('\n')}
</tbody>
</table>
</section>
</body>
</html>
`;
}
