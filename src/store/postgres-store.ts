// LedgerStore on PostgreSQL, for several stateless replicas on one database.
// MikroORM owns the entities, the migrations and the connection pool; the hot
// path runs parameterised SQL on a client of that pool (the `pg` Pool behind
// MikroORM's connection), one READ COMMITTED transaction per batch
// (docs/decisions/0005-postgresql.md).
//
// Across replicas, everything is atomic in the database itself:
// - each batch first takes a transaction-scoped advisory lock per project it
//   touches, in ascending key order, so writes to one project are serialised
//   across replicas and batches never deadlock on each other's row locks;
// - each op is ONE statement (PostgreSQL runs a statement atomically): the
//   guarded increment `INSERT ... ON CONFLICT DO UPDATE ... WHERE total <= max -
//   x RETURNING`, conditional on the idempotency key being absent, and the
//   ledger insert fed by its RETURNING. A refused op writes nothing and the
//   batch goes on, exactly like a rolled-back savepoint on SQLite;
// - the unique index on (project_id, request_id) is the last word: if two
//   writers ever raced past the lock, the second statement fails and the whole
//   batch is retried, and the retry sees the first as a duplicate.
// Nothing is read in one statement and written back later from JavaScript.
import { createHash } from "node:crypto";
import type { Pool, PoolClient, QueryResultRow } from "pg";
import { CurrencyLockedError, IdempotencyConflictError, StoreUnavailableError, TotalOverflowError } from "../ledger/errors.ts";
import { int64Max } from "../ledger/money.ts";
import { ProjectOrder, type CurrencySpend, type ProjectEntry, type ProjectListQuery } from "../ledger/projects.ts";
import type { LedgerStore, OpResult, WriteOp } from "../ledger/store.ts";
import { sameEntry, zeroTotals, type Budget, type BudgetChange, type CostEntry, type ProjectTotals, type RecordOutcome } from "../ledger/types.ts";
import { currencyDefault, postgresBatchAttemptsMax } from "../limits.ts";

/** int8 columns arrive as strings (pg's default); every one goes through BigInt. */
type Int8 = string | bigint;

interface RecordStatementRow {
  total_cost_nanos: Int8 | null;
  input_tokens: Int8 | null;
  output_tokens: Int8 | null;
  record_count: Int8 | null;
  updated_at_ms: Int8 | null;
  inserted: Int8;
  prior_request_id: string | null;
  prior_cost_nanos: Int8 | null;
  prior_input_tokens: Int8 | null;
  prior_output_tokens: Int8 | null;
  prior_agent_id: string | null;
  prior_model: string | null;
  prior_recorded_at_ms: Int8 | null;
  prior_total_cost_nanos_after: Int8 | null;
  prior_input_tokens_after: Int8 | null;
  prior_output_tokens_after: Int8 | null;
  prior_record_count_after: Int8 | null;
  current_total_cost_nanos: Int8 | null;
  current_input_tokens: Int8 | null;
  current_output_tokens: Int8 | null;
}
interface TotalsRow {
  project_id: string;
  total_cost_nanos: Int8;
  input_tokens: Int8;
  output_tokens: Int8;
  record_count: Int8;
  updated_at_ms: Int8;
}
interface BudgetRow {
  project_id: string;
  limit_nanos: Int8;
  currency: string;
  updated_at_ms: Int8;
}

const INT64_MAX = int64Max.toString();

/** First key of every Tally advisory lock (pg_advisory_xact_lock(int4, int4)):
 * keeps Tally's locks apart from any other application's on the same database.
 * "Tly1" in ASCII. */
export const advisoryLockNamespace = 0x546c7931;
/** Second key of the lock held while migrations are applied at start. Project
 * locks use a hash of the project id as the second key; a collision with this
 * one would only make a batch wait for migrations, which are done by then. */
export const migrationLockKey = 0;

/** The second advisory-lock key of a project: 32 bits of SHA-256 of its id.
 * Computed here, not with a server-side hash, so every replica agrees
 * whatever the PostgreSQL version. Two projects sharing a key only share a lock. */
export function projectLockKey(projectId: string): number {
  return createHash("sha256").update(projectId).digest().readInt32BE(0);
}

// One statement per record. `prior` and `current_totals` read the statement's
// snapshot, taken after this transaction holds the project's advisory lock, so
// they are the latest committed state (plus this batch's own earlier ops).
const recordSql = `
WITH prior AS (
  SELECT * FROM cost_records WHERE project_id = $1 AND request_id = $2
), current_totals AS (
  SELECT * FROM project_totals WHERE project_id = $1
), applied AS (
  INSERT INTO project_totals AS t (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms)
  SELECT $1, $3::bigint, $4::bigint, $5::bigint, 1, $8::bigint, $8::bigint WHERE NOT EXISTS (SELECT 1 FROM prior)
  ON CONFLICT (project_id) DO UPDATE SET
    total_cost_nanos = t.total_cost_nanos + excluded.total_cost_nanos,
    input_tokens = t.input_tokens + excluded.input_tokens,
    output_tokens = t.output_tokens + excluded.output_tokens,
    record_count = t.record_count + 1,
    updated_at_ms = excluded.updated_at_ms
  WHERE t.total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
    AND t.input_tokens <= ${INT64_MAX} - excluded.input_tokens
    AND t.output_tokens <= ${INT64_MAX} - excluded.output_tokens
    AND t.record_count < ${INT64_MAX}
  RETURNING t.total_cost_nanos, t.input_tokens, t.output_tokens, t.record_count, t.updated_at_ms
), ledger AS (
  INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms,
    total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after)
  SELECT $1, $2, $3::bigint, $4::bigint, $5::bigint, $6, $7, $8::bigint, a.total_cost_nanos, a.input_tokens, a.output_tokens, a.record_count
  FROM applied a
  RETURNING id
)
SELECT a.total_cost_nanos, a.input_tokens, a.output_tokens, a.record_count, a.updated_at_ms,
  (SELECT count(*) FROM ledger) AS inserted,
  p.request_id AS prior_request_id, p.cost_nanos AS prior_cost_nanos, p.input_tokens AS prior_input_tokens,
  p.output_tokens AS prior_output_tokens, p.agent_id AS prior_agent_id, p.model AS prior_model,
  p.recorded_at_ms AS prior_recorded_at_ms, p.total_cost_nanos_after AS prior_total_cost_nanos_after,
  p.input_tokens_after AS prior_input_tokens_after, p.output_tokens_after AS prior_output_tokens_after,
  p.record_count_after AS prior_record_count_after,
  c.total_cost_nanos AS current_total_cost_nanos, c.input_tokens AS current_input_tokens, c.output_tokens AS current_output_tokens
FROM (SELECT 1) AS one
LEFT JOIN applied a ON true
LEFT JOIN prior p ON true
LEFT JOIN current_totals c ON true`;

// One statement per budget change: the currency may change only while the
// project has recorded nothing. Decided and written in the same statement,
// under the project's advisory lock.
const setBudgetSql = `
WITH current_budget AS (
  SELECT currency FROM project_budgets WHERE project_id = $1
), recorded AS (
  SELECT 1 FROM project_totals WHERE project_id = $1 AND record_count > 0
), wanted AS (
  SELECT COALESCE($3::text, (SELECT currency FROM current_budget), $5::text) AS currency,
         COALESCE((SELECT currency FROM current_budget), $5::text) AS current_currency
), saved AS (
  INSERT INTO project_budgets AS b (project_id, limit_nanos, currency, created_at_ms, updated_at_ms)
  SELECT $1, $2::bigint, w.currency, $4::bigint, $4::bigint FROM wanted w
  WHERE w.currency = w.current_currency OR NOT EXISTS (SELECT 1 FROM recorded)
  ON CONFLICT (project_id) DO UPDATE SET
    limit_nanos = excluded.limit_nanos, currency = excluded.currency, updated_at_ms = excluded.updated_at_ms
  RETURNING b.project_id, b.limit_nanos, b.currency, b.updated_at_ms
)
SELECT s.project_id, s.limit_nanos, s.currency, s.updated_at_ms, w.currency AS wanted_currency, w.current_currency
FROM wanted w LEFT JOIN saved s ON true`;

// Locks are taken in the order of the (sorted, distinct) array.
const lockProjectsSql = `SELECT pg_advisory_xact_lock(${advisoryLockNamespace}, k) FROM unnest($1::int4[]) AS k`;

const selectTotalsSql = `SELECT * FROM project_totals WHERE project_id = $1`;
const selectBudgetSql = `SELECT * FROM project_budgets WHERE project_id = $1`;
// One statement, one snapshot: budget and totals consistent with each other.
const selectBudgetAndTotalsSql = `
SELECT b.limit_nanos, b.currency, b.updated_at_ms AS budget_updated_at_ms,
  t.total_cost_nanos, t.input_tokens, t.output_tokens, t.record_count, t.updated_at_ms AS totals_updated_at_ms
FROM (SELECT 1) AS one
LEFT JOIN project_budgets b ON b.project_id = $1
LEFT JOIN project_totals t ON t.project_id = $1`;
// Project listings compare ids bytewise (COLLATE "C"), as SQLite does, so the
// order and the keyset cursor do not depend on the database's locale.
const listedColumns = `l.project_id, b.limit_nanos, b.currency, b.updated_at_ms AS budget_updated_at_ms,
  t.total_cost_nanos, t.input_tokens, t.output_tokens, t.record_count, t.updated_at_ms AS totals_updated_at_ms`;
const listByIdSql = `
WITH l AS (
  SELECT project_id FROM (
    SELECT project_id FROM (SELECT project_id FROM project_totals WHERE project_id COLLATE "C" > $1 ORDER BY project_id COLLATE "C" LIMIT $2) a
    UNION
    SELECT project_id FROM (SELECT project_id FROM project_budgets WHERE project_id COLLATE "C" > $1 ORDER BY project_id COLLATE "C" LIMIT $2) z
  ) u
  ORDER BY project_id COLLATE "C" LIMIT $2
)
SELECT ${listedColumns}
FROM l LEFT JOIN project_budgets b ON b.project_id = l.project_id LEFT JOIN project_totals t ON t.project_id = l.project_id
ORDER BY l.project_id COLLATE "C"`;
// By spend: each arm cut to the limit by its own top-N sort before the merge
// (no index on total_cost_nanos: it would cost every RecordCost an index update).
const listBySpentSql = `
WITH l AS (
  SELECT project_id, spent FROM (
  SELECT project_id, spent FROM (
    SELECT project_id, total_cost_nanos AS spent FROM project_totals
    WHERE $1::boolean OR total_cost_nanos < $2::bigint OR (total_cost_nanos = $2::bigint AND project_id COLLATE "C" > $3)
    ORDER BY total_cost_nanos DESC, project_id COLLATE "C" LIMIT $4) a
  UNION ALL
  SELECT project_id, spent FROM (
    SELECT bb.project_id, 0::bigint AS spent FROM project_budgets bb
    WHERE NOT EXISTS (SELECT 1 FROM project_totals tt WHERE tt.project_id = bb.project_id)
      AND ($1::boolean OR $2::bigint > 0 OR bb.project_id COLLATE "C" > $3)
    ORDER BY bb.project_id COLLATE "C" LIMIT $4) z
  ) u
  ORDER BY spent DESC, project_id COLLATE "C" LIMIT $4
)
SELECT ${listedColumns}
FROM l LEFT JOIN project_budgets b ON b.project_id = l.project_id LEFT JOIN project_totals t ON t.project_id = l.project_id
ORDER BY l.spent DESC, l.project_id COLLATE "C"`;
// sum(bigint) is numeric in PostgreSQL (it cannot overflow); the metric takes a float.
const spendByCurrencySql = `
SELECT currency, spent, projects FROM (
  SELECT COALESCE(b.currency, $1) AS currency, sum(t.total_cost_nanos)::float8 AS spent, count(*) AS projects
  FROM project_totals t LEFT JOIN project_budgets b ON b.project_id = t.project_id
  GROUP BY 1
) s ORDER BY currency COLLATE "C"`;

// SKIP LOCKED: replicas sweeping at the same time share the work instead of
// waiting on each other's rows.
const deleteBeforeSql = `
DELETE FROM cost_records WHERE id IN (
  SELECT id FROM cost_records WHERE recorded_at_ms < $1 ORDER BY recorded_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)`;

/** Errors that say the database (or the way to it) is unavailable right now,
 * not that Tally is wrong: lost or refused connections, a server shutting down,
 * too many connections, a statement or lock timeout, a pool that cannot hand
 * out a connection in time. Callers hear UNAVAILABLE and retry. */
export function isPostgresUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") {
    if (/^(ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ENETDOWN)$/.test(code)) return true;
    // SQLSTATE classes: 08 connection exception, 53 insufficient resources,
    // 57 operator intervention (shutdown, statement timeout, cannot connect now),
    // 40 transaction rollback (serialization failure, deadlock), 55P03 lock timeout,
    // 25P03 idle-in-transaction timeout.
    if (/^(08|53|57|40)[0-9A-Z]{3}$/.test(code) || code === "55P03" || code === "25P03") return true;
  }
  return /connection terminated|connection timeout|timeout exceeded when trying to connect|connection error|not queryable|connection ended|query read timeout|cannot use a pool after calling end/i.test(error.message);
}

/** How far one attempt at a batch got. */
interface AttemptState {
  /** A pooled connection was handed out. */
  acquired: boolean;
  /** COMMIT was sent: from here on the outcome may be unknown. */
  commitSent: boolean;
}

/** Whether a batch that failed with `error` may simply be run again. */
function isRetryable(error: unknown, state: AttemptState): boolean {
  const code = (error as { code?: unknown }).code;
  // Serialization failure, deadlock, and a unique violation from two writers
  // racing on one key (the retry sees the winner's record as a duplicate).
  if (code === "40001" || code === "40P01" || code === "23505") return true;
  // A pooled connection that turned out dead before COMMIT was sent (the server
  // restarted or closed it while idle): nothing was committed, and the retry
  // gets a new connection. Once COMMIT is sent the outcome is unknown, and the
  // caller hears UNAVAILABLE and retries with the same request_id (safe: it is
  // then a duplicate). A connection that could not be opened at all is not
  // retried here: the database is down, and callers should hear so now.
  return state.acquired && !state.commitSent && isPostgresUnavailable(error);
}

export class PostgresLedgerStore implements LedgerStore {
  readonly #pool: Pool;
  readonly #close: () => Promise<void>;

  /** `pool` is the pg Pool of an initialised, migrated MikroORM connection;
   * `close` releases it (the ORM's close). */
  constructor(pool: Pool, close: () => Promise<void>) {
    this.#pool = pool;
    this.#close = close;
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
      await client.query(lockProjectsSql, [projectLockKeys(ops)]);
      const results: OpResult[] = [];
      for (const op of ops) results.push(await this.#applyOne(client, op, nowMs));
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

  async #applyOne(client: PoolClient, op: WriteOp, nowMs: number): Promise<OpResult> {
    if (op.kind === "record") return this.#record(client, op.entry, nowMs);
    return this.#setBudget(client, op.change, nowMs);
  }

  async #record(client: PoolClient, entry: CostEntry, nowMs: number): Promise<OpResult> {
    const { rows } = await client.query<RecordStatementRow>({ name: "tally_record", text: recordSql, values: [
      entry.projectId,
      entry.requestId,
      entry.costNanos.toString(),
      entry.inputTokens.toString(),
      entry.outputTokens.toString(),
      entry.agentId,
      entry.model,
      String(nowMs),
    ] });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the record statement returned no row");
    if (row.prior_request_id !== null) return this.#duplicate(entry, row);
    if (row.total_cost_nanos === null) {
      return { ok: false, error: new TotalOverflowError(entry.projectId, overflowingQuantity(entry, row)) };
    }
    if (BigInt(row.inserted) !== 1n) throw new Error(`invariant: totals of ${entry.projectId} were incremented but ${String(row.inserted)} ledger rows inserted`);
    const totals: ProjectTotals = {
      projectId: entry.projectId,
      totalCostNanos: BigInt(row.total_cost_nanos),
      inputTokens: BigInt(row.input_tokens as Int8),
      outputTokens: BigInt(row.output_tokens as Int8),
      recordCount: BigInt(row.record_count as Int8),
      updatedAtMs: Number(row.updated_at_ms),
    };
    const outcome: RecordOutcome = { totals, duplicate: false, requestId: entry.requestId };
    return { ok: true, value: outcome };
  }

  #duplicate(entry: CostEntry, row: RecordStatementRow): OpResult {
    const original: CostEntry = {
      projectId: entry.projectId,
      requestId: row.prior_request_id as string,
      costNanos: BigInt(row.prior_cost_nanos as Int8),
      inputTokens: BigInt(row.prior_input_tokens as Int8),
      outputTokens: BigInt(row.prior_output_tokens as Int8),
      agentId: row.prior_agent_id as string,
      model: row.prior_model as string,
    };
    if (!sameEntry(original, entry)) {
      return { ok: false, error: new IdempotencyConflictError(entry.projectId, entry.requestId, describeDifference(original, entry)) };
    }
    const totals: ProjectTotals = {
      projectId: entry.projectId,
      totalCostNanos: BigInt(row.prior_total_cost_nanos_after as Int8),
      inputTokens: BigInt(row.prior_input_tokens_after as Int8),
      outputTokens: BigInt(row.prior_output_tokens_after as Int8),
      recordCount: BigInt(row.prior_record_count_after as Int8),
      updatedAtMs: Number(row.prior_recorded_at_ms),
    };
    return { ok: true, value: { totals, duplicate: true, requestId: entry.requestId } };
  }

  async #setBudget(client: PoolClient, change: BudgetChange, nowMs: number): Promise<OpResult> {
    const { rows } = await client.query<BudgetRow & { project_id: string | null; wanted_currency: string; current_currency: string }>({ name: "tally_set_budget", text: setBudgetSql, values: [
      change.projectId,
      change.limitNanos.toString(),
      change.currency,
      String(nowMs),
      currencyDefault,
    ] });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the budget statement returned no row");
    if (row.project_id === null) return { ok: false, error: new CurrencyLockedError(change.projectId, row.current_currency, row.wanted_currency) };
    return { ok: true, value: budgetFromRow(row) };
  }

  async getTotals(projectId: string): Promise<ProjectTotals> {
    const { rows } = await this.#read<TotalsRow>("tally_select_totals", selectTotalsSql, [projectId]);
    const row = rows[0];
    return row === undefined ? zeroTotals(projectId) : totalsFromRow(row);
  }

  async getBudget(projectId: string): Promise<Budget> {
    const { rows } = await this.#read<BudgetRow>("tally_select_budget", selectBudgetSql, [projectId]);
    const row = rows[0];
    return row === undefined ? unsetBudget(projectId) : budgetFromRow(row);
  }

  async getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }> {
    const { rows } = await this.#read<BudgetAndTotalsRow>("tally_select_budget_and_totals", selectBudgetAndTotalsSql, [projectId]);
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the budget-and-totals read returned no row");
    return budgetAndTotalsFromRow(projectId, row);
  }

  async listProjects(query: ProjectListQuery): Promise<ProjectEntry[]> {
    const afterId = query.after?.projectId ?? "";
    // One statement: every entry's budget and totals come from one snapshot.
    const { rows } =
      query.order === ProjectOrder.projectId
        ? await this.#read<BudgetAndTotalsRow & { project_id: string }>("tally_list_by_id", listByIdSql, [afterId, query.limit])
        : await this.#read<BudgetAndTotalsRow & { project_id: string }>("tally_list_by_spent", listBySpentSql, [
            query.after === null,
            (query.after?.spentNanos ?? 0n).toString(),
            afterId,
            query.limit,
          ]);
    return rows.map((row) => budgetAndTotalsFromRow(row.project_id, row));
  }

  async spendByCurrency(): Promise<CurrencySpend[]> {
    const { rows } = await this.#read<{ currency: string; spent: number; projects: Int8 }>("tally_spend_by_currency", spendByCurrencySql, [currencyDefault]);
    return rows.map((row) => ({ currency: row.currency, totalCostNanos: Number(row.spent), projects: Number(row.projects) }));
  }

  async deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number> {
    const result = await this.#read("tally_delete_before", deleteBeforeSql, [String(beforeMs), countMax]);
    return result.rowCount ?? 0;
  }

  /** A statement outside a batch (reads, retention). A database that cannot be
   * reached is UNAVAILABLE to the caller; anything else is a bug and stays one. */
  async #read<R extends object>(name: string, sql: string, params: unknown[]) {
    try {
      // Named: parsed and planned once per connection.
      return await this.#pool.query<R & QueryResultRow>({ name, text: sql, values: params });
    } catch (error) {
      if (isPostgresUnavailable(error)) throw new StoreUnavailableError(error, "read");
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.#close();
  }

  /** For tests and tools: the pool (e.g. to inspect the ledger). */
  get native(): Pool {
    return this.#pool;
  }
}

/** The distinct project lock keys of a batch, ascending: every batch takes its
 * locks in the same global order, so two batches can wait on each other only
 * one way round and never deadlock. */
export function projectLockKeys(ops: readonly WriteOp[]): number[] {
  const keys = new Set<number>();
  for (const op of ops) keys.add(projectLockKey(op.kind === "record" ? op.entry.projectId : op.change.projectId));
  return [...keys].sort((a, b) => a - b);
}

function overflowingQuantity(entry: CostEntry, row: RecordStatementRow): string {
  if (row.current_total_cost_nanos === null) throw new Error(`invariant: ${entry.projectId} refused an increment but has no totals row`);
  if (BigInt(row.current_total_cost_nanos) > int64Max - entry.costNanos) return "total_cost_nanos";
  if (BigInt(row.current_input_tokens as Int8) > int64Max - entry.inputTokens) return "input_tokens";
  if (BigInt(row.current_output_tokens as Int8) > int64Max - entry.outputTokens) return "output_tokens";
  return "record_count";
}

interface BudgetAndTotalsRow {
  limit_nanos: Int8 | null;
  currency: string | null;
  budget_updated_at_ms: Int8 | null;
  total_cost_nanos: Int8 | null;
  input_tokens: Int8 | null;
  output_tokens: Int8 | null;
  record_count: Int8 | null;
  totals_updated_at_ms: Int8 | null;
}

function budgetAndTotalsFromRow(projectId: string, row: BudgetAndTotalsRow): { budget: Budget; totals: ProjectTotals } {
  const budget =
    row.limit_nanos === null
      ? unsetBudget(projectId)
      : budgetFromRow({ project_id: projectId, limit_nanos: row.limit_nanos, currency: row.currency as string, updated_at_ms: row.budget_updated_at_ms as Int8 });
  const totals =
    row.total_cost_nanos === null
      ? zeroTotals(projectId)
      : totalsFromRow({
          project_id: projectId,
          total_cost_nanos: row.total_cost_nanos,
          input_tokens: row.input_tokens as Int8,
          output_tokens: row.output_tokens as Int8,
          record_count: row.record_count as Int8,
          updated_at_ms: row.totals_updated_at_ms as Int8,
        });
  return { budget, totals };
}

function totalsFromRow(row: TotalsRow): ProjectTotals {
  return {
    projectId: row.project_id,
    totalCostNanos: BigInt(row.total_cost_nanos),
    inputTokens: BigInt(row.input_tokens),
    outputTokens: BigInt(row.output_tokens),
    recordCount: BigInt(row.record_count),
    updatedAtMs: Number(row.updated_at_ms),
  };
}

function budgetFromRow(row: BudgetRow): Budget {
  return {
    projectId: row.project_id,
    limitNanos: BigInt(row.limit_nanos),
    currency: row.currency,
    configured: true,
    updatedAtMs: Number(row.updated_at_ms),
  };
}

function unsetBudget(projectId: string): Budget {
  return { projectId, limitNanos: 0n, currency: currencyDefault, configured: false, updatedAtMs: null };
}

function describeDifference(original: CostEntry, retry: CostEntry): string {
  const fields = ["costNanos", "inputTokens", "outputTokens", "agentId", "model"] as const;
  return fields
    .filter((field) => original[field] !== retry[field])
    .map((field) => `${field}: recorded ${String(original[field])}, now ${String(retry[field])}`)
    .join("; ");
}
