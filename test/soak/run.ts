// The chaos soak from the command line: npm run soak -- --duration SECONDS [--seed N]
// Prints the report and one PASS/FAIL line per invariant; exits 1 on any breach.
import { parseArgs } from 'node:util';
import { runSoak } from './soak.ts';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '300' },
    seed: { type: 'string' },
    loops: { type: 'string' },
    quiet: { type: 'boolean', default: false },
    'keep-logs': { type: 'boolean', default: false },
    'settle-timeout': { type: 'string' },
  },
});

const durationSeconds = Number(values.duration);
const seed = values.seed === undefined ? Math.floor(Math.random() * 1_000_000) : Number(values.seed);
const loops = values.loops === undefined ? undefined : Number(values.loops);
if (!Number.isFinite(durationSeconds) || durationSeconds < 10) {
  process.stderr.write('--duration must be a number of seconds, at least 10\n');
  process.exit(2);
}
if (!Number.isInteger(seed) || (loops !== undefined && !(Number.isInteger(loops) && loops > 0))) {
  process.stderr.write('--seed must be an integer; --loops a positive integer\n');
  process.exit(2);
}

// Ctrl-C (or a SIGTERM from CI) ends the load and tears everything down instead of leaving a cluster behind.
const abort = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (abort.signal.aborted) process.exit(130);
    process.stderr.write(`\n${signal}: stopping the soak and tearing down (again to quit at once)\n`);
    abort.abort();
  });
}

process.stdout.write(`chaos soak: ${durationSeconds} s, seed ${seed} (repeat with --seed ${seed})\n`);
const { breaches, report, invariants } = await runSoak({
  durationSeconds,
  seed,
  signal: abort.signal,
  keepLogs: values['keep-logs'],
  ...(values['settle-timeout'] ? { settleTimeoutSeconds: Number(values['settle-timeout']) } : {}),
  ...(loops ? { loops } : {}),
  log: values.quiet ? undefined : (line) => process.stdout.write(`${line}\n`),
});

// The report ends with one PASS/FAIL line per invariant; each breach follows, in full.
process.stdout.write(`\n${report.join('\n')}\n`);
const failed = invariants.filter((i) => !i.pass);
if (failed.length) process.stdout.write('\nbreaches:\n');
for (const i of failed) {
  process.stdout.write(`FAIL (${i.id}) ${i.name}\n`);
  for (const d of i.details) process.stdout.write(`       ${d.split('\n').join('\n       ')}\n`);
}
const harness = breaches.filter((b) => b.startsWith('harness:'));
for (const h of harness) process.stdout.write(`FAIL ${h}\n`);
process.stdout.write(`\n${breaches.length ? `${breaches.length} breach(es)` : 'no breach'} (seed ${seed})\n`);
process.exit(breaches.length ? 1 : 0);
