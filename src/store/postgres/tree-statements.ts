// PostgreSQL statements for trees of budgets (issue 18): ancestors' reserved
// totals, a re-parented subtree's rolled-up amounts moved between ancestors,
// the ids and rows of a tree read by parent links, a project's own totals and
// its breakdown by child. SQL only; ./tree-writes.ts and ./reads.ts bind them.
import { budgetTreeDepthMax } from "../../limits.ts";
import { int64Max } from "../../ledger/money.ts";

const INT64_MAX = int64Max.toString();

/** The ancestors of $1's projects (not the projects themselves), by parent
 * links; the depth bound only guards a loop that the writes never store. */
export const ancestorIdsSql = `
WITH RECURSIVE up(project_id, parent_id, depth) AS (
  SELECT b.project_id, b.parent_id, 1 FROM project_budgets b WHERE b.project_id = ANY($1::text[])
  UNION ALL
  SELECT b.project_id, b.parent_id, up.depth + 1 FROM up JOIN project_budgets b ON b.project_id = up.parent_id WHERE up.depth <= ${budgetTreeDepthMax}
)
SELECT DISTINCT parent_id AS project_id FROM up WHERE parent_id <> ''`;

/** Every descendant of $1 with its parent (for the tree's depth check). */
export const descendantsSql = `
WITH RECURSIVE down(project_id, parent_id, depth) AS (
  SELECT b.project_id, b.parent_id, 1 FROM project_budgets b WHERE b.parent_id = $1
  UNION ALL
  SELECT b.project_id, b.parent_id, down.depth + 1 FROM down JOIN project_budgets b ON b.parent_id = down.project_id WHERE down.depth <= ${budgetTreeDepthMax}
)
SELECT project_id, parent_id FROM down ORDER BY project_id COLLATE "C"`;

export const hasChildrenSql = `SELECT 1 FROM project_budgets WHERE parent_id = $1 LIMIT 1`;
export const setParentSql = `UPDATE project_budgets SET parent_id = $2 WHERE project_id = $1 RETURNING 1`;

/** Adds ($2 amount, $3 holds) to the reservations of each of $1's projects;
 * returns how many rows took it (the guard refuses an int64 overflow). */
export const addReservationsSql = `
WITH added AS (
  INSERT INTO project_reservations AS r (project_id, reserved_nanos, hold_count, updated_at_ms)
  SELECT id, $2::bigint, $3::bigint, $4::bigint FROM unnest($1::text[]) AS id
  ON CONFLICT (project_id) DO UPDATE SET
    reserved_nanos = r.reserved_nanos + excluded.reserved_nanos, hold_count = r.hold_count + excluded.hold_count, updated_at_ms = excluded.updated_at_ms
  WHERE r.reserved_nanos <= ${INT64_MAX} - excluded.reserved_nanos
  RETURNING 1
)
SELECT count(*) AS n FROM added`;

/** Takes ($2 amount, $3 holds) off the reservations of each of $1's projects;
 * returns how many rows changed and how many went negative. */
export const subtractReservationsSql = `
WITH taken AS (
  UPDATE project_reservations r SET reserved_nanos = r.reserved_nanos - $2::bigint, hold_count = r.hold_count - $3::bigint, updated_at_ms = $4::bigint
  WHERE r.project_id = ANY($1::text[])
  RETURNING r.reserved_nanos, r.hold_count
)
SELECT count(*) AS n, count(*) FILTER (WHERE reserved_nanos < 0 OR hold_count < 0) AS negative FROM taken`;

const periodJoin = (w: "day" | "month") =>
  ["cost_nanos", "input_tokens", "output_tokens", "record_count"]
    .map(
      (c) => `${w}_${c} = CASE WHEN excluded.${w}_period COLLATE "C" > t.${w}_period COLLATE "C" THEN excluded.${w}_${c}
        WHEN excluded.${w}_period = t.${w}_period THEN t.${w}_${c} + excluded.${w}_${c} ELSE t.${w}_${c} END`,
    )
    .concat([
      `${w}_alerted_bps = CASE WHEN excluded.${w}_period COLLATE "C" > t.${w}_period COLLATE "C" THEN 0 ELSE t.${w}_alerted_bps END`,
      `${w}_alerted_limit_nanos = CASE WHEN excluded.${w}_period COLLATE "C" > t.${w}_period COLLATE "C" THEN 0 ELSE t.${w}_alerted_limit_nanos END`,
      `${w}_period = CASE WHEN excluded.${w}_period COLLATE "C" > t.${w}_period COLLATE "C" THEN excluded.${w}_period ELSE t.${w}_period END`,
    ])
    .join(",\n");

/** A joining subtree's totals (the moved project's row, $2) added to each of
 * $1's projects: lifetime adds; a day or month adds when it is the
 * ancestor's current one, replaces an older one, is left out when it ended
 * there already. Returns how many rows took it. */
export const joinTotalsSql = `
WITH joined AS (
  INSERT INTO project_totals AS t (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms,
    day_period, day_cost_nanos, day_input_tokens, day_output_tokens, day_record_count,
    month_period, month_cost_nanos, month_input_tokens, month_output_tokens, month_record_count)
  SELECT id, s.total_cost_nanos, s.input_tokens, s.output_tokens, s.record_count, $3::bigint, $3::bigint,
    s.day_period, s.day_cost_nanos, s.day_input_tokens, s.day_output_tokens, s.day_record_count,
    s.month_period, s.month_cost_nanos, s.month_input_tokens, s.month_output_tokens, s.month_record_count
  FROM unnest($1::text[]) AS id, project_totals s WHERE s.project_id = $2
  ON CONFLICT (project_id) DO UPDATE SET
    total_cost_nanos = t.total_cost_nanos + excluded.total_cost_nanos,
    input_tokens = t.input_tokens + excluded.input_tokens,
    output_tokens = t.output_tokens + excluded.output_tokens,
    record_count = t.record_count + excluded.record_count,
    updated_at_ms = excluded.updated_at_ms,
    ${periodJoin("day")},
    ${periodJoin("month")}
  WHERE t.total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
    AND t.input_tokens <= ${INT64_MAX} - excluded.input_tokens
    AND t.output_tokens <= ${INT64_MAX} - excluded.output_tokens
    AND t.record_count <= ${INT64_MAX} - excluded.record_count
  RETURNING 1
)
SELECT count(*) AS n FROM joined`;

const periodLeave = (w: "day" | "month") =>
  ["cost_nanos", "input_tokens", "output_tokens", "record_count"]
    .map((c) => `${w}_${c} = CASE WHEN t.${w}_period = s.${w}_period THEN t.${w}_${c} - s.${w}_${c} ELSE t.${w}_${c} END`)
    .join(",\n");

/** A leaving subtree's totals (the moved project's row, $2) taken off each
 * of $1's projects: lifetime exactly; a day or month while it is still the
 * ancestor's current one. Returns how many rows changed and went negative. */
export const leaveTotalsSql = `
WITH left_rows AS (
  UPDATE project_totals t SET
    total_cost_nanos = t.total_cost_nanos - s.total_cost_nanos,
    input_tokens = t.input_tokens - s.input_tokens,
    output_tokens = t.output_tokens - s.output_tokens,
    record_count = t.record_count - s.record_count,
    updated_at_ms = $3::bigint,
    ${periodLeave("day")},
    ${periodLeave("month")}
  FROM project_totals s WHERE s.project_id = $2 AND t.project_id = ANY($1::text[])
  RETURNING t.total_cost_nanos, t.record_count, t.day_cost_nanos, t.month_cost_nanos
)
SELECT count(*) AS n, count(*) FILTER (WHERE total_cost_nanos < 0 OR record_count < 0 OR day_cost_nanos < 0 OR month_cost_nanos < 0) AS negative FROM left_rows`;

export const ownTotalsSql = `
SELECT COALESCE(SUM(total_cost_nanos), 0)::text AS total_cost_nanos, COALESCE(SUM(input_tokens), 0)::text AS input_tokens,
  COALESCE(SUM(output_tokens), 0)::text AS output_tokens, COALESCE(SUM(record_count), 0)::text AS record_count
FROM project_label_totals WHERE project_id = $1`;

/** Direct children of $1 with their rolled-up totals, highest cost first, at most $2. */
export const childTotalsSql = `
SELECT b.project_id AS label, COALESCE(t.total_cost_nanos, 0) AS total_cost_nanos, COALESCE(t.input_tokens, 0) AS input_tokens,
  COALESCE(t.output_tokens, 0) AS output_tokens, COALESCE(t.record_count, 0) AS record_count
FROM project_budgets b LEFT JOIN project_totals t ON t.project_id = b.project_id
WHERE b.parent_id = $1
ORDER BY COALESCE(t.total_cost_nanos, 0) DESC, b.project_id COLLATE "C" ASC LIMIT $2`;
