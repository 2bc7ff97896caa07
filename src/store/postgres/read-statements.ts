// The SQL of the PostgreSQL store's reads: each one statement, so one
// snapshot. Named statements are parsed and planned once per connection.
import { budgetColumns, prefixed, totalsColumns } from "./columns.ts";

// Everything a decision needs, in one statement (one snapshot).
export const stateSql = `
SELECT ${prefixed("b", "b_", budgetColumns)}, ${prefixed("t", "t_", totalsColumns)},
  r.reserved_nanos AS r_reserved_nanos, r.hold_count AS r_hold_count,
  (SELECT COALESCE(sum(amount_nanos), 0) FROM holds WHERE project_id = $1 AND expires_at_ms <= $2::bigint) AS expired_nanos,
  (SELECT count(*) FROM holds WHERE project_id = $1 AND expires_at_ms <= $2::bigint) AS expired_count,
  EXISTS (SELECT 1 FROM project_budgets c WHERE c.parent_id = $1) AS has_children
FROM (SELECT 1) AS one
LEFT JOIN project_budgets b ON b.project_id = $1
LEFT JOIN project_totals t ON t.project_id = $1
LEFT JOIN project_reservations r ON r.project_id = $1`;

// The state of $1 and of every ancestor (nearest first) in one statement, one
// snapshot (decision 0013): the parent links followed by a recursive CTE, each
// level's row shaped as stateSql's. The depth bound only guards a loop that
// the writes never store.
export const chainStatesSql = (depthMax: number) => `
WITH RECURSIVE chain(project_id, depth) AS (
  SELECT $1::text, 1
  UNION ALL
  SELECT pb.parent_id, c.depth + 1 FROM chain c JOIN project_budgets pb ON pb.project_id = c.project_id
  WHERE pb.parent_id <> '' AND c.depth <= ${depthMax}
)
SELECT c.project_id AS level_id, ${prefixed("b", "b_", budgetColumns)}, ${prefixed("t", "t_", totalsColumns)},
  r.reserved_nanos AS r_reserved_nanos, r.hold_count AS r_hold_count,
  (SELECT COALESCE(sum(amount_nanos), 0) FROM holds h WHERE h.project_id = c.project_id AND h.expires_at_ms <= $2::bigint) AS expired_nanos,
  (SELECT count(*) FROM holds h WHERE h.project_id = c.project_id AND h.expires_at_ms <= $2::bigint) AS expired_count
FROM chain c
LEFT JOIN project_budgets b ON b.project_id = c.project_id
LEFT JOIN project_totals t ON t.project_id = c.project_id
LEFT JOIN project_reservations r ON r.project_id = c.project_id
ORDER BY c.depth`;

export const selectTotalsSql = `SELECT * FROM project_totals WHERE project_id = $1`;
export const selectBudgetSql = `SELECT * FROM project_budgets WHERE project_id = $1`;
// One statement, one snapshot: budget and totals consistent with each other.
export const selectBudgetAndTotalsSql = `
SELECT ${prefixed("b", "b_", budgetColumns)}, ${prefixed("t", "t_", totalsColumns)}
FROM (SELECT 1) AS one
LEFT JOIN project_budgets b ON b.project_id = $1
LEFT JOIN project_totals t ON t.project_id = $1`;
export const selectHoldSql = `SELECT * FROM holds WHERE hold_id = $1`;
// Labels ordered bytewise like SQLite; sums of bigint are numeric (no overflow).
export const breakdownSql = (column: "agent_id" | "model") => `
SELECT ${column} AS label, sum(total_cost_nanos) AS total_cost_nanos, sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens, sum(record_count) AS record_count, sum(catalog_cost_nanos) AS catalog_cost_nanos,
  sum(priced_cost_nanos) AS priced_cost_nanos, sum(unpriced_record_count) AS unpriced_record_count
FROM project_label_totals WHERE project_id = $1
GROUP BY ${column} ORDER BY sum(total_cost_nanos) DESC, ${column} COLLATE "C" ASC LIMIT $2`;
export const listRecordsSql = `
SELECT id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, hold_id, recorded_at_ms, total_cost_nanos_after,
  cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms FROM cost_records
WHERE project_id = $1 AND recorded_at_ms >= $2::bigint AND recorded_at_ms < $3::bigint
  AND (recorded_at_ms > $4::bigint OR (recorded_at_ms = $4::bigint AND id > $5::bigint))
ORDER BY recorded_at_ms, id LIMIT $6`;
// Project listings compare ids bytewise (COLLATE "C"), as SQLite does, so the
// order and the keyset cursor do not depend on the database's locale.
// Each entry also carries its active holds as #state computes them (the
// reservation row minus the project's expired, unswept holds: an index range
// per listed project), in the same statement, so one snapshot.
const listedColumns = `l.project_id, ${prefixed("b", "b_", budgetColumns)}, ${prefixed("t", "t_", totalsColumns)},
  r.reserved_nanos AS r_reserved_nanos, r.hold_count AS r_hold_count, e.expired_nanos, e.expired_count, x.archived_at_ms AS x_archived_at_ms`;
// Archived projects are listed only when the flag parameter is true (include_archived).
const notArchived = (alias: string, flag: string) =>
  `(${flag}::boolean OR NOT EXISTS (SELECT 1 FROM project_archives ax WHERE ax.project_id = ${alias}.project_id))`;
const listedHolds = (nowParam: string) => `
LEFT JOIN project_archives x ON x.project_id = l.project_id
LEFT JOIN project_reservations r ON r.project_id = l.project_id
LEFT JOIN LATERAL (
  SELECT COALESCE(sum(h.amount_nanos), 0) AS expired_nanos, count(*) AS expired_count FROM holds h
  WHERE h.project_id = l.project_id AND h.expires_at_ms <= ${nowParam}::bigint) e ON true`;
export const listByIdSql = `
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
export const listBySpentSql = `
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
export const spendByCurrencySql = `
SELECT currency, spent, projects FROM (
  SELECT COALESCE(b.currency, $1) AS currency, sum(t.total_cost_nanos)::float8 AS spent, count(*) AS projects
  FROM project_totals t LEFT JOIN project_budgets b ON b.project_id = t.project_id
  GROUP BY 1
) s ORDER BY currency COLLATE "C"`;

// Active holds per currency (metrics): the reservation rows with hold rows,
// minus the expired, unswept holds (an index range on expires_at_ms), grouped
// by the project's currency. Sums are numeric; the metric takes a float.
export const reservedByCurrencySql = `
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
