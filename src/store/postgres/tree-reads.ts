// Reads of trees of budgets on PostgreSQL (issue 18): the states of a project
// and its ancestors, its own calls' totals, and its rolled-up totals by
// direct child. Reads only: a CheckBudget without reserve is advice (each
// level read by its own statement); a reservation decides on states read
// under the locks (./writes.ts).
import type { Pool } from "pg";
import { Dimension, type Breakdown, type BreakdownEntry, type BudgetState, type ProjectTotals } from "../../ledger/types.ts";
import type { Int8 } from "../rows.ts";
import { unavailableOr } from "./errors.ts";
import { readChainStates, readState } from "./state.ts";
import type { ParentCache } from "./tree-writes.ts";
import { childTotalsSql, hasChildrenSql, ownTotalsSql } from "./tree-statements.ts";

type Sums = { total_cost_nanos: Int8; input_tokens: Int8; output_tokens: Int8; record_count: Int8 };

const entryOf = (key: string, row: Sums): BreakdownEntry => ({
  key,
  totalCostNanos: BigInt(row.total_cost_nanos),
  inputTokens: BigInt(row.input_tokens),
  outputTokens: BigInt(row.output_tokens),
  recordCount: BigInt(row.record_count),
  // Catalog figures are kept per agent and model of a project's own calls.
  catalogCostNanos: 0n,
  pricedCostNanos: 0n,
  unpricedRecordCount: 0n,
});

export class PostgresTreeReads {
  readonly #pool: Pool;
  readonly #parents: ParentCache;

  /** `parents`: the links this replica's batches read (./tree-writes.ts). */
  constructor(pool: Pool, parents: ParentCache) {
    this.#pool = pool;
    this.#parents = parents;
  }

  async #read<T>(read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (error) {
      throw unavailableOr(error, "read");
    }
  }

  chainStates(projectId: string, nowMs: number): Promise<BudgetState[]> {
    // One statement either way: a project this replica knows as a root
    // (most) reads with the plain state statement (the recursive CTE is
    // dearer to run); any other reads every level in one statement (one
    // snapshot). A root that gained a parent since reads its chain next.
    return this.#read(async () => {
      if (this.#parents.parentOf(projectId) === "") {
        const state = await readState(this.#pool, projectId, nowMs);
        if (state.budget.parentId === "") return [state];
      }
      return readChainStates(this.#pool, projectId, nowMs);
    });
  }

  /** null when the project has no children (its totals are its own). */
  ownTotals(projectId: string): Promise<ProjectTotals | null> {
    return this.#read(async () => {
      if ((await this.#pool.query({ name: "tally_tree_has_children", text: hasChildrenSql, values: [projectId] })).rows.length === 0)
        return null;
      const { rows } = await this.#pool.query<Sums>({ name: "tally_tree_own_totals", text: ownTotalsSql, values: [projectId] });
      const row = rows[0]!;
      return {
        projectId,
        totalCostNanos: BigInt(row.total_cost_nanos),
        inputTokens: BigInt(row.input_tokens),
        outputTokens: BigInt(row.output_tokens),
        recordCount: BigInt(row.record_count),
        updatedAtMs: null,
      };
    });
  }

  /** Rolled-up totals by direct child plus the project's own calls ("").
   * Read in one snapshot (a read-only REPEATABLE READ transaction). */
  childBreakdown(projectId: string, entriesMax: number): Promise<Breakdown> {
    return this.#read(async () => {
      const client = await this.#pool.connect();
      try {
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        const { rows } = await client.query<Sums & { label: string }>({
          name: "tally_tree_child_totals",
          text: childTotalsSql,
          values: [projectId, entriesMax + 1],
        });
        const { rows: own } = await client.query<Sums>({ name: "tally_tree_own_totals", text: ownTotalsSql, values: [projectId] });
        await client.query("COMMIT");
        const entries = rows.map((row) => entryOf(row.label, row));
        if (BigInt(own[0]!.record_count) > 0n) entries.push(entryOf("", own[0]!));
        entries.sort((a, b) =>
          a.totalCostNanos > b.totalCostNanos ? -1 : a.totalCostNanos < b.totalCostNanos ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0,
        );
        return { dimension: Dimension.child, truncated: entries.length > entriesMax, entries: entries.slice(0, entriesMax) };
      } catch (error) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
    });
  }
}
