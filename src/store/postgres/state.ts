// A project's BudgetState read from PostgreSQL in one statement (one
// snapshot). The rules (current periods, expired holds subtracted) are the
// ledger's (src/ledger/budget-state.ts); this file reads and maps the row.
import type { PoolClient } from "pg";
import { buildBudgetState } from "../../ledger/budget-state.ts";
import type { BudgetState } from "../../ledger/types.ts";
import { budgetFromRow, storedTotalsFromRow, unsetBudget, type BudgetRow, type Int8, type TotalsRow } from "../rows.ts";
import { budgetColumns, totalsColumns, unprefix } from "./columns.ts";
import { budgetTreeDepthMax } from "../../limits.ts";
import { chainStatesSql, stateSql } from "./read-statements.ts";

const chainSql = chainStatesSql(budgetTreeDepthMax);

type StateRow = Record<string, unknown> & {
  r_reserved_nanos: Int8 | null;
  r_hold_count: Int8 | null;
  expired_nanos: Int8;
  expired_count: Int8;
  has_children?: boolean;
};

/** On the pool (a read) or on a batch's client (under the project's lock). */
export async function readState(queryable: Pick<PoolClient, "query">, projectId: string, nowMs: number): Promise<BudgetState> {
  const { rows } = await queryable.query<StateRow>({ name: "tally_state", text: stateSql, values: [projectId, String(nowMs)] });
  const row = rows[0];
  if (row === undefined) throw new Error("invariant: the state read returned no row");
  return stateFromRow(row, projectId, nowMs);
}

/** The project's state and every ancestor's, nearest first, in one statement
 * (one snapshot): on the pool, or on a batch's client under the locks. */
export async function readChainStates(queryable: Pick<PoolClient, "query">, projectId: string, nowMs: number): Promise<BudgetState[]> {
  const { rows } = await queryable.query<StateRow & { level_id: string }>({
    name: "tally_chain_states",
    text: chainSql,
    values: [projectId, String(nowMs)],
  });
  if (rows.length === 0 || rows.length > budgetTreeDepthMax)
    throw new Error(`invariant: the chain of "${projectId}" read ${rows.length} levels`);
  return rows.map((row) => stateFromRow(row, row.level_id, nowMs));
}

function stateFromRow(row: StateRow, projectId: string, nowMs: number): BudgetState {
  const budgetRow = unprefix<BudgetRow>(row, "b_", budgetColumns, "limit_nanos");
  const totalsRow = unprefix<TotalsRow>(row, "t_", totalsColumns, "total_cost_nanos");
  const state = buildBudgetState(
    projectId,
    nowMs,
    budgetRow === null ? unsetBudget(projectId) : budgetFromRow({ ...budgetRow, project_id: projectId }),
    totalsRow === null ? null : storedTotalsFromRow(totalsRow, projectId),
    row.r_reserved_nanos === null ? null : { reservedNanos: BigInt(row.r_reserved_nanos), holdCount: BigInt(row.r_hold_count as Int8) },
    // Expired holds still in the table (not swept yet) stop counting now.
    () => ({ amountNanos: BigInt(row.expired_nanos), holdCount: BigInt(row.expired_count) }),
  );
  return row.has_children === undefined ? state : { ...state, hasChildren: row.has_children };
}
