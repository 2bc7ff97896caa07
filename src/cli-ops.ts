// The operator commands on the database itself (no server needed, and none
// disturbed): `tally backup`, `tally restore`, `tally check`, `tally
// migrate-data`. Each failure is one line on stderr saying what happened and
// what to do; exit 1 when the command failed, 2 for a usage error.
import { OpsError } from "./ops/database.ts";
import { DatabaseUrlError, parseDatabaseUrl, redactDatabaseUrl } from "./store/orm.ts";

export const opsCommands = ["backup", "restore", "check", "migrate-data"] as const;

export const opsUsage = `  backup <file>                        online copy of the served SQLite database (TALLY_DATABASE_URL) into a new file,
                                       verified with check; beside a running server (PostgreSQL: pg_dump, docs/deploy.md)
  restore <file> [--force]             put a backup in place of the SQLite database while no server runs on it
                                       (--force moves an existing database aside to <path>.replaced-<time>)
  check [database-url]                 verify a database (default TALLY_DATABASE_URL): schema, integrity, commit log,
                                       totals = ledger rows per project and window, breakdowns, holds; exit 1 if not
        --accept-lost-commits          (SQLite, server stopped) accept a database that lost commits, so it is served again
  migrate-data --from sqlite:<path> --to postgres://...
                                       copy every table of a stopped SQLite database into PostgreSQL (resumable: run it
                                       again to finish or re-verify; --restart empties the target first), then check both`;

function fail(command: string, message: string, code = 1): number {
  console.error(`tally ${command}: ${message}`);
  return code;
}

export async function runOpsCommand(command: (typeof opsCommands)[number], args: string[], databaseUrl: string): Promise<number> {
  try {
    switch (command) {
      case "backup":
        return await backup(args, databaseUrl);
      case "restore":
        return await restore(args, databaseUrl);
      case "check":
        return await check(args, databaseUrl);
      case "migrate-data": {
        const { runMigrateData } = await import("./ops/migrate-cli.ts");
        return await runMigrateData(args);
      }
    }
  } catch (error) {
    if (error instanceof OpsError || error instanceof DatabaseUrlError) return fail(command, error.message);
    throw error;
  }
}

function sqlitePathOf(command: string, databaseUrl: string): string {
  const target = parseDatabaseUrl(databaseUrl);
  if (target.driver === "postgresql") {
    const how =
      command === "backup"
        ? `pg_dump --format=custom --file=<file> '${redactDatabaseUrl(databaseUrl)}'`
        : `pg_restore --clean --if-exists --no-owner --dbname='${redactDatabaseUrl(databaseUrl)}' <file>`;
    throw new OpsError(
      `TALLY_DATABASE_URL is PostgreSQL: ${command} works on SQLite files; use ${how} (docs/deploy.md, "Backup and restore")`,
    );
  }
  if (target.path === ":memory:")
    throw new OpsError(
      `TALLY_DATABASE_URL is sqlite::memory:, which has no file to ${command}; set it to sqlite:<path> of the served database`,
    );
  return target.path;
}

async function backup(args: string[], databaseUrl: string): Promise<number> {
  if (args.length !== 1 || args[0]!.startsWith("-")) return fail("backup", "usage: tally backup <file> (a new file)", 2);
  const { backupSqlite } = await import("./ops/backup.ts");
  const result = await backupSqlite(sqlitePathOf("backup", databaseUrl), args[0]!);
  console.log(
    `backup: wrote ${result.file}: ${result.bytes} bytes, ${result.check.records} records of ${result.check.projects} projects, total ${result.check.totalCostNanos} nanos; ` +
      `copied in ${Math.round(result.copyMs)} ms, ${Math.round(result.durationMs)} ms with the check; check OK`,
  );
  return 0;
}

async function restore(args: string[], databaseUrl: string): Promise<number> {
  const force = args.includes("--force");
  const files = args.filter((a) => a !== "--force");
  if (files.length !== 1 || files[0]!.startsWith("-")) return fail("restore", "usage: tally restore <file> [--force]", 2);
  const { restoreSqlite } = await import("./ops/restore.ts");
  const result = await restoreSqlite(sqlitePathOf("restore", databaseUrl), files[0]!, { force });
  if (result.movedAside) console.log(`restore: the database that was at ${result.database} is now ${result.movedAside} (with its -wal)`);
  console.log(
    `restore: ${result.database} restored from ${files[0]}: ${result.check.records} records of ${result.check.projects} projects, total ${result.check.totalCostNanos} nanos; start the server`,
  );
  return 0;
}

async function check(args: string[], databaseUrl: string): Promise<number> {
  const accept = args.includes("--accept-lost-commits");
  const urls = args.filter((a) => a !== "--accept-lost-commits");
  if (urls.length > 1 || urls[0]?.startsWith("-")) return fail("check", "usage: tally check [database-url] [--accept-lost-commits]", 2);
  const url = urls[0] ?? databaseUrl;
  const [{ openOpsDatabase }, { checkDatabase, formatCheck }] = await Promise.all([import("./ops/database.ts"), import("./ops/check.ts")]);
  if (accept) {
    const { acceptLostCommits } = await import("./ops/accept.ts");
    console.log(await acceptLostCommits(sqlitePathOf("check --accept-lost-commits", url)));
  }
  const db = await openOpsDatabase(url);
  try {
    const report = await checkDatabase(db);
    const lines = formatCheck(report);
    for (const line of lines.slice(0, -1)) console.log(line);
    if (report.problems.length > 0) {
      console.error(lines.at(-1));
      return 1;
    }
    console.log(lines.at(-1));
    return 0;
  } finally {
    await db.close();
  }
}
