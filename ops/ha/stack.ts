// The HA topology on one machine, from Debian's packages: one etcd member (production runs three), three
// Patroni + Postgres nodes, HAProxy, the processor simulator, two api and two worker copies. Every process
// it starts is recorded (pid and kernel start time) in a state file, so stopping it stops exactly those.
// Used by `npm run ha:up` / `ha:down` and by the failover drill, which also kills and restarts pieces.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const HA = path.join(ROOT, 'ops/ha');
const HOST = '127.0.0.1';

export const NODES = ['pg1', 'pg2', 'pg3'] as const;
export type NodeName = (typeof NODES)[number];
export const APIS = ['api1', 'api2'] as const;
export const WORKERS = ['worker1', 'worker2'] as const;
export type ServiceName = (typeof APIS)[number] | (typeof WORKERS)[number];
export type ComponentName = 'etcd' | 'simulator' | 'haproxy' | NodeName | ServiceName;

export interface Settings {
  /** Data, logs and the state file; under the OS temp dir by default. */
  dir: string;
  /** Every port is basePort + a fixed offset (see portsFor). */
  basePort: number;
  logLevel: string;
  /** Extra environment of the api and worker copies. */
  serviceEnv: Record<string, string>;
}

export const defaultSettings = (overrides: Partial<Settings> = {}): Settings => ({
  dir: process.env.HA_DIR ?? path.join(tmpdir(), 'payments-ha'),
  basePort: Number(process.env.HA_BASE_PORT ?? 15400),
  logLevel: process.env.HA_LOG_LEVEL ?? 'info',
  serviceEnv: {},
  ...overrides,
});

export function portsFor(base: number) {
  const node = (i: number) => ({ postgres: base + 11 + i, api: base + 21 + i });
  return {
    etcd: base,
    etcdPeer: base + 1,
    postgres: base + 2,
    api: base + 3,
    stats: base + 4,
    nodes: { pg1: node(0), pg2: node(1), pg3: node(2) } as Record<NodeName, { postgres: number; api: number }>,
    services: { api1: base + 31, api2: base + 32, worker1: base + 41, worker2: base + 42 } as Record<ServiceName, number>,
    simulator: base + 50,
  };
}
export type Ports = ReturnType<typeof portsFor>;

interface Recorded {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: tells our process from a later one that got the same pid. */
  startTicks: string;
  log: string;
}

interface State {
  settings: Settings;
  secrets: { superuser: string; replication: string; rewind: string; payments: string; webhook: string };
  processes: Partial<Record<ComponentName, Recorded>>;
  apiKey?: string;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` every `everyMs` until it returns a value (not undefined/false) or `timeoutMs` passes. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 250): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(everyMs);
  }
}

/** GET a JSON document; undefined on any failure (no answer, not JSON) within `timeoutMs`. */
export async function getJson<T>(url: string, timeoutMs = 1000): Promise<{ status: number; body: T } | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  } catch {
    return undefined;
  }
}

export function run(file: string, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: ROOT, env: options.env ?? process.env, timeout: options.timeoutMs ?? 600_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}${err && typeof err.code !== 'number' ? String(err) : ''}` });
    });
  });
}

const which = async (name: string) => (await run('sh', ['-c', `command -v ${name}`])).code === 0;

/** The Postgres binaries Patroni runs: 15 as in production, else the newest installed. */
function pgBinDir(): string | undefined {
  if (process.env.HA_PG_BIN) return process.env.HA_PG_BIN;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(`${base}/${v}/bin/postgres`)) : [];
  const pick = versions.includes('15') ? '15' : versions.sort((a, b) => Number(b) - Number(a))[0];
  return pick && `${base}/${pick}/bin`;
}

/** Installs what is missing from Debian's packages (never touches the machine's own Postgres cluster). */
export async function ensurePackages(log: (line: string) => void): Promise<void> {
  const missing: string[] = [];
  if (!(await which('patroni'))) missing.push('patroni');
  if (!(await which('etcd'))) missing.push('etcd-server');
  if (!(await which('haproxy'))) missing.push('haproxy');
  if (!pgBinDir() || !(await which('psql'))) missing.push('postgresql');
  if (!missing.length) return;
  if (process.getuid?.() !== 0) throw new Error(`missing packages: ${missing.join(' ')} (apt-get install -y ${missing.join(' ')}, as root)`);
  log(`installing ${missing.join(', ')} from Debian's packages`);
  const install = () =>
    run('apt-get', ['install', '-y', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=300', ...missing], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  let result = await install();
  if (result.code !== 0) {
    // A fresh machine has no package lists yet.
    await run('apt-get', ['update'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    result = await install();
  }
  if (result.code !== 0) throw new Error(`apt-get install ${missing.join(' ')} failed:\n${result.out.slice(-2000)}`);
}

function startTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // A zombie has exited: only its parent's bookkeeping is left.
    if (fields[0] === 'Z') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

function userIds(name: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no "${name}" user: install postgresql, which creates it`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

/** What the Patroni REST API's /cluster says. */
export interface ClusterMember {
  name: string;
  role: string;
  state: string;
  host: string;
  port: number;
  timeline?: number;
  lag?: number | string;
}

export class Stack {
  readonly ports: Ports;
  /** Set once down() begins: nothing may be (re)started after that, whoever asks. */
  private closing = false;
  private readonly state: State;
  private readonly stateFile: string;
  private constructor(state: State, stateFile: string) {
    this.state = state;
    this.stateFile = stateFile;
    this.ports = portsFor(state.settings.basePort);
  }

  get settings(): Settings {
    return this.state.settings;
  }
  get apiKey(): string | undefined {
    return this.state.apiKey;
  }
  get logDir(): string {
    return path.join(this.settings.dir, 'logs');
  }
  get databaseUrl(): string {
    return `postgres://payments:${this.state.secrets.payments}@${HOST}:${this.ports.postgres}/payments`;
  }
  get apiUrl(): string {
    return `http://${HOST}:${this.ports.api}`;
  }
  get simulatorUrl(): string {
    return `http://${HOST}:${this.ports.simulator}`;
  }
  serviceUrl(name: ServiceName): string {
    return `http://${HOST}:${this.ports.services[name]}`;
  }
  restUrl(node: NodeName): string {
    return `http://${HOST}:${this.ports.nodes[node].api}`;
  }
  nodeDataDir(node: NodeName): string {
    return path.join(this.settings.dir, node, 'data');
  }

  /** The stack recorded in `dir`, if any. */
  static load(dir: string): Stack | undefined {
    const file = path.join(dir, 'state.json');
    if (!existsSync(file)) return undefined;
    return new Stack(JSON.parse(readFileSync(file, 'utf8')) as State, file);
  }

  /** Prepares a fresh directory and state (nothing started yet). */
  static async create(settings: Settings): Promise<Stack> {
    const previous = Stack.load(settings.dir);
    if (previous?.running().length) {
      throw new Error(`a stack is already running from ${settings.dir} (${previous.running().join(', ')}): npm run ha:down -- --dir ${settings.dir}`);
    }
    const busy: number[] = [];
    const p = portsFor(settings.basePort);
    const all = [p.etcd, p.etcdPeer, p.postgres, p.api, p.stats, p.simulator, ...Object.values(p.services), ...Object.values(p.nodes).flatMap((n) => [n.postgres, n.api])];
    for (const port of all) if (!(await portFree(port))) busy.push(port);
    if (busy.length) throw new Error(`ports already in use: ${busy.join(', ')}; pick another base with HA_BASE_PORT (or --base-port), now ${settings.basePort}`);

    const { uid, gid } = userIds('postgres');
    // Postgres runs as `postgres`, who must reach its data directory through every parent.
    mkdirSync(settings.dir, { recursive: true, mode: 0o755 });
    for (const dir of parentsOf(settings.dir)) {
      const { mode } = statSync(dir);
      if (!(mode & 0o001)) throw new Error(`${dir} (mode ${(mode & 0o777).toString(8)}) cannot be traversed by the postgres user: choose HA_DIR elsewhere`);
    }
    chmodSync(settings.dir, 0o755);
    // A fresh stack: no data and no logs of an earlier one.
    for (const leftover of ['etcd', 'logs', ...NODES]) rmSync(path.join(settings.dir, leftover), { recursive: true, force: true });
    mkdirSync(path.join(settings.dir, 'logs'), { recursive: true });
    mkdirSync(path.join(settings.dir, 'etcd'), { mode: 0o700 });
    copyFileSync(path.join(HA, 'post-bootstrap.sh'), path.join(settings.dir, 'post-bootstrap.sh'));
    chmodSync(path.join(settings.dir, 'post-bootstrap.sh'), 0o755);
    for (const node of NODES) {
      const nodeDir = path.join(settings.dir, node);
      const config = path.join(nodeDir, 'config');
      mkdirSync(config, { recursive: true, mode: 0o700 });
      // A directory of files, merged in name order: the production file, then what this machine changes.
      copyFileSync(path.join(HA, 'patroni.yml'), path.join(config, '10-patroni.yml'));
      writeFileSync(
        path.join(config, '20-local.yml'),
        `${JSON.stringify(
          {
            bootstrap: { post_bootstrap: `sh ${path.join(settings.dir, 'post-bootstrap.sh')}` },
            // Sockets beside the data, not in the machine's /var/run/postgresql.
            postgresql: { parameters: { unix_socket_directories: nodeDir } },
          },
          null,
          1,
        )}\n`,
      );
      for (const p2 of [nodeDir, config, ...readdirSync(config).map((f) => path.join(config, f))]) chownSync(p2, uid, gid);
    }
    const secret = () => randomBytes(18).toString('base64url');
    const state: State = {
      settings,
      secrets: { superuser: secret(), replication: secret(), rewind: secret(), payments: secret(), webhook: randomBytes(32).toString('hex') },
      processes: {},
    };
    const stack = new Stack(state, path.join(settings.dir, 'state.json'));
    stack.save();
    return stack;
  }

  private save(): void {
    const tmp = `${this.stateFile}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(this.state, null, 1)}\n`, { mode: 0o600 });
    renameSync(tmp, this.stateFile);
  }

  /** Whether the recorded process is still the one we started. */
  alive(name: ComponentName): boolean {
    const p = this.state.processes[name];
    return !!p && startTicks(p.pid) === p.startTicks;
  }
  pid(name: ComponentName): number | undefined {
    return this.alive(name) ? this.state.processes[name]!.pid : undefined;
  }
  running(): ComponentName[] {
    return (Object.keys(this.state.processes) as ComponentName[]).filter((n) => this.alive(n));
  }

  /** The postmaster of a node, from its postmaster.pid, if it runs on that data directory. */
  postmasterPid(node: NodeName): number | undefined {
    try {
      const pid = Number(readFileSync(path.join(this.nodeDataDir(node), 'postmaster.pid'), 'utf8').split('\n')[0]);
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return cmdline.includes(this.nodeDataDir(node)) && startTicks(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  private command(name: ComponentName): { file: string; args: string[]; env: NodeJS.ProcessEnv; asPostgres?: boolean } {
    const p = this.ports;
    const base = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' };
    const { secrets } = this.state;
    switch (name) {
      case 'etcd': {
        const peer = `http://${HOST}:${p.etcdPeer}`;
        const client = `http://${HOST}:${p.etcd}`;
        return {
          file: 'etcd',
          args: [
            '--name', 'etcd1', '--data-dir', path.join(this.settings.dir, 'etcd'),
            '--listen-client-urls', client, '--advertise-client-urls', client,
            '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
            '--initial-cluster', `etcd1=${peer}`, '--initial-cluster-state', 'new',
          ],
          env: base,
        };
      }
      case 'haproxy':
        return {
          file: 'haproxy',
          args: ['-db', '-f', path.join(HA, 'haproxy.cfg')],
          env: {
            ...base,
            HA_BIND: HOST,
            HA_POSTGRES_PORT: String(p.postgres),
            HA_API_PORT: String(p.api),
            HA_STATS_PORT: String(p.stats),
            ...Object.fromEntries(NODES.flatMap((n) => [[`${n.toUpperCase()}_ADDR`, `${HOST}:${p.nodes[n].postgres}`], [`${n.toUpperCase()}_API_PORT`, String(p.nodes[n].api)]])),
            API1_ADDR: `${HOST}:${p.services.api1}`,
            API2_ADDR: `${HOST}:${p.services.api2}`,
          },
        };
      case 'simulator':
        return { file: process.execPath, args: ['src/simulator/main.ts', '--port', String(p.simulator), '--host', HOST], env: base };
      case 'pg1':
      case 'pg2':
      case 'pg3': {
        const nodeDir = path.join(this.settings.dir, name);
        return {
          file: 'patroni',
          args: [path.join(nodeDir, 'config')],
          asPostgres: true,
          env: {
            ...base,
            HOME: nodeDir,
            PATRONI_NAME: name,
            PATRONI_RESTAPI_LISTEN: `${HOST}:${p.nodes[name].api}`,
            PATRONI_RESTAPI_CONNECT_ADDRESS: `${HOST}:${p.nodes[name].api}`,
            PATRONI_POSTGRESQL_LISTEN: `${HOST}:${p.nodes[name].postgres}`,
            PATRONI_POSTGRESQL_CONNECT_ADDRESS: `${HOST}:${p.nodes[name].postgres}`,
            PATRONI_POSTGRESQL_DATA_DIR: this.nodeDataDir(name),
            PATRONI_POSTGRESQL_PGPASS: path.join(nodeDir, 'pgpass'),
            PATRONI_POSTGRESQL_BIN_DIR: pgBinDir() ?? '/usr/lib/postgresql/15/bin',
            PATRONI_ETCD3_HOSTS: `${HOST}:${p.etcd}`,
            PATRONI_SUPERUSER_PASSWORD: secrets.superuser,
            PATRONI_REPLICATION_PASSWORD: secrets.replication,
            PATRONI_REWIND_PASSWORD: secrets.rewind,
            PAYMENTS_DB_PASSWORD: secrets.payments,
          },
        };
      }
      default: {
        const api = name.startsWith('api');
        return {
          file: process.execPath,
          args: ['src/main.ts', api ? 'api' : 'worker'],
          env: {
            ...base,
            NODE_ENV: 'production',
            DATABASE_URL: this.databaseUrl,
            PROCESSOR_URL: this.simulatorUrl,
            HOST,
            LOG_LEVEL: this.settings.logLevel,
            // Migrated once by the stack, as a deploy step: a copy restarted mid-failover must not need to.
            MIGRATE_ON_START: 'false',
            WEBHOOK_SECRET_KEY: secrets.webhook,
            // Long enough for HAProxy (checks every second, down after two) to stop sending before the listener closes.
            ...(api ? { PORT: String(p.services[name]), SHUTDOWN_DRAIN_MS: '2500' } : { WORKER_METRICS_PORT: String(p.services[name]) }),
            ...this.settings.serviceEnv,
          },
        };
      }
    }
  }

  /** Starts one component (detached, its output appended to logs/<name>.log) and records it. */
  start(name: ComponentName): number {
    if (this.closing) throw new Error(`not starting ${name}: the stack is being stopped`);
    if (this.alive(name)) throw new Error(`${name} is already running (pid ${this.pid(name)})`);
    const { file, args, env, asPostgres } = this.command(name);
    const log = path.join(this.logDir, `${name}.log`);
    const fd = openSync(log, 'a');
    writeFileSync(fd, `--- ${new Date().toISOString()} starting ${name}\n`);
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        cwd: asPostgres ? path.join(this.settings.dir, name) : ROOT,
        env,
        stdio: ['ignore', fd, fd],
        // A group of its own: a Ctrl-C in the terminal reaches the drill, which stops everything in order.
        detached: true,
        ...(asPostgres && process.getuid?.() === 0 ? userIds('postgres') : {}),
      });
    } finally {
      closeSync(fd);
    }
    child.unref();
    const pid = child.pid;
    const ticks = pid === undefined ? undefined : startTicks(pid);
    if (pid === undefined || ticks === undefined) throw new Error(`${name} did not start (${file} ${args.join(' ')}): see ${log}`);
    this.state.processes[name] = { pid, startTicks: ticks, log };
    this.save();
    return pid;
  }

  /** Sends `signal` to a recorded process, only if it is still the one we started. */
  signal(name: ComponentName, signal: NodeJS.Signals): number | undefined {
    const pid = this.pid(name);
    if (pid !== undefined) process.kill(pid, signal);
    return pid;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone. */
  async stop(name: ComponentName, graceMs = 15_000): Promise<void> {
    if (!this.alive(name)) return;
    this.signal(name, 'SIGTERM');
    const until = Date.now() + graceMs;
    while (this.alive(name) && Date.now() < until) await sleep(100);
    if (this.alive(name)) this.signal(name, 'SIGKILL');
    await waitFor(`${name} to exit`, async () => !this.alive(name), 5000, 50);
  }

  /** Patroni and its postmaster, SIGKILL: the machine is gone as far as the cluster can tell. */
  killNode(node: NodeName): { patroni?: number; postmaster?: number } {
    const postmaster = this.postmasterPid(node);
    const patroni = this.signal(node, 'SIGKILL');
    if (postmaster !== undefined) process.kill(postmaster, 'SIGKILL');
    return { patroni, postmaster };
  }

  /** /cluster from any node that answers. */
  async cluster(): Promise<ClusterMember[] | undefined> {
    for (const node of NODES) {
      if (!this.alive(node)) continue;
      const res = await getJson<{ members: ClusterMember[] }>(`${this.restUrl(node)}/cluster`, 800);
      if (res?.status === 200 && res.body?.members) return res.body.members;
    }
    return undefined;
  }

  /**
   * Healthy: a running leader that HAProxy would route to, every other started node streaming from it
   * (its walsender says so: a member key in etcd outlives a killed node by up to ttl), and a synchronous
   * standby recorded in etcd's /sync key. Only that key lets Patroni promote a replica: a primary that
   * lost it (after a failover, until a replica follows the new timeline) cannot be replaced at all, by
   * design, since it acknowledged commits no replica may have.
   */
  async healthy(): Promise<ClusterMember[] | undefined> {
    const members = await this.cluster();
    const leader = members?.find((m) => m.role === 'leader' && m.state === 'running');
    if (!members || !leader) return undefined;
    const primary = await getJson<{ state: string; role: string; replication?: { application_name: string; state: string; sync_state: string }[] }>(
      `${this.restUrl(leader.name as NodeName)}/primary`,
    );
    if (primary?.status !== 200 || primary.body.state !== 'running') return undefined;
    const replicas = NODES.filter((n) => n !== leader.name && this.alive(n));
    const streaming = primary.body.replication?.filter((r) => r.state === 'streaming') ?? [];
    const allStreaming = replicas.every((n) => streaming.some((r) => r.application_name === n));
    const sync = members.find((m) => m.role === 'sync_standby');
    const syncOk = replicas.length === 0 || (!!sync && streaming.some((r) => r.application_name === sync.name && r.sync_state === 'sync'));
    return allStreaming && syncOk ? members : undefined;
  }

  /** Waits until a service copy is ready: an api's /readyz, a worker's /livez. */
  async waitService(name: ServiceName, timeoutMs: number): Promise<void> {
    const url = `${this.serviceUrl(name)}${name.startsWith('api') ? '/readyz' : '/livez'}`;
    await waitFor(`${name} (${url})`, async () => {
      if (!this.alive(name)) throw new Error(`${name} exited: see ${path.join(this.logDir, `${name}.log`)}`);
      return (await getJson(url))?.status === 200;
    }, timeoutMs);
  }

  /** Brings the whole stack up and returns once the api answers /readyz through HAProxy. */
  async up(log: (line: string) => void): Promise<void> {
    const t0 = Date.now();
    const step = (what: string) => log(`${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s  ${what}`);
    this.start('etcd');
    await waitFor('etcd', async () => (await getJson<{ health: string }>(`http://${HOST}:${this.ports.etcd}/health`))?.body?.health === 'true', 30_000);
    step(`etcd ready on ${HOST}:${this.ports.etcd} (one member; production runs three)`);
    this.start('simulator');
    for (const node of NODES) this.start(node);
    this.start('haproxy');
    const members = await waitFor('a healthy Patroni cluster (leader, two streaming replicas, one synchronous)', () => this.healthy(), 120_000, 500);
    step(`patroni cluster healthy: ${members.map((m) => `${m.name} ${m.role}`).join(', ')}`);
    await waitFor('the simulator', async () => (await getJson(`${this.simulatorUrl}/livez`))?.status === 200, 20_000);
    const env = { ...process.env, DATABASE_URL: this.databaseUrl, LOG_LEVEL: 'warn' };
    const migrated = await waitFor('the migrations through HAProxy', async () => {
      const r = await run(process.execPath, ['src/cli/migrate.ts'], { env, timeoutMs: 60_000 });
      if (r.code !== 0) throw new Error(r.out.trim().split('\n').slice(-3).join(' | '));
      return r;
    }, 30_000, 1000);
    step(`database migrated through HAProxy (${migrated.out.trim()})`);
    const account = await run(process.execPath, ['src/cli/account-create.ts', '--name', 'ha'], { env, timeoutMs: 60_000 });
    const key = /sk_test_\S+/.exec(account.out)?.[0];
    if (!key) throw new Error(`could not create an account:\n${account.out}`);
    this.state.apiKey = key;
    this.save();
    for (const name of [...APIS, ...WORKERS]) this.start(name);
    await Promise.all([...APIS, ...WORKERS].map((n) => this.waitService(n, 60_000)));
    await waitFor('the api through HAProxy', async () => (await getJson(`${this.apiUrl}/readyz`))?.status === 200, 30_000);
    step('api copies ready through HAProxy, workers live');
  }

  /** Stops every recorded process (never anything else), services first, etcd last. */
  async down(log: (line: string) => void = () => undefined): Promise<void> {
    this.closing = true;
    const order: ComponentName[][] = [[...APIS, ...WORKERS], ['haproxy', 'simulator'], [...NODES], ['etcd']];
    for (const group of order) {
      await Promise.all(group.map(async (name) => {
        if (!this.alive(name)) return;
        await this.stop(name, name.startsWith('pg') ? 30_000 : 15_000);
        log(`stopped ${name}`);
      }));
    }
    // A postmaster whose Patroni was killed outlives it: stop it by its data directory's postmaster.pid.
    for (const node of NODES) {
      const pid = this.postmasterPid(node);
      if (pid === undefined) continue;
      process.kill(pid, 'SIGINT');
      await waitFor(`the ${node} postmaster ${pid} to stop`, async () => this.postmasterPid(node) === undefined, 20_000, 100).catch(() => {
        const still = this.postmasterPid(node);
        if (still !== undefined) process.kill(still, 'SIGKILL');
      });
      log(`stopped the ${node} postmaster left by a killed Patroni`);
    }
  }

  /** Removes the data (etcd, every node); logs and the state file stay for reading. */
  removeData(): void {
    for (const leftover of ['etcd', ...NODES]) rmSync(path.join(this.settings.dir, leftover), { recursive: true, force: true });
  }

  urls(): string[] {
    const p = this.ports;
    return [
      `api (HAProxy, both copies)   ${this.apiUrl}`,
      `api copies                   ${APIS.map((a) => this.serviceUrl(a)).join('  ')}`,
      `worker /livez, /metrics      ${WORKERS.map((w) => this.serviceUrl(w)).join('  ')}`,
      `processor simulator          ${this.simulatorUrl}`,
      `DATABASE_URL (read-write)    ${this.databaseUrl}`,
      `HAProxy stats                http://${HOST}:${p.stats}/stats`,
      `Patroni REST                 ${NODES.map((n) => this.restUrl(n)).join('  ')}`,
      `etcd                         http://${HOST}:${p.etcd}`,
      ...(this.apiKey ? [`API key                      ${this.apiKey}`] : []),
      `data, logs, state            ${this.settings.dir}`,
    ];
  }
}

function parentsOf(dir: string): string[] {
  const out: string[] = [];
  for (let d = path.dirname(path.resolve(dir)); d !== path.dirname(d); d = path.dirname(d)) out.push(d);
  return out;
}
