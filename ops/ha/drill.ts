// npm run drill [-- --quick] [--kills N] [--clients N] [--out DIR] [--base-port N] [--env K=V ...]
//
// The failover drill: the HA stack of `ha:up` as real processes, steady retrying clients through the SDK,
// and a schedule of faults: leader kills (Patroni and its postmaster, SIGKILL; the killed node restarted
// to rejoin, the cluster healthy again before the next), a planned switchover, a killed synchronous
// standby, a killed api copy and a killed worker (each restarted). Then every charge is reconciled with the
// processor's ledger. It writes a self-contained HTML report, prints the summary, and exits non-zero when
// a target fails: 0 lost, 0 doubled, 0 × 500, every charge in flight final within 5 s of the new primary
// taking writes, at most 5 s of 503s in the switchover. Everything it started is stopped, also on failure
// or Ctrl-C.
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type Fault, type FaultFigures, figures } from './drill/faults.ts';
import { Load } from './drill/load.ts';
import { Probe } from './drill/probe.ts';
import { pendingCount, reconcile } from './drill/reconcile.ts';
import { type DrillResult, reportHtml, summaryText, type Target } from './drill/report.ts';
import { APIS, type ComponentName, defaultSettings, ensurePackages, NODES, type NodeName, type ServiceName, sleep, Stack, waitFor, WORKERS } from './stack.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: process.env.DRILL_QUICK === '1' },
    kills: { type: 'string' },
    clients: { type: 'string', default: '8' },
    out: { type: 'string', default: path.join(tmpdir(), 'payments-ha-drill-report') },
    'base-port': { type: 'string', default: process.env.HA_BASE_PORT ?? '15500' },
    dir: { type: 'string', default: path.join(tmpdir(), 'payments-ha-drill') },
    env: { type: 'string', multiple: true, default: [] },
  },
});
const kills = Number(values.kills ?? (values.quick ? 2 : 5));
const clients = Number(values.clients);
if (!Number.isInteger(kills) || kills < 0 || !Number.isInteger(clients) || clients < 1 || values.env.some((kv) => !/^[A-Z_][A-Z0-9_]*=/.test(kv))) {
  process.stderr.write('--kills must be an integer >= 0, --clients >= 1, --env NAME=VALUE\n');
  process.exit(2);
}
const serviceEnv = Object.fromEntries(values.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const out = path.resolve(values.out);

/** A charge in flight must get its final answer this soon after the new primary takes writes. */
const FINAL_TARGET_MS = 5000;
const SWITCHOVER_503_TARGET_MS = 5000;
/** How long the schedule waits for charges in flight before moving on (their real final times still count). */
const FINAL_WAIT_MS = 20_000;

const t0 = Date.now();
const now = () => Date.now() - t0;
const secs = (ms: number | undefined) => (ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`);
const log = (line: string) => process.stdout.write(`[drill ${secs(now()).padStart(7)}] ${line}\n`);

let stack: Stack | undefined;
let tearingDown: Promise<void> | undefined;
const teardown = () =>
  (tearingDown ??= (async () => {
    if (!stack) return;
    log('stopping everything the drill started');
    await stack.down().catch((err: unknown) => process.stderr.write(`teardown: ${String(err)}\n`));
    rmSync(path.join(out, 'logs'), { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    cpSync(stack.logDir, path.join(out, 'logs'), { recursive: true });
    stack.removeData();
  })());
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (tearingDown) process.exit(130);
    process.stderr.write(`\n${signal}: stopping the drill (again to quit at once)\n`);
    void teardown().then(() => process.exit(130));
  });
}

async function main(): Promise<number> {
  await ensurePackages(log);
  stack = await Stack.create(defaultSettings({ dir: values.dir, basePort: Number(values['base-port']), serviceEnv }));
  const s = stack;
  log(`stack in ${s.settings.dir}; should this process die, \`npm run ha:down -- --dir ${s.settings.dir}\` stops what it started`);
  const upStart = Date.now();
  await s.up(log);
  const bringUpMs = Date.now() - upStart;
  log(`stack up in ${secs(bringUpMs)}`);

  const probe = new Probe(s, now);
  await probe.start();
  const load = new Load({ baseUrl: s.apiUrl, apiKey: s.apiKey!, clients, now, runId: String(t0), thinkMs: 250, giveUpMs: 150_000 });
  const loadStart = now();
  load.start();

  // What the drill takes down is expected to be down; anything else that exits is a finding, and is
  // restarted (as a supervisor would) so the drill can go on.
  const expected = new Set<ComponentName>();
  const unexpected: { t: number; name: string }[] = [];
  let supervising = true;
  const supervisor = (async () => {
    const watched: ComponentName[] = ['etcd', 'haproxy', 'simulator', ...NODES, ...APIS, ...WORKERS];
    while (supervising) {
      for (const name of watched) {
        if (!supervising || tearingDown || expected.has(name) || s.alive(name)) continue;
        unexpected.push({ t: now(), name });
        log(`UNEXPECTED: ${name} is not running (see ${s.logDir}/${name}.log); restarting it`);
        s.start(name);
      }
      await sleep(500);
    }
  })();

  const faults: Fault[] = [];
  // After Ctrl-C the schedule goes no further: the teardown owns the stack.
  const go = () => {
    if (tearingDown) throw new Error('interrupted');
  };
  const leader = async () => waitFor('a leader', async () => (await s.cluster())?.find((m) => m.role === 'leader' && m.state === 'running')?.name as NodeName | undefined, 60_000);
  const restart = async (name: ComponentName, f: Fault) => {
    await waitFor(`${name} to be gone`, async () => !s.alive(name), 10_000, 50);
    s.start(name);
    f.restartedAt = now();
    expected.delete(name);
    if (!name.startsWith('pg')) {
      await s.waitService(name as ServiceName, 60_000);
      f.healthyAt = now();
    }
  };
  const healthy = async (f?: Fault) => {
    await waitFor('the cluster healthy again', () => s.healthy(), 150_000, 500);
    if (f) f.healthyAt = now();
  };
  const chargesFinal = async (since: number) => {
    const waiting = load.charges.filter((c) => c.startedAt < now() && (c.endedAt === undefined || c.endedAt > since));
    await waitFor('charges in flight to get a final answer', async () => waiting.every((c) => c.endedAt !== undefined || c.gaveUp), FINAL_WAIT_MS, 100).catch(() => {
      log(`  ${waiting.filter((c) => c.endedAt === undefined).length} charges in flight still without a final answer after ${FINAL_WAIT_MS / 1000} s; going on`);
    });
  };

  // The faults, in order; a step that cannot finish (no new primary, a cluster that never heals) ends the
  // schedule, and what happened until then is still reconciled and reported.
  const schedule = async () => {
    await sleep(12_000); // warm-up: every client has answers before the first fault
    await healthy();

    for (let k = 1; k <= kills; k++) {
      go();
      const old = await leader();
      const f: Fault = { kind: 'leader kill', label: `leader kill ${k}`, target: old, oldLeader: old, at: now(), notes: [] };
      faults.push(f);
      expected.add(old);
      const pids = s.killNode(old);
      log(`${f.label}: SIGKILL ${old} (patroni ${pids.patroni}, postmaster ${pids.postmaster})`);
      const back = await waitFor('writes on a new primary', async () => probe.writesBackAt(f.at, old), 90_000, 100);
      log(`  writes back on ${back.node} after ${secs(back.t - f.at)}`);
      await restart(old, f);
      await chargesFinal(f.at);
      await healthy(f);
      log(`  ${old} rejoined; cluster healthy ${secs(f.healthyAt! - f.restartedAt!)} after its restart`);
    }

    {
      go();
      const old = await leader();
      const f: Fault = { kind: 'switchover', label: 'switchover', target: old, oldLeader: old, at: now(), notes: [] };
      faults.push(f);
      const res = await fetch(`${s.restUrl(old)}/switchover`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ leader: old }),
        signal: AbortSignal.timeout(60_000),
      }).then(async (r) => `${r.status} ${(await r.text()).trim()}`, (err: unknown) => `no answer: ${String(err)}`);
      f.notes.push(`Patroni: ${res}`);
      log(`switchover from ${old}: ${res}`);
      const back = await waitFor('writes on the new primary', async () => probe.writesBackAt(f.at, old), 60_000, 100);
      log(`  writes back on ${back.node} after ${secs(back.t - f.at)}`);
      await chargesFinal(f.at);
      await healthy(f);
    }

    {
      go();
      const sync = await waitFor('a synchronous standby', async () => (await s.cluster())?.find((m) => m.role === 'sync_standby')?.name as NodeName | undefined, 30_000);
      const f: Fault = { kind: 'sync standby kill', label: 'sync standby kill', target: sync, oldLeader: await leader(), at: now(), notes: [] };
      faults.push(f);
      expected.add(sync);
      s.killNode(sync);
      log(`sync standby kill: SIGKILL ${sync}`);
      // The primary must move its synchronous standby to the other replica before commits go on.
      await waitFor('another synchronous standby', async () => {
        const m = await s.cluster();
        return m?.some((x) => x.role === 'sync_standby' && x.name !== sync);
      }, 30_000).catch(() => f.notes.push('no other synchronous standby within 30 s'));
      await sleep(2000);
      await restart(sync, f);
      await healthy(f);
      log(`  ${sync} rejoined`);
    }

    for (const [kind, name] of [['worker kill', 'worker1'], ['api kill', 'api1']] as const) {
      go();
      const f: Fault = { kind, label: kind, target: name, at: now(), notes: [] };
      faults.push(f);
      expected.add(name);
      s.signal(name, 'SIGKILL');
      log(`${kind}: SIGKILL ${name}`);
      await restart(name, f);
      log(`  ${name} restarted and ready after ${secs(now() - f.at)}`);
      await chargesFinal(f.at);
    }

  };
  let scheduleError: string | undefined;
  await schedule().catch((err: unknown) => {
    scheduleError = (err as Error).message ?? String(err);
    log(`the schedule stopped: ${scheduleError}`);
  });

  go();
  log('load stops: waiting for the charges in flight');
  const drained = await load.stop(scheduleError ? 20_000 : 160_000);
  const loadEnd = now();
  const settleStart = now();
  const settleMs = scheduleError ? 10_000 : 60_000;
  const pending = await waitFor('pending charges to settle', async () => ((await pendingCount(s.databaseUrl)) === 0 ? 0 : undefined), settleMs, 500).catch(() => undefined);
  log(`load drained${drained ? '' : ' (NOT all clients finished)'}; ${pending === 0 ? `nothing pending after ${secs(now() - settleStart)}` : `charges still pending after ${settleMs / 1000} s`}`);
  supervising = false;
  await supervisor;
  await probe.stop();
  const rec = await reconcile(s.databaseUrl, s.simulatorUrl, load.charges).catch((err: unknown) => {
    log(`reconciliation could not run: ${String(err)}`);
    return undefined;
  });

  const all = { attempts: load.attempts, charges: load.charges, probe: probe.samples, leaders: probe.leaders, endedAt: now() };
  const figs: FaultFigures[] = faults.map((f) => figures(f, all));
  const count = (status: number) => load.attempts.filter((a) => a.status === status).length;
  const targets: Target[] = [
    { name: 'the fault schedule ran to its end', pass: !scheduleError, value: scheduleError ?? 'yes' },
    { name: '0 lost charges', pass: !!rec && rec.lost.length === 0, value: rec ? String(rec.lost.length) : 'not reconciled' },
    { name: '0 doubled charges', pass: !!rec && rec.doubled.length === 0, value: rec ? String(rec.doubled.length) : 'not reconciled' },
    { name: '0 answers 500', pass: count(500) === 0, value: String(count(500)) },
    ...faults.flatMap((f, i) => {
      const g = figs[i]!;
      if (f.kind === 'leader kill') {
        const after = g.inFlight === 0 ? 0 : g.allFinalAt !== undefined && g.writesBackAt !== undefined ? g.allFinalAt - g.writesBackAt : undefined;
        return [{ name: `${f.label}: every charge in flight final within ${FINAL_TARGET_MS / 1000} s of writes back`, pass: after !== undefined && after <= FINAL_TARGET_MS, value: after === undefined ? `${g.notFinal} never final` : secs(Math.max(0, after)) }];
      }
      if (f.kind === 'switchover') {
        const span = g.n503 ? g.last503! - g.first503! : 0;
        return [{ name: `switchover: at most ${SWITCHOVER_503_TARGET_MS / 1000} s of 503s`, pass: span <= SWITCHOVER_503_TARGET_MS, value: `${secs(span)} (${g.n503} × 503)` }];
      }
      return [];
    }),
    {
      name: 'nothing pending without a job, no key left locked, every charge answered',
      pass: !!rec && !rec.pendingWithoutJob.length && !rec.keysLocked.length && !rec.unanswered.length,
      value: rec ? `${rec.pendingWithoutJob.length} / ${rec.keysLocked.length} / ${rec.unanswered.length}` : 'not reconciled',
    },
  ];

  const result: DrillResult = {
    meta: {
      command: `npm run drill -- ${process.argv.slice(2).join(' ')}`.trim(),
      when: new Date(t0).toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
      machine: `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GB, Node ${process.versions.node}`,
      settings: `${clients} clients, ${kills} leader kills, service env ${JSON.stringify(serviceEnv)}`,
    },
    bringUpMs,
    loadStart,
    loadEnd,
    faults: faults.map((f, i) => ({ ...f, ...figs[i]! })),
    attempts: load.attempts,
    charges: load.charges.length,
    chargeFinals: countBy(load.charges.map((c) => (c.final === undefined ? 'none' : String(c.final)))),
    inFlightPerSecond: perSecond(loadEnd, (t) => load.charges.filter((c) => c.startedAt <= t && (c.endedAt === undefined || c.endedAt > t)).length),
    probe: probe.samples,
    leaders: probe.leaders,
    unexpected,
    reconciliation: rec,
    targets,
  };
  mkdirSync(out, { recursive: true });
  writeFileSync(path.join(out, 'report.html'), reportHtml(result));
  writeFileSync(path.join(out, 'results.json'), `${JSON.stringify({ ...result, attempts: undefined, probe: undefined }, null, 1)}\n`);
  process.stdout.write(`\n${summaryText(result)}\n\nreport: ${path.join(out, 'report.html')}\n`);
  return targets.every((t) => t.pass) ? 0 : 1;
}

function countBy(items: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const i of items) counts[i] = (counts[i] ?? 0) + 1;
  return counts;
}

function perSecond(end: number, f: (t: number) => number): number[] {
  return Array.from({ length: Math.ceil(end / 1000) }, (_, i) => f(i * 1000 + 999));
}

let code = 1;
try {
  code = await main();
} catch (err) {
  process.stderr.write(`drill failed: ${(err as Error).stack ?? String(err)}\n`);
} finally {
  await teardown();
  log(`done; logs in ${path.join(out, 'logs')}`);
}
process.exit(code);

