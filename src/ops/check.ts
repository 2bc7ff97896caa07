// `tally check`: verifies a Tally database (SQLite file or PostgreSQL) without
// changing it, in one read snapshot, beside a running server if need be:
// - the schema: the applied migrations are exactly the ones this Tally knows;
// - SQLite: the file's integrity (PRAGMA integrity_check) and its commit
//   counter against the commit log beside it (src/store/sqlite/commit-counter.ts);
// - the ledger: totals, windows and breakdowns against the cost records
//   (src/ops/check-ledger.ts);
// - holds: each project's reservation row equals the sum and count of its
//   hold rows, and no hold belongs to a project with no reservation row.
import { postgresqlMigrations } from "../store/migrations/postgresql/index.ts";
import { sqliteMigrations } from "../store/migrations/sqlite/index.ts";
import { compareCounters, lostCommitsMessage, readCommitLog } from "../store/sqlite/commit-counter.ts";
import { big, type OpsDatabase } from "./database.ts";
import { checkLedger, type Findings } from "./check-ledger.ts";
import { copiedTables } from "./tables.ts";

export interface CheckReport extends Findings {
  database: string;
  /** Applied migrations, in order. */
  migrations: string[];
  projects: number;
  records: bigint;
  totalCostNanos: bigint;
  /** Rows per copied table. */
  tableRows: Record<string, bigint>;
}

/** The migration names this build of Tally applies, in order. */
export function knownMigrations(driver: "sqlite" | "postgresql"): string[] {
  return (driver === "sqlite" ? sqliteMigrations : postgresqlMigrations).map((m) => m.name);
}

/** Runs every check; never throws for what it finds (see `problems`),
 * including a database too damaged to be read to the end. */
export async function checkDatabase(db: OpsDatabase): Promise<CheckReport> {
  const findings: Findings = { problems: [], notes: [] };
  try {
    return await checkAll(db, findings);
  } catch (error) {
    const code = String((error as { code?: unknown }).code ?? "");
    const damaged = code === "SQLITE_NOTADB" || code.startsWith("SQLITE_CORRUPT");
    findings.problems.push(
      damaged
        ? `${db.label} is damaged (${(error as Error).message}): restore it from a backup with \`tally restore <file>\``
        : `${db.label} could not be read to the end (${(error as Error).message}): it is damaged, not a Tally database, or unreachable`,
    );
    return { database: db.label, migrations: [], projects: 0, records: 0n, totalCostNanos: 0n, tableRows: {}, ...findings };
  }
}

async function checkAll(db: OpsDatabase, findings: Findings): Promise<CheckReport> {
  // First: a database that lost its WAL may have lost its schema too.
  if (db.driver === "sqlite") await checkCommitLog(db, findings);
  const migrations = await appliedMigrations(db);
  const known = knownMigrations(db.driver);
  const unknown = migrations.filter((m) => !known.includes(m));
  const pending = known.filter((m) => !migrations.includes(m));
  if (migrations.length === 0) {
    findings.problems.push(`${db.label} has no Tally schema (no applied migrations): it is not a Tally database, or was never started`);
    return { database: db.label, migrations, projects: 0, records: 0n, totalCostNanos: 0n, tableRows: {}, ...findings };
  }
  if (unknown.length > 0)
    findings.problems.push(
      `the schema has migrations this Tally does not know (${unknown.join(", ")}): it was written by a newer Tally; check it with that version`,
    );
  if (pending.length > 0)
    findings.problems.push(
      `the schema lacks migrations (${pending.join(", ")}): run \`tally migrate\` with TALLY_DATABASE_URL set to it, then check again`,
    );
  if (unknown.length > 0 || pending.length > 0) {
    return { database: db.label, migrations, projects: 0, records: 0n, totalCostNanos: 0n, tableRows: {}, ...findings };
  }
  return db.snapshot(async () => {
    if (db.driver === "sqlite") await checkIntegrity(findings, db);
    await checkHolds(db, findings);
    const ledger = await checkLedger(db, findings);
    const tableRows: Record<string, bigint> = {};
    for (const { table } of copiedTables) tableRows[table] = big((await db.all(`SELECT count(*) AS n FROM ${table}`))[0]?.n);
    return {
      database: db.label,
      migrations,
      projects: ledger.projects,
      records: ledger.records,
      totalCostNanos: ledger.totalCostNanos,
      tableRows,
      ...findings,
    };
  });
}

async function appliedMigrations(db: OpsDatabase): Promise<string[]> {
  const exists =
    db.driver === "sqlite"
      ? await db.all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mikro_orm_migrations'")
      : await db.all(
          "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'mikro_orm_migrations'",
        );
  if (exists.length === 0) return [];
  return (await db.all("SELECT name FROM mikro_orm_migrations ORDER BY id")).map((r) => String(r.name));
}

async function checkIntegrity(findings: Findings, db: OpsDatabase): Promise<void> {
  // A row may span lines ("*** in database main ***\nTree 28 page 28: ..."):
  // the finding is one line.
  const integrity = (await db.all("PRAGMA integrity_check")).map((r) => String(Object.values(r)[0]).replace(/\s*\n\s*/g, " "));
  if (integrity.length !== 1 || integrity[0] !== "ok") {
    findings.problems.push(
      `the SQLite file is damaged (integrity_check: ${integrity.slice(0, 5).join("; ")}): restore it from a backup with \`tally restore <file>\``,
    );
  }
}

async function checkCommitLog(db: OpsDatabase, findings: Findings): Promise<void> {
  if (db.realPath === undefined) return;
  const [header] = await db.all("PRAGMA user_version");
  const databaseCounter = Number(big(header?.user_version));
  let logCounter: number | undefined;
  try {
    logCounter = readCommitLog(db.realPath);
  } catch (error) {
    findings.problems.push((error as Error).message);
    return;
  }
  const verdict = compareCounters(databaseCounter, logCounter);
  if (!verdict.ok) findings.problems.push(lostCommitsMessage(db.label, verdict));
  else if (logCounter === undefined && databaseCounter > 0)
    findings.notes.push(
      `no commit log ${db.realPath}.commits beside the file (a copy, or a backup): lost commits cannot be detected for it until a server starts on it`,
    );
}

/** Reservation rows against hold rows, per project. */
async function checkHolds(db: OpsDatabase, findings: Findings): Promise<void> {
  const rows = await db.all(`
    SELECT r.project_id, r.reserved_nanos, r.hold_count, h.n, h.amount
    FROM project_reservations r
    LEFT JOIN (SELECT project_id, count(*) AS n, sum(amount_nanos) AS amount FROM holds GROUP BY project_id) h ON h.project_id = r.project_id
    ORDER BY r.project_id`);
  for (const r of rows) {
    if (big(r.hold_count) !== big(r.n) || big(r.reserved_nanos) !== big(r.amount)) {
      findings.problems.push(
        `project ${String(r.project_id)}: it counts ${big(r.hold_count)} holds reserving ${big(r.reserved_nanos)} nanos, but has ${big(r.n)} hold rows reserving ${big(r.amount)} nanos`,
      );
    }
  }
  const orphans = await db.all(
    "SELECT project_id, count(*) AS n, sum(amount_nanos) AS amount FROM holds WHERE project_id NOT IN (SELECT project_id FROM project_reservations) GROUP BY project_id ORDER BY project_id",
  );
  for (const o of orphans)
    findings.problems.push(
      `project ${String(o.project_id)}: ${big(o.n)} orphaned hold(s) (${big(o.amount)} nanos) with no reservation row: they are not counted by budget decisions`,
    );
}

/** The report as the lines `tally check` prints; the last says OK or FAILED. */
export function formatCheck(report: CheckReport): string[] {
  const lines = [
    `check: ${report.database}: schema ${report.migrations.length} migrations (latest ${report.migrations.at(-1) ?? "none"})`,
    `check: ${report.projects} projects, ${report.records} records, total ${report.totalCostNanos} nanos; rows: ${Object.entries(
      report.tableRows,
    )
      .map(([t, n]) => `${t}=${n}`)
      .join(" ")}`,
  ];
  for (const note of report.notes) lines.push(`check: note: ${note}`);
  for (const problem of report.problems) lines.push(`check: PROBLEM: ${problem}`);
  lines.push(
    report.problems.length === 0
      ? "check: OK"
      : `check: FAILED: ${report.problems.length} problem(s) above; the database is not consistent: restore a backup (\`tally restore <file>\`) or keep it for investigation`,
  );
  return lines;
}
