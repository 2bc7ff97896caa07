// The SQLite store's prepared statements, prepared once per connection
// (safeIntegers: every integer column reads as bigint). SQL only: the stores'
// reads and writes (./reads.ts, ./writes.ts, ./state.ts) bind and map them.
//
// Every increment happens in SQL (`total = total + ?`, guarded against int64
// overflow by the WHERE clause of the upsert), never read-modify-write in JS.
import type Database from "better-sqlite3";
import { currencyDefault, timeZoneDefault } from "../../limits.ts";
import { int64Max } from "../../ledger/money.ts";
import type { Dimension } from "../../ledger/types.ts";

const INT64_MAX = int64Max.toString();

/** Listing filter: archived projects only when @archived = 1 (include_archived). */
const notArchived = (alias: string) =>
  `(@archived = 1 OR NOT EXISTS (SELECT 1 FROM project_archives a WHERE a.project_id = ${alias}.project_id))`;

export type SqliteStatements = ReturnType<typeof prepareStatements>;

export function prepareStatements(db: Database.Database) {
  const prepare = (sql: string) => db.prepare(sql).safeIntegers(true);
  // Lifetime, current day and current month in one upsert. A record of a
  // later period (keys compare as text: "2026-11-28" > "2026-11-27") starts
  // that period's totals and alert state afresh; SET sees the old row on
  // every right-hand side, so the CASEs all compare against the old period.
  const periodSet = (w: "day" | "month") => `
      ${w}_cost_nanos = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_cost_nanos ELSE ${w}_cost_nanos + excluded.${w}_cost_nanos END,
      ${w}_input_tokens = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_input_tokens ELSE ${w}_input_tokens + excluded.${w}_input_tokens END,
      ${w}_output_tokens = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_output_tokens ELSE ${w}_output_tokens + excluded.${w}_output_tokens END,
      ${w}_record_count = CASE WHEN excluded.${w}_period > ${w}_period THEN 1 ELSE ${w}_record_count + 1 END,
      ${w}_alerted_bps = CASE WHEN excluded.${w}_period > ${w}_period THEN 0 ELSE ${w}_alerted_bps END,
      ${w}_alerted_limit_nanos = CASE WHEN excluded.${w}_period > ${w}_period THEN 0 ELSE ${w}_alerted_limit_nanos END,
      ${w}_period = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_period ELSE ${w}_period END`;
  const upsertTotals = prepare(`
    INSERT INTO project_totals (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms,
      day_period, day_cost_nanos, day_input_tokens, day_output_tokens, day_record_count,
      month_period, month_cost_nanos, month_input_tokens, month_output_tokens, month_record_count)
    VALUES (@projectId, @costNanos, @inputTokens, @outputTokens, 1, @nowMs, @nowMs,
      @dayPeriod, @costNanos, @inputTokens, @outputTokens, 1,
      @monthPeriod, @costNanos, @inputTokens, @outputTokens, 1)
    ON CONFLICT (project_id) DO UPDATE SET
      total_cost_nanos = total_cost_nanos + excluded.total_cost_nanos,
      input_tokens = input_tokens + excluded.input_tokens,
      output_tokens = output_tokens + excluded.output_tokens,
      record_count = record_count + 1,
      updated_at_ms = excluded.updated_at_ms,${periodSet("day")},${periodSet("month")}
    WHERE total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
      AND input_tokens <= ${INT64_MAX} - excluded.input_tokens
      AND output_tokens <= ${INT64_MAX} - excluded.output_tokens
      AND record_count < ${INT64_MAX}
    RETURNING *`);
  const insertRecord = prepare(`
    INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms,
      total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after, hold_id,
      cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms)
    VALUES (@projectId, @requestId, @costNanos, @inputTokens, @outputTokens, @agentId, @model, @nowMs,
      @totalAfter, @inputAfter, @outputAfter, @countAfter, @holdId,
      @cachedInputTokens, @cacheWriteTokens, @costSource, @catalogCostNanos, @priceId, @occurredAtMs)
    ON CONFLICT (project_id, request_id) DO NOTHING
    RETURNING id`);
  const selectRecord = prepare(`SELECT * FROM cost_records WHERE project_id = ? AND request_id = ?`);
  const recordExists = prepare(`SELECT 1 FROM cost_records WHERE project_id = ? AND request_id = ?`);
  const selectTotals = prepare(`SELECT * FROM project_totals WHERE project_id = ?`);
  const selectBudget = prepare(`SELECT * FROM project_budgets WHERE project_id = ?`);
  // A read's whole state (budget, totals, reservations) in one statement: the
  // hot read path (GetProjectCost, CheckBudget) pays one SQLite call, not three.
  const selectState = prepare(`
    SELECT b.project_id AS b_project_id, b.limit_nanos AS b_limit_nanos, b.currency AS b_currency,
      b.updated_at_ms AS b_updated_at_ms, b.daily_limit_nanos AS b_daily_limit_nanos,
      b.monthly_limit_nanos AS b_monthly_limit_nanos, b.time_zone AS b_time_zone,
      b.alert_thresholds_bps AS b_alert_thresholds_bps, b.parent_id AS b_parent_id,
      b.agent_limit_nanos AS b_agent_limit_nanos, b.agent_daily_limit_nanos AS b_agent_daily_limit_nanos,
      b.agent_monthly_limit_nanos AS b_agent_monthly_limit_nanos, b.agent_rate_limit_nanos_per_minute AS b_agent_rate_limit_nanos_per_minute,
      b.agent_limit_overrides AS b_agent_limit_overrides, b.rate_limit_nanos_per_minute AS b_rate_limit_nanos_per_minute,
      EXISTS (SELECT 1 FROM project_budgets c WHERE c.parent_id = q.pid) AS has_children,
      r.reserved_nanos AS r_reserved_nanos, r.hold_count AS r_hold_count,
      t.*
    FROM (SELECT ? AS pid) q
    LEFT JOIN project_budgets b ON b.project_id = q.pid
    LEFT JOIN project_totals t ON t.project_id = q.pid
    LEFT JOIN project_reservations r ON r.project_id = q.pid`);
  // Fields given as NULL keep their current value (COALESCE), with no read in JS.
  const upsertBudget = prepare(`
    INSERT INTO project_budgets (project_id, limit_nanos, currency, created_at_ms, updated_at_ms,
      daily_limit_nanos, monthly_limit_nanos, time_zone, alert_thresholds_bps,
      agent_limit_nanos, agent_daily_limit_nanos, agent_monthly_limit_nanos, agent_rate_limit_nanos_per_minute,
      agent_limit_overrides, rate_limit_nanos_per_minute)
    VALUES (@projectId, @limitNanos, @currency, @nowMs, @nowMs,
      COALESCE(@dailyLimitNanos, 0), COALESCE(@monthlyLimitNanos, 0), COALESCE(@timeZone, '${timeZoneDefault}'), COALESCE(@alertThresholdsBps, ''),
      COALESCE(@agentLimitNanos, 0), COALESCE(@agentDailyLimitNanos, 0), COALESCE(@agentMonthlyLimitNanos, 0),
      COALESCE(@agentRateLimitNanosPerMinute, 0), COALESCE(@agentLimitOverrides, ''), COALESCE(@rateLimitNanosPerMinute, 0))
    ON CONFLICT (project_id) DO UPDATE SET
      limit_nanos = excluded.limit_nanos, currency = excluded.currency, updated_at_ms = excluded.updated_at_ms,
      daily_limit_nanos = COALESCE(@dailyLimitNanos, project_budgets.daily_limit_nanos),
      monthly_limit_nanos = COALESCE(@monthlyLimitNanos, project_budgets.monthly_limit_nanos),
      time_zone = COALESCE(@timeZone, project_budgets.time_zone),
      alert_thresholds_bps = COALESCE(@alertThresholdsBps, project_budgets.alert_thresholds_bps),
      agent_limit_nanos = COALESCE(@agentLimitNanos, project_budgets.agent_limit_nanos),
      agent_daily_limit_nanos = COALESCE(@agentDailyLimitNanos, project_budgets.agent_daily_limit_nanos),
      agent_monthly_limit_nanos = COALESCE(@agentMonthlyLimitNanos, project_budgets.agent_monthly_limit_nanos),
      agent_rate_limit_nanos_per_minute = COALESCE(@agentRateLimitNanosPerMinute, project_budgets.agent_rate_limit_nanos_per_minute),
      agent_limit_overrides = COALESCE(@agentLimitOverrides, project_budgets.agent_limit_overrides),
      rate_limit_nanos_per_minute = COALESCE(@rateLimitNanosPerMinute, project_budgets.rate_limit_nanos_per_minute)
    RETURNING *`);
  const deleteBefore = prepare(`
    DELETE FROM cost_records WHERE id IN (
      SELECT id FROM cost_records WHERE recorded_at_ms < ? ORDER BY recorded_at_ms LIMIT ?)`);
  // Window and label totals are sums over subsets of the project's records,
  // so they never exceed the lifetime totals, whose guard covers them.
  const setAlerts = prepare(`
    UPDATE project_totals SET
      alerted_bps = @lifetimeBps, alerted_limit_nanos = @lifetimeLimitNanos,
      day_alerted_bps = @dayBps, day_alerted_limit_nanos = @dayLimitNanos,
      month_alerted_bps = @monthBps, month_alerted_limit_nanos = @monthLimitNanos
    WHERE project_id = @projectId`);
  const upsertLabels = prepare(`
    INSERT INTO project_label_totals (project_id, agent_id, model, total_cost_nanos, input_tokens, output_tokens, record_count, updated_at_ms,
      catalog_cost_nanos, priced_cost_nanos, unpriced_record_count)
    VALUES (@projectId, @agentId, @model, @costNanos, @inputTokens, @outputTokens, 1, @nowMs,
      coalesce(@catalogCostNanos, 0), CASE WHEN @catalogCostNanos IS NULL THEN 0 ELSE @costNanos END, CASE WHEN @catalogCostNanos IS NULL THEN 1 ELSE 0 END)
    ON CONFLICT (project_id, agent_id, model) DO UPDATE SET
      total_cost_nanos = total_cost_nanos + excluded.total_cost_nanos,
      catalog_cost_nanos = catalog_cost_nanos + excluded.catalog_cost_nanos,
      priced_cost_nanos = priced_cost_nanos + excluded.priced_cost_nanos,
      unpriced_record_count = unpriced_record_count + excluded.unpriced_record_count,
      input_tokens = input_tokens + excluded.input_tokens,
      output_tokens = output_tokens + excluded.output_tokens,
      record_count = record_count + 1,
      updated_at_ms = excluded.updated_at_ms`);
  const breakdownBy = (column: "agent_id" | "model") =>
    prepare(`
      SELECT ${column} AS label, SUM(total_cost_nanos) AS total_cost_nanos, SUM(input_tokens) AS input_tokens,
        SUM(output_tokens) AS output_tokens, SUM(record_count) AS record_count, SUM(catalog_cost_nanos) AS catalog_cost_nanos,
        SUM(priced_cost_nanos) AS priced_cost_nanos, SUM(unpriced_record_count) AS unpriced_record_count
      FROM project_label_totals WHERE project_id = ?
      GROUP BY ${column} ORDER BY SUM(total_cost_nanos) DESC, ${column} ASC LIMIT ?`);
  const selectBreakdown: Record<Exclude<Dimension, "child">, Database.Statement> = {
    agent: breakdownBy("agent_id"),
    model: breakdownBy("model"),
  };
  const insertHold = prepare(`
    INSERT INTO holds (hold_id, project_id, amount_nanos, created_at_ms, expires_at_ms, agent_id)
    VALUES (@holdId, @projectId, @amountNanos, @nowMs, @expiresAtMs, @agentId)`);
  const selectHold = prepare(`SELECT * FROM holds WHERE hold_id = ?`);
  const selectReserveKey = prepare(`SELECT * FROM reserve_keys WHERE project_id = ? AND request_id = ?`);
  const insertReserveKey = prepare(`
    INSERT INTO reserve_keys (project_id, request_id, hold_id, amount_nanos, ttl_ms, created_at_ms, expires_at_ms, decision_json, token_fingerprint, agent_id)
    VALUES (@projectId, @requestId, @holdId, @amountNanos, @ttlMs, @createdAtMs, @expiresAtMs, @decisionJson, @tokenFingerprint, @agentId)`);
  const deleteReserveKeys = prepare(`
    DELETE FROM reserve_keys WHERE rowid IN (
      SELECT rowid FROM reserve_keys WHERE expires_at_ms < ? ORDER BY expires_at_ms LIMIT ?)`);
  // Settling and releasing take only an active hold: the expiry is checked
  // here, at the moment of the write, not left to the sweeper.
  const deleteActiveHold = prepare(`
    DELETE FROM holds WHERE hold_id = @holdId AND project_id = @projectId AND expires_at_ms > @nowMs
    RETURNING hold_id, project_id, amount_nanos, created_at_ms, expires_at_ms`);
  const selectReservations = prepare(`SELECT reserved_nanos, hold_count FROM project_reservations WHERE project_id = ?`);
  // Expired holds still in the table (not swept yet): subtracted at decision time.
  const selectExpiredHolds = prepare(`
    SELECT COALESCE(SUM(amount_nanos), 0) AS amount_nanos, COUNT(*) AS hold_count FROM holds
    WHERE project_id = ? AND expires_at_ms <= ?`);
  const addReservation = prepare(`
    INSERT INTO project_reservations (project_id, reserved_nanos, hold_count, updated_at_ms)
    VALUES (@projectId, @amountNanos, 1, @nowMs)
    ON CONFLICT (project_id) DO UPDATE SET
      reserved_nanos = reserved_nanos + excluded.reserved_nanos,
      hold_count = hold_count + 1,
      updated_at_ms = excluded.updated_at_ms
    WHERE reserved_nanos <= ${INT64_MAX} - excluded.reserved_nanos
    RETURNING reserved_nanos`);
  const subtractReservation = prepare(`
    UPDATE project_reservations SET
      reserved_nanos = reserved_nanos - @amountNanos, hold_count = hold_count - @holdCount, updated_at_ms = @nowMs
    WHERE project_id = @projectId
    RETURNING reserved_nanos, hold_count`);
  const sweepHolds = prepare(`
    DELETE FROM holds WHERE hold_id IN (
      SELECT hold_id FROM holds WHERE expires_at_ms <= ? ORDER BY expires_at_ms LIMIT ?)
    RETURNING project_id, amount_nanos`);
  const listRecords = prepare(`
    SELECT id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, hold_id, recorded_at_ms, total_cost_nanos_after,
      cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms FROM cost_records
    WHERE project_id = @projectId AND recorded_at_ms >= @startMs AND recorded_at_ms < @endMs
      AND (recorded_at_ms > @afterMs OR (recorded_at_ms = @afterMs AND id > @afterId))
    ORDER BY recorded_at_ms, id LIMIT @limit`);

  // Project ids come from both tables (a project may have only a budget, or
  // only costs). By id: each arm reads at most @limit rows from its primary key
  // index after the cursor. By spend: a full scan of project_totals with a
  // top-N sort (no index on total_cost_nanos: it would cost every RecordCost an
  // extra index update; see docs/decisions/0003-operator-surfaces.md).
  const listById = prepare(`
    SELECT project_id FROM (SELECT project_id FROM project_totals t WHERE project_id > @afterId AND ${notArchived("t")} ORDER BY project_id LIMIT @limit)
    UNION
    SELECT project_id FROM (SELECT project_id FROM project_budgets b WHERE project_id > @afterId AND ${notArchived("b")} ORDER BY project_id LIMIT @limit)
    ORDER BY project_id LIMIT @limit`);
  // Each arm is cut to @limit by its own top-N sort before the merge.
  const listBySpent = prepare(`
    SELECT project_id, spent FROM (
      SELECT project_id, total_cost_nanos AS spent FROM project_totals t
      WHERE (@first = 1 OR total_cost_nanos < @afterSpent OR (total_cost_nanos = @afterSpent AND project_id > @afterId)) AND ${notArchived("t")}
      ORDER BY total_cost_nanos DESC, project_id LIMIT @limit)
    UNION ALL
    SELECT project_id, spent FROM (
      SELECT b.project_id AS project_id, 0 AS spent FROM project_budgets b
      WHERE NOT EXISTS (SELECT 1 FROM project_totals t WHERE t.project_id = b.project_id)
        AND (@first = 1 OR @afterSpent > 0 OR b.project_id > @afterId) AND ${notArchived("b")}
      ORDER BY b.project_id LIMIT @limit)
    ORDER BY spent DESC, project_id LIMIT @limit`);
  // TOTAL() is a float sum: it cannot overflow (SUM() would throw past int64).
  // All projects in one scan without a join, then the few in another currency
  // than the default (a join over budgets only); the default currency's share
  // is the difference. 8x faster than one LEFT JOIN at 100k projects.
  const spendAll = prepare(`SELECT TOTAL(total_cost_nanos) AS spent, COUNT(*) AS projects FROM project_totals`);
  const spendOtherCurrencies = prepare(`
    SELECT b.currency AS currency, TOTAL(t.total_cost_nanos) AS spent, COUNT(*) AS projects
    FROM project_budgets b JOIN project_totals t ON t.project_id = b.project_id
    WHERE b.currency <> '${currencyDefault}' GROUP BY b.currency ORDER BY b.currency`);

  // Active holds of one page of projects (@ids: a JSON array of at most a
  // page of ids) in one statement: the reservation rows by primary key, minus
  // each project's expired, unswept holds (an index range per project on
  // holds(project_id, expires_at_ms)) — the rule of #state, for a page.
  const reservationsOf = prepare(`
    SELECT r.project_id AS project_id,
      r.reserved_nanos - COALESCE(e.amount_nanos, 0) AS reserved_nanos,
      r.hold_count - COALESCE(e.hold_count, 0) AS hold_count
    FROM project_reservations r
    LEFT JOIN (
      SELECT project_id, SUM(amount_nanos) AS amount_nanos, COUNT(*) AS hold_count FROM holds
      WHERE project_id IN (SELECT value FROM json_each(@ids)) AND expires_at_ms <= @nowMs
      GROUP BY project_id) e ON e.project_id = r.project_id
    WHERE r.project_id IN (SELECT value FROM json_each(@ids)) AND r.hold_count > 0`);
  // Active holds per currency (metrics), shaped like the spend aggregate:
  // all reservation rows in one scan, the few in other currencies through a
  // join, minus the expired, unswept holds (an index range on expires_at_ms).
  const reservedAll = prepare(`SELECT TOTAL(reserved_nanos) AS reserved, TOTAL(hold_count) AS holds FROM project_reservations`);
  const reservedOtherCurrencies = prepare(`
    SELECT b.currency AS currency, TOTAL(r.reserved_nanos) AS reserved, TOTAL(r.hold_count) AS holds
    FROM project_budgets b JOIN project_reservations r ON r.project_id = b.project_id
    WHERE b.currency <> '${currencyDefault}' GROUP BY b.currency ORDER BY b.currency`);
  const expiredByCurrency = prepare(`
    SELECT COALESCE(b.currency, '${currencyDefault}') AS currency, TOTAL(h.amount_nanos) AS reserved, COUNT(*) AS holds
    FROM holds h LEFT JOIN project_budgets b ON b.project_id = h.project_id
    WHERE h.expires_at_ms <= ? GROUP BY 1`);
  return {
    upsertTotals,
    insertRecord,
    selectRecord,
    recordExists,
    selectTotals,
    selectBudget,
    selectState,
    upsertBudget,
    deleteBefore,
    setAlerts,
    upsertLabels,
    selectBreakdown,
    insertHold,
    selectHold,
    selectReserveKey,
    insertReserveKey,
    deleteReserveKeys,
    deleteActiveHold,
    selectReservations,
    selectExpiredHolds,
    addReservation,
    subtractReservation,
    sweepHolds,
    listRecords,
    listById,
    listBySpent,
    spendAll,
    spendOtherCurrencies,
    reservationsOf,
    reservedAll,
    reservedOtherCurrencies,
    expiredByCurrency,
  };
}
