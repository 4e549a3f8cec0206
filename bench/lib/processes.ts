// Child processes of the bench: spawned directly (node itself, so a pid is the process measured), their
// output to a log file, stopped by pid; and a teardown list that also runs on Ctrl-C and on failure.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface Child {
  name: string;
  pid: number;
  logFile: string;
  alive(): boolean;
  exited: Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
// Whatever happens to the bench, no child outlives it.
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Starts `node <args>` in the repository root, stdout and stderr appended to `logFile`. */
export function spawnNode(name: string, args: string[], options: { env: NodeJS.ProcessEnv; logFile: string }): Child {
  const fd = openSync(options.logFile, 'a');
  const child = spawn(process.execPath, args, { cwd: ROOT, env: options.env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    pid: child.pid!,
    logFile: options.logFile,
    alive,
    exited,
    async stop(graceMs = 10_000) {
      if (!alive()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Waits until GET `url` answers 2xx; fails at once if the child exits, after `timeoutMs` otherwise. */
export async function waitForHttp(child: Child, url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!child.alive()) throw new Error(`${child.name} exited before answering:\n${await logTail(child.logFile)}`);
    const status = await fetch(url, { signal: AbortSignal.timeout(1000) }).then(
      async (res) => (await res.arrayBuffer(), res.status),
      () => 0,
    );
    if (status >= 200 && status < 300) return;
    await sleep(100);
  }
  throw new Error(`${child.name} did not answer ${url} within ${timeoutMs} ms:\n${await logTail(child.logFile)}`);
}

export async function logTail(file: string, lines = 20): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (no shell) and gives back its output; never rejects on a non-zero exit. */
export function runCommand(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { cwd: ROOT, env, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      live.delete(child);
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
    live.add(child);
  });
}

/** Like runCommand, but a non-zero exit is an error that shows the command's stderr. */
export async function runOrThrow(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const result = await runCommand(file, args, env);
  if (result.code !== 0) {
    throw new Error(`${path.basename(file)} ${args.join(' ')} exited with ${result.code}:\n${result.stderr || result.stdout}`);
  }
  return result.stdout;
}

/** A port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** Peak resident set size of a live process, in MB (VmHWM of /proc/<pid>/status). */
// /proc counts CPU time in clock ticks of USER_HZ, 100 a second on Linux.
const TICKS_PER_SECOND = 100;

/** utime, stime, cutime and cstime of /proc/<pid>/stat, and its parent, in ticks; undefined once it is gone. */
async function procStat(pid: number): Promise<{ ppid: number; own: number; reaped: number } | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!text) return undefined;
  // After the command's closing parenthesis (a command may hold spaces): state, ppid, ... utime is field 14.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const at = (field: number) => Number(fields[field - 3]);
  return { ppid: at(4), own: at(14) + at(15), reaped: at(16) + at(17) };
}

/**
 * CPU seconds a process and all its descendants have used so far: the live ones' own time, and the time
 * of those that exited, which the kernel adds to their parent's when it reaps them (Postgres backends).
 */
export async function treeCpuSeconds(root: number): Promise<number> {
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name)).map(Number);
  const stats = new Map<number, NonNullable<Awaited<ReturnType<typeof procStat>>>>();
  await Promise.all(
    pids.map(async (pid) => {
      const stat = await procStat(pid);
      if (stat) stats.set(pid, stat);
    }),
  );
  const inTree = (pid: number): boolean => pid === root || (pid > 1 && stats.has(pid) && inTree(stats.get(pid)!.ppid));
  let ticks = 0;
  for (const [pid, stat] of stats) if (inTree(pid)) ticks += stat.own + stat.reaped;
  return ticks / TICKS_PER_SECOND;
}

export async function peakRssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmHWM:\s+(\d+)\s+kB$/m.exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return kb / 1024;
}

/** What is to be undone, newest first: at the end, on failure, or on the first Ctrl-C. */
export class Teardown {
  private readonly steps: { name: string; run: () => Promise<unknown> }[] = [];
  private running: Promise<void> | undefined;

  /** Registers a step; the function returned runs it now instead (once) and takes it off the list. */
  add(name: string, run: () => Promise<unknown>): () => Promise<void> {
    const step = { name, run };
    this.steps.push(step);
    return async () => {
      const index = this.steps.indexOf(step);
      if (index < 0) return;
      this.steps.splice(index, 1);
      await step.run();
    };
  }

  /** Whether the teardown has begun (after which the run's own output is noise). */
  get started(): boolean {
    return this.running !== undefined;
  }

  runAll(): Promise<void> {
    this.running ??= (async () => {
      for (let step = this.steps.pop(); step; step = this.steps.pop()) {
        const { name } = step;
        await step.run().catch((err: unknown) => process.stderr.write(`teardown: ${name}: ${String(err)}\n`));
      }
    })();
    return this.running;
  }

  /** Ctrl-C or SIGTERM: tear down, then exit 130 (a second signal exits at once). */
  onSignals(): void {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.on(signal, () => {
        if (this.running) process.exit(130);
        process.stderr.write(`\n${signal}: tearing down (again to quit at once)\n`);
        void this.runAll().then(() => process.exit(130));
      });
    }
  }
}
