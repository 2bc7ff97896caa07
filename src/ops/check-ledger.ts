// `tally check`, the ledger part: each project's totals, day and month windows
// and agent/model breakdowns against its cost_records rows. Exact, on bigint.
//
// Every cost record keeps the project's running totals right after it was
// applied (total_cost_nanos_after, ...), so even when retention deleted the
// oldest rows the ledger proves itself: the last row's running totals are the
// project's totals, and the rows present add up to the difference between the
// last and the first row's running totals (plus the first row itself). A
// ledger is "complete" when its first row is the project's first record
// (record_count_after = 1); only then are windows that reach its start and the
// breakdowns comparable with rows.
import { periodKeys } from "../ledger/periods.ts";
import { timeZoneDefault } from "../limits.ts";
import { big, type OpsDatabase, type Row } from "./database.ts";

export interface Findings {
  /** What is wrong: each makes the check fail. */
  problems: string[];
  /** What could not be verified, and why (the check still passes). */
  notes: string[];
}

interface Sums {
  n: bigint;
  cost: bigint;
  input: bigint;
  output: bigint;
}

const sumsText = (s: Sums) => `${s.n} records, ${s.cost} nanos, ${s.input} input and ${s.output} output tokens`;
const sameSums = (a: Sums, b: Sums) => a.n === b.n && a.cost === b.cost && a.input === b.input && a.output === b.output;

const totalsSql = `
  SELECT t.project_id, t.total_cost_nanos, t.input_tokens, t.output_tokens, t.record_count,
    t.day_period, t.day_cost_nanos, t.day_input_tokens, t.day_output_tokens, t.day_record_count,
    t.month_period, t.month_cost_nanos, t.month_input_tokens, t.month_output_tokens, t.month_record_count,
    l.n, l.cost, l.input, l.output, l.first_id,
    f.cost_nanos AS f_cost, f.input_tokens AS f_input, f.output_tokens AS f_output,
    f.total_cost_nanos_after AS f_total, f.input_tokens_after AS f_input_after, f.output_tokens_after AS f_output_after, f.record_count_after AS f_count,
    z.total_cost_nanos_after AS z_total, z.input_tokens_after AS z_input, z.output_tokens_after AS z_output, z.record_count_after AS z_count,
    b.time_zone, b.updated_at_ms AS budget_updated_at_ms,
    EXISTS (SELECT 1 FROM project_budgets c WHERE c.parent_id = t.project_id) AS has_children
  FROM project_totals t
  LEFT JOIN (SELECT project_id, count(*) AS n, sum(cost_nanos) AS cost, sum(input_tokens) AS input, sum(output_tokens) AS output,
               min(id) AS first_id, max(id) AS last_id
             FROM cost_records GROUP BY project_id) l ON l.project_id = t.project_id
  LEFT JOIN cost_records f ON f.id = l.first_id
  LEFT JOIN cost_records z ON z.id = l.last_id
  LEFT JOIN project_budgets b ON b.project_id = t.project_id
  ORDER BY t.project_id`;

export interface LedgerSummary {
  projects: number;
  records: bigint;
  totalCostNanos: bigint;
  /** Projects whose ledger starts at their first record. */
  completeProjects: Set<string>;
}

export async function checkLedger(db: OpsDatabase, findings: Findings): Promise<LedgerSummary> {
  const summary: LedgerSummary = { projects: 0, records: 0n, totalCostNanos: 0n, completeProjects: new Set() };
  let unverifiable = 0;
  for (const row of await db.all(totalsSql)) {
    const projectId = String(row.project_id);
    summary.projects++;
    if (big(row.has_children) !== 0n) {
      // A parent's totals are rolled up (docs/decisions/0013-nested-budgets.md):
      // its own calls plus its children's totals; its records' running totals
      // include the children's, so they are checked through the children.
      await checkRollup(db, findings, projectId, row);
      continue;
    }
    summary.records += big(row.record_count);
    summary.totalCostNanos += big(row.total_cost_nanos);
    const totals: Sums = {
      n: big(row.record_count),
      cost: big(row.total_cost_nanos),
      input: big(row.input_tokens),
      output: big(row.output_tokens),
    };
    const rows: Sums = { n: big(row.n), cost: big(row.cost), input: big(row.input), output: big(row.output) };
    if (rows.n === 0n) {
      if (totals.n > 0n) unverifiable++;
      continue;
    }
    const last: Sums = { n: big(row.z_count), cost: big(row.z_total), input: big(row.z_input), output: big(row.z_output) };
    const first: Sums = { n: big(row.f_count), cost: big(row.f_total), input: big(row.f_input_after), output: big(row.f_output_after) };
    const firstOwn: Sums = { n: 1n, cost: big(row.f_cost), input: big(row.f_input), output: big(row.f_output) };
    if (!sameSums(totals, last)) {
      findings.problems.push(
        `project ${projectId}: its totals (${sumsText(totals)}) differ from the running totals of its last ledger row (${sumsText(last)}): the totals row or the ledger lost a write`,
      );
    }
    const expected: Sums = {
      n: last.n - first.n + 1n,
      cost: last.cost - first.cost + firstOwn.cost,
      input: last.input - first.input + firstOwn.input,
      output: last.output - first.output + firstOwn.output,
    };
    if (!sameSums(rows, expected)) {
      findings.problems.push(
        `project ${projectId}: its ledger rows add up to ${sumsText(rows)}, but their running totals say ${sumsText(expected)}: ledger rows are missing or extra`,
      );
    }
    const complete = first.n === 1n;
    if (complete && !sameSums(first, firstOwn)) {
      findings.problems.push(
        `project ${projectId}: its first ledger row's running totals (${sumsText(first)}) are not the row itself (${sumsText(firstOwn)})`,
      );
    }
    if (complete) summary.completeProjects.add(projectId);
    const timeZone = row.time_zone === null || row.time_zone === undefined ? timeZoneDefault : String(row.time_zone);
    for (const window of ["day", "month"] as const) {
      await checkWindow(db, findings, { projectId, window, row, timeZone, firstId: big(row.first_id), complete });
    }
  }
  if (unverifiable > 0)
    findings.notes.push(
      `${unverifiable} project(s) have totals but no ledger rows left (deleted by retention): their totals cannot be compared with rows`,
    );
  const strays = await db.all(
    "SELECT project_id, count(*) AS n FROM cost_records WHERE project_id NOT IN (SELECT project_id FROM project_totals) GROUP BY project_id ORDER BY project_id",
  );
  for (const stray of strays)
    findings.problems.push(`project ${String(stray.project_id)}: ${big(stray.n)} ledger rows but no totals row: its totals were lost`);
  await checkBreakdowns(db, findings, summary.completeProjects);
  return summary;
}

/** A parent's lifetime totals against its own calls (its label totals) plus
 * its direct children's totals. */
async function checkRollup(db: OpsDatabase, findings: Findings, projectId: string, row: Row): Promise<void> {
  const [parts] = await db.all(
    `SELECT COALESCE((SELECT sum(record_count) FROM project_label_totals WHERE project_id = ?), 0) + COALESCE((SELECT sum(t.record_count) FROM project_totals t JOIN project_budgets b ON b.project_id = t.project_id WHERE b.parent_id = ?), 0) AS n,
       COALESCE((SELECT sum(total_cost_nanos) FROM project_label_totals WHERE project_id = ?), 0) + COALESCE((SELECT sum(t.total_cost_nanos) FROM project_totals t JOIN project_budgets b ON b.project_id = t.project_id WHERE b.parent_id = ?), 0) AS cost,
       COALESCE((SELECT sum(input_tokens) FROM project_label_totals WHERE project_id = ?), 0) + COALESCE((SELECT sum(t.input_tokens) FROM project_totals t JOIN project_budgets b ON b.project_id = t.project_id WHERE b.parent_id = ?), 0) AS input,
       COALESCE((SELECT sum(output_tokens) FROM project_label_totals WHERE project_id = ?), 0) + COALESCE((SELECT sum(t.output_tokens) FROM project_totals t JOIN project_budgets b ON b.project_id = t.project_id WHERE b.parent_id = ?), 0) AS output`,
    Array.from({ length: 8 }, () => projectId),
  );
  const totals: Sums = {
    n: big(row.record_count),
    cost: big(row.total_cost_nanos),
    input: big(row.input_tokens),
    output: big(row.output_tokens),
  };
  const expected: Sums = { n: big(parts?.n), cost: big(parts?.cost), input: big(parts?.input), output: big(parts?.output) };
  if (!sameSums(totals, expected)) {
    findings.problems.push(
      `project ${projectId}: its rolled-up totals (${sumsText(totals)}) differ from its own calls plus its children's totals (${sumsText(expected)}): a level of its tree lost a write`,
    );
  }
}

interface WindowCase {
  projectId: string;
  window: "day" | "month";
  row: Row;
  timeZone: string;
  firstId: bigint;
  complete: boolean;
}

/** Slack around a period's UTC bounds: no time zone is more than 14 h from UTC. */
const zoneSlackMs = 15 * 3_600_000;
const pageRows = 1_000;

/** The stored window (its period key and sums) against the rows applied since
 * the period began: from the first row (in commit order) whose time falls in
 * that period in the project's zone. A row stamped earlier but applied later
 * (the clock stepped back) was added to the current period, and is counted
 * here too, as the store does. */
async function checkWindow(db: OpsDatabase, findings: Findings, c: WindowCase): Promise<void> {
  const period = String(c.row[`${c.window}_period`] ?? "");
  if (period === "") return; // no record since windows exist (a database from before them)
  const stored: Sums = {
    n: big(c.row[`${c.window}_record_count`]),
    cost: big(c.row[`${c.window}_cost_nanos`]),
    input: big(c.row[`${c.window}_input_tokens`]),
    output: big(c.row[`${c.window}_output_tokens`]),
  };
  const [fromMs, toMs] = periodBoundsMs(period);
  let startId: bigint | undefined;
  let startMs = 0;
  for (let afterId = -1n; startId === undefined; ) {
    const page = await db.all(
      "SELECT id, recorded_at_ms FROM cost_records WHERE project_id = ? AND recorded_at_ms >= ? AND recorded_at_ms < ? AND id > ? ORDER BY id LIMIT ?",
      [c.projectId, fromMs - zoneSlackMs, toMs + zoneSlackMs, afterId, pageRows],
    );
    for (const r of page) {
      if (periodKeys(Number(big(r.recorded_at_ms)), c.timeZone)[c.window] === period) {
        startId = big(r.id);
        startMs = Number(big(r.recorded_at_ms));
        break;
      }
    }
    if (page.length < pageRows) break;
    afterId = big(page[page.length - 1]!.id);
  }
  const what = `project ${c.projectId}: its ${c.window} window ${period} (${c.timeZone})`;
  if (startId === undefined || (startId === c.firstId && !c.complete)) {
    if (c.complete) findings.problems.push(`${what} holds ${sumsText(stored)} but no ledger row falls in that period`);
    else findings.notes.push(`${what} cannot be compared with rows: retention deleted rows that may fall in it`);
    return;
  }
  const [sums] = await db.all(
    "SELECT count(*) AS n, sum(cost_nanos) AS cost, sum(input_tokens) AS input, sum(output_tokens) AS output FROM cost_records WHERE project_id = ? AND id >= ?",
    [c.projectId, startId],
  );
  const rows: Sums = { n: big(sums?.n), cost: big(sums?.cost), input: big(sums?.input), output: big(sums?.output) };
  if (sameSums(rows, stored)) return;
  // Period keys are computed here in the zone the budget has now; a zone
  // changed after the period's first record puts its start elsewhere.
  const budgetChangedMs =
    c.row.budget_updated_at_ms === null || c.row.budget_updated_at_ms === undefined ? undefined : Number(big(c.row.budget_updated_at_ms));
  if (budgetChangedMs !== undefined && budgetChangedMs > startMs) {
    findings.notes.push(
      `${what} holds ${sumsText(stored)}, the rows since it began ${sumsText(rows)}; the budget (maybe its time zone) changed during the period, so this is not conclusive`,
    );
    return;
  }
  findings.problems.push(`${what} holds ${sumsText(stored)}, but the ledger rows applied since it began add up to ${sumsText(rows)}`);
}

/** UTC bounds of a day ("2026-12-05") or month ("2026-12") key, before zone slack. */
export function periodBoundsMs(period: string): [number, number] {
  const [y, m, d] = period.split("-").map(Number) as [number, number, number | undefined];
  if (d === undefined) return [Date.UTC(y, m - 1, 1), Date.UTC(y, m, 1)];
  const start = Date.UTC(y, m - 1, d);
  return [start, start + 86_400_000];
}

/** Agent/model breakdowns of complete ledgers against their rows. Records
 * from before breakdowns existed (a database upgraded from v1) have none: a
 * project whose breakdowns count fewer records than its ledger is noted, not
 * compared label by label. */
async function checkBreakdowns(db: OpsDatabase, findings: Findings, complete: Set<string>): Promise<void> {
  const byProject = (rows: Row[], sums: (r: Row) => Sums) => {
    const out = new Map<string, Map<string, Sums>>();
    for (const r of rows) {
      const projectId = String(r.project_id);
      if (!complete.has(projectId)) continue;
      let labels = out.get(projectId);
      if (labels === undefined) out.set(projectId, (labels = new Map()));
      labels.set(`agent "${String(r.agent_id)}" and model "${String(r.model)}"`, sums(r));
    }
    return out;
  };
  const ledger = byProject(
    await db.all(
      "SELECT project_id, agent_id, model, count(*) AS n, sum(cost_nanos) AS cost, sum(input_tokens) AS input, sum(output_tokens) AS output FROM cost_records GROUP BY project_id, agent_id, model",
    ),
    (r) => ({ n: big(r.n), cost: big(r.cost), input: big(r.input), output: big(r.output) }),
  );
  const stored = byProject(
    await db.all(
      "SELECT project_id, agent_id, model, record_count, total_cost_nanos, input_tokens, output_tokens FROM project_label_totals",
    ),
    (r) => ({ n: big(r.record_count), cost: big(r.total_cost_nanos), input: big(r.input_tokens), output: big(r.output_tokens) }),
  );
  const count = (labels: Map<string, Sums> | undefined) => [...(labels?.values() ?? [])].reduce((n, s) => n + s.n, 0n);
  for (const projectId of [...complete].sort()) {
    const want = ledger.get(projectId) ?? new Map<string, Sums>();
    const have = stored.get(projectId) ?? new Map<string, Sums>();
    const covered = count(have);
    const all = count(want);
    if (covered < all) {
      findings.notes.push(
        `project ${projectId}: its breakdowns cover ${covered} of its ${all} records (records from before breakdowns existed have none)`,
      );
      continue;
    }
    const zero: Sums = { n: 0n, cost: 0n, input: 0n, output: 0n };
    for (const label of new Set([...want.keys(), ...have.keys()])) {
      const a = have.get(label) ?? zero;
      const b = want.get(label) ?? zero;
      if (!sameSums(a, b))
        findings.problems.push(`project ${projectId}: its breakdown for ${label} holds ${sumsText(a)}, its ledger rows ${sumsText(b)}`);
    }
  }
}
