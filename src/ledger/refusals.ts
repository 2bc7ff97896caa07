// Why a write was refused, in the words its error carries: which quantity a
// record would push past int64, and why a hold named by a record or a release
// is not active. Both stores ask the same questions of the rows they read.
import { int64Max } from "./money.ts";
import type { CostEntry, ProjectTotals } from "./types.ts";

/** The hold fields the rules need (a row, mapped). */
export interface HoldFacts {
  projectId: string;
  expiresAtMs: number;
}

/** Active at `nowMs` for `projectId`: of that project and not yet expired. */
export function isHoldActive(hold: HoldFacts | null, projectId: string, nowMs: number): boolean {
  return hold !== null && hold.projectId === projectId && hold.expiresAtMs > nowMs;
}

/** Why `hold` (null: no row) cannot be settled or released by `projectId`. */
export function whyInactive(hold: HoldFacts | null, projectId: string, nowMs: number): string {
  // A hold of another project is reported like an unknown one: ids do not leak across projects.
  if (hold === null || hold.projectId !== projectId)
    return "no such hold in this project: never placed, or already settled, released, or expired and swept";
  if (hold.expiresAtMs <= nowMs) return `it expired at ${new Date(hold.expiresAtMs).toISOString()}`;
  return "it is active"; // unreachable: an active hold would have been taken
}

/** The quantity that adding `entry` to `totals` (one more record) would push
 * past int64, or null when the write fits: the stores' increment guard. */
export function overflowOf(
  entry: Pick<CostEntry, "costNanos" | "inputTokens" | "outputTokens">,
  totals: Pick<ProjectTotals, "totalCostNanos" | "inputTokens" | "outputTokens" | "recordCount">,
): string | null {
  const fits =
    totals.totalCostNanos <= int64Max - entry.costNanos &&
    totals.inputTokens <= int64Max - entry.inputTokens &&
    totals.outputTokens <= int64Max - entry.outputTokens &&
    totals.recordCount < int64Max;
  return fits ? null : overflowingQuantity(entry, totals);
}

/** The first quantity (in the guard's order) that adding `entry` to `totals`
 * would overflow; the record count when the three sums fit. */
export function overflowingQuantity(
  entry: Pick<CostEntry, "costNanos" | "inputTokens" | "outputTokens">,
  totals: Pick<ProjectTotals, "totalCostNanos" | "inputTokens" | "outputTokens">,
): string {
  if (totals.totalCostNanos > int64Max - entry.costNanos) return "total_cost_nanos";
  if (totals.inputTokens > int64Max - entry.inputTokens) return "input_tokens";
  if (totals.outputTokens > int64Max - entry.outputTokens) return "output_tokens";
  return "record_count";
}
