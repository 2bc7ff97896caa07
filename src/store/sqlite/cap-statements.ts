// The SQLite store's statements for per-agent caps and the runaway guard
// (issue 18): each agent's day and month spend, the agent's active holds, the
// rate buckets and the holds a rate counts. SQL only; ./cap-reads.ts and
// ./cap-writes.ts bind and map them.
import type Database from "better-sqlite3";
import { int64Max } from "../../ledger/money.ts";

const INT64_MAX = int64Max.toString();

export type SqliteCapStatements = ReturnType<typeof prepareCapStatements>;

export function prepareCapStatements(db: Database.Database) {
  const prepare = (sql: string) => db.prepare(sql).safeIntegers(true);
  // A later period starts afresh (keys compare as text, as in project_totals).
  // An agent's spend in a period is part of its project's, whose upsert
  // guards int64 in the same savepoint: these sums cannot overflow first.
  const periodSet = (w: "day" | "month") => `
      ${w}_cost_nanos = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_cost_nanos ELSE ${w}_cost_nanos + excluded.${w}_cost_nanos END,
      ${w}_period = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_period ELSE ${w}_period END`;
  const upsertAgentWindows = prepare(`
    INSERT INTO agent_windows (project_id, agent_id, day_period, day_cost_nanos, month_period, month_cost_nanos, updated_at_ms)
    VALUES (@projectId, @agentId, @dayPeriod, @costNanos, @monthPeriod, @costNanos, @nowMs)
    ON CONFLICT (project_id, agent_id) DO UPDATE SET ${periodSet("day")},${periodSet("month")},
      updated_at_ms = excluded.updated_at_ms`);
  const selectAgentWindows = prepare(
    `SELECT day_period, day_cost_nanos, month_period, month_cost_nanos FROM agent_windows WHERE project_id = ? AND agent_id = ?`,
  );
  const selectAgentLifetime = prepare(
    `SELECT COALESCE(SUM(total_cost_nanos), 0) AS total_cost_nanos FROM project_label_totals WHERE project_id = ? AND agent_id = ?`,
  );
  // An index range of holds(project_id, agent_id, expires_at_ms).
  const selectAgentReserved = prepare(`
    SELECT COALESCE(SUM(amount_nanos), 0) AS amount_nanos FROM holds WHERE project_id = ? AND agent_id = ? AND expires_at_ms > ?`);
  // The agent's active holds placed within the rate window (params: project,
  // agent, now, window start).
  const selectAgentRateHolds = prepare(`
    SELECT created_at_ms, expires_at_ms, amount_nanos FROM holds
    WHERE project_id = ? AND agent_id = ? AND expires_at_ms > ? AND created_at_ms > ?`);
  const upsertRateBucket = prepare(`
    INSERT INTO rate_buckets (project_id, agent_id, bucket_ms, recorded_nanos) VALUES (@projectId, @agentId, @bucketMs, @costNanos)
    ON CONFLICT (project_id, agent_id, bucket_ms) DO UPDATE SET recorded_nanos = recorded_nanos + excluded.recorded_nanos
    WHERE recorded_nanos <= ${INT64_MAX} - excluded.recorded_nanos
    RETURNING recorded_nanos`);
  // At most rateWindowMs / rateBucketMs + 1 rows.
  const selectRateBuckets = prepare(`
    SELECT bucket_ms, recorded_nanos FROM rate_buckets WHERE project_id = ? AND agent_id = ? AND bucket_ms > ?`);
  const insertRateHold = prepare(`
    INSERT INTO rate_holds (project_id, hold_id, placed_at_ms, expires_at_ms, amount_nanos)
    VALUES (@projectId, @holdId, @nowMs, @expiresAtMs, @amountNanos)`);
  const selectRateHolds = prepare(`
    SELECT placed_at_ms, expires_at_ms, amount_nanos FROM rate_holds WHERE project_id = ? AND expires_at_ms > ? AND placed_at_ms > ?`);
  const deleteRateHolds = prepare(`DELETE FROM rate_holds WHERE hold_id = ?`);
  const sweepRateHolds = prepare(`
    DELETE FROM rate_holds WHERE rowid IN (SELECT rowid FROM rate_holds WHERE expires_at_ms <= ? ORDER BY expires_at_ms LIMIT ?)`);
  const sweepRateBuckets = prepare(`
    DELETE FROM rate_buckets WHERE rowid IN (SELECT rowid FROM rate_buckets WHERE bucket_ms < ? ORDER BY bucket_ms LIMIT ?)`);
  return {
    upsertAgentWindows,
    selectAgentWindows,
    selectAgentLifetime,
    selectAgentReserved,
    selectAgentRateHolds,
    upsertRateBucket,
    selectRateBuckets,
    insertRateHold,
    selectRateHolds,
    deleteRateHolds,
    sweepRateHolds,
    sweepRateBuckets,
  };
}
