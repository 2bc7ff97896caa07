// The port the ledger needs from storage. Implemented in src/store/ for each
// database; the unit of work drives commitBatch.
import type { CurrencySpend, ProjectEntry, ProjectListQuery } from "./projects.ts";
import type { Budget, BudgetChange, CostEntry, ProjectTotals, RecordOutcome } from "./types.ts";

export type WriteOp = { kind: "record"; entry: CostEntry } | { kind: "setBudget"; change: BudgetChange };

export type WriteValue<O extends WriteOp> = O extends { kind: "record" } ? RecordOutcome : Budget;

/** Per-op outcome of a committed batch: a value, or a domain error that left
 * nothing of that op in the database (the rest of the batch still commits). */
export type OpResult = { ok: true; value: RecordOutcome | Budget } | { ok: false; error: Error };

export interface LedgerStore {
  /** Applies every op in one transaction, each op atomic on its own (a failing
   * op leaves nothing and does not fail the others), and commits durably before
   * resolving. Throws only when the transaction as a whole failed, in which case
   * nothing of the batch was written. */
  commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]>;
  getTotals(projectId: string): Promise<ProjectTotals>;
  getBudget(projectId: string): Promise<Budget>;
  /** Budget and totals read together, consistent with each other. */
  getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }>;
  /** Deletes at most `countMax` cost records older than `beforeMs` (the totals
   * are untouched: they are lifetime). Returns how many were deleted. */
  deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number>;
  /** At most `query.limit` projects (any project with totals or a budget) after
   * `query.after` in `query.order`, each with its totals and budget read
   * consistently with each other. */
  listProjects(query: ProjectListQuery): Promise<ProjectEntry[]>;
  /** Total spend and the number of projects that recorded costs, per currency. */
  spendByCurrency(): Promise<CurrencySpend[]>;
  close(): Promise<void>;
}
