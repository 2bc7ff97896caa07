// What a decision reads for agent caps and rates on SQLite (issue 18), in the
// caller's snapshot: inside the write transaction of a reservation, or on the
// read connection for a check. The needs and the levels are the ledger's
// (src/ledger/cap-levels.ts).
import type { AgentSpend } from "../../ledger/agent-caps.ts";
import { agentSpendOf, bucketEntry, holdEntry, type CapNeeds, type CapReads } from "../../ledger/cap-levels.ts";
import type { RateEntry } from "../../ledger/rate-guard.ts";
import type { BudgetState } from "../../ledger/types.ts";
import { rateBucketMs, rateWindowMs } from "../../limits.ts";
import type { SqliteCapStatements } from "./cap-statements.ts";

type Buckets = Array<{ bucket_ms: bigint; recorded_nanos: bigint }>;

function bucketsOf(c: SqliteCapStatements, projectId: string, agentId: string, nowMs: number): RateEntry[] {
  // A bucket counts until its last millisecond leaves the window.
  const rows = c.selectRateBuckets.all(projectId, agentId, nowMs - rateWindowMs - rateBucketMs) as Buckets;
  return rows.map((row) => bucketEntry(Number(row.bucket_ms), row.recorded_nanos));
}

export function readCaps(c: SqliteCapStatements, needs: CapNeeds, chain: readonly BudgetState[], nowMs: number): CapReads {
  const windowStartMs = nowMs - rateWindowMs;
  let agentSpend: AgentSpend | null = null;
  if (needs.agent !== null) {
    const { projectId, agentId, caps } = needs.agent;
    const own = chain[0]!;
    const windows = c.selectAgentWindows.get(projectId, agentId) as
      | { day_period: string; day_cost_nanos: bigint; month_period: string; month_cost_nanos: bigint }
      | undefined;
    const rateEntries: RateEntry[] = [];
    if (caps.rateLimitNanosPerMinute > 0n) {
      rateEntries.push(...bucketsOf(c, projectId, agentId, nowMs));
      const holds = c.selectAgentRateHolds.all(projectId, agentId, nowMs, windowStartMs) as Array<{
        created_at_ms: bigint;
        expires_at_ms: bigint;
        amount_nanos: bigint;
      }>;
      for (const hold of holds) rateEntries.push(holdEntry(Number(hold.created_at_ms), Number(hold.expires_at_ms), hold.amount_nanos));
    }
    agentSpend = agentSpendOf(own, {
      lifetimeNanos: (c.selectAgentLifetime.get(projectId, agentId) as { total_cost_nanos: bigint }).total_cost_nanos,
      day: windows && { period: windows.day_period, nanos: windows.day_cost_nanos },
      month: windows && { period: windows.month_period, nanos: windows.month_cost_nanos },
      reservedNanos: (c.selectAgentReserved.get(projectId, agentId, nowMs) as { amount_nanos: bigint }).amount_nanos,
      rateEntries,
    });
  }
  const projectRates = new Map<string, RateEntry[]>();
  for (const projectId of needs.rateProjects) {
    const entries = bucketsOf(c, projectId, "", nowMs);
    const holds = c.selectRateHolds.all(projectId, nowMs, windowStartMs) as Array<{
      placed_at_ms: bigint;
      expires_at_ms: bigint;
      amount_nanos: bigint;
    }>;
    for (const hold of holds) entries.push(holdEntry(Number(hold.placed_at_ms), Number(hold.expires_at_ms), hold.amount_nanos));
    projectRates.set(projectId, entries);
  }
  return { agentSpend, projectRates };
}
