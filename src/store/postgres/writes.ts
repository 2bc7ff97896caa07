// The PostgreSQL store's writes, for several stateless replicas on one
// database (docs/decisions/0005-postgresql.md). Across replicas, everything is
// atomic in the database itself:
// - each batch first takes a transaction-scoped advisory lock per project it
//   touches, in ascending key order (./locks.ts), so writes to one project are
//   serialised across replicas (a batch sees every write committed before it
//   got the lock) and batches never deadlock on each other's row locks;
// - each op's writes are ONE statement (PostgreSQL runs a statement
//   atomically): a record is the guarded increment `INSERT ... ON CONFLICT DO
//   UPDATE ... WHERE total <= max - x RETURNING` (conditional on the
//   idempotency key being absent and, with hold_id, on the hold being active,
//   which the same statement deletes), the ledger insert and the breakdown
//   increment fed by its RETURNING. A refused op writes nothing and the batch
//   goes on, exactly like a rolled-back savepoint on SQLite. A reserve decides
//   on a read taken under the project's lock, then places the hold and the
//   reservation in one statement;
// - the unique index on (project_id, request_id) is the last word: if two
//   writers ever raced past the lock, the second statement fails and the whole
//   batch is retried, and the retry sees the first as a duplicate.
// Nothing is read without the project's lock and written back later. The
// decisions (alerts, reserve plan, refusal reasons) are the ledger's.
import type { Pool, PoolClient } from "pg";
import { advanceAlerts } from "../../ledger/alerts.ts";
import { CurrencyLockedError, HoldNotActiveError, HoldNotFoundError, TotalOverflowError } from "../../ledger/errors.ts";
import { periodKeys, type PeriodKeys } from "../../ledger/periods.ts";
import { isHoldActive, overflowingQuantity, whyInactive } from "../../ledger/refusals.ts";
import { planReserve } from "../../ledger/reserve-plan.ts";
import { projectOf, type OpResult, type WriteOp } from "../../ledger/store.ts";
import type { BudgetChange, CostEntry, HoldRequest, ThresholdCrossing } from "../../ledger/types.ts";
import { currencyDefault, postgresBatchAttemptsMax, timeZoneDefault } from "../../limits.ts";
import {
  alertStatesFromRows,
  budgetFromRow,
  duplicateOutcome,
  encodeDecision,
  holdFactsFromRow,
  holdFromRow,
  parseThresholds,
  pricingValues,
  replayReserve,
  totalsFromRow,
  type BudgetRow,
  type HoldRow,
  type Int8,
  type RecordRow,
  type ReserveKeyRow,
  type TotalsRow,
} from "../rows.ts";
import { holdColumns, recordColumns, totalsColumns, unprefix } from "./columns.ts";
import { isRetryable, unavailableOr, type AttemptState } from "./errors.ts";
import { lockProjectsSql, projectLockKeys, sortedLockKeys } from "./locks.ts";
import { ArchiveMarks, archiveProject, deleteProject, unarchiveProject } from "./project-removal.ts";
import { selectHoldSql } from "./read-statements.ts";
import { readState } from "./state.ts";
import {
  batchBudgetsSql,
  expiredProjectsSql,
  placeHoldSql,
  recordSql,
  releaseSql,
  selectReserveKeySql,
  setAlertsSql,
  setBudgetSql,
  sweepHoldsSql,
} from "./write-statements.ts";

/** The record statement's one row: `t_*` the totals after this write (null when
 * nothing was applied), `p_*` the existing record of this key, `c_*` the
 * totals before, `h_*` the hold named by hold_id before, `r_*` the project's
 * reservations after settling it. */
type RecordStatementRow = { inserted: Int8; labelled: Int8; settled_nanos: Int8 | null; r_reserved_nanos: Int8 | null; r_hold_count: Int8 | null } & Record<string, unknown>;

export class PostgresBatchWrites {
  readonly #pool: Pool;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  async commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]> {
    for (let attempt = 1; ; attempt++) {
      const state: AttemptState = { acquired: false, commitSent: false };
      try {
        return await this.#commitOnce(ops, nowMs, state);
      } catch (error) {
        if (attempt >= postgresBatchAttemptsMax || !isRetryable(error, state)) throw error;
        // Nothing of this attempt was committed. A short, growing pause lets a
        // conflicting transaction finish (or a dead connection be replaced).
        await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
      }
    }
  }

  async #commitOnce(ops: readonly WriteOp[], nowMs: number, state: AttemptState): Promise<OpResult[]> {
    const client = await this.#pool.connect();
    state.acquired = true;
    let discard = false;
    try {
      await client.query("BEGIN ISOLATION LEVEL READ COMMITTED");
      await client.query({ name: "tally_lock_projects", text: lockProjectsSql, values: [projectLockKeys(ops)] });
      const batch = new BatchContext(nowMs, await ArchiveMarks.read(client, [...new Set(ops.map(projectOf))]));
      const budgetIds = [...new Set(ops.filter((op) => op.kind === "record").map((op) => op.entry.projectId))];
      if (budgetIds.length > 0) {
        const { rows } = await client.query<BudgetRow>({ name: "tally_batch_budgets", text: batchBudgetsSql, values: [budgetIds] });
        for (const id of budgetIds) batch.budgets.set(id, null);
        for (const row of rows) batch.budgets.set(row.project_id, row);
      }
      const results: OpResult[] = [];
      for (const op of ops) results.push(await this.#applyOne(client, op, batch));
      state.commitSent = true;
      await client.query("COMMIT");
      return results;
    } catch (error) {
      // A connection that cannot even roll back is broken: the pool drops it
      // and opens a new one for the next batch.
      await client.query("ROLLBACK").catch(() => (discard = true));
      throw error;
    } finally {
      client.release(discard);
    }
  }

  async #applyOne(client: PoolClient, op: WriteOp, batch: BatchContext): Promise<OpResult> {
    switch (op.kind) {
      case "record":
        return batch.archives.refusal(op.entry.projectId) ?? this.#record(client, op.entry, batch);
      case "setBudget":
        return batch.archives.refusal(op.change.projectId) ?? this.#setBudget(client, op.change, batch);
      case "reserve":
        return batch.archives.refusal(op.request.projectId) ?? this.#reserve(client, op.request, batch.nowMs);
      case "release":
        return this.#release(client, op.projectId, op.holdId, batch.nowMs);
      case "archive":
        return archiveProject(client, batch.archives, op.projectId, batch.nowMs);
      case "unarchive":
        return unarchiveProject(client, batch.archives, op.projectId, batch.nowMs);
      case "delete": {
        const result = await deleteProject(client, batch.archives, op.projectId, op.noRecordsSinceMs, op.recordsMax, batch.nowMs);
        // Later records of this batch find no budget any more.
        if (result.ok && batch.budgets.has(op.projectId)) batch.budgets.set(op.projectId, null);
        return result;
      }
    }
  }

  async #record(client: PoolClient, entry: CostEntry, batch: BatchContext): Promise<OpResult> {
    const nowMs = batch.nowMs;
    const holdId = entry.holdId ?? "";
    const budgetRow = batch.budgets.get(entry.projectId) ?? null;
    const keys = batch.periodKeys(budgetRow?.time_zone ?? timeZoneDefault);
    const { rows } = await client.query<RecordStatementRow>({
      name: "tally_record",
      text: recordSql,
      values: [
        entry.projectId,
        entry.requestId,
        entry.costNanos.toString(),
        entry.inputTokens.toString(),
        entry.outputTokens.toString(),
        entry.agentId,
        entry.model,
        String(nowMs),
        holdId,
        keys.day,
        keys.month,
        ...pricingValues(entry),
      ],
    });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the record statement returned no row");
    const prior = unprefix<RecordRow>(row, "p_", recordColumns, "request_id");
    if (prior !== null) return duplicateOutcome(entry, prior);
    const totals = unprefix<TotalsRow>(row, "t_", totalsColumns, "total_cost_nanos");
    if (totals === null) {
      // Nothing applied: the hold was not active (checked first, as on
      // SQLite), or the increment would overflow.
      const hold = unprefix<HoldRow>(row, "h_", holdColumns, "hold_id");
      if (holdId !== "" && !isHoldActive(holdFactsFromRow(hold), entry.projectId, nowMs)) {
        return { ok: false, error: new HoldNotActiveError(entry.projectId, holdId, whyInactive(holdFactsFromRow(hold), entry.projectId, nowMs)) };
      }
      const current = unprefix<TotalsRow>(row, "c_", totalsColumns, "total_cost_nanos");
      if (current === null) throw new Error(`invariant: ${entry.projectId} refused an increment but has no totals row`);
      return { ok: false, error: new TotalOverflowError(entry.projectId, overflowingQuantity(entry, totalsFromRow(current, entry.projectId))) };
    }
    if (BigInt(row.inserted) !== 1n || BigInt(row.labelled) !== 1n) {
      throw new Error(`invariant: totals of ${entry.projectId} were incremented but ${String(row.inserted)} ledger and ${String(row.labelled)} label rows written`);
    }
    let settledHoldNanos = 0n;
    if (row.settled_nanos !== null) {
      settledHoldNanos = BigInt(row.settled_nanos);
      // Every hold row was counted in when it was placed.
      if (row.r_reserved_nanos === null || BigInt(row.r_reserved_nanos) < 0n || BigInt(row.r_hold_count as Int8) < 0n) {
        throw new Error(`invariant: reservations of project "${entry.projectId}" went negative or missing settling ${settledHoldNanos}`);
      }
    }
    const crossings = budgetRow === null ? [] : await this.#advanceAlerts(client, entry, budgetRow, totals, nowMs);
    return { ok: true, value: { totals: totalsFromRow(totals, entry.projectId), duplicate: false, requestId: entry.requestId, crossings, settledHoldNanos } };
  }

  /** Reports the thresholds this record crossed, each exactly once, and
   * advances the alert state (the row is ours until commit). */
  async #advanceAlerts(client: PoolClient, entry: CostEntry, budgetRow: BudgetRow, totals: TotalsRow, nowMs: number): Promise<ThresholdCrossing[]> {
    const { crossings, next } = advanceAlerts(entry.projectId, entry.requestId, parseThresholds(budgetRow.alert_thresholds_bps), alertStatesFromRows(budgetRow, totals), nowMs);
    if (next !== null) {
      await client.query({
        name: "tally_set_alerts",
        text: setAlertsSql,
        values: [entry.projectId, ...[next.lifetime, next.day, next.month].flatMap((a) => [a.alertedBps.toString(), a.alertedLimitNanos.toString()])],
      });
    }
    return crossings;
  }

  async #setBudget(client: PoolClient, change: BudgetChange, batch: BatchContext): Promise<OpResult> {
    const { rows } = await client.query<Record<string, unknown> & { project_id: string | null; wanted_currency: string; current_currency: string }>({
      name: "tally_set_budget",
      text: setBudgetSql,
      values: [
        change.projectId,
        change.limitNanos.toString(),
        change.currency,
        String(batch.nowMs),
        currencyDefault,
        change.dailyLimitNanos == null ? null : change.dailyLimitNanos.toString(),
        change.monthlyLimitNanos == null ? null : change.monthlyLimitNanos.toString(),
        change.timeZone ?? null,
        change.alertThresholdsBps == null ? null : change.alertThresholdsBps.join(","),
      ],
    });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the budget statement returned no row");
    if (row.project_id === null) return { ok: false, error: new CurrencyLockedError(change.projectId, row.current_currency, row.wanted_currency) };
    const saved = row as unknown as BudgetRow;
    // Later records of this batch see the new time zone and alert settings.
    if (batch.budgets.has(change.projectId)) batch.budgets.set(change.projectId, saved);
    return { ok: true, value: budgetFromRow(saved) };
  }

  async #reserve(client: PoolClient, request: HoldRequest, nowMs: number): Promise<OpResult> {
    // Read and decide under the project's lock: no other replica can change
    // this project's spend or holds until this transaction ends.
    const state = await readState(client, request.projectId, nowMs);
    if (request.requestId !== "") {
      const { rows: keys } = await client.query<ReserveKeyRow>({ name: "tally_select_reserve_key", text: selectReserveKeySql, values: [request.projectId, request.requestId] });
      const key = keys[0];
      if (key !== undefined) {
        const { rows: holds } = await client.query<HoldRow>({ name: "tally_select_hold", text: selectHoldSql, values: [key.hold_id] });
        return replayReserve(request, key, holds[0], state, nowMs);
      }
    }
    const plan = planReserve(request, state, nowMs);
    if (plan.kind === "refused") return { ok: true, value: plan.outcome };
    if (plan.kind === "tooManyHolds") return { ok: false, error: plan.error };
    const { hold, decision } = plan;
    const { rows } = await client.query<{ placed: Int8; keyed: Int8 }>({
      name: "tally_place_hold",
      text: placeHoldSql,
      values: [
        hold.holdId,
        hold.projectId,
        hold.amountNanos.toString(),
        String(nowMs),
        String(hold.expiresAtMs),
        request.requestId,
        String(request.ttlMs),
        encodeDecision(decision),
        request.tokenFingerprint ?? "",
      ],
    });
    // Without a limit nothing bounds the sum of holds but int64 itself.
    if (BigInt(rows[0]?.placed ?? 0) !== 1n) return { ok: false, error: new TotalOverflowError(request.projectId, "reserved_nanos") };
    if (BigInt(rows[0]?.keyed ?? 0) !== (request.requestId === "" ? 0n : 1n)) throw new Error(`invariant: hold ${hold.holdId} placed without its reserve key`);
    return { ok: true, value: { decision, state, hold } };
  }

  async #release(client: PoolClient, projectId: string, holdId: string, nowMs: number): Promise<OpResult> {
    const { rows } = await client.query<Record<string, unknown> & { r_reserved_nanos: Int8 | null; r_hold_count: Int8 | null }>({
      name: "tally_release",
      text: releaseSql,
      values: [projectId, holdId, String(nowMs)],
    });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the release statement returned no row");
    const released = unprefix<HoldRow>(row, "d_", holdColumns, "hold_id");
    if (released === null) return { ok: false, error: new HoldNotFoundError(holdId, whyInactive(holdFactsFromRow(unprefix<HoldRow>(row, "h_", holdColumns, "hold_id")), projectId, nowMs)) };
    if (row.r_reserved_nanos === null || BigInt(row.r_reserved_nanos) < 0n || BigInt(row.r_hold_count as Int8) < 0n) {
      throw new Error(`invariant: reservations of project "${projectId}" went negative or missing releasing hold ${holdId}`);
    }
    return { ok: true, value: holdFromRow(released) };
  }

  async deleteExpiredHolds(nowMs: number, countMax: number): Promise<number> {
    const { rows: candidates } = await this.#pool.query<{ project_id: string }>({ name: "tally_expired_projects", text: expiredProjectsSql, values: [String(nowMs), countMax] }).catch((error: unknown) => {
      throw unavailableOr(error, "read");
    });
    if (candidates.length === 0) return 0;
    const projectIds = candidates.map((r) => r.project_id);
    const client = await this.#connectOrUnavailable();
    let discard = false;
    try {
      await client.query("BEGIN ISOLATION LEVEL READ COMMITTED");
      // The same locks a batch takes, in the same order: the sweep never
      // deadlocks with a batch, and a hold is never settled and swept at once.
      await client.query({ name: "tally_lock_projects", text: lockProjectsSql, values: [sortedLockKeys(projectIds)] });
      const { rows } = await client.query<{ swept: Int8; projects: Int8; updated: Int8; negative: Int8 }>({
        name: "tally_sweep_holds",
        text: sweepHoldsSql,
        values: [String(nowMs), countMax, projectIds],
      });
      const row = rows[0];
      if (row === undefined || BigInt(row.updated) !== BigInt(row.projects) || BigInt(row.negative) !== 0n) {
        throw new Error("invariant: sweeping holds left reservations missing or negative");
      }
      await client.query("COMMIT");
      return Number(row.swept);
    } catch (error) {
      await client.query("ROLLBACK").catch(() => (discard = true));
      throw unavailableOr(error);
    } finally {
      client.release(discard);
    }
  }

  async #connectOrUnavailable(): Promise<PoolClient> {
    try {
      return await this.#pool.connect();
    } catch (error) {
      throw unavailableOr(error);
    }
  }
}

/** Per-batch memo: budget rows of the batch's recording projects (null: none),
 * and period keys (one Intl call per time zone per batch). */
class BatchContext {
  readonly nowMs: number;
  readonly budgets = new Map<string, BudgetRow | null>();
  readonly archives: ArchiveMarks;
  constructor(nowMs: number, archives: ArchiveMarks) {
    this.nowMs = nowMs;
    this.archives = archives;
  }
  /** periodKeys caches per minute itself. */
  periodKeys(timeZone: string): PeriodKeys {
    return periodKeys(this.nowMs, timeZone);
  }
}
