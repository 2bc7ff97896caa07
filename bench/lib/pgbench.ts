// The naive PostgreSQL baseline of `npm run bench`: pgbench (C, libpq, ships
// with Debian's postgresql package) sending one write per transaction, with
// the statement a Tally write needs (idempotency check, overflow-guarded
// totals upsert with the day and month windows, ledger insert with the totals
// after the write, agent/model breakdown upsert) as ONE autocommit statement:
// one round trip and one commit per write, no advisory lock (the totals row's
// lock serialises writers of one project). That is the strongest per-write
// baseline: a client that wrapped the same work in BEGIN ... COMMIT would pay
// two more round trips per write.
import { execFile } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { LoadResult } from "../load/types.ts";

const run = promisify(execFile);
const int64Max = "9223372036854775807";

/** pgbench's variables: :p the project number, :r a random request number
 * (a repeat would only be answered as a duplicate, which the exactness check
 * allows: it compares the ledger with the totals, not with the calls). */
const script = (projects: number, prefix: string, day: string, month: string) => `\\set p random(0, ${projects - 1})
\\set r random(1, 9000000000000000000)
WITH prior AS (
  SELECT 1 FROM cost_records WHERE project_id = '${prefix}' || :p::text AND request_id = 'pgb-' || :r::text
), applied AS (
  INSERT INTO project_totals AS t (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms,
    day_period, day_cost_nanos, day_input_tokens, day_output_tokens, day_record_count,
    month_period, month_cost_nanos, month_input_tokens, month_output_tokens, month_record_count)
  SELECT '${prefix}' || :p::text, 1000, 10, 5, 1, extract(epoch FROM now())::bigint * 1000, extract(epoch FROM now())::bigint * 1000,
    '${day}', 1000, 10, 5, 1, '${month}', 1000, 10, 5, 1
  WHERE NOT EXISTS (SELECT 1 FROM prior)
  ON CONFLICT (project_id) DO UPDATE SET
    total_cost_nanos = t.total_cost_nanos + excluded.total_cost_nanos,
    input_tokens = t.input_tokens + excluded.input_tokens,
    output_tokens = t.output_tokens + excluded.output_tokens,
    record_count = t.record_count + 1,
    updated_at_ms = excluded.updated_at_ms,
    day_cost_nanos = CASE WHEN excluded.day_period COLLATE "C" > t.day_period COLLATE "C" THEN excluded.day_cost_nanos ELSE t.day_cost_nanos + excluded.day_cost_nanos END,
    day_record_count = CASE WHEN excluded.day_period COLLATE "C" > t.day_period COLLATE "C" THEN 1 ELSE t.day_record_count + 1 END,
    day_period = CASE WHEN excluded.day_period COLLATE "C" > t.day_period COLLATE "C" THEN excluded.day_period ELSE t.day_period END,
    month_cost_nanos = CASE WHEN excluded.month_period COLLATE "C" > t.month_period COLLATE "C" THEN excluded.month_cost_nanos ELSE t.month_cost_nanos + excluded.month_cost_nanos END,
    month_record_count = CASE WHEN excluded.month_period COLLATE "C" > t.month_period COLLATE "C" THEN 1 ELSE t.month_record_count + 1 END,
    month_period = CASE WHEN excluded.month_period COLLATE "C" > t.month_period COLLATE "C" THEN excluded.month_period ELSE t.month_period END
  WHERE t.total_cost_nanos <= ${int64Max} - excluded.total_cost_nanos AND t.record_count < ${int64Max}
  RETURNING t.*
), ledger AS (
  INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms,
    total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after, hold_id,
    cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms)
  SELECT a.project_id, 'pgb-' || :r::text, 1000, 10, 5, '', 'bench', a.updated_at_ms, a.total_cost_nanos, a.input_tokens, a.output_tokens, a.record_count, '',
    0, 0, 'reported', NULL, '', NULL
  FROM applied a
  RETURNING 1
)
INSERT INTO project_label_totals AS l (project_id, agent_id, model, total_cost_nanos, input_tokens, output_tokens, record_count, updated_at_ms,
  catalog_cost_nanos, priced_cost_nanos, unpriced_record_count)
SELECT a.project_id, '', 'bench', 1000, 10, 5, 1, a.updated_at_ms, 0, 0, 1 FROM applied a
ON CONFLICT (project_id, agent_id, model) DO UPDATE SET
  total_cost_nanos = l.total_cost_nanos + excluded.total_cost_nanos,
  unpriced_record_count = l.unpriced_record_count + excluded.unpriced_record_count,
  input_tokens = l.input_tokens + excluded.input_tokens,
  output_tokens = l.output_tokens + excluded.output_tokens,
  record_count = l.record_count + 1,
  updated_at_ms = excluded.updated_at_ms;
`;

export interface PgbenchSpec {
  /** postgres:// URL of a migrated Tally database. */
  url: string;
  concurrency: number;
  durationMs: number;
  projects: number;
  projectPrefix: string;
  /** Scratch directory for the script and the per-transaction logs. */
  dir: string;
  tag: string;
}

/** Runs pgbench for whole seconds (pgbench's -T), at least one; latency
 * percentiles from its per-transaction log (-l: one line per transaction,
 * the latency in microseconds in the third field). */
export async function runPgbench(spec: PgbenchSpec): Promise<LoadResult> {
  const url = new URL(spec.url);
  const now = new Date();
  const day = now.toISOString().slice(0, 10);
  const scriptPath = join(spec.dir, `pgbench-${spec.tag}.sql`);
  writeFileSync(scriptPath, script(spec.projects, spec.projectPrefix, day, day.slice(0, 7)));
  const logPrefix = join(spec.dir, `pgbench-${spec.tag}`);
  const seconds = Math.max(1, Math.round(spec.durationMs / 1000));
  const args = [
    "-n",
    "-M",
    "prepared",
    "-f",
    scriptPath,
    "-c",
    String(spec.concurrency),
    "-j",
    "1",
    "-T",
    String(seconds),
    "-l",
    "--log-prefix",
    logPrefix,
    "-h",
    url.hostname,
    "-p",
    url.port || "5432",
    "-U",
    decodeURIComponent(url.username),
    url.pathname.slice(1),
  ];
  let stdout = "";
  // On a shared server the 64 connections may not all be free at once (other
  // work holds some): wait and try again, then report the cell as failed.
  for (let attempt = 1; ; attempt++) {
    try {
      ({ stdout } = await run("pgbench", args, {
        env: { ...process.env, PGPASSWORD: decodeURIComponent(url.password) },
        timeout: spec.durationMs + 120_000,
        maxBuffer: 16 * 1024 * 1024,
      }));
      break;
    } catch (error) {
      const message = String((error as { stderr?: string }).stderr ?? error);
      if (attempt >= 5 || !/remaining connection slots|too many clients/.test(message)) {
        return {
          ok: 0,
          errors: 1,
          errorKinds: { [`pgbench failed: ${message.trim().split("\n")[0]?.slice(0, 160)}`]: 1 },
          rps: NaN,
          p50Ms: NaN,
          p99Ms: NaN,
        };
      }
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    }
  }
  const processed = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1] ?? NaN);
  const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1] ?? NaN);
  const latenciesUs: number[] = [];
  // pgbench -l writes <prefix>.<pid> (and .<pid>.<thread> for more threads).
  const logs = readdirSync(spec.dir).filter((f) => join(spec.dir, f).startsWith(`${logPrefix}.`) && /\.\d+(\.\d+)?$/.test(f));
  for (const file of logs) {
    for (const line of readFileSync(join(spec.dir, file), "utf8").split("\n")) {
      const latency = line.split(" ")[2];
      if (latency !== undefined) latenciesUs.push(Number(latency));
    }
    rmSync(join(spec.dir, file));
  }
  latenciesUs.sort((a, b) => a - b);
  const q = (p: number) => (latenciesUs[Math.min(latenciesUs.length - 1, Math.floor(p * latenciesUs.length))] ?? NaN) / 1000;
  return {
    ok: processed,
    errors: failed,
    errorKinds: failed ? { "pgbench failed transactions": failed } : {},
    rps: tps,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
  };
}

/** The per-write statement the baseline runs, for the report. */
export function pgbenchStatementSummary(): string {
  return "one autocommit statement per write: idempotency check, guarded totals upsert (lifetime, day, month), ledger insert with the totals after the write, breakdown upsert";
}
