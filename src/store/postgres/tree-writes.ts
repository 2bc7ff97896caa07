// Trees of budgets in the PostgreSQL store's batches (issue 18): which
// projects a batch locks (its projects and all their ancestors, in the one
// global key order of ./locks.ts), the check that the parent links read under
// those locks are covered by them (else the batch retries with the links it
// just read), ancestors' reservations, and re-parenting. The rules are the
// ledger's (src/ledger/budget-tree.ts).
import type { PoolClient } from "pg";
import { checkSameTreeSettings, deepestPath, planReparent } from "../../ledger/budget-tree.ts";
import { BudgetTreeMismatchError, ParentNotFoundError, TotalOverflowError } from "../../ledger/errors.ts";
import { projectOf, type WriteOp } from "../../ledger/store.ts";
import type { BudgetChange } from "../../ledger/types.ts";
import { budgetTreeDepthMax, postgresParentCacheEntriesMax } from "../../limits.ts";
import type { BudgetRow, Int8 } from "../rows.ts";
import type { BatchContext } from "./batch.ts";
import { projectLockKey } from "./locks.ts";
import {
  addReservationsSql,
  descendantsSql,
  hasChildrenSql,
  joinTotalsSql,
  leaveTotalsSql,
  setParentSql,
  subtractReservationsSql,
} from "./tree-statements.ts";

/** The parent links read under the locks were not all locked: retry the
 * batch (nothing was written) with the links now known. */
export class TreeLocksStaleError extends Error {
  override name = "TreeLocksStaleError";
  readonly code = "tally_tree_locks_stale";
}

/** The new parent a setBudget op names, or null. */
export const newParentOf = (op: WriteOp): string | null => (op.kind === "setBudget" && op.change.parentId ? op.change.parentId : null);

/** Parent links learned from batches' reads, to lock ancestors up front. */
export class ParentCache {
  readonly #parents = new Map<string, string>();

  /** The parent last read ("" none); undefined when not known here. */
  parentOf(projectId: string): string | undefined {
    return this.#parents.get(projectId);
  }

  #chain(projectId: string): string[] {
    const chain = [projectId];
    for (let p = this.#parents.get(projectId) ?? ""; p !== "" && chain.length <= budgetTreeDepthMax; p = this.#parents.get(p) ?? "")
      chain.push(p);
    return chain;
  }

  /** Every project the ops write, with its known ancestors, and the new
   * parents of re-parentings with theirs. */
  lockIds(ops: readonly WriteOp[]): string[] {
    const ids = new Set<string>();
    for (const op of ops) {
      for (const id of this.#chain(projectOf(op))) ids.add(id);
      const parent = newParentOf(op);
      if (parent !== null) for (const id of this.#chain(parent)) ids.add(id);
    }
    return [...ids];
  }

  /** Learns the links the batch read; throws TreeLocksStaleError when a chain
   * it needs has a project outside `lockedKeys`. */
  check(batch: BatchContext, ops: readonly WriteOp[], lockedKeys: ReadonlySet<number>): void {
    if (this.#parents.size > postgresParentCacheEntriesMax) this.#parents.clear();
    for (const [id, row] of batch.budgets) this.#parents.set(id, row?.parent_id ?? "");
    for (const op of ops) {
      const parent = newParentOf(op);
      const roots = parent !== null && batch.budgets.get(parent) != null ? [projectOf(op), parent] : [projectOf(op)];
      for (const root of roots) {
        for (const id of batch.chainOf(root)) {
          if (!lockedKeys.has(projectLockKey(id)))
            throw new TreeLocksStaleError(`the budget tree above "${root}" changed before its locks were taken`);
        }
      }
    }
  }
}

/** Adds a hold's amount to the reservations of `ids` (ancestors). */
export async function addReservations(
  client: PoolClient,
  ids: readonly string[],
  amountNanos: bigint,
  holdCount: bigint,
  nowMs: number,
): Promise<void> {
  if (ids.length === 0) return;
  const { rows } = await client.query<{ n: Int8 }>({
    name: "tally_tree_add_reservations",
    text: addReservationsSql,
    values: [ids, String(amountNanos), String(holdCount), String(nowMs)],
  });
  if (BigInt(rows[0]?.n ?? 0) !== BigInt(ids.length))
    throw new TotalOverflowError(ids[0]!, "reserved_nanos (rolled up from its descendants)");
}

export async function subtractReservations(
  client: PoolClient,
  ids: readonly string[],
  amountNanos: bigint,
  holdCount: bigint,
  nowMs: number,
): Promise<void> {
  if (ids.length === 0) return;
  const { rows } = await client.query<{ n: Int8; negative: Int8 }>({
    name: "tally_tree_subtract_reservations",
    text: subtractReservationsSql,
    values: [ids, String(amountNanos), String(holdCount), String(nowMs)],
  });
  if (BigInt(rows[0]?.n ?? 0) !== BigInt(ids.length) || BigInt(rows[0]?.negative ?? 0) !== 0n) {
    throw new Error(`invariant: reservations of ancestors ${ids.join(", ")} went negative or missing releasing ${amountNanos}`);
  }
}

/** After the budget row was upserted (`before` as the batch read it, `after`
 * as saved): keeps the tree valid and moves the subtree when the parent
 * changes. Throws a domain error (the caller rolls the op back) on a cycle,
 * a tree over the depth limit, a missing parent, or mixed settings. */
export async function applyTreeChange(
  client: PoolClient,
  change: BudgetChange,
  before: BudgetRow | null,
  after: BudgetRow,
  batch: BatchContext,
): Promise<void> {
  const projectId = change.projectId;
  const nowMs = batch.nowMs;
  const oldParent = before?.parent_id ?? "";
  const newParent = change.parentId ?? oldParent;
  const settingsChanged = before !== null && (before.currency !== after.currency || before.time_zone !== after.time_zone);
  if (
    settingsChanged &&
    (await client.query({ name: "tally_tree_has_children", text: hasChildrenSql, values: [projectId] })).rows.length > 0
  ) {
    throw new BudgetTreeMismatchError(
      `project "${projectId}" has child projects: a tree of budgets has one currency and one time zone, so they cannot change while it has children (detach them first); nothing was changed`,
    );
  }
  if (newParent !== "") {
    const parent = batch.budgets.get(newParent) ?? null;
    if (parent === null) throw new ParentNotFoundError(projectId, newParent);
    checkSameTreeSettings(
      { projectId, currency: after.currency, timeZone: after.time_zone },
      { projectId: newParent, currency: parent.currency, timeZone: parent.time_zone },
    );
  }
  if (newParent === oldParent) return;
  const { rows: below } = await client.query<{ project_id: string; parent_id: string }>({
    name: "tally_tree_descendants",
    text: descendantsSql,
    values: [projectId],
  });
  const children = new Map<string, string[]>();
  for (const row of below) children.set(row.parent_id, [...(children.get(row.parent_id) ?? []), row.project_id]);
  const parentOf = (id: string): string | null => {
    const row = id === projectId ? before : (batch.budgets.get(id) ?? null);
    const parent = row?.parent_id ?? "";
    return parent === "" ? null : parent;
  };
  const plan = planReparent(
    projectId,
    newParent === "" ? null : newParent,
    parentOf,
    deepestPath(projectId, (id) => children.get(id) ?? []),
  );
  await client.query({ name: "tally_tree_set_parent", text: setParentSql, values: [projectId, newParent] });
  const { rows: own } = await client.query<{ totals: boolean; reserved_nanos: Int8 | null; hold_count: Int8 | null }>({
    name: "tally_tree_moved_amounts",
    text: `SELECT EXISTS (SELECT 1 FROM project_totals WHERE project_id = $1) AS totals, r.reserved_nanos, r.hold_count
           FROM (SELECT 1) one LEFT JOIN project_reservations r ON r.project_id = $1`,
    values: [projectId],
  });
  const moved = own[0]!;
  if (moved.totals && plan.leave.length > 0) {
    const { rows } = await client.query<{ n: Int8; negative: Int8 }>({
      name: "tally_tree_leave",
      text: leaveTotalsSql,
      values: [plan.leave, projectId, String(nowMs)],
    });
    if (BigInt(rows[0]!.n) !== BigInt(plan.leave.length) || BigInt(rows[0]!.negative) !== 0n) {
      throw new Error(`invariant: ancestors ${plan.leave.join(", ")} of "${projectId}" had less rolled up than the subtree leaving them`);
    }
  }
  if (moved.totals && plan.join.length > 0) {
    const { rows } = await client.query<{ n: Int8 }>({
      name: "tally_tree_join",
      text: joinTotalsSql,
      values: [plan.join, projectId, String(nowMs)],
    });
    if (BigInt(rows[0]!.n) !== BigInt(plan.join.length))
      throw new TotalOverflowError(plan.join[0]!, "total_cost_nanos (rolled up from its descendants)");
  }
  const reserved = BigInt(moved.reserved_nanos ?? 0);
  const holds = BigInt(moved.hold_count ?? 0);
  if (holds > 0n) {
    await subtractReservations(client, plan.leave, reserved, holds, nowMs);
    await addReservations(client, plan.join, reserved, holds, nowMs);
  }
  batch.budgets.set(projectId, { ...after, parent_id: newParent });
}
