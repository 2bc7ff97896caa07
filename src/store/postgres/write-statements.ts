// The SQL of the PostgreSQL store's writes but records (./record-statements.ts):
// one statement per op, run under the project's advisory lock (./locks.ts)
// inside the batch's transaction.
import { int64Max } from "../../ledger/money.ts";
import { budgetTreeDepthMax, timeZoneDefault } from "../../limits.ts";
import { budgetColumns, holdColumns, prefixed } from "./columns.ts";

const INT64_MAX = int64Max.toString();

// One statement per budget change: the currency may change only while the
// project has recorded nothing; fields given as NULL keep their value.
// $1 project, $2 limit, $3 currency|null, $4 now, $5 default currency,
// $6 daily|null, $7 monthly|null, $8 time zone|null, $9 thresholds|null,
// $10-$13 agent lifetime, daily, monthly, rate caps|null, $14 overrides|null,
// $15 rate|null.
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
    daily_limit_nanos, monthly_limit_nanos, time_zone, alert_thresholds_bps,
    agent_limit_nanos, agent_daily_limit_nanos, agent_monthly_limit_nanos, agent_rate_limit_nanos_per_minute,
    agent_limit_overrides, rate_limit_nanos_per_minute)
  SELECT $1, $2::bigint, w.currency, $4::bigint, $4::bigint,
    COALESCE($6::bigint, 0), COALESCE($7::bigint, 0), COALESCE($8::text, '${timeZoneDefault}'), COALESCE($9::text, ''),
    COALESCE($10::bigint, 0), COALESCE($11::bigint, 0), COALESCE($12::bigint, 0), COALESCE($13::bigint, 0),
    COALESCE($14::text, ''), COALESCE($15::bigint, 0)
  FROM wanted w
  WHERE w.currency = w.current_currency OR NOT EXISTS (SELECT 1 FROM recorded)
  ON CONFLICT (project_id) DO UPDATE SET
    limit_nanos = excluded.limit_nanos, currency = excluded.currency, updated_at_ms = excluded.updated_at_ms,
    daily_limit_nanos = COALESCE($6::bigint, b.daily_limit_nanos),
    monthly_limit_nanos = COALESCE($7::bigint, b.monthly_limit_nanos),
    time_zone = COALESCE($8::text, b.time_zone),
    alert_thresholds_bps = COALESCE($9::text, b.alert_thresholds_bps),
    agent_limit_nanos = COALESCE($10::bigint, b.agent_limit_nanos),
    agent_daily_limit_nanos = COALESCE($11::bigint, b.agent_daily_limit_nanos),
    agent_monthly_limit_nanos = COALESCE($12::bigint, b.agent_monthly_limit_nanos),
    agent_rate_limit_nanos_per_minute = COALESCE($13::bigint, b.agent_rate_limit_nanos_per_minute),
    agent_limit_overrides = COALESCE($14::text, b.agent_limit_overrides),
    rate_limit_nanos_per_minute = COALESCE($15::bigint, b.rate_limit_nanos_per_minute)
  RETURNING b.*
)
SELECT s.project_id, ${budgetColumns.map((c) => `s.${c}`).join(", ")}, w.currency AS wanted_currency, w.current_currency
FROM wanted w LEFT JOIN saved s ON true`;

// A reserve that was allowed: the reservation first (guarded against int64
// overflow), the hold only if it was counted (with its agent, $10), the
// reservation's idempotency key ($6, "" for none) with the hold, and the
// hold's entry in the rate of every project of $11 (the chain's projects with
// a rate limit).
export const placeHoldSql = `
WITH reserved AS (
  INSERT INTO project_reservations AS r (project_id, reserved_nanos, hold_count, updated_at_ms)
  VALUES ($2, $3::bigint, 1, $4::bigint)
  ON CONFLICT (project_id) DO UPDATE SET
    reserved_nanos = r.reserved_nanos + excluded.reserved_nanos, hold_count = r.hold_count + 1, updated_at_ms = excluded.updated_at_ms
  WHERE r.reserved_nanos <= ${INT64_MAX} - excluded.reserved_nanos
  RETURNING reserved_nanos
), placed AS (
  INSERT INTO holds (hold_id, project_id, amount_nanos, created_at_ms, expires_at_ms, agent_id)
  SELECT $1, $2, $3::bigint, $4::bigint, $5::bigint, $10::text FROM reserved
  RETURNING hold_id
), keyed AS (
  INSERT INTO reserve_keys (project_id, request_id, hold_id, amount_nanos, ttl_ms, created_at_ms, expires_at_ms, decision_json, token_fingerprint, agent_id)
  SELECT $2, $6::text, hold_id, $3::bigint, $7::bigint, $4::bigint, $5::bigint, $8::text, $9::text, $10::text FROM placed WHERE $6::text <> ''
  RETURNING 1
), rated AS (
  INSERT INTO rate_holds (project_id, hold_id, placed_at_ms, expires_at_ms, amount_nanos)
  SELECT r.project_id, p.hold_id, $4::bigint, $5::bigint, $3::bigint FROM placed p, unnest($11::text[]) AS r(project_id)
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
), rate_ended AS (
  DELETE FROM rate_holds WHERE hold_id IN (SELECT hold_id FROM released)
  RETURNING 1
)
SELECT ${prefixed("d", "d_", holdColumns)}, ${prefixed("h", "h_", holdColumns)}, u.reserved_nanos AS r_reserved_nanos, u.hold_count AS r_hold_count
FROM (SELECT 1) AS one LEFT JOIN released d ON true LEFT JOIN hold_before h ON true LEFT JOIN unreserved u ON true`;

// The hold sweeper: projects with expired holds (no lock yet), then, under
// their locks, their expired holds deleted and reservations decremented.
export const expiredProjectsSql = `SELECT DISTINCT project_id FROM (SELECT project_id FROM holds WHERE expires_at_ms <= $1::bigint ORDER BY expires_at_ms LIMIT $2) e`;
// A hold counted at every level of its project's tree (decision 0013) comes
// off every level: `levels` follows the parent links from each project.
export const sweepHoldsSql = `
WITH RECURSIVE swept AS (
  DELETE FROM holds WHERE hold_id IN (
    SELECT hold_id FROM holds WHERE expires_at_ms <= $1::bigint AND project_id = ANY($3::text[]) ORDER BY expires_at_ms LIMIT $2)
  RETURNING project_id, amount_nanos
), per_project AS (
  SELECT project_id, sum(amount_nanos) AS amount_nanos, count(*) AS hold_count FROM swept GROUP BY project_id
), levels(project_id, level_id, depth) AS (
  SELECT project_id, project_id, 1 FROM per_project
  UNION ALL
  SELECT l.project_id, b.parent_id, l.depth + 1 FROM levels l JOIN project_budgets b ON b.project_id = l.level_id
  WHERE b.parent_id <> '' AND l.depth <= ${budgetTreeDepthMax}
), per_level AS (
  SELECT l.level_id AS project_id, sum(p.amount_nanos) AS amount_nanos, sum(p.hold_count) AS hold_count
  FROM levels l JOIN per_project p ON p.project_id = l.project_id GROUP BY l.level_id
), unreserved AS (
  UPDATE project_reservations r SET reserved_nanos = r.reserved_nanos - p.amount_nanos, hold_count = r.hold_count - p.hold_count, updated_at_ms = $1::bigint
  FROM per_level p WHERE r.project_id = p.project_id
  RETURNING r.project_id, r.reserved_nanos, r.hold_count
)
SELECT (SELECT count(*) FROM swept) AS swept, (SELECT count(*) FROM per_level) AS projects, (SELECT count(*) FROM unreserved) AS updated,
  (SELECT count(*) FROM unreserved WHERE reserved_nanos < 0 OR hold_count < 0) AS negative`;

// What no rate counts any more (issue 18): the rate entries of expired holds
// and the buckets that left the window. No lock: no decision reads them.
export const sweepRateHoldsSql = `
DELETE FROM rate_holds WHERE (project_id, hold_id) IN (
  SELECT project_id, hold_id FROM rate_holds WHERE expires_at_ms <= $1::bigint ORDER BY expires_at_ms LIMIT $2)`;
export const sweepRateBucketsSql = `
DELETE FROM rate_buckets WHERE (project_id, agent_id, bucket_ms) IN (
  SELECT project_id, agent_id, bucket_ms FROM rate_buckets WHERE bucket_ms < $1::bigint ORDER BY bucket_ms LIMIT $2)`;

// SKIP LOCKED: replicas sweeping at the same time share the work instead of
// waiting on each other's rows.
export const deleteBeforeSql = `
DELETE FROM cost_records WHERE id IN (
  SELECT id FROM cost_records WHERE recorded_at_ms < $1 ORDER BY recorded_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)`;
