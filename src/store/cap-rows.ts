// Agent caps and rate limits as project_budgets stores them (both stores):
// four agent_* columns and rate_limit_nanos_per_minute (0 = none), and the
// overrides as one text column, replaced as a whole list like the request
// that sets them: JSON [[agent_id, limit, daily, monthly, rate], ...] with the
// amounts as decimal strings (a JSON number would pass through a float),
// ascending by agent_id; "" for none.
import { noAgentCaps, sortedOverrides, type AgentCapConfig, type AgentLimitOverride } from "../ledger/agent-caps.ts";
import type { CapSettings } from "../ledger/cap-levels.ts";
import type { BudgetChange, CapFieldName } from "../ledger/types.ts";
import type { Int8 } from "./rows.ts";

/** The cap columns of project_budgets; absent from statements that do not
 * select them (then: none). */
export interface CapColumns<N extends Int8 = Int8> {
  agent_limit_nanos?: N;
  agent_daily_limit_nanos?: N;
  agent_monthly_limit_nanos?: N;
  agent_rate_limit_nanos_per_minute?: N;
  agent_limit_overrides?: string;
  rate_limit_nanos_per_minute?: N;
}

export function encodeOverrides(overrides: readonly AgentLimitOverride[]): string {
  if (overrides.length === 0) return "";
  return JSON.stringify(
    sortedOverrides(overrides).map((o) => [
      o.agentId,
      String(o.limitNanos),
      String(o.dailyLimitNanos),
      String(o.monthlyLimitNanos),
      String(o.rateLimitNanosPerMinute),
    ]),
  );
}

/** Parsed once per distinct stored text: budgets are read on every write,
 * overrides change rarely, and a text of at most 256 entries is small. */
const parsed = new Map<string, AgentLimitOverride[]>();
const parsedEntriesMax = 1024;

export function decodeOverrides(stored: string): AgentLimitOverride[] {
  if (stored === "") return [];
  let overrides = parsed.get(stored);
  if (overrides === undefined) {
    overrides = (JSON.parse(stored) as string[][]).map(([agentId, limit, daily, monthly, rate]) => ({
      agentId: agentId!,
      limitNanos: BigInt(limit!),
      dailyLimitNanos: BigInt(daily!),
      monthlyLimitNanos: BigInt(monthly!),
      rateLimitNanosPerMinute: BigInt(rate!),
    }));
    if (parsed.size >= parsedEntriesMax) parsed.clear();
    parsed.set(stored, overrides);
  }
  return overrides;
}

export function capsFromRow(row: CapColumns): { agentCaps: AgentCapConfig; rateLimitNanosPerMinute: bigint } {
  return {
    agentCaps: {
      defaults: {
        limitNanos: BigInt(row.agent_limit_nanos ?? 0),
        dailyLimitNanos: BigInt(row.agent_daily_limit_nanos ?? 0),
        monthlyLimitNanos: BigInt(row.agent_monthly_limit_nanos ?? 0),
        rateLimitNanosPerMinute: BigInt(row.agent_rate_limit_nanos_per_minute ?? 0),
      },
      overrides: decodeOverrides(row.agent_limit_overrides ?? ""),
    },
    rateLimitNanosPerMinute: BigInt(row.rate_limit_nanos_per_minute ?? 0),
  };
}

/** The cap settings of a budget row (null: no budget, no caps). */
export function capSettingsOf(projectId: string, row: CapColumns | null | undefined): CapSettings {
  return row == null ? { projectId, ...noCaps } : { projectId, ...capsFromRow(row) };
}

export const noCaps = { agentCaps: { defaults: noAgentCaps, overrides: [] }, rateLimitNanosPerMinute: 0n } as const;

/** The cap fields of a BudgetChange. */
export type CapChange = Pick<BudgetChange, CapFieldName>;

/** A BudgetChange's cap fields as upsert parameters: null keeps the column. */
export function capParams(change: CapChange) {
  return {
    agentLimitNanos: change.agentLimitNanos ?? null,
    agentDailyLimitNanos: change.agentDailyLimitNanos ?? null,
    agentMonthlyLimitNanos: change.agentMonthlyLimitNanos ?? null,
    agentRateLimitNanosPerMinute: change.agentRateLimitNanosPerMinute ?? null,
    agentLimitOverrides: change.agentLimitOverrides == null ? null : encodeOverrides(change.agentLimitOverrides),
    rateLimitNanosPerMinute: change.rateLimitNanosPerMinute ?? null,
  };
}
