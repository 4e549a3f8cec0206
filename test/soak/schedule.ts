// The soak's randomness: a small seeded PRNG, and the fault schedule drawn from it. The schedule is a pure
// function of (seed, duration), so a run can be repeated with the same faults in the same order.

/** mulberry32: tiny, fast, and good enough to pick faults and amounts reproducibly. */
export interface Rng {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max], both included. */
  int(min: number, max: number): number;
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  /** A shuffled copy. */
  shuffle<T>(items: readonly T[]): T[];
  /** An independent generator derived from this one's seed and `salt` (one per load loop, say). */
  fork(salt: number): Rng;
}

export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const rng: Rng = {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    chance: (p) => next() < p,
    pick: (items) => items[Math.floor(next() * items.length)]!,
    shuffle: (items) => {
      const copy = [...items];
      for (let i = copy.length - 1; i > 0; i -= 1) {
        const j = Math.floor(next() * (i + 1));
        [copy[i], copy[j]] = [copy[j]!, copy[i]!];
      }
      return copy;
    },
    fork: (salt) => createRng((Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(salt + 1, 0xc2b2ae35)) >>> 0),
  };
  return rng;
}

export const PROCESSOR_FAULTS = ['slow', 'flaky', 'down', 'hang', 'lose_response'] as const;
export type ProcessorFault = (typeof PROCESSOR_FAULTS)[number];

export const INFRA_FAULTS = [
  'pg_stop_fast',
  'pg_stop_immediate',
  'pg_pause',
  'pg_terminate_backends',
  'kill_api',
  'kill_worker',
  'sigterm',
  'freeze_api',
  'freeze_worker',
] as const;
export type InfraFault = (typeof INFRA_FAULTS)[number];

export interface ChaosSettings {
  mode: ProcessorFault;
  latency_ms?: number;
  jitter_ms?: number;
  failure_rate?: number;
  seed?: number;
}

export type PlannedFault =
  | { track: 'processor'; kind: ProcessorFault; atMs: number; holdMs: number; chaos: ChaosSettings }
  | { track: 'infra'; kind: InfraFault; atMs: number; holdMs: number; target?: { role: 'api' | 'worker'; index: number } };

export interface SchedulePlan {
  processor: PlannedFault[];
  infra: PlannedFault[];
  /** The settle window the service runs with: a bit shorter than the shortest processor outage. */
  settleWindowSeconds: number;
}

type Range = readonly [number, number];

/** How long a fault is held, and the healthy gap after it, for a run of this length. */
function timings(durationMs: number): {
  warmupMs: number;
  tailMs: number;
  processorHold: Range;
  processorGap: Range;
  infraHold: Range;
  freezeHold: Range;
  infraGap: Range;
} {
  const long = durationMs >= 120_000;
  return {
    warmupMs: Math.min(3000, durationMs / 10),
    tailMs: Math.min(3000, durationMs / 15),
    // Processor outages outlast the settle window, so payments made at their start reach the reconcile path.
    processorHold: long ? [4000, 9000] : [3500, 5000],
    processorGap: long ? [1500, 6000] : [800, 2000],
    infraHold: long ? [2000, 6000] : [1500, 2500],
    // A frozen process outlasts the client's per-attempt timeout and the idempotency lease: its requests
    // must time out at the client, and another copy may take its leases while it sleeps.
    freezeHold: long ? [6000, 9000] : [5500, 6500],
    infraGap: long ? [2000, 8000] : [500, 1200],
  };
}

/**
 * The fault plan. Two tracks run side by side: the processor's misbehaviour, and the infrastructure's
 * (Postgres and the service's processes). Each track runs its faults one after the other, in a shuffled
 * order that visits every kind before repeating one. Planned times are the earliest a fault may start:
 * an infrastructure fault begins only once the one before it has healed (a process restarted and ready,
 * the cluster answering), so a restart never lands in a database outage.
 */
export function planFaults(seed: number, durationSeconds: number): SchedulePlan {
  const rng = createRng(seed).fork(0xfa17);
  const durationMs = durationSeconds * 1000;
  const t = timings(durationMs);
  const end = durationMs - t.tailMs;

  const processor: PlannedFault[] = [];
  let bag: ProcessorFault[] = [];
  for (let at = t.warmupMs; ; ) {
    const holdMs = rng.int(t.processorHold[0], t.processorHold[1]);
    if (at + holdMs > end) break;
    if (!bag.length) bag = rng.shuffle(PROCESSOR_FAULTS);
    const kind = bag.shift()!;
    const chaos: ChaosSettings = { mode: kind };
    if (kind === 'slow') {
      chaos.latency_ms = rng.int(600, 2500);
      chaos.jitter_ms = rng.int(100, 800);
    }
    if (kind === 'flaky') {
      chaos.failure_rate = rng.int(30, 80) / 100;
      chaos.seed = rng.int(1, 1_000_000);
    }
    processor.push({ track: 'processor', kind, atMs: at, holdMs, chaos });
    at += holdMs + rng.int(t.processorGap[0], t.processorGap[1]);
  }

  const infra: PlannedFault[] = [];
  let infraBag: InfraFault[] = [];
  for (let at = t.warmupMs + rng.int(0, 1500); at < end; ) {
    if (!infraBag.length) infraBag = rng.shuffle(INFRA_FAULTS);
    const kind = infraBag.shift()!;
    const hold = kind.startsWith('freeze') ? t.freezeHold : t.infraHold;
    const holdMs = rng.int(hold[0], hold[1]);
    const target =
      kind === 'kill_api' || kind === 'freeze_api'
        ? { role: 'api' as const, index: rng.int(0, 1) }
        : kind === 'kill_worker' || kind === 'freeze_worker'
          ? { role: 'worker' as const, index: rng.int(0, 1) }
          : kind === 'sigterm'
            ? { role: rng.pick(['api', 'worker'] as const), index: rng.int(0, 1) }
            : undefined;
    infra.push({ track: 'infra', kind, atMs: at, holdMs, ...(target ? { target } : {}) });
    // A rough guess at how long the fault takes with its healing (a restart takes a few seconds).
    const cost = kind.startsWith('pg_') || kind.startsWith('freeze') ? holdMs + 500 : 4000;
    at += cost + rng.int(t.infraGap[0], t.infraGap[1]);
  }

  return { processor, infra, settleWindowSeconds: Math.max(2, Math.floor(t.processorHold[0] / 1000) - 1) };
}

export function describeFault(f: PlannedFault): string {
  if (f.track === 'processor') {
    const c = f.chaos;
    const extra =
      c.mode === 'slow'
        ? ` (latency ${c.latency_ms} ms + up to ${c.jitter_ms} ms)`
        : c.mode === 'flaky'
          ? ` (failure rate ${c.failure_rate}, seed ${c.seed})`
          : '';
    return `processor ${c.mode}${extra}`;
  }
  const target = f.target ? ` ${f.target.role}#${f.target.index}` : '';
  return `${f.kind}${target}`;
}
