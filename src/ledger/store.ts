// The port the ledger needs from storage. Implemented in src/store/ for each
// database; the unit of work drives commitBatch.
//
// Every write op is applied inside the batch's transaction, atomically on its
// own (a failing op leaves nothing). All aggregates (lifetime, per day and
// month, per agent and model, reserved) change by SQL increments in the same
// transaction as the row that causes them: nothing is read into JS, changed
// and written back, and no read path scans the ledger. Portable SQL shapes:
// INSERT ... ON CONFLICT DO UPDATE/NOTHING ... RETURNING, conditional
// UPDATE/DELETE ... WHERE ... RETURNING.
import type {
  Breakdown,
  Budget,
  BudgetChange,
  BudgetState,
  CostEntry,
  CostRecordQuery,
  CostRecordView,
  Dimension,
  HoldRequest,
  Hold,
  ProjectTotals,
  RecordOutcome,
} from "./types.ts";
import type { WindowedDecision } from "./budget.ts";
import type { LevelInput, NestedDecision } from "./nested-decision.ts";
import type {
  ArchiveOutcome,
  CurrencyReserved,
  CurrencySpend,
  DeleteOutcome,
  ProjectEntry,
  ProjectListQuery,
  UnarchiveOutcome,
} from "./projects.ts";

/**
 * - record: add one call's cost. With entry.holdId: first delete that hold if
 *   it is active (same project, expires_at_ms > now) and decrement the
 *   project's reserved total; an inactive hold fails the op with
 *   HoldNotActiveError, except that a request_id already recorded is answered
 *   as a duplicate (or IdempotencyConflictError) as always. Increments the
 *   lifetime totals (overflow-guarded), the day and month totals of the
 *   project's time zone at `nowMs`, and the agent and model totals; then
 *   advances the alert state of each set limit and reports the thresholds
 *   crossed (RecordOutcome.crossings), each exactly once.
 * - setBudget: upsert the budget; null fields keep their current value.
 * - reserve: decide (decideLimits: spent per window + active holds + estimate
 *   <= limit for every set limit) and, when allowed, insert the hold and
 *   increment the reserved total, in the same transaction. HoldLimitError when
 *   the project has activeHoldsPerProjectMax active holds. With a requestId
 *   already in reserve_keys: no decision, the stored answer (replayReserve in
 *   src/store/rows.ts); an allowed reserve with a requestId stores its key,
 *   hold and decision in the same transaction.
 * - release: delete an active hold of the project and decrement the reserved
 *   total; HoldNotFoundError when it is not active (or of another project).
 * - record, setBudget and reserve of an archived project fail with
 *   ProjectArchivedError (checked in the op's transaction, so no write slips
 *   in after an archive commits); release still works (it only gives back).
 * - archive: mark an existing project (totals or budget row) archived at
 *   `nowMs`, or keep the first mark; ProjectNotFoundError otherwise.
 * - unarchive: remove the mark (wasArchived says whether there was one);
 *   ProjectNotFoundError for a project that does not exist.
 * - delete: remove every row of the project (totals, budget, records, label
 *   totals, alert and reservation state, reservation keys, archive mark) in the
 *   op's transaction; ProjectNotFoundError when it does not exist,
 *   ProjectInUseError (nothing deleted) when it recorded a cost at or after
 *   `noRecordsSinceMs`, has active holds, or has more than `recordsMax`
 *   records (deleteProjectRecordsMax, src/limits.ts).
 */
export type WriteOp =
  | { kind: "record"; entry: CostEntry }
  | { kind: "setBudget"; change: BudgetChange }
  | { kind: "reserve"; request: HoldRequest }
  | { kind: "release"; projectId: string; holdId: string }
  | { kind: "archive"; projectId: string }
  | { kind: "unarchive"; projectId: string }
  | { kind: "delete"; projectId: string; noRecordsSinceMs: number; recordsMax: number };

/** The project an op writes to (every op writes to exactly one). */
export function projectOf(op: WriteOp): string {
  switch (op.kind) {
    case "record":
      return op.entry.projectId;
    case "setBudget":
      return op.change.projectId;
    case "reserve":
      return op.request.projectId;
    case "release":
    case "archive":
    case "unarchive":
    case "delete":
      return op.projectId;
  }
}

/** What a reserve op returns: the decision and, when allowed, the hold. */
export interface ReserveOutcome {
  decision: WindowedDecision;
  state: BudgetState;
  hold: Hold | null;
  /** The stored answer to an earlier reserve with this request_id: nothing
   * was reserved now. Absent (false) for a fresh decision. */
  duplicate?: boolean;
  /** The decision over every level of the project's tree; absent from a
   * store without trees (the one-level decision is the whole one). */
  nested?: NestedDecision;
}

export type WriteValue<O extends WriteOp> = O extends { kind: "record" }
  ? RecordOutcome
  : O extends { kind: "setBudget" }
    ? Budget
    : O extends { kind: "reserve" }
      ? ReserveOutcome
      : O extends { kind: "archive" }
        ? ArchiveOutcome
        : O extends { kind: "unarchive" }
          ? UnarchiveOutcome
          : O extends { kind: "delete" }
            ? DeleteOutcome
            : Hold;

/** Per-op outcome of a committed batch: a value, or a domain error that left
 * nothing of that op in the database (the rest of the batch still commits). */
export type OpResult =
  | { ok: true; value: RecordOutcome | Budget | ReserveOutcome | Hold | ArchiveOutcome | UnarchiveOutcome | DeleteOutcome }
  | { ok: false; error: Error };

export interface LedgerStore {
  /** Whether this store keeps trees of budgets (parent_id, rolled-up totals,
   * decisions at every level). Without, a parent is refused at the API edge
   * (UNIMPLEMENTED) and every project is a tree of one. */
  readonly treesStored: boolean;
  /** The states of the project and of every ancestor, nearest first, each
   * rolled up (read as getBudgetState reads one); [the project's] without a
   * parent. */
  getChainStates(projectId: string, nowMs: number): Promise<BudgetState[]>;
  /** The chain's states (as getChainStates) and the levels a decision by
   * `agentId` ("" for none) is made over, read in one snapshot: the agent's
   * cap in the project when it has one, then each project with its rate limit
   * (src/ledger/cap-levels.ts). */
  getDecisionLevels(projectId: string, agentId: string, nowMs: number): Promise<{ chain: BudgetState[]; levels: LevelInput[] }>;
  /** The project's own calls' totals, without its descendants' (equal to
   * getTotals for a project without children). */
  getOwnTotals(projectId: string): Promise<ProjectTotals>;
  /** Applies every op in one transaction, each op atomic on its own (a failing
   * op leaves nothing and does not fail the others), and commits durably before
   * resolving. Throws only when the transaction as a whole failed, in which case
   * nothing of the batch was written. */
  commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]>;
  getTotals(projectId: string): Promise<ProjectTotals>;
  getBudget(projectId: string): Promise<Budget>;
  /** Budget and totals read together, consistent with each other. */
  getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }>;
  /** Everything a decision needs, read consistently: budget, lifetime totals,
   * the totals of the day and month containing `nowMs` in the project's time
   * zone (zeros when nothing was recorded in them), and the active holds
   * (reserved total minus the project's holds with expires_at_ms <= nowMs). */
  getBudgetState(projectId: string, nowMs: number): Promise<BudgetState>;
  /** Lifetime totals split by agent or model: highest cost first, ties by key,
   * at most `entriesMax` entries (truncated says whether more exist). */
  getBreakdown(projectId: string, dimension: Dimension, entriesMax: number): Promise<Breakdown>;
  /** One page of a project's cost records in (recorded_at_ms, id) order, each
   * with the running total stored in its row (total_cost_nanos_after). */
  listCostRecords(query: CostRecordQuery): Promise<CostRecordView[]>;
  /** The hold with this id, active or expired; null once settled, released,
   * swept, or never placed. */
  getHold(holdId: string): Promise<Hold | null>;
  /** Deletes at most `countMax` holds with expires_at_ms <= nowMs and
   * decrements their projects' reserved totals, in one transaction. Returns
   * how many were deleted. */
  deleteExpiredHolds(nowMs: number, countMax: number): Promise<number>;
  /** Deletes at most `countMax` reservation idempotency keys whose hold
   * expired before `beforeMs` (the sweeper passes now - reserveKeyKeepMs).
   * Returns how many were deleted. */
  deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number>;
  /** Deletes at most `countMax` cost records older than `beforeMs` (the totals
   * are untouched: they are lifetime). Returns how many were deleted. */
  deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number>;
  /** At most `query.limit` projects (any project with totals or a budget) after
   * `query.after` in `query.order`, each with its totals, budget and active
   * holds read consistently with each other. Active holds at `nowMs` follow
   * getBudgetState's rule (reserved total minus the project's holds with
   * expires_at_ms <= nowMs; 0 and 0 without holds), read for the whole page
   * with a bounded number of statements, never one query per project
   * (SQLite: one statement over the page's ids with `json_each`; PostgreSQL:
   * joined into the listing statement, a lateral index range per project). */
  listProjects(query: ProjectListQuery, nowMs: number): Promise<ProjectEntry[]>;
  /** Total spend and the number of projects that recorded costs, per currency. */
  spendByCurrency(): Promise<CurrencySpend[]>;
  /** Sum and count of the active holds at `nowMs` of all projects, per
   * currency (the project's budget currency; the default one without a
   * budget); only currencies with reservation rows appear. Bounded work, no
   * scan of all holds: the `project_reservations` totals (grouped by the
   * currency of the few projects not in the default one) minus the expired,
   * not yet swept holds (an index range on holds.expires_at_ms, small because
   * the sweeper runs every few seconds). For /metrics. */
  reservedByCurrency(nowMs: number): Promise<CurrencyReserved[]>;
  close(): Promise<void>;
}
