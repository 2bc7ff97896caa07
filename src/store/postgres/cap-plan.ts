// A record run's writes for agent caps and rates on PostgreSQL (issue 18),
// summed like the breakdowns: per (project, agent) its day and month spend,
// per (level, agent, bucket) the recorded spend of each rate that counts the
// record. Which levels count is the ledger's (src/ledger/cap-levels.ts).
import { rateBucketOf, rateTargets, type CapSettings } from "../../ledger/cap-levels.ts";
import type { PeriodKeys } from "../../ledger/periods.ts";
import type { CostEntry } from "../../ledger/types.ts";

export interface CapPlan {
  windows: Map<string, { projectId: string; agentId: string; dayPeriod: string; monthPeriod: string; costNanos: bigint }>;
  buckets: Map<string, { projectId: string; agentId: string; bucketMs: number; costNanos: bigint }>;
}

export function emptyCapPlan(): CapPlan {
  return { windows: new Map(), buckets: new Map() };
}

/** Adds one applied record (`chainBudgets`: its project's, then each ancestor's). */
export function planCaps(plan: CapPlan, entry: CostEntry, chainBudgets: readonly CapSettings[], keys: PeriodKeys, nowMs: number): void {
  const { projectId, agentId, costNanos } = entry;
  if (agentId !== "") {
    const key = `${projectId}\u0000${agentId}`;
    const w = plan.windows.get(key) ?? { projectId, agentId, dayPeriod: keys.day, monthPeriod: keys.month, costNanos: 0n };
    w.costNanos += costNanos;
    plan.windows.set(key, w);
  }
  const targets = rateTargets(chainBudgets, agentId);
  const bucketMs = rateBucketOf(nowMs);
  const add = (level: string, levelAgent: string) => {
    const key = `${level}\u0000${levelAgent}`;
    const b = plan.buckets.get(key) ?? { projectId: level, agentId: levelAgent, bucketMs, costNanos: 0n };
    b.costNanos += costNanos;
    plan.buckets.set(key, b);
  };
  for (const level of targets.projects) add(level, "");
  if (targets.agent) add(projectId, agentId);
}
