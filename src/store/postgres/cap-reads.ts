// What a decision reads for agent caps and rates on PostgreSQL (issue 18):
// on a batch's client under the project's and its ancestors' locks (a
// reservation), or on the pool (a check, which is advice). One statement
// reads everything the ledger's capNeeds asks for (src/ledger/cap-levels.ts).
import type { PoolClient } from "pg";
import type { AgentSpend } from "../../ledger/agent-caps.ts";
import { agentSpendOf, bucketEntry, capNeeds, decisionLevels, holdEntry } from "../../ledger/cap-levels.ts";
import type { LevelInput } from "../../ledger/nested-decision.ts";
import type { RateEntry } from "../../ledger/rate-guard.ts";
import type { BudgetState } from "../../ledger/types.ts";
import { rateBucketMs, rateWindowMs } from "../../limits.ts";
import { capParams, type CapChange } from "../cap-rows.ts";
import type { Int8 } from "../rows.ts";

// $1 project, $2 agent ("" when its cap is not read), $3 now, $4 window
// start, $5 bucket start, $6 whether the agent's rate is read, $7 the
// projects whose rates are read. One row per entry, by kind.
const capReadSql = `
SELECT 'lifetime' AS kind, '' AS level_id, 0::bigint AS at_ms, 0::bigint AS expires_at_ms, COALESCE(sum(total_cost_nanos), 0)::bigint AS amount_nanos, '' AS period
  FROM project_label_totals WHERE $2::text <> '' AND project_id = $1 AND agent_id = $2
UNION ALL
SELECT 'day', '', 0, 0, day_cost_nanos, day_period FROM agent_windows WHERE $2::text <> '' AND project_id = $1 AND agent_id = $2
UNION ALL
SELECT 'month', '', 0, 0, month_cost_nanos, month_period FROM agent_windows WHERE $2::text <> '' AND project_id = $1 AND agent_id = $2
UNION ALL
SELECT 'reserved', '', 0, 0, COALESCE(sum(amount_nanos), 0)::bigint, '' FROM holds
  WHERE $2::text <> '' AND project_id = $1 AND agent_id = $2 AND expires_at_ms > $3::bigint
UNION ALL
SELECT 'agent_hold', '', created_at_ms, expires_at_ms, amount_nanos, '' FROM holds
  WHERE $6::boolean AND project_id = $1 AND agent_id = $2 AND expires_at_ms > $3::bigint AND created_at_ms > $4::bigint
UNION ALL
SELECT 'agent_bucket', '', bucket_ms, 0, recorded_nanos, '' FROM rate_buckets
  WHERE $6::boolean AND project_id = $1 AND agent_id = $2 AND bucket_ms > $5::bigint
UNION ALL
SELECT 'bucket', project_id, bucket_ms, 0, recorded_nanos, '' FROM rate_buckets
  WHERE project_id = ANY($7::text[]) AND agent_id = '' AND bucket_ms > $5::bigint
UNION ALL
SELECT 'hold', project_id, placed_at_ms, expires_at_ms, amount_nanos, '' FROM rate_holds
  WHERE project_id = ANY($7::text[]) AND expires_at_ms > $3::bigint AND placed_at_ms > $4::bigint`;

type CapRow = { kind: string; level_id: string; at_ms: Int8; expires_at_ms: Int8; amount_nanos: Int8; period: string };

/** The levels of a decision by `agentId` over `chain` (nearest first). */
export async function readDecisionLevels(
  queryable: Pick<PoolClient, "query">,
  chain: readonly BudgetState[],
  agentId: string,
  nowMs: number,
): Promise<LevelInput[]> {
  const needs = capNeeds(chain, agentId);
  if (needs.agent === null && needs.rateProjects.length === 0)
    return decisionLevels(chain, needs, { agentSpend: null, projectRates: new Map() });
  const agentRate = needs.agent !== null && needs.agent.caps.rateLimitNanosPerMinute > 0n;
  const { rows } = await queryable.query<CapRow>({
    name: "tally_cap_read",
    text: capReadSql,
    values: [
      chain[0]!.budget.projectId,
      needs.agent?.agentId ?? "",
      String(nowMs),
      String(nowMs - rateWindowMs),
      String(nowMs - rateWindowMs - rateBucketMs),
      agentRate,
      needs.rateProjects,
    ],
  });
  const projectRates = new Map<string, RateEntry[]>(needs.rateProjects.map((id) => [id, []]));
  let lifetimeNanos = 0n;
  let day: CapRow | undefined;
  let month: CapRow | undefined;
  let reservedNanos = 0n;
  const agentEntries: RateEntry[] = [];
  for (const row of rows) {
    const amount = BigInt(row.amount_nanos);
    switch (row.kind) {
      case "lifetime":
        lifetimeNanos = amount;
        break;
      case "day":
        day = row;
        break;
      case "month":
        month = row;
        break;
      case "reserved":
        reservedNanos = amount;
        break;
      case "agent_hold":
        agentEntries.push(holdEntry(Number(row.at_ms), Number(row.expires_at_ms), amount));
        break;
      case "agent_bucket":
        agentEntries.push(bucketEntry(Number(row.at_ms), amount));
        break;
      case "bucket":
        projectRates.get(row.level_id)?.push(bucketEntry(Number(row.at_ms), amount));
        break;
      case "hold":
        projectRates.get(row.level_id)?.push(holdEntry(Number(row.at_ms), Number(row.expires_at_ms), amount));
        break;
      default:
        throw new Error(`invariant: the cap read returned a row of kind "${row.kind}"`);
    }
  }
  let agentSpend: AgentSpend | null = null;
  if (needs.agent !== null) {
    const own = chain[0]!;
    agentSpend = agentSpendOf(own, {
      lifetimeNanos,
      day: day && { period: day.period, nanos: BigInt(day.amount_nanos) },
      month: month && { period: month.period, nanos: BigInt(month.amount_nanos) },
      reservedNanos,
      rateEntries: agentEntries,
    });
  }
  return decisionLevels(chain, needs, { agentSpend, projectRates });
}

/** setBudgetSql's $10-$15. */
export function capValues(change: CapChange): Array<string | null> {
  const p = capParams(change);
  const s = (x: bigint | null) => (x === null ? null : x.toString());
  return [
    s(p.agentLimitNanos),
    s(p.agentDailyLimitNanos),
    s(p.agentMonthlyLimitNanos),
    s(p.agentRateLimitNanosPerMinute),
    p.agentLimitOverrides,
    s(p.rateLimitNanosPerMinute),
  ];
}
