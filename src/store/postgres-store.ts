// LedgerStore on PostgreSQL, for several stateless replicas on one database.
// MikroORM owns the entities, the migrations and the connection pool; the hot
// path runs parameterised SQL on a client of that pool (the `pg` Pool behind
// MikroORM's connection), one READ COMMITTED transaction per batch
// (docs/decisions/0005-postgresql.md).
//
// Across replicas, everything is atomic in the database itself:
// - each batch first takes a transaction-scoped advisory lock per project it
//   touches, in ascending key order, so writes to one project are serialised
//   across replicas (a batch sees every write committed before it got the
//   lock) and batches never deadlock on each other's row locks;
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
// Nothing is read without the project's lock and written back later.
import { createHash } from "node:crypto";
import { ArchiveMarks, archiveProject, deleteProject, unarchiveProject } from "./postgres-project-removal.ts";
import type { Pool, PoolClient, QueryResultRow } from "pg";
import { crossedBps, decideLimits, highestReachedBps, limitInputsOf } from "../ledger/budget.ts";
import {
  CurrencyLockedError,
  HoldLimitError,
  HoldNotActiveError,
  HoldNotFoundError,
  StoreUnavailableError,
  TotalOverflowError,
} from "../ledger/errors.ts";
import { int64Max } from "../ledger/money.ts";
import { periodKeys, type PeriodKeys } from "../ledger/periods.ts";
import { ProjectOrder, type CurrencyReserved, type CurrencySpend, type ProjectEntry, type ProjectListQuery } from "../ledger/projects.ts";
import { projectOf, type LedgerStore, type OpResult, type ReserveOutcome, type WriteOp } from "../ledger/store.ts";
import {
  budgetFromRow,
  duplicateOutcome,
  encodeDecision,
  holdFromRow,
  parseThresholds,
  pricingValues,
  recordViewFromRow,
  replayReserve,
  totalsFromRow,
  unsetBudget,
  type BudgetRow,
  type HoldRow,
  type Int8,
  type RecordRow,
  type ReserveKeyRow,
  type TotalsRow,
} from "./rows.ts";
import {
  Window,
  zeroTotals,
  type Breakdown,
  type Budget,
  type BudgetChange,
  type BudgetState,
  type CostEntry,
  type CostRecordQuery,
  type CostRecordView,
  type Dimension,
  type Hold,
  type HoldRequest,
  type PeriodTotals,
  type ProjectTotals,
  type ThresholdCrossing,
} from "../ledger/types.ts";
import { activeHoldsPerProjectMax, currencyDefault, postgresBatchAttemptsMax, timeZoneDefault } from "../limits.ts";

/** The record statement's one row: `t_*` the totals after this write (null when
 * nothing was applied), `p_*` the existing record of this key, `c_*` the
 * totals before, `h_*` the hold named by hold_id before, `r_*` the project's
 * reservations after settling it. */
type RecordStatementRow = { inserted: Int8; labelled: Int8; settled_nanos: Int8 | null; r_reserved_nanos: Int8 | null; r_hold_count: Int8 | null } & Record<string, unknown>;

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

const prefixed = (alias: string, prefix: string, columns: readonly string[]) => columns.map((c) => `${alias}.${c} AS ${prefix}${c}`).join(", ");
const totalsColumns = [
  "total_cost_nanos", "input_tokens", "output_tokens", "record_count", "updated_at_ms", "alerted_bps", "alerted_limit_nanos",
  "day_period", "day_cost_nanos", "day_input_tokens", "day_output_tokens", "day_record_count", "day_alerted_bps", "day_alerted_limit_nanos",
  "month_period", "month_cost_nanos", "month_input_tokens", "month_output_tokens", "month_record_count", "month_alerted_bps", "month_alerted_limit_nanos",
] as const;
const budgetColumns = ["limit_nanos", "currency", "updated_at_ms", "daily_limit_nanos", "monthly_limit_nanos", "time_zone", "alert_thresholds_bps"] as const;
const recordColumns = [
  "request_id", "cost_nanos", "input_tokens", "output_tokens", "agent_id", "model", "recorded_at_ms",
  "total_cost_nanos_after", "input_tokens_after", "output_tokens_after", "record_count_after", "hold_id",
  "cached_input_tokens", "cache_write_tokens", "cost_source", "catalog_cost_nanos", "price_id", "occurred_at_ms",
] as const;
const holdColumns = ["hold_id", "project_id", "amount_nanos", "created_at_ms", "expires_at_ms"] as const;

/** Reads the prefixed columns of a joined row back into a plain row (null when the join found nothing). */
function unprefix<T>(row: Record<string, unknown>, prefix: string, columns: readonly string[], present: string): T | null {
  if (row[`${prefix}${present}`] === null || row[`${prefix}${present}`] === undefined) return null;
  const out: Record<string, unknown> = {};
  for (const c of columns) out[c] = row[`${prefix}${c}`];
  return out as T;
}

// Lifetime, current day and current month in one upsert. A record of a later
// period (keys compare bytewise: "2026-11-28" > "2026-11-27") starts that
// period's totals and alert state afresh; SET sees the old row on every
// right-hand side, so the CASEs all compare against the old period.
const periodSet = (w: "day" | "month") => {
  const later = `excluded.${w}_period COLLATE "C" > t.${w}_period COLLATE "C"`;
  return `
    ${w}_cost_nanos = CASE WHEN ${later} THEN excluded.${w}_cost_nanos ELSE t.${w}_cost_nanos + excluded.${w}_cost_nanos END,
    ${w}_input_tokens = CASE WHEN ${later} THEN excluded.${w}_input_tokens ELSE t.${w}_input_tokens + excluded.${w}_input_tokens END,
    ${w}_output_tokens = CASE WHEN ${later} THEN excluded.${w}_output_tokens ELSE t.${w}_output_tokens + excluded.${w}_output_tokens END,
    ${w}_record_count = CASE WHEN ${later} THEN 1 ELSE t.${w}_record_count + 1 END,
    ${w}_alerted_bps = CASE WHEN ${later} THEN 0 ELSE t.${w}_alerted_bps END,
    ${w}_alerted_limit_nanos = CASE WHEN ${later} THEN 0 ELSE t.${w}_alerted_limit_nanos END,
    ${w}_period = CASE WHEN ${later} THEN excluded.${w}_period ELSE t.${w}_period END`;
};

// One statement per record, under the project's advisory lock: `prior` and
// `current_totals` read the statement's snapshot, taken after the lock, so they
// are the latest committed state (plus this batch's own earlier ops).
// $1 project, $2 request, $3 cost, $4 input, $5 output, $6 agent, $7 model,
// $8 now, $9 hold_id ('' = none), $10 day key, $11 month key.
const recordSql = `
WITH prior AS (
  SELECT * FROM cost_records WHERE project_id = $1 AND request_id = $2
), current_totals AS (
  SELECT * FROM project_totals WHERE project_id = $1
), fits AS (
  SELECT NOT EXISTS (SELECT 1 FROM prior) AND COALESCE((
    SELECT total_cost_nanos <= ${INT64_MAX} - $3::bigint AND input_tokens <= ${INT64_MAX} - $4::bigint
      AND output_tokens <= ${INT64_MAX} - $5::bigint AND record_count < ${INT64_MAX}
    FROM current_totals), true) AS ok
), hold_before AS (
  SELECT * FROM holds WHERE hold_id = $9
), settled AS (
  DELETE FROM holds WHERE $9 <> '' AND hold_id = $9 AND project_id = $1 AND expires_at_ms > $8::bigint AND (SELECT ok FROM fits)
  RETURNING amount_nanos
), unreserved AS (
  UPDATE project_reservations r SET reserved_nanos = r.reserved_nanos - s.amount_nanos, hold_count = r.hold_count - 1, updated_at_ms = $8::bigint
  FROM settled s WHERE r.project_id = $1
  RETURNING r.reserved_nanos, r.hold_count
), go AS (
  SELECT (SELECT ok FROM fits) AND ($9 = '' OR EXISTS (SELECT 1 FROM settled)) AS ok
), applied AS (
  INSERT INTO project_totals AS t (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms,
    day_period, day_cost_nanos, day_input_tokens, day_output_tokens, day_record_count,
    month_period, month_cost_nanos, month_input_tokens, month_output_tokens, month_record_count)
  SELECT $1, $3::bigint, $4::bigint, $5::bigint, 1, $8::bigint, $8::bigint,
    $10, $3::bigint, $4::bigint, $5::bigint, 1,
    $11, $3::bigint, $4::bigint, $5::bigint, 1
  WHERE (SELECT ok FROM go)
  ON CONFLICT (project_id) DO UPDATE SET
    total_cost_nanos = t.total_cost_nanos + excluded.total_cost_nanos,
    input_tokens = t.input_tokens + excluded.input_tokens,
    output_tokens = t.output_tokens + excluded.output_tokens,
    record_count = t.record_count + 1,
    updated_at_ms = excluded.updated_at_ms,${periodSet("day")},${periodSet("month")}
  WHERE t.total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
    AND t.input_tokens <= ${INT64_MAX} - excluded.input_tokens
    AND t.output_tokens <= ${INT64_MAX} - excluded.output_tokens
    AND t.record_count < ${INT64_MAX}
  RETURNING t.*
), ledger AS (
  INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms,
    total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after, hold_id,
    cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms)
  SELECT $1, $2, $3::bigint, $4::bigint, $5::bigint, $6, $7, $8::bigint, a.total_cost_nanos, a.input_tokens, a.output_tokens, a.record_count, $9,
    $12::bigint, $13::bigint, $14::text, $15::bigint, $16::text, $17::bigint
  FROM applied a
  RETURNING id
), labels AS (
  INSERT INTO project_label_totals AS l (project_id, agent_id, model, total_cost_nanos, input_tokens, output_tokens, record_count, updated_at_ms,
    catalog_cost_nanos, priced_cost_nanos, unpriced_record_count)
  SELECT $1, $6, $7, $3::bigint, $4::bigint, $5::bigint, 1, $8::bigint,
    COALESCE($15::bigint, 0), CASE WHEN $15::bigint IS NULL THEN 0 ELSE $3::bigint END, CASE WHEN $15::bigint IS NULL THEN 1 ELSE 0 END FROM applied
  ON CONFLICT (project_id, agent_id, model) DO UPDATE SET
    total_cost_nanos = l.total_cost_nanos + excluded.total_cost_nanos,
    catalog_cost_nanos = l.catalog_cost_nanos + excluded.catalog_cost_nanos,
    priced_cost_nanos = l.priced_cost_nanos + excluded.priced_cost_nanos,
    unpriced_record_count = l.unpriced_record_count + excluded.unpriced_record_count,
    input_tokens = l.input_tokens + excluded.input_tokens,
    output_tokens = l.output_tokens + excluded.output_tokens,
    record_count = l.record_count + 1,
    updated_at_ms = excluded.updated_at_ms
  RETURNING 1
)
SELECT (SELECT count(*) FROM ledger) AS inserted, (SELECT count(*) FROM labels) AS labelled,
  (SELECT amount_nanos FROM settled) AS settled_nanos, u.reserved_nanos AS r_reserved_nanos, u.hold_count AS r_hold_count,
  ${prefixed("a", "t_", totalsColumns)},
  ${prefixed("p", "p_", recordColumns)},
  ${prefixed("c", "c_", totalsColumns)},
  ${prefixed("h", "h_", holdColumns)}
FROM (SELECT 1) AS one
LEFT JOIN applied a ON true
LEFT JOIN prior p ON true
LEFT JOIN current_totals c ON true
LEFT JOIN hold_before h ON true
LEFT JOIN unreserved u ON true`;

// Alert state advanced by a record (only when a threshold was crossed): the
// row was incremented by this transaction, so it is ours until commit.
const setAlertsSql = `
UPDATE project_totals SET
  alerted_bps = $2, alerted_limit_nanos = $3, day_alerted_bps = $4, day_alerted_limit_nanos = $5,
  month_alerted_bps = $6, month_alerted_limit_nanos = $7
WHERE project_id = $1`;

// One statement per budget change: the currency may change only while the
// project has recorded nothing; fields given as NULL keep their value.
// $1 project, $2 limit, $3 currency|null, $4 now, $5 default currency,
// $6 daily|null, $7 monthly|null, $8 time zone|null, $9 thresholds|null.
const setBudgetSql = `
WITH current_budget AS (
  SELECT currency FROM project_budgets WHERE project_id = $1
), recorded AS (
  SELECT 1 FROM project_totals WHERE project_id = $1 AND record_count > 0
), wanted AS (
  SELECT COALESCE($3::text, (SELECT currency FROM current_budget), $5::text) AS currency,
         COALESCE((SELECT currency FROM current_budget), $5::text) AS current_currency
), saved AS (
  INSERT INTO project_budgets AS b (project_id, limit_nanos, currency, created_at_ms, updated_at_ms,
    daily_limit_nanos, monthly_limit_nanos, time_zone, alert_thresholds_bps)
  SELECT $1, $2::bigint, w.currency, $4::bigint, $4::bigint,
    COALESCE($6::bigint, 0), COALESCE($7::bigint, 0), COALESCE($8::text, '${timeZoneDefault}'), COALESCE($9::text, '')
  FROM wanted w
  WHERE w.currency = w.current_currency OR NOT EXISTS (SELECT 1 FROM recorded)
  ON CONFLICT (project_id) DO UPDATE SET
    limit_nanos = excluded.limit_nanos, currency = excluded.currency, updated_at_ms = excluded.updated_at_ms,
    daily_limit_nanos = COALESCE($6::bigint, b.daily_limit_nanos),
    monthly_limit_nanos = COALESCE($7::bigint, b.monthly_limit_nanos),
    time_zone = COALESCE($8::text, b.time_zone),
    alert_thresholds_bps = COALESCE($9::text, b.alert_thresholds_bps)
  RETURNING b.*
)
SELECT s.project_id, ${budgetColumns.map((c) => `s.${c}`).join(", ")}, w.currency AS wanted_currency, w.current_currency
FROM wanted w LEFT JOIN saved s ON true`;

// Everything a decision needs, in one statement (one snapshot).
const stateSql = `
SELECT ${prefixed("b", "b_", budgetColumns)}, ${prefixed("t", "t_", totalsColumns)},
  r.reserved_nanos AS r_reserved_nanos, r.hold_count AS r_hold_count,
  (SELECT COALESCE(sum(amount_nanos), 0) FROM holds WHERE project_id = $1 AND expires_at_ms <= $2::bigint) AS expired_nanos,
  (SELECT count(*) FROM holds WHERE project_id = $1 AND expires_at_ms <= $2::bigint) AS expired_count
FROM (SELECT 1) AS one
LEFT JOIN project_budgets b ON b.project_id = $1
LEFT JOIN project_totals t ON t.project_id = $1
LEFT JOIN project_reservations r ON r.project_id = $1`;

// A reserve that was allowed: the reservation first (guarded against int64
// overflow), the hold only if it was counted, and the reservation's
// idempotency key ($6, "" for none) with the hold.
const placeHoldSql = `
WITH reserved AS (
  INSERT INTO project_reservations AS r (project_id, reserved_nanos, hold_count, updated_at_ms)
  VALUES ($2, $3::bigint, 1, $4::bigint)
  ON CONFLICT (project_id) DO UPDATE SET
    reserved_nanos = r.reserved_nanos + excluded.reserved_nanos, hold_count = r.hold_count + 1, updated_at_ms = excluded.updated_at_ms
  WHERE r.reserved_nanos <= ${INT64_MAX} - excluded.reserved_nanos
  RETURNING reserved_nanos
), placed AS (
  INSERT INTO holds (hold_id, project_id, amount_nanos, created_at_ms, expires_at_ms)
  SELECT $1, $2, $3::bigint, $4::bigint, $5::bigint FROM reserved
  RETURNING hold_id
), keyed AS (
  INSERT INTO reserve_keys (project_id, request_id, hold_id, amount_nanos, ttl_ms, created_at_ms, expires_at_ms, decision_json, token_fingerprint)
  SELECT $2, $6::text, hold_id, $3::bigint, $7::bigint, $4::bigint, $5::bigint, $8::text, $9::text FROM placed WHERE $6::text <> ''
  RETURNING 1
)
SELECT (SELECT count(*) FROM placed) AS placed, (SELECT count(*) FROM keyed) AS keyed`;
const selectReserveKeySql = `SELECT * FROM reserve_keys WHERE project_id = $1 AND request_id = $2`;
const deleteReserveKeysSql = `
DELETE FROM reserve_keys WHERE (project_id, request_id) IN (
  SELECT project_id, request_id FROM reserve_keys WHERE expires_at_ms < $1::bigint ORDER BY expires_at_ms LIMIT $2)`;

// Releasing takes only an active hold of the project: the expiry is checked at
// the moment of the write, not left to the sweeper.
const releaseSql = `
WITH hold_before AS (
  SELECT * FROM holds WHERE hold_id = $2
), released AS (
  DELETE FROM holds WHERE hold_id = $2 AND project_id = $1 AND expires_at_ms > $3::bigint
  RETURNING *
), unreserved AS (
  UPDATE project_reservations r SET reserved_nanos = r.reserved_nanos - d.amount_nanos, hold_count = r.hold_count - 1, updated_at_ms = $3::bigint
  FROM released d WHERE r.project_id = d.project_id
  RETURNING r.reserved_nanos, r.hold_count
)
SELECT ${prefixed("d", "d_", holdColumns)}, ${prefixed("h", "h_", holdColumns)}, u.reserved_nanos AS r_reserved_nanos, u.hold_count AS r_hold_count
FROM (SELECT 1) AS one LEFT JOIN released d ON true LEFT JOIN hold_before h ON true LEFT JOIN unreserved u ON true`;

// Budget rows of a batch's projects, read once after the locks: records need
// the time zone (period keys) and the alert settings.
const batchBudgetsSql = `SELECT * FROM project_budgets WHERE project_id = ANY($1::text[])`;

// Locks are taken in the order of the (sorted, distinct) array.
const lockProjectsSql = `SELECT pg_advisory_xact_lock(${advisoryLockNamespace}, k) FROM unnest($1::int4[]) AS k`;

const selectTotalsSql = `SELECT * FROM project_totals WHERE project_id = $1`;
const selectBudgetSql = `SELECT * FROM project_budgets WHERE project_id = $1`;
// One statement, one snapshot: budget and totals consistent with each other.
const selectBudgetAndTotalsSql = `
SELECT ${prefixed("b", "b_", budgetColumns)}, ${prefixed("t", "t_", totalsColumns)}
FROM (SELECT 1) AS one
LEFT JOIN project_budgets b ON b.project_id = $1
LEFT JOIN project_totals t ON t.project_id = $1`;
const selectHoldSql = `SELECT * FROM holds WHERE hold_id = $1`;
// Labels ordered bytewise like SQLite; sums of bigint are numeric (no overflow).
const breakdownSql = (column: "agent_id" | "model") => `
SELECT ${column} AS label, sum(total_cost_nanos) AS total_cost_nanos, sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens, sum(record_count) AS record_count, sum(catalog_cost_nanos) AS catalog_cost_nanos,
  sum(priced_cost_nanos) AS priced_cost_nanos, sum(unpriced_record_count) AS unpriced_record_count
FROM project_label_totals WHERE project_id = $1
GROUP BY ${column} ORDER BY sum(total_cost_nanos) DESC, ${column} COLLATE "C" ASC LIMIT $2`;
const listRecordsSql = `
SELECT id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, hold_id, recorded_at_ms, total_cost_nanos_after,
  cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms FROM cost_records
WHERE project_id = $1 AND recorded_at_ms >= $2::bigint AND recorded_at_ms < $3::bigint
  AND (recorded_at_ms > $4::bigint OR (recorded_at_ms = $4::bigint AND id > $5::bigint))
ORDER BY recorded_at_ms, id LIMIT $6`;
// The hold sweeper: projects with expired holds (no lock yet), then, under
// their locks, their expired holds deleted and reservations decremented.
const expiredProjectsSql = `SELECT DISTINCT project_id FROM (SELECT project_id FROM holds WHERE expires_at_ms <= $1::bigint ORDER BY expires_at_ms LIMIT $2) e`;
const sweepHoldsSql = `
WITH swept AS (
  DELETE FROM holds WHERE hold_id IN (
    SELECT hold_id FROM holds WHERE expires_at_ms <= $1::bigint AND project_id = ANY($3::text[]) ORDER BY expires_at_ms LIMIT $2)
  RETURNING project_id, amount_nanos
), per_project AS (
  SELECT project_id, sum(amount_nanos) AS amount_nanos, count(*) AS hold_count FROM swept GROUP BY project_id
), unreserved AS (
  UPDATE project_reservations r SET reserved_nanos = r.reserved_nanos - p.amount_nanos, hold_count = r.hold_count - p.hold_count, updated_at_ms = $1::bigint
  FROM per_project p WHERE r.project_id = p.project_id
  RETURNING r.project_id, r.reserved_nanos, r.hold_count
)
SELECT (SELECT count(*) FROM swept) AS swept, (SELECT count(*) FROM per_project) AS projects, (SELECT count(*) FROM unreserved) AS updated,
  (SELECT count(*) FROM unreserved WHERE reserved_nanos < 0 OR hold_count < 0) AS negative`;
// Project listings compare ids bytewise (COLLATE "C"), as SQLite does, so the
// order and the keyset cursor do not depend on the database's locale.
// Each entry also carries its active holds as #state computes them (the
// reservation row minus the project's expired, unswept holds: an index range
// per listed project), in the same statement, so one snapshot.
const listedColumns = `l.project_id, ${prefixed("b", "b_", budgetColumns)}, ${prefixed("t", "t_", totalsColumns)},
  r.reserved_nanos AS r_reserved_nanos, r.hold_count AS r_hold_count, e.expired_nanos, e.expired_count, x.archived_at_ms AS x_archived_at_ms`;
// Archived projects are listed only when the flag parameter is true (include_archived).
const notArchived = (alias: string, flag: string) => `(${flag}::boolean OR NOT EXISTS (SELECT 1 FROM project_archives ax WHERE ax.project_id = ${alias}.project_id))`;
const listedHolds = (nowParam: string) => `
LEFT JOIN project_archives x ON x.project_id = l.project_id
LEFT JOIN project_reservations r ON r.project_id = l.project_id
LEFT JOIN LATERAL (
  SELECT COALESCE(sum(h.amount_nanos), 0) AS expired_nanos, count(*) AS expired_count FROM holds h
  WHERE h.project_id = l.project_id AND h.expires_at_ms <= ${nowParam}::bigint) e ON true`;
const listByIdSql = `
WITH l AS (
  SELECT project_id FROM (
    SELECT project_id FROM (SELECT project_id FROM project_totals pt WHERE project_id COLLATE "C" > $1 AND ${notArchived("pt", "$4")} ORDER BY project_id COLLATE "C" LIMIT $2) a
    UNION
    SELECT project_id FROM (SELECT project_id FROM project_budgets pb WHERE project_id COLLATE "C" > $1 AND ${notArchived("pb", "$4")} ORDER BY project_id COLLATE "C" LIMIT $2) z
  ) u
  ORDER BY project_id COLLATE "C" LIMIT $2
)
SELECT ${listedColumns}
FROM l LEFT JOIN project_budgets b ON b.project_id = l.project_id LEFT JOIN project_totals t ON t.project_id = l.project_id${listedHolds("$3")}
ORDER BY l.project_id COLLATE "C"`;
// By spend: each arm cut to the limit by its own top-N sort before the merge
// (no index on total_cost_nanos: it would cost every RecordCost an index update).
const listBySpentSql = `
WITH l AS (
  SELECT project_id, spent FROM (
  SELECT project_id, spent FROM (
    SELECT project_id, total_cost_nanos AS spent FROM project_totals pt
    WHERE ($1::boolean OR total_cost_nanos < $2::bigint OR (total_cost_nanos = $2::bigint AND project_id COLLATE "C" > $3)) AND ${notArchived("pt", "$6")}
    ORDER BY total_cost_nanos DESC, project_id COLLATE "C" LIMIT $4) a
  UNION ALL
  SELECT project_id, spent FROM (
    SELECT bb.project_id, 0::bigint AS spent FROM project_budgets bb
    WHERE NOT EXISTS (SELECT 1 FROM project_totals tt WHERE tt.project_id = bb.project_id)
      AND ($1::boolean OR $2::bigint > 0 OR bb.project_id COLLATE "C" > $3) AND ${notArchived("bb", "$6")}
    ORDER BY bb.project_id COLLATE "C" LIMIT $4) z
  ) u
  ORDER BY spent DESC, project_id COLLATE "C" LIMIT $4
)
SELECT ${listedColumns}
FROM l LEFT JOIN project_budgets b ON b.project_id = l.project_id LEFT JOIN project_totals t ON t.project_id = l.project_id${listedHolds("$5")}
ORDER BY l.spent DESC, l.project_id COLLATE "C"`;
// sum(bigint) is numeric in PostgreSQL (it cannot overflow); the metric takes a float.
const spendByCurrencySql = `
SELECT currency, spent, projects FROM (
  SELECT COALESCE(b.currency, $1) AS currency, sum(t.total_cost_nanos)::float8 AS spent, count(*) AS projects
  FROM project_totals t LEFT JOIN project_budgets b ON b.project_id = t.project_id
  GROUP BY 1
) s ORDER BY currency COLLATE "C"`;

// Active holds per currency (metrics): the reservation rows with hold rows,
// minus the expired, unswept holds (an index range on expires_at_ms), grouped
// by the project's currency. Sums are numeric; the metric takes a float.
const reservedByCurrencySql = `
SELECT currency, reserved, holds FROM (
  SELECT COALESCE(b.currency, $1) AS currency,
    (sum(r.reserved_nanos) - COALESCE(sum(e.expired_nanos), 0))::float8 AS reserved,
    (sum(r.hold_count) - COALESCE(sum(e.expired_count), 0))::float8 AS holds
  FROM project_reservations r
  LEFT JOIN project_budgets b ON b.project_id = r.project_id
  LEFT JOIN (
    SELECT project_id, sum(amount_nanos) AS expired_nanos, count(*) AS expired_count FROM holds
    WHERE expires_at_ms <= $2::bigint GROUP BY project_id) e ON e.project_id = r.project_id
  WHERE r.hold_count > 0
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
      if (holdId !== "" && !isActive(hold, entry.projectId, nowMs)) {
        return { ok: false, error: new HoldNotActiveError(entry.projectId, holdId, whyInactive(hold, entry.projectId, nowMs)) };
      }
      const current = unprefix<TotalsRow>(row, "c_", totalsColumns, "total_cost_nanos");
      if (current === null) throw new Error(`invariant: ${entry.projectId} refused an increment but has no totals row`);
      return { ok: false, error: new TotalOverflowError(entry.projectId, overflowingQuantity(entry, current)) };
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
    const thresholds = parseThresholds(budgetRow.alert_thresholds_bps);
    const alerts = {
      lifetime: { period: "", limitNanos: BigInt(budgetRow.limit_nanos), spentNanos: BigInt(totals.total_cost_nanos), bps: BigInt(totals.alerted_bps), alertLimitNanos: BigInt(totals.alerted_limit_nanos) },
      day: { period: totals.day_period, limitNanos: BigInt(budgetRow.daily_limit_nanos), spentNanos: BigInt(totals.day_cost_nanos), bps: BigInt(totals.day_alerted_bps), alertLimitNanos: BigInt(totals.day_alerted_limit_nanos) },
      month: { period: totals.month_period, limitNanos: BigInt(budgetRow.monthly_limit_nanos), spentNanos: BigInt(totals.month_cost_nanos), bps: BigInt(totals.month_alerted_bps), alertLimitNanos: BigInt(totals.month_alerted_limit_nanos) },
    };
    const crossings: ThresholdCrossing[] = [];
    let advanced = false;
    for (const window of [Window.lifetime, Window.day, Window.month] as const) {
      const alert = alerts[window];
      if (alert.limitNanos === 0n) continue;
      const reached = highestReachedBps(thresholds, alert.limitNanos, alert.spentNanos);
      const crossed = crossedBps(thresholds, Number(alert.bps), alert.alertLimitNanos, alert.limitNanos, reached);
      if (crossed.length === 0) continue;
      alert.bps = BigInt(reached);
      alert.alertLimitNanos = alert.limitNanos;
      advanced = true;
      for (const thresholdBps of crossed) {
        crossings.push({ projectId: entry.projectId, window, period: alert.period, thresholdBps, limitNanos: alert.limitNanos, spentNanos: alert.spentNanos, requestId: entry.requestId, atMs: nowMs });
      }
    }
    if (advanced) {
      await client.query({
        name: "tally_set_alerts",
        text: setAlertsSql,
        values: [entry.projectId, ...[alerts.lifetime, alerts.day, alerts.month].flatMap((a) => [a.bps.toString(), a.alertLimitNanos.toString()])],
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
    const state = await this.#state(client, request.projectId, nowMs);
    if (request.requestId !== "") {
      const { rows: keys } = await client.query<ReserveKeyRow>({ name: "tally_select_reserve_key", text: selectReserveKeySql, values: [request.projectId, request.requestId] });
      const key = keys[0];
      if (key !== undefined) {
        const { rows: holds } = await client.query<HoldRow>({ name: "tally_select_hold", text: selectHoldSql, values: [key.hold_id] });
        return replayReserve(request, key, holds[0], state, nowMs);
      }
    }
    const decision = decideLimits(limitInputsOf(state), state.reservedNanos, request.estimatedCostNanos);
    const outcome: ReserveOutcome = { decision, state, hold: null };
    if (!decision.allowed) return { ok: true, value: outcome };
    if (state.activeHoldCount >= BigInt(activeHoldsPerProjectMax)) return { ok: false, error: new HoldLimitError(request.projectId, activeHoldsPerProjectMax) };
    const hold: Hold = {
      holdId: request.holdId,
      projectId: request.projectId,
      amountNanos: request.estimatedCostNanos,
      createdAtMs: nowMs,
      expiresAtMs: nowMs + request.ttlMs,
    };
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
    return { ok: true, value: { ...outcome, hold } };
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
    if (released === null) return { ok: false, error: new HoldNotFoundError(holdId, whyInactive(unprefix<HoldRow>(row, "h_", holdColumns, "hold_id"), projectId, nowMs)) };
    if (row.r_reserved_nanos === null || BigInt(row.r_reserved_nanos) < 0n || BigInt(row.r_hold_count as Int8) < 0n) {
      throw new Error(`invariant: reservations of project "${projectId}" went negative or missing releasing hold ${holdId}`);
    }
    return { ok: true, value: holdFromRow(released) };
  }

  /** Everything a decision needs, from one statement (one snapshot). */
  async #state(queryable: Pick<PoolClient, "query">, projectId: string, nowMs: number): Promise<BudgetState> {
    const { rows } = await queryable.query<Record<string, unknown> & { r_reserved_nanos: Int8 | null; r_hold_count: Int8 | null; expired_nanos: Int8; expired_count: Int8 }>({
      name: "tally_state",
      text: stateSql,
      values: [projectId, String(nowMs)],
    });
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the state read returned no row");
    const budgetRow = unprefix<BudgetRow>(row, "b_", budgetColumns, "limit_nanos");
    const budget = budgetRow === null ? unsetBudget(projectId) : budgetFromRow({ ...budgetRow, project_id: projectId });
    const totalsRow = unprefix<TotalsRow>(row, "t_", totalsColumns, "total_cost_nanos");
    const keys = periodKeys(nowMs, budget.timeZone);
    const period = (window: "day" | "month", key: string): PeriodTotals => {
      const stored = totalsRow === null ? "" : totalsRow[`${window}_period`];
      // The stored period is current, or (clock stepped back) later than now's:
      // its spend counts. An earlier one has ended: nothing spent yet in this one.
      const current = totalsRow !== null && stored >= key ? totalsRow : null;
      return {
        window,
        period: key,
        timeZone: budget.timeZone,
        totalCostNanos: current === null ? 0n : BigInt(current[`${window}_cost_nanos`]),
        inputTokens: current === null ? 0n : BigInt(current[`${window}_input_tokens`]),
        outputTokens: current === null ? 0n : BigInt(current[`${window}_output_tokens`]),
        recordCount: current === null ? 0n : BigInt(current[`${window}_record_count`]),
      };
    };
    let reservedNanos = 0n;
    let activeHoldCount = 0n;
    if (row.r_reserved_nanos !== null && BigInt(row.r_hold_count as Int8) > 0n) {
      // Expired holds still in the table (not swept yet) stop counting now.
      reservedNanos = BigInt(row.r_reserved_nanos) - BigInt(row.expired_nanos);
      activeHoldCount = BigInt(row.r_hold_count as Int8) - BigInt(row.expired_count);
    }
    return {
      budget,
      totals: totalsRow === null ? zeroTotals(projectId) : totalsFromRow(totalsRow, projectId),
      day: period("day", keys.day),
      month: period("month", keys.month),
      reservedNanos,
      activeHoldCount,
    };
  }

  async getTotals(projectId: string): Promise<ProjectTotals> {
    const { rows } = await this.#read<TotalsRow>("tally_select_totals", selectTotalsSql, [projectId]);
    const row = rows[0];
    return row === undefined ? zeroTotals(projectId) : totalsFromRow(row, projectId);
  }

  async getBudget(projectId: string): Promise<Budget> {
    const { rows } = await this.#read<BudgetRow>("tally_select_budget", selectBudgetSql, [projectId]);
    const row = rows[0];
    return row === undefined ? unsetBudget(projectId) : budgetFromRow(row);
  }

  async getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }> {
    const { rows } = await this.#read<Record<string, unknown>>("tally_select_budget_and_totals", selectBudgetAndTotalsSql, [projectId]);
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the budget-and-totals read returned no row");
    return budgetAndTotalsFromRow(projectId, row);
  }

  async getBudgetState(projectId: string, nowMs: number): Promise<BudgetState> {
    try {
      return await this.#state(this.#pool, projectId, nowMs);
    } catch (error) {
      if (isPostgresUnavailable(error)) throw new StoreUnavailableError(error, "read");
      throw error;
    }
  }

  async getBreakdown(projectId: string, dimension: Dimension, entriesMax: number): Promise<Breakdown> {
    const column = dimension === "agent" ? "agent_id" : "model";
    const { rows } = await this.#read<{ label: string; total_cost_nanos: Int8; input_tokens: Int8; output_tokens: Int8; record_count: Int8; catalog_cost_nanos: Int8; priced_cost_nanos: Int8; unpriced_record_count: Int8 }>(
      `tally_breakdown_${column}`,
      breakdownSql(column),
      [projectId, entriesMax + 1],
    );
    return {
      dimension,
      truncated: rows.length > entriesMax,
      entries: rows.slice(0, entriesMax).map((row) => ({
        key: row.label,
        totalCostNanos: BigInt(row.total_cost_nanos),
        inputTokens: BigInt(row.input_tokens),
        outputTokens: BigInt(row.output_tokens),
        recordCount: BigInt(row.record_count),
        catalogCostNanos: BigInt(row.catalog_cost_nanos),
        pricedCostNanos: BigInt(row.priced_cost_nanos),
        unpricedRecordCount: BigInt(row.unpriced_record_count),
      })),
    };
  }

  async listCostRecords(query: CostRecordQuery): Promise<CostRecordView[]> {
    const { rows } = await this.#read<RecordRow & { id: Int8 }>("tally_list_records", listRecordsSql, [
      query.projectId,
      String(query.startMs ?? Number.MIN_SAFE_INTEGER),
      String(query.endMs ?? Number.MAX_SAFE_INTEGER),
      String(query.after?.recordedAtMs ?? Number.MIN_SAFE_INTEGER),
      (query.after?.id ?? -1n).toString(),
      query.limit,
    ]);
    return rows.map(recordViewFromRow);
  }

  async getHold(holdId: string): Promise<Hold | null> {
    const { rows } = await this.#read<HoldRow>("tally_select_hold", selectHoldSql, [holdId]);
    const row = rows[0];
    return row === undefined ? null : holdFromRow(row);
  }

  async deleteExpiredHolds(nowMs: number, countMax: number): Promise<number> {
    const { rows: candidates } = await this.#read<{ project_id: string }>("tally_expired_projects", expiredProjectsSql, [String(nowMs), countMax]);
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
      if (isPostgresUnavailable(error)) throw new StoreUnavailableError(error);
      throw error;
    } finally {
      client.release(discard);
    }
  }

  async #connectOrUnavailable(): Promise<PoolClient> {
    try {
      return await this.#pool.connect();
    } catch (error) {
      if (isPostgresUnavailable(error)) throw new StoreUnavailableError(error);
      throw error;
    }
  }

  async deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number> {
    const result = await this.#read("tally_delete_reserve_keys", deleteReserveKeysSql, [String(beforeMs), countMax]);
    return result.rowCount ?? 0;
  }

  async deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number> {
    const result = await this.#read("tally_delete_before", deleteBeforeSql, [String(beforeMs), countMax]);
    return result.rowCount ?? 0;
  }

  async listProjects(query: ProjectListQuery, nowMs: number): Promise<ProjectEntry[]> {
    const afterId = query.after?.projectId ?? "";
    type ListedRow = Record<string, unknown> & { project_id: string; r_reserved_nanos: Int8 | null; r_hold_count: Int8 | null; expired_nanos: Int8; expired_count: Int8; x_archived_at_ms: Int8 | null };
    // One statement: every entry's budget, totals and holds come from one snapshot.
    const { rows } =
      query.order === ProjectOrder.projectId
        ? await this.#read<ListedRow>("tally_list_by_id", listByIdSql, [afterId, query.limit, String(nowMs), query.includeArchived === true])
        : await this.#read<ListedRow>("tally_list_by_spent", listBySpentSql, [
            query.after === null,
            (query.after?.spentNanos ?? 0n).toString(),
            afterId,
            query.limit,
            String(nowMs),
            query.includeArchived === true,
          ]);
    return rows.map((row) => {
      const held = row.r_reserved_nanos !== null && row.r_hold_count !== null && BigInt(row.r_hold_count) > 0n;
      return {
        ...budgetAndTotalsFromRow(row.project_id, row),
        reservedNanos: held ? BigInt(row.r_reserved_nanos as Int8) - BigInt(row.expired_nanos) : 0n,
        activeHoldCount: held ? BigInt(row.r_hold_count as Int8) - BigInt(row.expired_count) : 0n,
        archivedAtMs: row.x_archived_at_ms === null ? null : Number(row.x_archived_at_ms),
      };
    });
  }

  async reservedByCurrency(nowMs: number): Promise<CurrencyReserved[]> {
    const { rows } = await this.#read<{ currency: string; reserved: number; holds: number }>("tally_reserved_by_currency", reservedByCurrencySql, [currencyDefault, String(nowMs)]);
    return rows.map((row) => ({ currency: row.currency, reservedNanos: Math.max(0, Number(row.reserved)), activeHolds: Math.max(0, Number(row.holds)) }));
  }

  async spendByCurrency(): Promise<CurrencySpend[]> {
    const { rows } = await this.#read<{ currency: string; spent: number; projects: Int8 }>("tally_spend_by_currency", spendByCurrencySql, [currencyDefault]);
    return rows.map((row) => ({ currency: row.currency, totalCostNanos: Number(row.spent), projects: Number(row.projects) }));
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

/** The distinct project lock keys of a batch, ascending: every batch takes its
 * locks in the same global order, so two batches can wait on each other only
 * one way round and never deadlock. */
export function projectLockKeys(ops: readonly WriteOp[]): number[] {
  return sortedLockKeys(ops.map(projectOf));
}

function sortedLockKeys(projectIds: readonly string[]): number[] {
  return [...new Set(projectIds.map(projectLockKey))].sort((a, b) => a - b);
}

function isActive(hold: HoldRow | null, projectId: string, nowMs: number): boolean {
  return hold !== null && hold.project_id === projectId && BigInt(hold.expires_at_ms) > BigInt(nowMs);
}

function overflowingQuantity(entry: CostEntry, row: TotalsRow): string {
  if (BigInt(row.total_cost_nanos) > int64Max - entry.costNanos) return "total_cost_nanos";
  if (BigInt(row.input_tokens) > int64Max - entry.inputTokens) return "input_tokens";
  if (BigInt(row.output_tokens) > int64Max - entry.outputTokens) return "output_tokens";
  return "record_count";
}

function whyInactive(row: HoldRow | null, projectId: string, nowMs: number): string {
  // A hold of another project is reported like an unknown one: ids do not leak across projects.
  if (row === null || row.project_id !== projectId) return "no such hold in this project: never placed, or already settled, released, or expired and swept";
  if (BigInt(row.expires_at_ms) <= BigInt(nowMs)) return `it expired at ${new Date(Number(row.expires_at_ms)).toISOString()}`;
  return "it is active"; // unreachable: an active hold would have been taken
}

function budgetAndTotalsFromRow(projectId: string, row: Record<string, unknown>): { budget: Budget; totals: ProjectTotals } {
  const budget = unprefix<BudgetRow>(row, "b_", budgetColumns, "limit_nanos");
  const totals = unprefix<TotalsRow>(row, "t_", totalsColumns, "total_cost_nanos");
  return {
    budget: budget === null ? unsetBudget(projectId) : budgetFromRow({ ...budget, project_id: projectId }),
    totals: totals === null ? zeroTotals(projectId) : totalsFromRow(totals, projectId),
  };
}
