// One PostgreSQL batch, in a constant number of round trips for RecordCost
// (docs/decisions/0012-postgresql-set-based-batches.md): BEGIN and the project locks in one round trip, then each
// run of consecutive records is one read and one write statement whatever its
// length (./record-plan.ts decides, ./record-statements.ts reads and writes),
// and the other ops (budgets, holds, archive, delete: rare and each needing
// its own decision) one statement or two each, in batch order; then COMMIT.
// A batch of only records sends four statements in all.
import type { PoolClient } from "pg";
import { ancestorChain } from "../../ledger/budget-tree.ts";
import { periodKeys, type PeriodKeys } from "../../ledger/periods.ts";
import { projectOf, type OpResult, type WriteOp } from "../../ledger/store.ts";
import type { CostEntry } from "../../ledger/types.ts";
import { advisoryLockNamespace } from "./locks.ts";
import { ArchiveMarks } from "./project-removal.ts";
import type { BudgetRow } from "../rows.ts";
import { planRecords, type RecordContext } from "./record-plan.ts";
import { readForRecords, writeRecordPlan, type RecordRead } from "./record-statements.ts";

/** What a batch knows of its projects, read once after its locks and kept
 * current by its own ops: archive marks, and budget rows (null: none). */
export class BatchContext {
  readonly nowMs: number;
  readonly budgets = new Map<string, BudgetRow | null>();
  readonly archives: ArchiveMarks;

  constructor(nowMs: number, projectIds: readonly string[], read: Pick<RecordRead, "archives" | "budgets">) {
    this.nowMs = nowMs;
    this.archives = ArchiveMarks.fromRows(read.archives);
    for (const id of projectIds) this.budgets.set(id, null);
    for (const row of read.budgets) this.budgets.set(row.project_id, row);
  }

  /** periodKeys caches per minute itself. */
  periodKeys(timeZone: string): PeriodKeys {
    return periodKeys(this.nowMs, timeZone);
  }

  /** [project, parent, ..., root] from the budget rows read under the locks
   * (the first read brings every ancestor's). */
  chainOf(projectId: string): string[] {
    return ancestorChain(projectId, (id) => {
      const parent = this.budgets.get(id)?.parent_id ?? "";
      if (parent !== "" && !this.budgets.has(parent))
        throw new Error(`invariant: the batch read no budget of "${parent}", parent of "${id}"`);
      return parent === "" ? null : parent;
    });
  }

  recordContext(): RecordContext {
    return {
      nowMs: this.nowMs,
      budgetOf: (projectId) => this.budgets.get(projectId) ?? null,
      chainOf: (projectId) => this.chainOf(projectId),
      refusal: (projectId) => this.archives.refusal(projectId),
      periodKeys: (timeZone) => this.periodKeys(timeZone),
    };
  }
}

/** BEGIN and every lock of the batch in one round trip (simple protocol, two
 * statements; the keys are integers computed here, never caller text). The
 * locks are taken in the order of the sorted, distinct keys. */
export function beginAndLockSql(sortedKeys: readonly number[]): string {
  for (const k of sortedKeys) if (!Number.isInteger(k)) throw new Error(`invariant: lock key ${k} is not an integer`);
  return `BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(${advisoryLockNamespace}, k) FROM unnest('{${sortedKeys.join(",")}}'::int4[]) AS k`;
}

/** Applies `ops` in order inside the open, locked transaction; records in
 * runs, everything else through `applyOther`. */
export async function applyOps(
  client: PoolClient,
  ops: readonly WriteOp[],
  nowMs: number,
  applyOther: (client: PoolClient, op: Exclude<WriteOp, { kind: "record" }>, batch: BatchContext) => Promise<OpResult>,
  /** Called once with the batch's context, before any op: the caller checks
   * that its locks cover every chain read (and throws to retry if not). */
  onContext: (batch: BatchContext) => void = () => {},
  /** Projects whose budgets (and ancestors') the context needs beside the
   * ops' own: the new parents of re-parentings. */
  alsoRead: readonly string[] = [],
): Promise<OpResult[]> {
  const projectIds = [...new Set([...ops.map(projectOf), ...alsoRead])];
  let batch: BatchContext | null = null;
  const results: OpResult[] = [];
  for (let i = 0; i < ops.length; ) {
    const op = ops[i] as WriteOp;
    if (op.kind !== "record") {
      if (batch === null) {
        batch = new BatchContext(nowMs, projectIds, await readForRecords(client, projectIds, []));
        onContext(batch);
      }
      results.push(await applyOther(client, op, batch));
      i++;
      continue;
    }
    const entries: CostEntry[] = [];
    for (; i < ops.length && (ops[i] as WriteOp).kind === "record"; i++)
      entries.push((ops[i] as Extract<WriteOp, { kind: "record" }>).entry);
    // The first read of the batch also brings its archive marks and budgets.
    const read = await readForRecords(client, batch === null ? projectIds : [], entries);
    if (batch === null) {
      batch = new BatchContext(nowMs, projectIds, read);
      onContext(batch);
    }
    const plan = planRecords(entries, read.reads, batch.recordContext());
    await writeRecordPlan(client, plan, nowMs);
    results.push(...plan.results);
  }
  return results;
}
