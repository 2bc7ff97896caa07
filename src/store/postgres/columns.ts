// Joined rows on PostgreSQL: one statement reads several tables' rows at
// once (one snapshot), each table's columns under a prefix; these helpers
// write the select lists and read the prefixed columns back into plain rows.
import type { Budget, ProjectTotals } from "../../ledger/types.ts";
import { zeroTotals } from "../../ledger/types.ts";
import { budgetFromRow, totalsFromRow, unsetBudget, type BudgetRow, type TotalsRow } from "../rows.ts";

export const prefixed = (alias: string, prefix: string, columns: readonly string[]) =>
  columns.map((c) => `${alias}.${c} AS ${prefix}${c}`).join(", ");
export const totalsColumns = [
  "total_cost_nanos",
  "input_tokens",
  "output_tokens",
  "record_count",
  "updated_at_ms",
  "alerted_bps",
  "alerted_limit_nanos",
  "day_period",
  "day_cost_nanos",
  "day_input_tokens",
  "day_output_tokens",
  "day_record_count",
  "day_alerted_bps",
  "day_alerted_limit_nanos",
  "month_period",
  "month_cost_nanos",
  "month_input_tokens",
  "month_output_tokens",
  "month_record_count",
  "month_alerted_bps",
  "month_alerted_limit_nanos",
] as const;
export const budgetColumns = [
  "limit_nanos",
  "currency",
  "updated_at_ms",
  "daily_limit_nanos",
  "monthly_limit_nanos",
  "time_zone",
  "alert_thresholds_bps",
  "parent_id",
  "agent_limit_nanos",
  "agent_daily_limit_nanos",
  "agent_monthly_limit_nanos",
  "agent_rate_limit_nanos_per_minute",
  "agent_limit_overrides",
  "rate_limit_nanos_per_minute",
] as const;
export const recordColumns = [
  "request_id",
  "cost_nanos",
  "input_tokens",
  "output_tokens",
  "agent_id",
  "model",
  "recorded_at_ms",
  "total_cost_nanos_after",
  "input_tokens_after",
  "output_tokens_after",
  "record_count_after",
  "hold_id",
  "cached_input_tokens",
  "cache_write_tokens",
  "cost_source",
  "catalog_cost_nanos",
  "price_id",
  "occurred_at_ms",
] as const;
export const holdColumns = ["hold_id", "project_id", "amount_nanos", "created_at_ms", "expires_at_ms"] as const;

/** Reads the prefixed columns of a joined row back into a plain row (null when the join found nothing). */
export function unprefix<T>(row: Record<string, unknown>, prefix: string, columns: readonly string[], present: string): T | null {
  if (row[`${prefix}${present}`] === null || row[`${prefix}${present}`] === undefined) return null;
  const out: Record<string, unknown> = {};
  for (const c of columns) out[c] = row[`${prefix}${c}`];
  return out as T;
}

/** Budget and totals of a joined row (b_*, t_*): the unset budget and zero
 * totals when the project has none. */
export function budgetAndTotalsFromRow(projectId: string, row: Record<string, unknown>): { budget: Budget; totals: ProjectTotals } {
  const budget = unprefix<BudgetRow>(row, "b_", budgetColumns, "limit_nanos");
  const totals = unprefix<TotalsRow>(row, "t_", totalsColumns, "total_cost_nanos");
  return {
    budget: budget === null ? unsetBudget(projectId) : budgetFromRow({ ...budget, project_id: projectId }),
    totals: totals === null ? zeroTotals(projectId) : totalsFromRow(totals, projectId),
  };
}
