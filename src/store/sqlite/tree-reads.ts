// Reads of trees of budgets on the SQLite store (issue 18): a project's own
// calls' totals, and its rolled-up totals split by direct child. Synchronous
// on the one read connection, so each read sees one snapshot.
import { Dimension, type Breakdown, type BreakdownEntry, type ProjectTotals } from "../../ledger/types.ts";
import type { SqliteTreeStatements } from "./tree-statements.ts";

type Sums = { total_cost_nanos: bigint; input_tokens: bigint; output_tokens: bigint; record_count: bigint };

export function ownTotalsOf(tree: SqliteTreeStatements, projectId: string): ProjectTotals {
  const row = tree.selectOwnTotals.get(projectId) as Sums;
  return {
    projectId,
    totalCostNanos: row.total_cost_nanos,
    inputTokens: row.input_tokens,
    outputTokens: row.output_tokens,
    recordCount: row.record_count,
    updatedAtMs: null,
  };
}

/** Rolled-up totals by direct child, plus the project's own calls under key
 * "" (when it has any): the entries sum to its rolled-up totals. Highest cost
 * first, ties by key, at most `entriesMax`. */
export function childBreakdownOf(tree: SqliteTreeStatements, projectId: string, entriesMax: number): Breakdown {
  const entry = (
    key: string,
    row: Sums & Partial<Record<"catalog_cost_nanos" | "priced_cost_nanos" | "unpriced_record_count", bigint>>,
  ): BreakdownEntry => ({
    key,
    totalCostNanos: row.total_cost_nanos,
    inputTokens: row.input_tokens,
    outputTokens: row.output_tokens,
    recordCount: row.record_count,
    // Catalog figures are kept per agent and model of a project's own calls;
    // a child's are in its own breakdowns.
    catalogCostNanos: row.catalog_cost_nanos ?? 0n,
    pricedCostNanos: row.priced_cost_nanos ?? 0n,
    unpricedRecordCount: row.unpriced_record_count ?? 0n,
  });
  const entries = (tree.selectChildTotals.all(projectId, entriesMax + 1) as Array<Sums & { label: string }>).map((row) =>
    entry(row.label, row),
  );
  const own = tree.selectOwnTotals.get(projectId) as Sums;
  if (own.record_count > 0n) entries.push(entry("", own));
  entries.sort((a, b) =>
    a.totalCostNanos > b.totalCostNanos ? -1 : a.totalCostNanos < b.totalCostNanos ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0,
  );
  return { dimension: Dimension.child, truncated: entries.length > entriesMax, entries: entries.slice(0, entriesMax) };
}
