// `tally migrate-data --from sqlite:<path> --to postgres://... [--restart]`:
// checks the source, applies Tally's migrations to the target, copies every
// table (src/ops/migrate-data.ts) with a progress line (rows/s, ETA), then
// runs `tally check` on both ends, compares every project's totals row and
// every table's row count, and prints both totals. Exit 0 only if both ends
// pass and agree; run it again to resume an interrupted copy or to verify.
import Database from "better-sqlite3";
import pg from "pg";
import { migrateProgressEveryMs, opsConnectTimeoutMs, opsMigrateStatementTimeoutMs } from "../limits.ts";
import { initORM, parseDatabaseUrl, redactDatabaseUrl } from "../store/orm.ts";
import { DatabaseInUseError, lockDatabaseFile, realDatabasePath } from "../store/sqlite/connection.ts";
import { postgresClientConfig } from "../store/postgres/hosts.ts";
import { checkDatabase, type CheckReport } from "./check.ts";
import { bigintTypes, OpsError, openPostgresOps, openSqliteOps, type OpsDatabase } from "./database.ts";
import { copyTables, type CopyProgress } from "./migrate-data.ts";

const usage = "usage: tally migrate-data --from sqlite:<path> --to postgres://user:password@host:5432/database [--restart]";

export async function runMigrateData(args: string[]): Promise<number> {
  let from: string | undefined, to: string | undefined;
  let restart = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--from") from = args[++i];
    else if (arg === "--to") to = args[++i];
    else if (arg === "--restart") restart = true;
    else {
      console.error(`tally migrate-data: unexpected argument "${arg}"\n${usage}`);
      return 2;
    }
  }
  if (from === undefined || to === undefined) {
    console.error(`tally migrate-data: --from and --to are required\n${usage}`);
    return 2;
  }
  const source = parseDatabaseUrl(from);
  const target = parseDatabaseUrl(to);
  if (source.driver !== "sqlite" || source.path === ":memory:")
    throw new OpsError(`--from must name a SQLite file (sqlite:<path>), not ${redactDatabaseUrl(from)}`);
  if (target.driver !== "postgresql") throw new OpsError(`--to must be a PostgreSQL URL (postgres://...), not ${to}`);

  const real = realDatabasePath(source.path);
  let unlock: () => void;
  try {
    unlock = lockDatabaseFile(source.path, real);
  } catch (error) {
    if (error instanceof DatabaseInUseError)
      throw new OpsError(`${error.message.split(";")[0]}: stop it first; a copy of a database that is still taking writes would miss them`);
    throw error;
  }
  try {
    const before = await checked(openSqliteOps(source.path));
    if (before.problems.length > 0)
      throw new OpsError(
        `the source ${source.path} does not pass tally check (${before.problems[0]}); nothing was copied: fix or restore it first`,
      );
    say(
      `migrate-data: source ${source.path}: ${before.projects} projects, ${before.records} records, total ${before.totalCostNanos} nanos`,
    );

    // The schema, by Tally's own migrations (under their lock).
    try {
      const { store } = await initORM(target.url, undefined, {
        poolSize: 2,
        statementTimeoutMs: opsMigrateStatementTimeoutMs,
        connectTimeoutMs: opsConnectTimeoutMs,
        connectRetryMs: 0,
      });
      await store.close();
    } catch (error) {
      throw new OpsError(`cannot prepare the target ${redactDatabaseUrl(target.url)}: ${(error as Error).message}`);
    }
    const db = new Database(source.path, { fileMustExist: true });
    db.defaultSafeIntegers(true);
    const client = new pg.Client({
      ...postgresClientConfig(target.url),
      connectionTimeoutMillis: opsConnectTimeoutMs,
      types: bigintTypes,
      application_name: "tally-migrate-data",
    });
    client.on("error", () => undefined);
    let result;
    try {
      await client.connect();
      const progress = new ProgressLine();
      result = await copyTables(db, client, { restart, onProgress: (p) => progress.update(p) });
      progress.done();
    } finally {
      db.close();
      await client.end().catch(() => undefined);
    }
    const copiedRows = Object.values(result.copied).reduce((a, b) => a + b, 0);
    const ledgerRows = result.copied.cost_records ?? 0;
    const seconds = result.durationMs / 1000;
    say(
      `migrate-data: copied ${copiedRows} rows in ${seconds.toFixed(1)} s (${Math.round(copiedRows / Math.max(seconds, 0.001))} rows/s; ledger: ${ledgerRows} new rows, ${result.resumedAfter.cost_records ?? 0} already there)`,
    );

    const sourceReport = await checked(openSqliteOps(source.path));
    const targetReport = await checked(await openPostgresOps(target.url));
    say(`migrate-data: source totals: ${totalsLine(sourceReport)}`);
    say(`migrate-data: target totals: ${totalsLine(targetReport)}`);
    const problems = [
      ...sourceReport.problems.map((p) => `source: ${p}`),
      ...targetReport.problems.map((p) => `target: ${p}`),
      ...(await compareEnds(source.path, target.url, sourceReport, targetReport)),
    ];
    for (const p of problems) console.error(`migrate-data: PROBLEM: ${p}`);
    if (problems.length > 0) {
      console.error(
        `tally migrate-data: the target does not match the source (${problems.length} problem(s) above): run it again with --restart to copy from scratch; do not start replicas on the target yet`,
      );
      return 1;
    }
    say(
      "migrate-data: OK: both ends pass tally check and agree; point TALLY_DATABASE_URL at the PostgreSQL database and start the replicas",
    );
    return 0;
  } finally {
    unlock();
  }
}

function say(line: string): void {
  console.log(line);
}

async function checked(db: OpsDatabase): Promise<CheckReport> {
  try {
    return await checkDatabase(db);
  } finally {
    await db.close();
  }
}

function totalsLine(r: CheckReport): string {
  return `${r.projects} projects, ${r.records} records, total ${r.totalCostNanos} nanos; ${Object.entries(r.tableRows)
    .map(([t, n]) => `${t}=${n}`)
    .join(" ")}`;
}

/** Every table's row count and every project's totals row, column by column. */
async function compareEnds(sourcePath: string, targetUrl: string, s: CheckReport, t: CheckReport): Promise<string[]> {
  const problems: string[] = [];
  for (const [table, n] of Object.entries(s.tableRows)) {
    if (t.tableRows[table] !== n)
      problems.push(`${table} has ${n} rows in the source and ${t.tableRows[table] ?? "no"} rows in the target`);
  }
  const sourceDb = openSqliteOps(sourcePath);
  const targetDb = await openPostgresOps(targetUrl);
  try {
    const sql = "SELECT * FROM project_totals ORDER BY project_id";
    const a = await sourceDb.all(sql);
    const b = new Map((await targetDb.all(sql)).map((r) => [String(r.project_id), r]));
    for (const row of a) {
      const other = b.get(String(row.project_id));
      const differs = other === undefined ? ["the whole row"] : Object.keys(row).filter((k) => String(row[k]) !== String(other[k]));
      if (differs.length > 0)
        problems.push(`project ${String(row.project_id)}: totals differ between source and target (${differs.slice(0, 5).join(", ")})`);
    }
  } finally {
    await sourceDb.close();
    await targetDb.close();
  }
  return problems;
}

/** One line on stderr: a bar redrawn in place on a terminal, a line every
 * few seconds otherwise (logs). */
class ProgressLine {
  readonly #tty = process.stderr.isTTY === true;
  #lastMs = 0;
  #last: CopyProgress | undefined;

  update(p: CopyProgress): void {
    this.#last = p;
    const now = performance.now();
    if (now - this.#lastMs < (this.#tty ? 200 : migrateProgressEveryMs)) return;
    this.#lastMs = now;
    this.#print(p);
  }

  done(): void {
    if (this.#last) this.#print(this.#last);
    if (this.#tty) process.stderr.write("\n");
  }

  #print(p: CopyProgress): void {
    const share = p.allRows === 0 ? 1 : p.allDone / p.allRows;
    const rate = p.allDone / Math.max(p.elapsedMs / 1000, 0.001);
    const etaS = rate > 0 ? Math.ceil((p.allRows - p.allDone) / rate) : 0;
    const width = 24;
    const bar = "#".repeat(Math.round(share * width)).padEnd(width, "-");
    const line = `migrate-data: [${bar}] ${(share * 100).toFixed(1)}% ${p.allDone}/${p.allRows} rows, ${Math.round(rate)} rows/s, ETA ${etaS} s (${p.table} ${p.tableDone}/${p.tableRows})`;
    process.stderr.write(this.#tty ? `\r${line}` : `${line}\n`);
  }
}
