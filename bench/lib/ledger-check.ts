// Exactness of a benchmarked database, read straight from its tables after a
// run (SQLite file or PostgreSQL database, the same SQL): the ledger, the
// project totals and the agent/model breakdown must agree to the nano, and
// every record's stored totals-after must be that project's running total at
// its place in the sequence (the bench writes a constant cost per call, so a
// project's records carry record_count_after 1..n, each once, and
// total_cost_nanos_after = record_count_after x cost_nanos).
import Database from "better-sqlite3";
import pg from "pg";

export interface LedgerCheck {
  records: bigint;
  /** Human-readable mismatches; empty when exact. */
  problems: string[];
}

const sums = `SELECT
  (SELECT count(*) FROM cost_records) AS records,
  (SELECT coalesce(sum(cost_nanos), 0) FROM cost_records) AS ledger_cost,
  (SELECT coalesce(sum(record_count), 0) FROM project_totals) AS totals_records,
  (SELECT coalesce(sum(total_cost_nanos), 0) FROM project_totals) AS totals_cost,
  (SELECT coalesce(sum(record_count), 0) FROM project_label_totals) AS label_records,
  (SELECT coalesce(sum(total_cost_nanos), 0) FROM project_label_totals) AS label_cost,
  (SELECT count(*) FROM (
    SELECT c.project_id FROM cost_records c JOIN project_totals t ON t.project_id = c.project_id
    GROUP BY c.project_id, t.record_count
    HAVING count(*) <> t.record_count OR count(DISTINCT c.record_count_after) <> count(*) OR min(c.record_count_after) <> 1 OR max(c.record_count_after) <> t.record_count
  ) x) AS bad_sequences,
  (SELECT count(*) FROM cost_records WHERE total_cost_nanos_after <> record_count_after * cost_nanos) AS bad_running_totals`;

type SumsRow = Record<
  "records" | "ledger_cost" | "totals_records" | "totals_cost" | "label_records" | "label_cost" | "bad_sequences" | "bad_running_totals",
  string | number | bigint
>;

function judge(row: SumsRow): LedgerCheck {
  const n = (k: keyof SumsRow) => BigInt(row[k]);
  const problems: string[] = [];
  if (n("records") !== n("totals_records")) problems.push(`ledger has ${n("records")} records, totals count ${n("totals_records")}`);
  if (n("ledger_cost") !== n("totals_cost")) problems.push(`ledger sums to ${n("ledger_cost")} nanos, totals to ${n("totals_cost")}`);
  if (n("label_records") !== n("totals_records") || n("label_cost") !== n("totals_cost"))
    problems.push(
      `breakdown ${n("label_records")} records / ${n("label_cost")} nanos vs totals ${n("totals_records")} / ${n("totals_cost")}`,
    );
  if (n("bad_sequences") !== 0n) problems.push(`${n("bad_sequences")} projects whose records' record_count_after is not 1..n`);
  if (n("bad_running_totals") !== 0n)
    problems.push(`${n("bad_running_totals")} records whose total_cost_nanos_after is not their running total`);
  return { records: n("records"), problems };
}

export async function checkPostgresLedger(url: string): Promise<LedgerCheck> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return judge((await client.query<SumsRow>(sums)).rows[0] as SumsRow);
  } finally {
    await client.end();
  }
}

/** Read-only, beside the serving process (WAL: readers do not block it). */
export function checkSqliteLedger(path: string): LedgerCheck {
  const db = new Database(path, { readonly: true });
  try {
    db.defaultSafeIntegers(true);
    return judge(db.prepare(sums).get() as SumsRow);
  } finally {
    db.close();
  }
}
