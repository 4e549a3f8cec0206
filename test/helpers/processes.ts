// The service as real child processes (`node src/main.ts <role>`), and a small HTTP client
// that follows the API's retry rule: same Idempotency-Key after any 5xx, 409 or missing answer.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { auditLogLine } from './log-audit.ts';

/** A role of `node src/main.ts`, or `simulator`: the processor simulator alone, given as options.command (`node src/simulator/main.ts --port N`). */
export type Role = 'all' | 'api' | 'worker' | 'simulator';
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServiceProcess {
  role: Role;
  pid: number;
  child: ChildProcess;
  /** Every JSON line the process wrote to stdout, parsed, in order. */
  lines: LogLine[];
  /** Whatever it wrote to stdout that was not JSON (the demo greeting of `all`). */
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves when the process has exited, however. */
  exited: Promise<Exit>;
  /** The exit, once there was one. */
  exit(): Exit | undefined;
  alive(): boolean;
  /** SIGTERM, then SIGKILL when it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<Exit>;
  /** Date.now() of the exit, once there was one. */
  exitedAt(): number | undefined;
  /** A failure message: role, pid, how it exited and why (first line), then its stderr and error log lines. */
  describe(): string;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const running = new Set<ServiceProcess>();

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function tail(text: string, lines = 25): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** The error of a crash in one line: "error: terminating connection... [57P01] (Emitted 'error' event on Client instance)". */
export function crashSummary(stderr: string): string {
  const lines = stderr.split('\n');
  const error = lines.find((l) => /^[\w.]*(error|exception)\b.*:/i.test(l.trim()));
  const code = stderr.match(/^\s*code: '([^']+)'/m)?.[1];
  const emitted = lines.find((l) => l.startsWith("Emitted 'error' event"));
  return [error?.trim(), code ? `[${code}]` : undefined, emitted ? `(${emitted.replace(/ at:$/, '')})` : undefined]
    .filter(Boolean)
    .join(' ');
}

/** The part of stderr worth reading: from the start of a crash report if there is one (40 lines), else its tail. */
function crashText(stderr: string): string {
  const lines = stderr.trimEnd().split('\n');
  const start = lines.findIndex((l) => /^node:|Unhandled|^\w*Error\b/.test(l));
  return start >= 0 ? lines.slice(start, start + 40).join('\n') : tail(stderr);
}

// A child left running by a test process that dies must not outlive it.
process.on('exit', () => {
  for (const service of running) if (service.alive()) service.child.kill('SIGKILL');
});

export interface StartOptions {
  /** The command instead of package.json's for the role (`node` is this Node), e.g. the Dockerfile's CMD. */
  command?: string[];
  /** In a process group of its own, as a terminal runs a foreground job (signal the group with -pid). */
  detached?: boolean;
  /** Variables of this environment the process must not inherit (DATABASE_URL, to start the embedded server). */
  without?: string[];
}

/**
 * `node <flags> src/main.ts <role>` as package.json starts that role (`start:api`, `start:worker`, `start`):
 * a test runs the process with the heap bounds production runs it with.
 */
function productionCommand(role: Role): string[] {
  const { scripts } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const words = (role === 'all' ? scripts.start : scripts[`start:${role}`])?.split(/\s+/) ?? [];
  const at = words.indexOf('src/main.ts');
  return words[0] === 'node' && at > 0 && words[at + 1] === role ? words : ['node', 'src/main.ts', role];
}

export function startService(role: Role, env: Record<string, string>, options: StartOptions = {}): ServiceProcess {
  const [program, ...args] = options.command ?? productionCommand(role);
  // The per-key rate limit is off unless a test sets it (see buildApp); a worker's metrics listener takes
  // a free port, as several workers run on this one machine.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !options.without?.includes(name)));
  const child = spawn(program === 'node' ? process.execPath : program!, args, {
    cwd: ROOT,
    env: { ...inherited, RATE_LIMIT_REQUESTS: '0', WORKER_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.detached ?? false,
  });
  const lines: LogLine[] = [];
  let stdout = '';
  let stderr = '';
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      if (line.startsWith('{')) {
        try {
          lines.push(JSON.parse(line) as LogLine);
          auditLogLine(line);
          continue;
        } catch {
          // not JSON after all: keep it as text
        }
      }
      if (line.trim()) stdout += `${line}\n`;
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  let exit: Exit | undefined;
  let exitedAt: number | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      exitedAt = Date.now();
      resolve(exit);
    });
  });
  const alive = () => exit === undefined && child.exitCode === null && child.signalCode === null;

  const service: ServiceProcess = {
    role,
    pid: child.pid ?? -1,
    child,
    lines,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    exited,
    exit: () => exit,
    alive,
    async stop(graceMs = 10_000) {
      if (alive()) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      running.delete(service);
      return exited;
    },
    describe() {
      const how = exit
        ? `exited with ${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`} at ${new Date(exitedAt!).toISOString()}`
        : 'still running';
      const problems = lines
        .filter((l) => typeof l.level === 'number' && l.level >= 50)
        .slice(-5)
        .map((l) => JSON.stringify(l).slice(0, 600));
      return [
        `${role} process pid ${service.pid} ${how}${crashSummary(stderr) ? `: ${crashSummary(stderr)}` : ''}`,
        `--- stderr ---\n${crashText(stderr) || '(empty)'}`,
        ...(problems.length ? [`--- error/fatal log lines ---\n${problems.join('\n')}`] : []),
        // An exit 0 nobody asked for is a shutdown on a signal: its last lines say which and when.
        ...(exit?.code === 0 ? [`--- last log lines ---\n${lines.slice(-8).map((l) => JSON.stringify(l).slice(0, 300)).join('\n')}`] : []),
      ].join('\n');
    },
    exitedAt: () => exitedAt,
  };
  running.add(service);
  return service;
}

/** Stops every process startService started and that is still running (for afterEach/afterAll). */
export async function stopAllServices(graceMs = 5000): Promise<void> {
  await Promise.all([...running].map((s) => s.stop(graceMs)));
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a JSON body of any shape
  body: any;
}

export class NoAnswerError extends Error {
  readonly kind: 'timeout' | 'network';
  constructor(kind: 'timeout' | 'network', message: string) {
    super(message);
    this.kind = kind;
  }
}

/**
 * One HTTP request on a connection of its own (no keep-alive reuse, so a socket the server closed while
 * idle can never look like a failure of the service). Rejects with NoAnswerError when no full answer came
 * within `timeoutMs` (kind 'timeout') or the connection failed (kind 'network').
 */
export function httpRequest(
  method: string,
  url: string,
  options: { headers?: Record<string, string>; body?: unknown; timeoutMs?: number } = {},
): Promise<HttpAnswer> {
  const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
  const timeoutMs = options.timeoutMs ?? 15_000;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: NoAnswerError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(err);
    };
    const req = http.request(url, {
      method,
      agent: false,
      headers: {
        connection: 'close',
        ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
        ...options.headers,
      },
    });
    const timer = setTimeout(() => fail(new NoAnswerError('timeout', `no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => fail(new NoAnswerError('network', `${err.code ?? ''} ${err.message}`.trim())));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => fail(new NoAnswerError('network', `response broken: ${err.message}`)));
      res.on('aborted', () => fail(new NoAnswerError('network', 'response aborted')));
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString();
        let body: unknown;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
    });
    req.end(payload);
  });
}

/** Polls /readyz until 200; fails at once, with the process's stderr, if the process exits meanwhile. */
export async function waitForReady(baseUrl: string, service: ServiceProcess, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (!service.alive()) throw new Error(`the service exited before it was ready\n${service.describe()}`);
    const status = await httpRequest('GET', `${baseUrl}/readyz`, { timeoutMs: 2000 }).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    if (Date.now() > until) throw new Error(`${baseUrl}/readyz not 200 after ${timeoutMs} ms (last: ${status})\n${service.describe()}`);
    await sleep(100);
  }
}

/** One answer to one attempt of a charge: `status` 0 and `error` set when there was no answer. */
export interface ChargeAnswer {
  key: string;
  attempt: number;
  status: number;
  code?: string;
  ms: number;
  startedAt: number;
  endedAt: number;
  error?: { kind: 'timeout' | 'network'; message: string };
  retryAfter?: string;
  /** The JSON body, when there was one: a charge (`id`, `status`...) or a problem (`code`...). */
  body?: { id?: string; code?: string; [field: string]: unknown };
}

export interface ChargeOutcome {
  key: string;
  /** The final answer (anything but 409, 5xx or no answer); undefined when the loop gave up. */
  final?: ChargeAnswer;
  answers: ChargeAnswer[];
  gaveUp?: 'max_tries' | 'aborted';
}

const isFinal = (a: ChargeAnswer) => a.status !== 0 && a.status !== 409 && a.status < 500;

/** One attempt: POST /v1/charges with `key`; never throws. */
export async function postCharge(
  baseUrl: string,
  auth: Record<string, string>,
  body: Record<string, unknown>,
  key: string,
  options: { timeoutMs?: number; attempt?: number } = {},
): Promise<ChargeAnswer> {
  const startedAt = Date.now();
  const base = { key, attempt: options.attempt ?? 1, startedAt };
  try {
    const res = await httpRequest('POST', `${baseUrl}/v1/charges`, {
      headers: { ...auth, 'idempotency-key': key },
      body,
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    });
    const endedAt = Date.now();
    const code = typeof res.body?.code === 'string' ? (res.body.code as string) : undefined;
    const retryAfter = typeof res.headers['retry-after'] === 'string' ? res.headers['retry-after'] : undefined;
    return { ...base, status: res.status, code, ms: endedAt - startedAt, endedAt, retryAfter, body: res.body };
  } catch (err) {
    const endedAt = Date.now();
    const e = err instanceof NoAnswerError ? err : new NoAnswerError('network', String(err));
    return { ...base, status: 0, ms: endedAt - startedAt, endedAt, error: { kind: e.kind, message: e.message } };
  }
}

/**
 * A client that follows the retry rule: one key, retried after network errors, timeouts, 409 and 5xx
 * (pausing `pauseMs` between attempts) until a final answer (201/202/402, or any other 4xx), `maxTries`
 * attempts, or `signal` aborts. Every answer is recorded, and reported to `onAnswer` as it comes.
 */
export async function chargeUntilFinal(
  baseUrl: string,
  auth: Record<string, string>,
  body: Record<string, unknown>,
  options: {
    key: string;
    maxTries: number;
    pauseMs?: number;
    timeoutMs?: number;
    signal?: AbortSignal;
    onAnswer?: (answer: ChargeAnswer) => void;
  },
): Promise<ChargeOutcome> {
  const answers: ChargeAnswer[] = [];
  for (let attempt = 1; attempt <= options.maxTries; attempt += 1) {
    if (options.signal?.aborted) return { key: options.key, answers, gaveUp: 'aborted' };
    const answer = await postCharge(baseUrl, auth, body, options.key, {
      attempt,
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    });
    answers.push(answer);
    options.onAnswer?.(answer);
    if (isFinal(answer)) return { key: options.key, final: answer, answers };
    await sleep(options.pauseMs ?? 100);
  }
  return { key: options.key, answers, gaveUp: 'max_tries' };
}

/** Whether `work` settled within `ms` (its rejection counts as settled). */
export async function within(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([work.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** No process exited: no 'exit' event and no exit code. Fails with the process's stderr otherwise. */
export function expectAlive(services: ServiceProcess[]): void {
  for (const s of services) {
    if (!(s.alive() && s.exit() === undefined && s.child.exitCode === null)) throw new Error(`the ${s.role} process died: ${s.describe()}`);
  }
}

/** An answer in a few words: "201", "503 database_unavailable", "no answer (timeout)". */
export const label = (a: ChargeAnswer) => (a.error ? `no answer (${a.error.kind})` : `${a.status}${a.code ? ` ${a.code}` : ''}`);

/** "201 ×36, 409 idempotency_key_in_use ×3", most frequent first. */
export function countBy<T>(items: T[], key: (item: T) => string): string {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ×${n}`).join(', ') || 'none';
}
