// What each fault cost, read afterwards from what the clients, the probe and Patroni recorded: a fault's
// figures are computed once the load has drained, so a charge that waited past the drill's own bounded
// wait still counts with its real final time.
import type { Attempt, LogicalCharge } from './load.ts';
import type { LeaderSample, ProbeSample } from './probe.ts';

export type FaultKind = 'leader kill' | 'switchover' | 'sync standby kill' | 'api kill' | 'worker kill';

export interface Fault {
  kind: FaultKind;
  label: string;
  target: string;
  /** When the fault was injected (the kill, the switchover request), ms on the drill's clock. */
  at: number;
  /** The node that held the primary before the fault. */
  oldLeader?: string;
  restartedAt?: number;
  /** A restarted node back in a healthy cluster, or a restarted copy ready. */
  healthyAt?: number;
  notes: string[];
}

export interface FaultFigures {
  /** Patroni first showed another leader. */
  newLeader?: string;
  leaderAt?: number;
  /** The first write committed through HAProxy after the fault (on another node, for a leader change). */
  writesBackAt?: number;
  /** Logical charges in flight during the outage, and when the last of them got its final answer. */
  inFlight: number;
  allFinalAt?: number;
  notFinal: number;
  /** Attempts answered from the fault until every charge in flight was final, by status ("0": no answer). */
  statuses: Record<string, number>;
  n503: number;
  first503?: number;
  last503?: number;
  /** The longest time without a committed probe write around the fault. */
  writePauseMs?: number;
}

const WINDOW_CAP_MS = 120_000;

export function figures(f: Fault, all: { attempts: Attempt[]; charges: LogicalCharge[]; probe: ProbeSample[]; leaders: LeaderSample[]; endedAt: number }): FaultFigures {
  const leaderChange = f.kind === 'leader kill' || f.kind === 'switchover';
  const back = all.probe.find((s) => s.t > f.at && s.ok && (!leaderChange || s.node !== f.oldLeader));
  const leader = leaderChange ? all.leaders.find((l) => l.t > f.at && l.leader && l.leader !== f.oldLeader) : undefined;
  // In flight: started before writes were back, not yet final when the fault came.
  const until = back?.t ?? f.at;
  const inFlight = all.charges.filter((c) => c.startedAt < until && (c.endedAt === undefined || c.endedAt > f.at));
  const finals = inFlight.map((c) => c.endedAt);
  const notFinal = finals.filter((t) => t === undefined).length;
  const allFinalAt = inFlight.length && !notFinal ? Math.max(...(finals as number[])) : undefined;
  const windowEnd = Math.min(Math.max(allFinalAt ?? all.endedAt, back?.t ?? f.at), f.at + WINDOW_CAP_MS);
  const inWindow = all.attempts.filter((a) => a.t >= f.at && a.t <= windowEnd);
  const statuses: Record<string, number> = {};
  for (const a of inWindow) statuses[String(a.status)] = (statuses[String(a.status)] ?? 0) + 1;
  const s503 = inWindow.filter((a) => a.status === 503);
  // Commits around the fault: from the last one before it to the first one after it, and any longer gap while writes came back.
  const oks = all.probe.filter((s) => s.ok && s.t >= f.at - 2000 && s.t <= (back?.t ?? f.at) + 15_000).map((s) => s.t);
  let writePauseMs: number | undefined;
  for (let i = 1; i < oks.length; i++) writePauseMs = Math.max(writePauseMs ?? 0, oks[i]! - oks[i - 1]!);
  return {
    ...(leader ? { newLeader: leader.leader, leaderAt: leader.t } : {}),
    ...(back ? { writesBackAt: back.t } : {}),
    ...(leaderChange && back?.node ? { newLeader: back.node } : {}),
    inFlight: inFlight.length,
    ...(allFinalAt !== undefined ? { allFinalAt } : {}),
    notFinal,
    statuses,
    n503: s503.length,
    ...(s503.length ? { first503: s503[0]!.t, last503: s503.at(-1)!.t } : {}),
    ...(writePauseMs !== undefined ? { writePauseMs } : {}),
  };
}
