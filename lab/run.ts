// npm run lab [-- --quick] [--seed N] [--rate R] [--cap N] [--out DIR]
//
// The protection lab: the payment processor is killed while an api with a small pool serves requests that
// need only the database (70 %) and requests that need the processor (30 %). It runs the timeline twice,
// protections off and on, on real processes it starts itself (its own Postgres cluster, the simulator, an
// api and a worker), and writes one self-contained HTML report (timelines as inline SVG, the summary
// table) and the timeline alone as SVG. The terminal prints the same table.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, ROOT, Teardown } from '../bench/lib/processes.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { type LabOptions, type Mode, type RunResult, runMode, type Timeline } from './lab.ts';
import { reportHtml, summaryText, timelineSvg } from './report.ts';

export const QUICK: Timeline = { warmup: 5, hang: 12, down: 8, recovery: 8, tailMax: 25 };
export const FULL: Timeline = { warmup: 20, hang: 40, down: 25, recovery: 25, tailMax: 60 };

/** What a lab run is told; the lab adds its own database server and log directory. */
export type LabSettings = Omit<LabOptions, 'dir' | 'adminUrl' | 'log'> & {
  /** Where the report, the figures and the processes' logs go. */
  out: string;
};

/** Runs both timelines and writes the report; returns the runs. */
export async function runLab(settings: LabSettings, log: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<RunResult[]> {
  const teardown = new Teardown();
  const work = await mkdtemp(path.join(tmpdir(), 'payments-lab-'));
  await chmod(work, 0o755); // as root the server runs as `postgres`, who must reach its data directory
  teardown.add('work directory', () => rm(work, { recursive: true, force: true }));
  try {
    const server = await startEmbeddedPostgres({ dir: path.join(work, 'data'), port: await freePort() });
    teardown.add('postgres', () => server.stop());
    // The processes' logs go beside the report.
    await mkdir(path.join(settings.out, 'logs'), { recursive: true });
    const options: LabOptions = { ...settings, dir: path.join(settings.out, 'logs'), adminUrl: server.url, log };
    const runs: RunResult[] = [];
    for (const mode of ['off', 'on'] as Mode[]) {
      // Each run on processes of its own, stopped before the next one starts.
      const own = new Teardown();
      try {
        runs.push(await runMode(mode, options, own));
      } finally {
        await own.runAll();
      }
    }
    await mkdir(settings.out, { recursive: true });
    const meta = {
      command: `npm run lab -- ${process.argv.slice(2).join(' ')}`.trim(),
      when: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
      machine: `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GB, Node ${process.versions.node}`,
      settings: `${settings.rate} requests/s, api in-flight cap ${settings.inFlightCap}, seed ${settings.seed}, phases ${settings.timeline.warmup}/${settings.timeline.hang}/${settings.timeline.down}/${settings.timeline.recovery} s`,
    };
    await writeFile(path.join(settings.out, 'report.html'), reportHtml(runs, meta));
    await writeFile(path.join(settings.out, 'timeline.svg'), `${timelineSvg(runs)}\n`);
    await writeFile(path.join(settings.out, 'results.json'), `${JSON.stringify({ meta, runs }, null, 1)}\n`);
    return runs;
  } finally {
    await teardown.runAll();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      seed: { type: 'string', default: '1' },
      rate: { type: 'string' },
      cap: { type: 'string', default: '32' },
      out: { type: 'string', default: path.join(ROOT, '.data/lab') },
    },
  });
  const number = (name: string, text: string, min: number) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) {
      process.stderr.write(`--${name} must be a number >= ${min}, not "${text}"\n`);
      process.exit(2);
    }
    return n;
  };
  const settings: LabSettings = {
    timeline: values.quick ? QUICK : FULL,
    rate: number('rate', values.rate ?? (values.quick ? '40' : '60'), 1),
    seed: number('seed', values.seed, 0),
    inFlightCap: number('cap', values.cap, 1),
    offAttemptTimeoutMs: 20_000,
    clientTimeoutMs: 30_000,
    out: path.resolve(values.out),
  };
  const teardownOnSignal = () => process.exit(130);
  process.once('SIGINT', teardownOnSignal);
  const runs = await runLab(settings);
  process.stdout.write(`\n${summaryText(runs)}\n\nreport: ${path.join(settings.out, 'report.html')}\n`);
  process.exit(runs.every((r) => r.reconciliation.ok) ? 0 : 1);
}
