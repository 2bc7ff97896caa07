// Trees of budgets in the SQLite store's write transaction (issue 18): the
// chain of a project (read through the batch's budget rows), reserved totals
// changed at every level, and re-parenting, which moves the subtree's
// rolled-up totals and holds from the ancestors it leaves to those it joins
// in the same transaction. The rules (cycles, depth, one currency and time
// zone, leave and join) are the ledger's (src/ledger/budget-tree.ts).
import { ancestorChain, checkSameTreeSettings, deepestPath, planReparent } from "../../ledger/budget-tree.ts";
import { BudgetTreeMismatchError, ParentNotFoundError, ProjectInUseError, TotalOverflowError } from "../../ledger/errors.ts";
import type { BudgetRow, TotalsRow } from "../rows.ts";
import type { SqliteStatements } from "./statements.ts";
import type { SqliteTreeStatements } from "./tree-statements.ts";

type Row = BudgetRow<bigint>;

export class SqliteTreeWrites {
  readonly #s: SqliteStatements;
  readonly #t: SqliteTreeStatements;
  readonly #budgetRow: (projectId: string) => Row | undefined;

  /** `budgetRow` reads a project's budget row as the batch sees it. */
  constructor(statements: SqliteStatements, tree: SqliteTreeStatements, budgetRow: (projectId: string) => Row | undefined) {
    this.#s = statements;
    this.#t = tree;
    this.#budgetRow = budgetRow;
  }

  parentOf(projectId: string): string | null {
    const parent = this.#budgetRow(projectId)?.parent_id ?? "";
    return parent === "" ? null : parent;
  }

  /** [project, parent, ..., root]. */
  chain(projectId: string): string[] {
    return ancestorChain(projectId, (id) => this.parentOf(id));
  }

  /** A project of a tree is not deleted: its spend is rolled up into its
   * ancestors, and its children would lose their parent. Detaching first
   * moves the amounts out exactly. */
  refuseDelete(projectId: string): void {
    const parent = this.parentOf(projectId);
    if (parent !== null)
      throw new ProjectInUseError(
        projectId,
        `has parent project "${parent}" (its spend is rolled up there): detach it first (set parent_id "")`,
      );
    if (this.#t.hasChildren.get(projectId) !== undefined)
      throw new ProjectInUseError(projectId, "has child projects: detach or move them first");
  }

  /** Adds a new hold's amount to the reserved total of every level. */
  addReservation(chain: readonly string[], amountNanos: bigint, nowMs: number): void {
    for (const projectId of chain) {
      // Without a limit nothing bounds the sum of holds but int64 itself.
      if (this.#s.addReservation.get({ projectId, amountNanos, nowMs }) === undefined)
        throw new TotalOverflowError(projectId, "reserved_nanos");
    }
  }

  /** Takes settled, released or swept holds off every level. */
  subtractReservation(chain: readonly string[], amountNanos: bigint, holdCount: bigint, nowMs: number): void {
    for (const projectId of chain) {
      const after = this.#s.subtractReservation.get({ projectId, amountNanos, holdCount, nowMs }) as
        | { reserved_nanos: bigint; hold_count: bigint }
        | undefined;
      // Every hold row was counted in at every level when it was placed.
      if (after === undefined || after.reserved_nanos < 0n || after.hold_count < 0n) {
        throw new Error(`invariant: reservations of project "${projectId}" went negative or missing releasing ${amountNanos}`);
      }
    }
  }

  /** After the project's budget row was upserted in this transaction (`before`
   * its row as it was, `after` as it is now): keeps the tree valid and, when
   * `parentId` changes the parent (null keeps it, "" detaches), moves the
   * subtree's amounts. Throws (rolling the op back) on a cycle, a tree over
   * the depth limit, a missing parent, or a currency or time zone that would
   * differ within a tree. */
  apply(projectId: string, parentId: string | null | undefined, before: Row | undefined, after: Row, nowMs: number): void {
    const oldParent = before?.parent_id ?? "";
    const newParent = parentId ?? oldParent;
    const settingsChanged = before !== undefined && (before.currency !== after.currency || before.time_zone !== after.time_zone);
    if (settingsChanged && this.#t.hasChildren.get(projectId) !== undefined) {
      throw new BudgetTreeMismatchError(
        `project "${projectId}" has child projects: a tree of budgets has one currency and one time zone, so they cannot change while it has children (detach them first); nothing was changed`,
      );
    }
    if (newParent !== "") {
      const parent = this.#s.selectBudget.get(newParent) as Row | undefined;
      if (parent === undefined) throw new ParentNotFoundError(projectId, newParent);
      checkSameTreeSettings(
        { projectId, currency: after.currency, timeZone: after.time_zone },
        { projectId: newParent, currency: parent.currency, timeZone: parent.time_zone },
      );
    }
    if (newParent === oldParent) return;
    const parentOf = (id: string): string | null => {
      const row = id === projectId ? before : (this.#s.selectBudget.get(id) as Row | undefined);
      const parent = row?.parent_id ?? "";
      return parent === "" ? null : parent;
    };
    const childrenOf = (id: string) => (this.#t.selectChildren.all(id) as Array<{ project_id: string }>).map((r) => r.project_id);
    const plan = planReparent(projectId, newParent === "" ? null : newParent, parentOf, deepestPath(projectId, childrenOf));
    this.#t.setParent.run({ projectId, parentId: newParent });
    const totals = this.#s.selectTotals.get(projectId) as TotalsRow<bigint> | undefined;
    const reservations = this.#s.selectReservations.get(projectId) as { reserved_nanos: bigint; hold_count: bigint } | undefined;
    for (const ancestor of plan.leave) {
      if (totals !== undefined) {
        const left = this.#t.leaveTotals.get({ ...totals, projectId: ancestor, nowMs }) as
          | { total_cost_nanos: bigint; record_count: bigint; day_cost_nanos: bigint; month_cost_nanos: bigint }
          | undefined;
        if (
          left === undefined ||
          left.total_cost_nanos < 0n ||
          left.record_count < 0n ||
          left.day_cost_nanos < 0n ||
          left.month_cost_nanos < 0n
        ) {
          throw new Error(`invariant: ancestor "${ancestor}" of "${projectId}" had less rolled up than the subtree leaving it`);
        }
      }
      if (reservations !== undefined && reservations.hold_count > 0n)
        this.subtractReservation([ancestor], reservations.reserved_nanos, reservations.hold_count, nowMs);
    }
    for (const ancestor of plan.join) {
      if (totals !== undefined && this.#t.joinTotals.get({ ...totals, projectId: ancestor, nowMs }) === undefined)
        throw new TotalOverflowError(ancestor, "total_cost_nanos");
      if (reservations !== undefined && reservations.hold_count > 0n) {
        if (this.#t.joinReservations.get({ ...reservations, projectId: ancestor, nowMs }) === undefined)
          throw new TotalOverflowError(ancestor, "reserved_nanos");
      }
    }
  }
}
