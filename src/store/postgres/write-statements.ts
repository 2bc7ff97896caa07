// The SQL of the PostgreSQL store's writes: one statement per op, run under
// the project's advisory lock (./locks.ts) inside the batch's transaction.
import { int64Max } from "../../ledger/money.ts";
import { timeZoneDefault } from "../../limits.ts";
import { budgetColumns, holdColumns, prefixed, recordColumns, totalsColumns } from "./columns.ts";

const INT64_MAX = int64Max.toString();

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
export const recordSql = `
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
export const setAlertsSql = `
UPDATE project_totals SET
  alerted_bps = $2, alerted_limit_nanos = $3, day_alerted_bps = $4, day_alerted_limit_nanos = $5,
  month_alerted_bps = $6, month_alerted_limit_nanos = $7
WHERE project_id = $1`;

// One statement per budget change: the currency may change only while the
// project has recorded nothing; fields given as NULL keep their value.
// $1 project, $2 limit, $3 currency|null, $4 now, $5 default currency,
// $6 daily|null, $7 monthly|null, $8 time zone|null, $9 thresholds|null.
export const setBudgetSql = `
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


// A reserve that was allowed: the reservation first (guarded against int64
// overflow), the hold only if it was counted, and the reservation's
// idempotency key ($6, "" for none) with the hold.
export const placeHoldSql = `
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
export const selectReserveKeySql = `SELECT * FROM reserve_keys WHERE project_id = $1 AND request_id = $2`;
export const deleteReserveKeysSql = `
DELETE FROM reserve_keys WHERE (project_id, request_id) IN (
  SELECT project_id, request_id FROM reserve_keys WHERE expires_at_ms < $1::bigint ORDER BY expires_at_ms LIMIT $2)`;

// Releasing takes only an active hold of the project: the expiry is checked at
// the moment of the write, not left to the sweeper.
export const releaseSql = `
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
export const batchBudgetsSql = `SELECT * FROM project_budgets WHERE project_id = ANY($1::text[])`;

// The hold sweeper: projects with expired holds (no lock yet), then, under
// their locks, their expired holds deleted and reservations decremented.
export const expiredProjectsSql = `SELECT DISTINCT project_id FROM (SELECT project_id FROM holds WHERE expires_at_ms <= $1::bigint ORDER BY expires_at_ms LIMIT $2) e`;
export const sweepHoldsSql = `
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

// SKIP LOCKED: replicas sweeping at the same time share the work instead of
// waiting on each other's rows.
export const deleteBeforeSql = `
DELETE FROM cost_records WHERE id IN (
  SELECT id FROM cost_records WHERE recorded_at_ms < $1 ORDER BY recorded_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)`;

