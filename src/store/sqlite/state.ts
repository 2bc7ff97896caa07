// A project's BudgetState read from SQLite, and the cache of the rows that
// read. The rules (current periods, expired holds subtracted) are the
// ledger's (src/ledger/budget-state.ts); this file reads and maps rows.
import { buildBudgetState } from "../../ledger/budget-state.ts";
import type { BudgetState } from "../../ledger/types.ts";
import { sqliteStateCacheEntriesMax } from "../../limits.ts";
import { budgetFromRow, storedTotalsFromRow, unsetBudget, type BudgetRow, type TotalsRow } from "../rows.ts";
import type { SqliteStatements } from "./statements.ts";

/** selectState: budget columns prefixed b_, reservations r_, then project_totals' own. */
type StateRow = {
  b_project_id: string | null;
  b_parent_id: string | null;
  has_children: bigint;
  r_hold_count: bigint | null;
  project_id: string | null;
} & Record<string, unknown>;
type ReservationsRow = { reserved_nanos: bigint; hold_count: bigint };

/** Reads outside a batch, with the last selectState row read per project for
 * projects without holds (their active holds depend on the clock, so they are
 * read every time). Only writes of this process change a project's rows (one
 * process per SQLite file: docs/deploy.md), and every write names its project,
 * so the store forgets the projects a batch touched once it has committed: a
 * read that starts after a write was acknowledged never sees the state before
 * it. Insertion order is age: the oldest entry goes first. */
export class SqliteStateCache {
  readonly #statements: SqliteStatements;
  readonly #rows = new Map<string, StateRow>();

  constructor(statements: SqliteStatements) {
    this.#statements = statements;
  }

  read(projectId: string, nowMs: number): BudgetState {
    let row = this.#rows.get(projectId);
    if (row === undefined) {
      row = this.#statements.selectState.get(projectId) as StateRow;
      // A project of a tree of budgets changes with writes to its
      // descendants too, which name another project: never cached.
      const inTree = (row.b_parent_id !== null && row.b_parent_id !== "") || row.has_children !== 0n;
      if (!inTree && (row.r_hold_count === null || row.r_hold_count === 0n)) {
        if (this.#rows.size >= sqliteStateCacheEntriesMax) this.#rows.delete(this.#rows.keys().next().value as string);
        this.#rows.set(projectId, row);
      }
    }
    let budgetRow: BudgetRow<bigint> | undefined;
    if (row.b_project_id !== null) {
      budgetRow = {
        project_id: row.b_project_id,
        limit_nanos: row.b_limit_nanos as bigint,
        currency: row.b_currency as string,
        updated_at_ms: row.b_updated_at_ms as bigint,
        daily_limit_nanos: row.b_daily_limit_nanos as bigint,
        monthly_limit_nanos: row.b_monthly_limit_nanos as bigint,
        time_zone: row.b_time_zone as string,
        alert_thresholds_bps: row.b_alert_thresholds_bps as string,
        parent_id: row.b_parent_id as string,
        agent_limit_nanos: row.b_agent_limit_nanos as bigint,
        agent_daily_limit_nanos: row.b_agent_daily_limit_nanos as bigint,
        agent_monthly_limit_nanos: row.b_agent_monthly_limit_nanos as bigint,
        agent_rate_limit_nanos_per_minute: row.b_agent_rate_limit_nanos_per_minute as bigint,
        agent_limit_overrides: row.b_agent_limit_overrides as string,
        rate_limit_nanos_per_minute: row.b_rate_limit_nanos_per_minute as bigint,
      };
    }
    const totalsRow = row.project_id !== null ? (row as unknown as TotalsRow<bigint>) : undefined;
    const reservations =
      row.r_hold_count !== null ? { reserved_nanos: row.r_reserved_nanos as bigint, hold_count: row.r_hold_count } : undefined;
    return {
      ...stateFromRows(this.#statements, projectId, nowMs, budgetRow, totalsRow, reservations),
      hasChildren: row.has_children !== 0n,
    };
  }

  /** The next read of this project goes to the database. (A project that
   * has a parent or children is never cached; one that gains its first child
   * is forgotten by the setBudget that attaches the child.) */
  forget(projectId: string): void {
    this.#rows.delete(projectId);
  }
}

/** The state inside a write transaction, with the batch's budget row. */
export function stateInBatch(
  statements: SqliteStatements,
  projectId: string,
  nowMs: number,
  budgetRow: BudgetRow<bigint> | undefined,
): BudgetState {
  const totalsRow = statements.selectTotals.get(projectId) as TotalsRow<bigint> | undefined;
  const reservations = statements.selectReservations.get(projectId) as ReservationsRow | undefined;
  return stateFromRows(statements, projectId, nowMs, budgetRow, totalsRow, reservations);
}

function stateFromRows(
  statements: SqliteStatements,
  projectId: string,
  nowMs: number,
  budgetRow: BudgetRow<bigint> | undefined,
  totalsRow: TotalsRow<bigint> | undefined,
  reservations: ReservationsRow | undefined,
): BudgetState {
  return buildBudgetState(
    projectId,
    nowMs,
    budgetRow === undefined ? unsetBudget(projectId) : budgetFromRow(budgetRow),
    totalsRow === undefined ? null : storedTotalsFromRow(totalsRow),
    reservations === undefined ? null : { reservedNanos: reservations.reserved_nanos, holdCount: reservations.hold_count },
    () => {
      // Expired holds still in the table (not swept yet).
      const expired = statements.selectExpiredHolds.get(projectId, nowMs) as { amount_nanos: bigint; hold_count: bigint };
      return { amountNanos: expired.amount_nanos, holdCount: expired.hold_count };
    },
  );
}
