// What the database side looks like through the drill: a probe that commits one row through HAProxy's
// read-write port every 200 ms (synchronous_commit on, so a commit is on two nodes) and says which node
// took it, and a sampler of Patroni's view (who leads).
import pg from 'pg';
import { type ClusterMember, type NodeName, sleep, type Stack } from '../stack.ts';

export interface ProbeSample {
  /** When the commit (or the failure) came, ms on the drill's clock. */
  t: number;
  ok: boolean;
  ms: number;
  /** The node that committed it. */
  node?: NodeName;
  error?: string;
}

export interface LeaderSample {
  t: number;
  leader?: string;
  sync?: string;
}

const PROBE_EVERY_MS = 200;
const PROBE_TIMEOUT_MS = 1000;

export class Probe {
  readonly samples: ProbeSample[] = [];
  readonly leaders: LeaderSample[] = [];
  private running = true;
  private done: Promise<void>[] = [];
  private readonly stack: Stack;
  private readonly now: () => number;

  constructor(stack: Stack, now: () => number) {
    this.stack = stack;
    this.now = now;
  }

  async start(): Promise<void> {
    const setup = new pg.Client({ connectionString: this.stack.databaseUrl, connectionTimeoutMillis: 5000 });
    await setup.connect();
    await setup.query('create table if not exists ha_drill_probe (id bigserial primary key, at timestamptz not null default now(), port int not null)');
    await setup.end();
    this.done = [this.writeLoop(), this.leaderLoop()];
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.done);
  }

  /** First committed write after `after`, by a node other than `notOn` when given. */
  writesBackAt(after: number, notOn?: NodeName): ProbeSample | undefined {
    return this.samples.find((s) => s.t > after && s.ok && (notOn === undefined || s.node !== notOn));
  }

  private async writeLoop(): Promise<void> {
    const byPort = new Map(Object.entries(this.stack.ports.nodes).map(([n, p]) => [p.postgres, n as NodeName]));
    let client: pg.Client | undefined;
    let next = this.now();
    while (this.running) {
      const started = this.now();
      try {
        if (!client) {
          const c = new pg.Client({ connectionString: this.stack.databaseUrl, connectionTimeoutMillis: PROBE_TIMEOUT_MS, query_timeout: PROBE_TIMEOUT_MS, application_name: 'ha-drill-probe' });
          // A connection cut while idle must not crash the drill; the next probe finds out.
          c.on('error', () => undefined);
          client = c;
          await c.connect();
        }
        const { rows } = await client.query<{ port: number }>('insert into ha_drill_probe (port) values (inet_server_port()) returning port');
        this.samples.push({ t: this.now(), ok: true, ms: this.now() - started, node: byPort.get(rows[0]!.port) });
      } catch (err) {
        const e = err as Error & { code?: string };
        this.samples.push({ t: this.now(), ok: false, ms: this.now() - started, error: e.code ?? e.message.slice(0, 80) });
        const dead = client;
        client = undefined;
        void dead?.end().catch(() => undefined);
      }
      next += PROBE_EVERY_MS;
      await sleep(Math.max(0, next - this.now()));
      next = Math.max(next, this.now() - PROBE_EVERY_MS);
    }
    await client?.end().catch(() => undefined);
  }

  private async leaderLoop(): Promise<void> {
    while (this.running) {
      const members: ClusterMember[] | undefined = await this.stack.cluster();
      this.leaders.push({
        t: this.now(),
        leader: members?.find((m) => m.role === 'leader' && m.state === 'running')?.name,
        sync: members?.find((m) => m.role === 'sync_standby')?.name,
      });
      await sleep(500);
    }
  }
}
