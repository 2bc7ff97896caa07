// The two statements of a run of RecordCost writes in a PostgreSQL batch
// (decision 0012), whatever the number of writes: one read of everything the
// plan needs (./record-plan.ts), one write of the plan, both set-based over
// arrays (unnest). Run under the batch's project locks.
import type { PoolClient } from "pg";
import { int64Max } from "../../ledger/money.ts";
import { budgetTreeDepthMax } from "../../limits.ts";
import type { BudgetRow, HoldRow, Int8, RecordRow, TotalsRow } from "../rows.ts";
import {
  budgetColumns as budgetRowColumns,
  holdColumns,
  recordColumns as recordRowColumns,
  totalsColumns as totalsRowColumns,
} from "./columns.ts";
import { recordKey, type RecordPlan, type RecordReads } from "./record-plan.ts";

const INT64_MAX = int64Max.toString();

// The row columns as JSON keys; project_id is part of each key here.
const totalsColumns = ["project_id", ...totalsRowColumns];
const budgetColumns = ["project_id", ...budgetRowColumns];
const recordColumns = ["project_id", ...recordRowColumns];

/** Rows as JSON with every value as text: int8 stays exact (a JSON number
 * would pass through a double), as pg's own int8-as-string. */
const asJson = (alias: string, columns: readonly string[]) =>
  `json_agg(json_build_object(${columns.map((c) => `'${c}', ${alias}.${c}::text`).join(", ")}))`;

// $1 the batch's projects whose archive marks and budgets are wanted (empty
// after the first run of the batch: the batch keeps them current itself),
// $2 the run's projects, $3/$4 its (project, request_id) keys, $5 its hold_ids.
// Trees of budgets (decision 0013): `up` follows the parent links of $1's and
// $2's projects, so the budgets of $1 come with every ancestor's, and the
// totals of $2 with every ancestor's (a record adds to each).
const readSql = `
WITH RECURSIVE up(project_id, parent_id, depth) AS (
  SELECT b.project_id, b.parent_id, 1 FROM project_budgets b WHERE b.project_id = ANY($1::text[]) OR b.project_id = ANY($2::text[])
  UNION ALL
  SELECT b.project_id, b.parent_id, up.depth + 1 FROM up JOIN project_budgets b ON b.project_id = up.parent_id WHERE up.depth <= ${budgetTreeDepthMax}
)
SELECT
  (SELECT json_agg(json_build_object('project_id', a.project_id, 'archived_at_ms', a.archived_at_ms::text)) FROM project_archives a WHERE a.project_id = ANY($1::text[])) AS archives,
  (SELECT ${asJson("b", budgetColumns)} FROM project_budgets b
     WHERE b.project_id = ANY($1::text[]) OR (cardinality($1::text[]) > 0 AND b.project_id IN (SELECT parent_id FROM up))) AS budgets,
  (SELECT ${asJson("t", totalsColumns)} FROM project_totals t
     WHERE t.project_id = ANY($2::text[]) OR t.project_id IN (SELECT parent_id FROM up)) AS totals,
  (SELECT ${asJson("c", recordColumns)} FROM unnest($3::text[], $4::text[]) AS k(project_id, request_id)
     JOIN cost_records c ON c.project_id = k.project_id AND c.request_id = k.request_id) AS priors,
  (SELECT ${asJson("h", holdColumns)} FROM holds h WHERE h.hold_id = ANY($5::text[])) AS holds`;

export interface RecordRead {
  reads: RecordReads;
  /** Only when asked for ($1 non-empty). */
  archives: Array<{ project_id: string; archived_at_ms: string }>;
  budgets: BudgetRow[];
}

/** One statement: the rows a run of records is decided on. */
export async function readForRecords(
  client: PoolClient,
  contextProjectIds: readonly string[],
  entries: ReadonlyArray<{ projectId: string; requestId: string; holdId?: string }>,
): Promise<RecordRead> {
  const projectIds = [...new Set(entries.map((e) => e.projectId))];
  const holdIds = [...new Set(entries.map((e) => e.holdId ?? "").filter((h) => h !== ""))];
  const { rows } = await client.query<{
    archives: RecordRead["archives"] | null;
    budgets: BudgetRow[] | null;
    totals: TotalsRow[] | null;
    priors: Array<RecordRow & { project_id: string }> | null;
    holds: HoldRow[] | null;
  }>({
    name: "tally_record_read",
    text: readSql,
    values: [contextProjectIds, projectIds, entries.map((e) => e.projectId), entries.map((e) => e.requestId), holdIds],
  });
  const row = rows[0];
  if (row === undefined) throw new Error("invariant: the record read returned no row");
  return {
    reads: {
      totals: new Map((row.totals ?? []).map((t) => [t.project_id, t])),
      priors: new Map((row.priors ?? []).map((p) => [recordKey(p.project_id, p.request_id), p])),
      holds: new Map((row.holds ?? []).map((h) => [h.hold_id, h])),
    },
    archives: row.archives ?? [],
    budgets: row.budgets ?? [],
  };
}

// A later period (compared bytewise) starts that window afresh; SET sees the
// old row on every right-hand side.
const windowSet = (w: "day" | "month") => {
  const later = `excluded.${w}_period COLLATE "C" > t.${w}_period COLLATE "C"`;
  const sum = (c: string) => `${w}_${c} = CASE WHEN ${later} THEN excluded.${w}_${c} ELSE t.${w}_${c} + excluded.${w}_${c} END`;
  return `${sum("cost_nanos")}, ${sum("input_tokens")}, ${sum("output_tokens")}, ${sum("record_count")},
    ${w}_alerted_bps = excluded.${w}_alerted_bps, ${w}_alerted_limit_nanos = excluded.${w}_alerted_limit_nanos,
    ${w}_period = CASE WHEN ${later} THEN excluded.${w}_period ELSE t.${w}_period END`;
};

// One statement for the whole run. Parameters are parallel arrays:
//  $1-$19  ledger rows (one per applied write, with its own totals after it);
//  $20-$32 per project: the sums of its writes (lifetime, day, month, with
//          the period keys) and its alert state after the run; the guard
//          refuses an increment that would overflow (the plan already did:
//          the returned rows are compared with the plan, so a refusal here
//          fails the batch instead of counting wrong);
//  $33-$42 per (project, agent, model): the summed breakdown increments;
//  $43-$44 settled holds (id, project), whose rate entries go with them;
//  $45-$47 per project: reservation decrement (sum, count); $48 now;
//  $49-$53 per (project, agent): day and month spend (./cap-plan.ts);
//  $54-$57 per (level, agent, bucket): a rate's recorded spend. Both are
//          sums of parts of the project's totals, whose guard covers them.
const writeSql = `
WITH ledger AS (
  INSERT INTO cost_records (${recordColumns.join(", ")})
  SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::bigint[],
    $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::bigint[], $15::bigint[], $16::text[], $17::bigint[], $18::text[], $19::bigint[])
  RETURNING 1
), totals AS (
  INSERT INTO project_totals AS t (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms, alerted_bps, alerted_limit_nanos,
    day_period, day_cost_nanos, day_input_tokens, day_output_tokens, day_record_count, day_alerted_bps, day_alerted_limit_nanos,
    month_period, month_cost_nanos, month_input_tokens, month_output_tokens, month_record_count, month_alerted_bps, month_alerted_limit_nanos)
  SELECT p.project_id, p.cost, p.input, p.output, p.n, $48::bigint, $48::bigint, p.bps, p.alert_limit,
    p.day, p.cost, p.input, p.output, p.n, p.day_bps, p.day_alert_limit,
    p.month, p.cost, p.input, p.output, p.n, p.month_bps, p.month_alert_limit
  FROM unnest($20::text[], $21::bigint[], $22::bigint[], $23::bigint[], $24::bigint[], $25::bigint[], $26::bigint[],
    $27::text[], $28::bigint[], $29::bigint[], $30::text[], $31::bigint[], $32::bigint[])
    AS p(project_id, cost, input, output, n, bps, alert_limit, day, day_bps, day_alert_limit, month, month_bps, month_alert_limit)
  ON CONFLICT (project_id) DO UPDATE SET
    total_cost_nanos = t.total_cost_nanos + excluded.total_cost_nanos,
    input_tokens = t.input_tokens + excluded.input_tokens,
    output_tokens = t.output_tokens + excluded.output_tokens,
    record_count = t.record_count + excluded.record_count,
    updated_at_ms = excluded.updated_at_ms,
    alerted_bps = excluded.alerted_bps, alerted_limit_nanos = excluded.alerted_limit_nanos,
    ${windowSet("day")},
    ${windowSet("month")}
  WHERE t.total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
    AND t.input_tokens <= ${INT64_MAX} - excluded.input_tokens
    AND t.output_tokens <= ${INT64_MAX} - excluded.output_tokens
    AND t.record_count <= ${INT64_MAX} - excluded.record_count
  RETURNING t.*
), labels AS (
  INSERT INTO project_label_totals AS l (project_id, agent_id, model, total_cost_nanos, input_tokens, output_tokens, record_count, updated_at_ms,
    catalog_cost_nanos, priced_cost_nanos, unpriced_record_count)
  SELECT x.project_id, x.agent_id, x.model, x.cost, x.input, x.output, x.n, $48::bigint, x.catalog, x.priced, x.unpriced
  FROM unnest($33::text[], $34::text[], $35::text[], $36::bigint[], $37::bigint[], $38::bigint[], $39::bigint[], $40::bigint[], $41::bigint[], $42::bigint[])
    AS x(project_id, agent_id, model, cost, input, output, n, catalog, priced, unpriced)
  ON CONFLICT (project_id, agent_id, model) DO UPDATE SET
    total_cost_nanos = l.total_cost_nanos + excluded.total_cost_nanos,
    catalog_cost_nanos = l.catalog_cost_nanos + excluded.catalog_cost_nanos,
    priced_cost_nanos = l.priced_cost_nanos + excluded.priced_cost_nanos,
    unpriced_record_count = l.unpriced_record_count + excluded.unpriced_record_count,
    input_tokens = l.input_tokens + excluded.input_tokens,
    output_tokens = l.output_tokens + excluded.output_tokens,
    record_count = l.record_count + excluded.record_count,
    updated_at_ms = excluded.updated_at_ms
  RETURNING 1
), settled AS (
  DELETE FROM holds h USING unnest($43::text[], $44::text[]) AS s(hold_id, project_id)
  WHERE h.hold_id = s.hold_id AND h.project_id = s.project_id
  RETURNING 1
), unreserved AS (
  UPDATE project_reservations r SET reserved_nanos = r.reserved_nanos - u.amount, hold_count = r.hold_count - u.n, updated_at_ms = $48::bigint
  FROM unnest($45::text[], $46::bigint[], $47::bigint[]) AS u(project_id, amount, n)
  WHERE r.project_id = u.project_id
  RETURNING r.reserved_nanos, r.hold_count
), rate_ended AS (
  DELETE FROM rate_holds rh USING unnest($43::text[]) AS s(hold_id) WHERE rh.hold_id = s.hold_id
  RETURNING 1
), agent_windows_added AS (
  INSERT INTO agent_windows AS a (project_id, agent_id, day_period, day_cost_nanos, month_period, month_cost_nanos, updated_at_ms)
  SELECT w.project_id, w.agent_id, w.day, w.cost, w.month, w.cost, $48::bigint
  FROM unnest($49::text[], $50::text[], $51::text[], $52::text[], $53::bigint[]) AS w(project_id, agent_id, day, month, cost)
  ON CONFLICT (project_id, agent_id) DO UPDATE SET
    day_cost_nanos = CASE WHEN excluded.day_period > a.day_period THEN excluded.day_cost_nanos ELSE a.day_cost_nanos + excluded.day_cost_nanos END,
    day_period = GREATEST(a.day_period, excluded.day_period),
    month_cost_nanos = CASE WHEN excluded.month_period > a.month_period THEN excluded.month_cost_nanos ELSE a.month_cost_nanos + excluded.month_cost_nanos END,
    month_period = GREATEST(a.month_period, excluded.month_period),
    updated_at_ms = excluded.updated_at_ms
  RETURNING 1
), buckets_added AS (
  INSERT INTO rate_buckets AS rb (project_id, agent_id, bucket_ms, recorded_nanos)
  SELECT b.project_id, b.agent_id, b.bucket, b.cost
  FROM unnest($54::text[], $55::text[], $56::bigint[], $57::bigint[]) AS b(project_id, agent_id, bucket, cost)
  ON CONFLICT (project_id, agent_id, bucket_ms) DO UPDATE SET recorded_nanos = rb.recorded_nanos + excluded.recorded_nanos
  RETURNING 1
), counts AS (
  SELECT (SELECT count(*) FROM ledger) AS inserted, (SELECT count(*) FROM labels) AS labelled, (SELECT count(*) FROM settled) AS settled,
    (SELECT count(*) FROM unreserved) AS unreserved, (SELECT count(*) FROM unreserved WHERE reserved_nanos < 0 OR hold_count < 0) AS negative
)
SELECT c.*, t.* FROM counts c LEFT JOIN totals t ON true`;

type WriteRow = TotalsRow & { inserted: Int8; labelled: Int8; settled: Int8; unreserved: Int8; negative: Int8 };

const text = (xs: readonly bigint[]) => xs.map(String);
const textOrNull = (xs: ReadonlyArray<bigint | null>) => xs.map((x) => (x === null ? null : String(x)));

/** One statement: the plan's ledger rows, totals, breakdowns and settled holds.
 * Throws (the batch rolls back) if the database disagrees with the plan:
 * a count, a reservation gone negative, or a totals row not the one planned. */
export async function writeRecordPlan(client: PoolClient, plan: RecordPlan, nowMs: number): Promise<void> {
  if (plan.ledger.length === 0) return;
  const l = plan.ledger;
  const projects = [...plan.projects.values()];
  const labels = [...plan.labels.values()];
  const unreserved = [...plan.unreserved.entries()];
  const windows = [...plan.caps.windows.values()];
  const buckets = [...plan.caps.buckets.values()];
  const { rows } = await client.query<WriteRow>({
    name: "tally_record_write",
    text: writeSql,
    values: [
      l.map((r) => r.project_id),
      l.map((r) => r.request_id),
      text(l.map((r) => r.cost_nanos)),
      text(l.map((r) => r.input_tokens)),
      text(l.map((r) => r.output_tokens)),
      l.map((r) => r.agent_id),
      l.map((r) => r.model),
      text(l.map((r) => r.recorded_at_ms)),
      text(l.map((r) => r.total_cost_nanos_after)),
      text(l.map((r) => r.input_tokens_after)),
      text(l.map((r) => r.output_tokens_after)),
      text(l.map((r) => r.record_count_after)),
      l.map((r) => r.hold_id),
      text(l.map((r) => r.cached_input_tokens)),
      text(l.map((r) => r.cache_write_tokens)),
      l.map((r) => r.cost_source),
      textOrNull(l.map((r) => r.catalog_cost_nanos)),
      l.map((r) => r.price_id),
      textOrNull(l.map((r) => r.occurred_at_ms)),
      projects.map((p) => p.projectId),
      text(projects.map((p) => p.costNanos)),
      text(projects.map((p) => p.inputTokens)),
      text(projects.map((p) => p.outputTokens)),
      text(projects.map((p) => p.recordCount)),
      text(projects.map((p) => p.totals.lifetime.alertedBps)),
      text(projects.map((p) => p.totals.lifetime.alertedLimitNanos)),
      projects.map((p) => p.keys.day),
      text(projects.map((p) => p.totals.day.alertedBps)),
      text(projects.map((p) => p.totals.day.alertedLimitNanos)),
      projects.map((p) => p.keys.month),
      text(projects.map((p) => p.totals.month.alertedBps)),
      text(projects.map((p) => p.totals.month.alertedLimitNanos)),
      labels.map((x) => x.projectId),
      labels.map((x) => x.agentId),
      labels.map((x) => x.model),
      text(labels.map((x) => x.costNanos)),
      text(labels.map((x) => x.inputTokens)),
      text(labels.map((x) => x.outputTokens)),
      text(labels.map((x) => x.recordCount)),
      text(labels.map((x) => x.catalogCostNanos)),
      text(labels.map((x) => x.pricedCostNanos)),
      text(labels.map((x) => x.unpricedRecordCount)),
      plan.settled.map((s) => s.holdId),
      plan.settled.map((s) => s.projectId),
      unreserved.map(([projectId]) => projectId),
      text(unreserved.map(([, u]) => u.amountNanos)),
      text(unreserved.map(([, u]) => u.holdCount)),
      String(nowMs),
      windows.map((w) => w.projectId),
      windows.map((w) => w.agentId),
      windows.map((w) => w.dayPeriod),
      windows.map((w) => w.monthPeriod),
      text(windows.map((w) => w.costNanos)),
      buckets.map((b) => b.projectId),
      buckets.map((b) => b.agentId),
      buckets.map((b) => String(b.bucketMs)),
      text(buckets.map((b) => b.costNanos)),
    ],
  });
  const first = rows[0];
  if (first === undefined) throw new Error("invariant: the record write returned no row");
  const n = (x: Int8) => BigInt(x);
  if (
    n(first.inserted) !== BigInt(l.length) ||
    n(first.labelled) !== BigInt(labels.length) ||
    n(first.settled) !== BigInt(plan.settled.length) ||
    n(first.unreserved) !== BigInt(unreserved.length) ||
    n(first.negative) !== 0n
  ) {
    throw new Error(
      `invariant: a record batch planned ${l.length} records, ${labels.length} breakdown rows, ${plan.settled.length} settled holds over ${unreserved.length} reservations; wrote ${first.inserted}, ${first.labelled}, ${first.settled}, ${first.unreserved} (${first.negative} negative)`,
    );
  }
  const returned = new Map(rows.filter((r) => r.project_id !== null).map((r) => [r.project_id, r]));
  for (const p of projects) {
    const row = returned.get(p.projectId);
    const expected = [
      p.totals.lifetime.costNanos,
      p.totals.lifetime.inputTokens,
      p.totals.lifetime.outputTokens,
      p.totals.lifetime.recordCount,
      p.totals.lifetime.alertedBps,
      p.totals.lifetime.alertedLimitNanos,
      p.totals.day.costNanos,
      p.totals.day.inputTokens,
      p.totals.day.outputTokens,
      p.totals.day.recordCount,
      p.totals.day.alertedBps,
      p.totals.day.alertedLimitNanos,
      p.totals.month.costNanos,
      p.totals.month.inputTokens,
      p.totals.month.outputTokens,
      p.totals.month.recordCount,
      p.totals.month.alertedBps,
      p.totals.month.alertedLimitNanos,
    ];
    const actual =
      row === undefined
        ? null
        : [
            row.total_cost_nanos,
            row.input_tokens,
            row.output_tokens,
            row.record_count,
            row.alerted_bps,
            row.alerted_limit_nanos,
            row.day_cost_nanos,
            row.day_input_tokens,
            row.day_output_tokens,
            row.day_record_count,
            row.day_alerted_bps,
            row.day_alerted_limit_nanos,
            row.month_cost_nanos,
            row.month_input_tokens,
            row.month_output_tokens,
            row.month_record_count,
            row.month_alerted_bps,
            row.month_alerted_limit_nanos,
          ].map(n);
    if (
      actual === null ||
      row?.day_period !== p.totals.day.period ||
      row.month_period !== p.totals.month.period ||
      actual.some((v, i) => v !== expected[i])
    ) {
      // The rows read under the lock changed before this write, or the guard refused: never count on a wrong base.
      throw new Error(
        `invariant: totals of project "${p.projectId}" after the batch are not the planned ones (read under the lock, written in the same transaction)`,
      );
    }
  }
}
