// The PostgreSQL store's writes, for several stateless replicas on one
// database (docs/decisions/0005-postgresql.md). Across replicas, everything is
// atomic in the database itself:
// - each batch first takes a transaction-scoped advisory lock per project it
//   touches, in ascending key order (./locks.ts), so writes to one project are
//   serialised across replicas (a batch sees every write committed before it
//   got the lock) and batches never deadlock on each other's row locks;
// - a run of consecutive records is decided in JS from one read taken under
//   the locks and written by ONE set-based statement (./batch.ts, decision
//   0012): per project the summed increments, per record its own totals after
//   it. A refused record writes nothing and the batch goes on, exactly like a
//   rolled-back savepoint on SQLite. Every other op's writes are one statement
//   (PostgreSQL runs a statement atomically); a reserve decides on a read
//   taken under the project's lock, then places the hold and the reservation
//   in one statement;
// - the unique index on (project_id, request_id) is the last word: if two
//   writers ever raced past the lock, the second statement fails and the whole
//   batch is retried, and the retry sees the first as a duplicate.
// Nothing is read without the project's lock and written back later. The
// decisions (alerts, reserve plan, refusal reasons) are the ledger's.
import type { Pool, PoolClient } from "pg";
import { CurrencyLockedError, HoldNotFoundError, isOpError, ProjectInUseError, TotalOverflowError } from "../../ledger/errors.ts";
import { planNestedReserve } from "../../ledger/nested-reserve.ts";
import { whyInactive } from "../../ledger/refusals.ts";
import type { OpResult, WriteOp } from "../../ledger/store.ts";
import type { BudgetChange, HoldRequest } from "../../ledger/types.ts";
import { currencyDefault, postgresBatchAttemptsMax, rateBucketMs, rateWindowMs } from "../../limits.ts";
import { rateTargets } from "../../ledger/cap-levels.ts";
import { capValues, readDecisionLevels } from "./cap-reads.ts";
import { budgetFromRow, holdFactsFromRow, holdFromRow, type BudgetRow, type HoldRow, type Int8 } from "../rows.ts";
import { encodeDecision, replayReserve, type ReserveKeyRow } from "../reserve-rows.ts";
import { applyOps, beginAndLockSql, type BatchContext } from "./batch.ts";
import { holdColumns, unprefix } from "./columns.ts";
import { isRetryable, unavailableOr, type AttemptState } from "./errors.ts";
import { lockProjectsSql, sortedLockKeys } from "./locks.ts";
import { ancestorIdsSql, hasChildrenSql } from "./tree-statements.ts";
import { addReservations, applyTreeChange, newParentOf, ParentCache, subtractReservations } from "./tree-writes.ts";
import { archiveProject, deleteProject, unarchiveProject } from "./project-removal.ts";
import { selectHoldSql } from "./read-statements.ts";
import { readChainStates } from "./state.ts";
import {
  expiredProjectsSql,
  placeHoldSql,
  releaseSql,
  selectReserveKeySql,
  setBudgetSql,
  sweepHoldsSql,
  sweepRateBucketsSql,
  sweepRateHoldsSql,
} from "./write-statements.ts";

export class PostgresBatchWrites {
  readonly #pool: Pool;
  /** Parent links read by this replica's batches (reads use them too). */
  readonly parents = new ParentCache();

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
      // BEGIN and the locks in one round trip; then the ops (./batch.ts).
      // The ops' projects and every ancestor known (decision 0013), in the
      // one global order; the links read under the locks are checked.
      const keys = sortedLockKeys(this.parents.lockIds(ops));
      await client.query(beginAndLockSql(keys));
      const locked = new Set(keys);
      const newParents = ops.map(newParentOf).filter((id): id is string => id !== null);
      const results = await applyOps(
        client,
        ops,
        nowMs,
        (c, op, batch) => this.#applyOther(c, op, batch),
        (batch) => this.parents.check(batch, ops, locked),
        newParents,
      );
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

  /** Every op but records (those go in runs: ./batch.ts). */
  async #applyOther(client: PoolClient, op: Exclude<WriteOp, { kind: "record" }>, batch: BatchContext): Promise<OpResult> {
    switch (op.kind) {
      case "setBudget":
        return batch.archives.refusal(op.change.projectId) ?? this.#setBudget(client, op.change, batch);
      case "reserve":
        return batch.archives.refusal(op.request.projectId) ?? this.#reserve(client, op.request, batch);
      case "release":
        return this.#release(client, op.projectId, op.holdId, batch);
      case "archive":
        return archiveProject(client, batch.archives, op.projectId, batch.nowMs);
      case "unarchive":
        return unarchiveProject(client, batch.archives, op.projectId, batch.nowMs);
      case "delete": {
        // A project of a tree is not deleted: its spend is rolled up above it.
        const parent = batch.budgets.get(op.projectId)?.parent_id ?? "";
        if (parent !== "")
          return {
            ok: false,
            error: new ProjectInUseError(
              op.projectId,
              `has parent project "${parent}" (its spend is rolled up there): detach it first (set parent_id "")`,
            ),
          };
        if ((await client.query({ name: "tally_tree_has_children", text: hasChildrenSql, values: [op.projectId] })).rows.length > 0) {
          return { ok: false, error: new ProjectInUseError(op.projectId, "has child projects: detach or move them first") };
        }
        const result = await deleteProject(client, batch.archives, op.projectId, op.noRecordsSinceMs, op.recordsMax, batch.nowMs);
        // Later records of this batch find no budget any more.
        if (result.ok && batch.budgets.has(op.projectId)) batch.budgets.set(op.projectId, null);
        return result;
      }
    }
  }

  /** In a savepoint: the budget upsert and the tree's checks and moves are
   * several statements, and a refused tree change must leave nothing. */
  async #setBudget(client: PoolClient, change: BudgetChange, batch: BatchContext): Promise<OpResult> {
    await client.query("SAVEPOINT tally_set_budget");
    try {
      const result = await this.#setBudgetSaved(client, change, batch);
      await client.query(result.ok ? "RELEASE SAVEPOINT tally_set_budget" : "ROLLBACK TO SAVEPOINT tally_set_budget");
      return result;
    } catch (error) {
      if (!isOpError(error)) throw error;
      await client.query("ROLLBACK TO SAVEPOINT tally_set_budget");
      return { ok: false, error };
    }
  }

  async #setBudgetSaved(client: PoolClient, change: BudgetChange, batch: BatchContext): Promise<OpResult> {
    const before = batch.budgets.get(change.projectId) ?? null;
    const { rows } = await client.query<
      Record<string, unknown> & { project_id: string | null; wanted_currency: string; current_currency: string }
    >({
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
        ...capValues(change),
      ],
    });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the budget statement returned no row");
    if (row.project_id === null)
      return { ok: false, error: new CurrencyLockedError(change.projectId, row.current_currency, row.wanted_currency) };
    const saved = row as unknown as BudgetRow;
    // Later records of this batch see the new time zone and alert settings.
    batch.budgets.set(change.projectId, saved);
    try {
      await applyTreeChange(client, change, before, saved, batch);
    } catch (error) {
      // The op rolls back (the caller's savepoint): the batch keeps the row it read.
      batch.budgets.set(change.projectId, before);
      throw error;
    }
    return { ok: true, value: budgetFromRow(batch.budgets.get(change.projectId) ?? saved) };
  }

  async #reserve(client: PoolClient, request: HoldRequest, batch: BatchContext): Promise<OpResult> {
    const nowMs = batch.nowMs;
    // Read and decide under the locks of the project and its ancestors: no
    // other replica can change their spend or holds until this transaction ends.
    const chain = batch.chainOf(request.projectId);
    const states = await readChainStates(client, request.projectId, nowMs);
    // Under the locks, the links cannot have moved since the batch read them.
    if (states.map((s) => s.budget.projectId).join("\u0000") !== chain.join("\u0000")) {
      throw new Error(`invariant: the chain of "${request.projectId}" changed under its locks`);
    }
    const state = states[0]!;
    if (request.requestId !== "") {
      const { rows: keys } = await client.query<ReserveKeyRow>({
        name: "tally_select_reserve_key",
        text: selectReserveKeySql,
        values: [request.projectId, request.requestId],
      });
      const key = keys[0];
      if (key !== undefined) {
        const { rows: holds } = await client.query<HoldRow>({ name: "tally_select_hold", text: selectHoldSql, values: [key.hold_id] });
        return replayReserve(request, key, holds[0], state, nowMs);
      }
    }
    // Every level decides (the agent's cap and the rates too, read under the
    // same locks); the hold counts at every level or at none.
    const agentId = request.agentId ?? "";
    const plan = planNestedReserve(request, states, nowMs, await readDecisionLevels(client, states, agentId, nowMs));
    if (plan.kind === "refused") return { ok: true, value: plan.outcome };
    if (plan.kind === "tooManyHolds") return { ok: false, error: plan.error };
    const { hold, decision, nested } = plan;
    const ancestors = chain.slice(1);
    if (ancestors.length > 0) await client.query("SAVEPOINT tally_reserve");
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
        agentId,
        rateTargets(
          states.map((level) => level.budget),
          "",
        ).projects,
      ],
    });
    // Without a limit nothing bounds the sum of holds but int64 itself.
    if (BigInt(rows[0]?.placed ?? 0) !== 1n) {
      if (ancestors.length > 0) await client.query("RELEASE SAVEPOINT tally_reserve");
      return { ok: false, error: new TotalOverflowError(request.projectId, "reserved_nanos") };
    }
    if (BigInt(rows[0]?.keyed ?? 0) !== (request.requestId === "" ? 0n : 1n))
      throw new Error(`invariant: hold ${hold.holdId} placed without its reserve key`);
    if (ancestors.length > 0) {
      try {
        await addReservations(client, ancestors, hold.amountNanos, 1n, nowMs);
        await client.query("RELEASE SAVEPOINT tally_reserve");
      } catch (error) {
        if (!isOpError(error)) throw error;
        await client.query("ROLLBACK TO SAVEPOINT tally_reserve");
        return { ok: false, error };
      }
    }
    return { ok: true, value: { decision, state, hold, nested } };
  }

  async #release(client: PoolClient, projectId: string, holdId: string, batch: BatchContext): Promise<OpResult> {
    const nowMs = batch.nowMs;
    const { rows } = await client.query<Record<string, unknown> & { r_reserved_nanos: Int8 | null; r_hold_count: Int8 | null }>({
      name: "tally_release",
      text: releaseSql,
      values: [projectId, holdId, String(nowMs)],
    });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the release statement returned no row");
    const released = unprefix<HoldRow>(row, "d_", holdColumns, "hold_id");
    if (released === null)
      return {
        ok: false,
        error: new HoldNotFoundError(
          holdId,
          whyInactive(holdFactsFromRow(unprefix<HoldRow>(row, "h_", holdColumns, "hold_id")), projectId, nowMs),
        ),
      };
    if (row.r_reserved_nanos === null || BigInt(row.r_reserved_nanos) < 0n || BigInt(row.r_hold_count as Int8) < 0n) {
      throw new Error(`invariant: reservations of project "${projectId}" went negative or missing releasing hold ${holdId}`);
    }
    await subtractReservations(client, batch.chainOf(projectId).slice(1), BigInt(released.amount_nanos), 1n, nowMs);
    return { ok: true, value: holdFromRow(released) };
  }

  async deleteExpiredHolds(nowMs: number, countMax: number): Promise<number> {
    await this.#sweepRates(nowMs, countMax);
    const { rows: candidates } = await this.#pool
      .query<{ project_id: string }>({ name: "tally_expired_projects", text: expiredProjectsSql, values: [String(nowMs), countMax] })
      .catch((error: unknown) => {
        throw unavailableOr(error, "read");
      });
    if (candidates.length === 0) return 0;
    const projectIds = candidates.map((r) => r.project_id);
    // Their ancestors too (the sweep takes the holds off every level): read
    // before the locks; a re-parenting in between only moves which ancestors'
    // rows the sweep decrements, by the links read in its statement, and a
    // decrement never lets a reservation pass a limit.
    const { rows: ancestors } = await this.#pool
      .query<{ project_id: string }>({ name: "tally_tree_ancestors", text: ancestorIdsSql, values: [projectIds] })
      .catch((error: unknown) => {
        throw unavailableOr(error, "read");
      });
    const lockIds = [...projectIds, ...ancestors.map((r) => r.project_id)];
    const client = await this.#connectOrUnavailable();
    let discard = false;
    try {
      await client.query("BEGIN ISOLATION LEVEL READ COMMITTED");
      // The same locks a batch takes, in the same order: the sweep never
      // deadlocks with a batch, and a hold is never settled and swept at once.
      await client.query({ name: "tally_lock_projects", text: lockProjectsSql, values: [sortedLockKeys(lockIds)] });
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

  /** What no rate counts any more: expired holds' entries, buckets past the window. */
  async #sweepRates(nowMs: number, countMax: number): Promise<void> {
    try {
      await this.#pool.query({ name: "tally_sweep_rate_holds", text: sweepRateHoldsSql, values: [String(nowMs), countMax] });
      const beforeMs = nowMs - rateWindowMs - rateBucketMs;
      await this.#pool.query({ name: "tally_sweep_rate_buckets", text: sweepRateBucketsSql, values: [String(beforeMs), countMax] });
    } catch (error) {
      throw unavailableOr(error);
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
