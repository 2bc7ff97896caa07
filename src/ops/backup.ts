// `tally backup <file>`: an online, consistent copy of the served SQLite file,
// taken beside the running server (no request to it, no pause of its writes).
// SQLite's online backup API copies every page in one step, inside one read
// transaction of the WAL: the copy is the database as of that step's start, so
// every write acknowledged before the backup began is in it (a write is
// answered only after its COMMIT), nothing half-applied (a transaction is in
// a snapshot whole or not at all), and idempotency keys come with their
// records (same rows). Writers are never blocked (WAL: readers do not lock
// them out); the checkpointer only waits to recycle the log until the step ends.
// The copy is written beside its final name, made self-contained (rollback
// journal, no -wal), verified with `tally check`, fsynced, then renamed.
import { closeSync, existsSync, fsyncSync, openSync, renameSync, statSync, unlinkSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import { sqliteBusyTimeoutMs } from "../limits.ts";
import { realDatabasePath } from "../store/sqlite/connection.ts";
import { checkDatabase, type CheckReport } from "./check.ts";
import { OpsError, openSqliteOps } from "./database.ts";

export interface BackupResult {
  file: string;
  bytes: number;
  /** From the start of the copy to the renamed, verified file. */
  durationMs: number;
  /** The copy step alone (the read snapshot's lifetime). */
  copyMs: number;
  check: CheckReport;
}

/** All pages in one step: a single snapshot. In steps of N pages, a write by
 * the server between two steps restarts the copy, which under steady load
 * might never finish. */
const allPages = 0x7fffffff;

export async function backupSqlite(sourcePath: string, file: string): Promise<BackupResult> {
  const source = resolve(sourcePath);
  const target = resolve(file);
  if (!existsSync(source)) throw new OpsError(`there is no SQLite database at ${source} to back up (TALLY_DATABASE_URL names it)`);
  if (existsSync(target)) throw new OpsError(`${target} already exists: a backup never overwrites a file; name a new one`);
  if (!existsSync(dirname(target)))
    throw new OpsError(`the directory ${dirname(target)} does not exist: create it, or name a file in an existing directory`);
  const realSource = realDatabasePath(source);
  if ([realSource, `${realSource}-wal`, `${realSource}-shm`].includes(realDatabasePath(target)))
    throw new OpsError(`${target} is the database itself or one of its files: name another file`);
  const partial = `${target}.partial`;
  if (existsSync(partial)) unlinkSync(partial); // left by an interrupted backup

  const startedMs = performance.now();
  const db = new Database(source, { fileMustExist: true });
  let copyMs: number;
  try {
    db.pragma(`busy_timeout = ${sqliteBusyTimeoutMs}`);
    const copyStartedMs = performance.now();
    await db.backup(partial, { progress: () => allPages });
    copyMs = performance.now() - copyStartedMs;
  } catch (error) {
    if (existsSync(partial)) unlinkSync(partial);
    throw new OpsError(`the backup of ${source} failed: ${(error as Error).message}`);
  } finally {
    db.close();
  }
  try {
    // The copy's header says WAL (copied from the source): a backup is one file.
    const copy = new Database(partial);
    copy.pragma("journal_mode = DELETE");
    copy.close();
    const ops = openSqliteOps(partial);
    let check: CheckReport;
    try {
      check = await checkDatabase(ops);
    } finally {
      await ops.close();
    }
    if (check.problems.length > 0)
      throw new OpsError(
        `the copy of ${source} does not pass tally check (${check.problems[0]}); nothing was written to ${target}: run \`tally check\` on the database`,
      );
    fsyncFile(partial);
    renameSync(partial, target);
    fsyncFile(dirname(target));
    return { file: target, bytes: statSync(target).size, durationMs: performance.now() - startedMs, copyMs, check };
  } catch (error) {
    if (existsSync(partial)) unlinkSync(partial);
    throw error;
  }
}

export function fsyncFile(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
