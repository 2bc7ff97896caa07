// The SQLite store's statements for trees of budgets (issue 18): parent links,
// a subtree's rolled-up amounts moved between ancestors when it is
// re-parented, a project's own totals and its breakdown by child. SQL only;
// ./tree-writes.ts and ./reads.ts bind and map them.
import type Database from "better-sqlite3";
import { int64Max } from "../../ledger/money.ts";

const INT64_MAX = int64Max.toString();

export type SqliteTreeStatements = ReturnType<typeof prepareTreeStatements>;

export function prepareTreeStatements(db: Database.Database) {
  const prepare = (sql: string) => db.prepare(sql).safeIntegers(true);
  const selectChildren = prepare(`SELECT project_id FROM project_budgets WHERE parent_id = ? ORDER BY project_id`);
  const hasChildren = prepare(`SELECT 1 FROM project_budgets WHERE parent_id = ? LIMIT 1`);
  const setParent = prepare(`UPDATE project_budgets SET parent_id = @parentId WHERE project_id = @projectId`);
  // A joining subtree's totals: lifetime adds; a day or month adds when it is
  // the ancestor's current one, replaces an older one (the ancestor had not
  // spent in the subtree's current period yet: its alert state starts afresh
  // as a record's would), and is left out when it already ended at the
  // ancestor (a record of a later period reached the ancestor since).
  const periodJoin = (w: "day" | "month") =>
    ["cost_nanos", "input_tokens", "output_tokens", "record_count"]
      .map(
        (c) => `${w}_${c} = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_${c}
          WHEN excluded.${w}_period = ${w}_period THEN ${w}_${c} + excluded.${w}_${c} ELSE ${w}_${c} END`,
      )
      .concat([
        `${w}_alerted_bps = CASE WHEN excluded.${w}_period > ${w}_period THEN 0 ELSE ${w}_alerted_bps END`,
        `${w}_alerted_limit_nanos = CASE WHEN excluded.${w}_period > ${w}_period THEN 0 ELSE ${w}_alerted_limit_nanos END`,
        `${w}_period = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_period ELSE ${w}_period END`,
      ])
      .join(",\n");
  const joinTotals = prepare(`
    INSERT INTO project_totals (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms,
      day_period, day_cost_nanos, day_input_tokens, day_output_tokens, day_record_count,
      month_period, month_cost_nanos, month_input_tokens, month_output_tokens, month_record_count)
    VALUES (@projectId, @total_cost_nanos, @input_tokens, @output_tokens, @record_count, @nowMs, @nowMs,
      @day_period, @day_cost_nanos, @day_input_tokens, @day_output_tokens, @day_record_count,
      @month_period, @month_cost_nanos, @month_input_tokens, @month_output_tokens, @month_record_count)
    ON CONFLICT (project_id) DO UPDATE SET
      total_cost_nanos = total_cost_nanos + excluded.total_cost_nanos,
      input_tokens = input_tokens + excluded.input_tokens,
      output_tokens = output_tokens + excluded.output_tokens,
      record_count = record_count + excluded.record_count,
      updated_at_ms = excluded.updated_at_ms,
      ${periodJoin("day")},
      ${periodJoin("month")}
    WHERE total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
      AND input_tokens <= ${INT64_MAX} - excluded.input_tokens
      AND output_tokens <= ${INT64_MAX} - excluded.output_tokens
      AND record_count <= ${INT64_MAX} - excluded.record_count
    RETURNING total_cost_nanos`);
  // A leaving subtree's totals: every one of its records was added to the
  // ancestor, so lifetime subtracts exactly; its day or month subtracts when it
  // is still the ancestor's current one (else it ended there already).
  const periodLeave = (w: "day" | "month") =>
    ["cost_nanos", "input_tokens", "output_tokens", "record_count"]
      .map((c) => `${w}_${c} = CASE WHEN ${w}_period = @${w}_period THEN ${w}_${c} - @${w}_${c} ELSE ${w}_${c} END`)
      .join(",\n");
  const leaveTotals = prepare(`
    UPDATE project_totals SET
      total_cost_nanos = total_cost_nanos - @total_cost_nanos,
      input_tokens = input_tokens - @input_tokens,
      output_tokens = output_tokens - @output_tokens,
      record_count = record_count - @record_count,
      updated_at_ms = @nowMs,
      ${periodLeave("day")},
      ${periodLeave("month")}
    WHERE project_id = @projectId
    RETURNING total_cost_nanos, record_count, day_cost_nanos, month_cost_nanos`);
  const joinReservations = prepare(`
    INSERT INTO project_reservations (project_id, reserved_nanos, hold_count, updated_at_ms)
    VALUES (@projectId, @reserved_nanos, @hold_count, @nowMs)
    ON CONFLICT (project_id) DO UPDATE SET
      reserved_nanos = reserved_nanos + excluded.reserved_nanos,
      hold_count = hold_count + excluded.hold_count,
      updated_at_ms = excluded.updated_at_ms
    WHERE reserved_nanos <= ${INT64_MAX} - excluded.reserved_nanos
    RETURNING reserved_nanos`);
  // The project's own calls: the sum of its label totals (one row per agent
  // and model it recorded for, never its descendants').
  const selectOwnTotals = prepare(`
    SELECT COALESCE(SUM(total_cost_nanos), 0) AS total_cost_nanos, COALESCE(SUM(input_tokens), 0) AS input_tokens,
      COALESCE(SUM(output_tokens), 0) AS output_tokens, COALESCE(SUM(record_count), 0) AS record_count,
      COALESCE(SUM(catalog_cost_nanos), 0) AS catalog_cost_nanos, COALESCE(SUM(priced_cost_nanos), 0) AS priced_cost_nanos,
      COALESCE(SUM(unpriced_record_count), 0) AS unpriced_record_count
    FROM project_label_totals WHERE project_id = ?`);
  // Direct children with their rolled-up totals, highest cost first.
  const selectChildTotals = prepare(`
    SELECT b.project_id AS label, COALESCE(t.total_cost_nanos, 0) AS total_cost_nanos, COALESCE(t.input_tokens, 0) AS input_tokens,
      COALESCE(t.output_tokens, 0) AS output_tokens, COALESCE(t.record_count, 0) AS record_count
    FROM project_budgets b LEFT JOIN project_totals t ON t.project_id = b.project_id
    WHERE b.parent_id = ?
    ORDER BY COALESCE(t.total_cost_nanos, 0) DESC, b.project_id ASC LIMIT ?`);
  return { selectChildren, hasChildren, setParent, joinTotals, leaveTotals, joinReservations, selectOwnTotals, selectChildTotals };
}
