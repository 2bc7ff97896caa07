// `tally restore <file>`: puts a backup in place of the SQLite database that
// TALLY_DATABASE_URL names, while no server serves it. The backup is verified
// with `tally check` first; the database's lock (the one a server holds) is
// taken for the whole restore, so a server cannot start halfway and a running
// one is refused. An existing database is never deleted: with --force it is
// moved aside (with its -wal) under a `.replaced-<time>` name. The restored
// file gets a commit log matching its counter, so the server starts on it.
import { copyFileSync, existsSync, mkdirSync, renameSync, unlinkSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import { readDatabaseCounter, writeCommitLog, commitLogPath } from "../store/sqlite/commit-counter.ts";
import { DatabaseInUseError, lockDatabaseFile, realDatabasePath } from "../store/sqlite/connection.ts";
import { fsyncFile } from "./backup.ts";
import { checkDatabase, type CheckReport } from "./check.ts";
import { OpsError, openSqliteOps } from "./database.ts";

export interface RestoreResult {
  database: string;
  /** Where the database that was there went (--force), if there was one. */
  movedAside: string | undefined;
  check: CheckReport;
}

export async function restoreSqlite(databasePath: string, file: string, options: { force: boolean }): Promise<RestoreResult> {
  const backup = resolve(file);
  const given = resolve(databasePath);
  if (!existsSync(backup)) throw new OpsError(`there is no backup file ${backup}`);
  const ops = openSqliteOps(backup);
  let check: CheckReport;
  try {
    check = await checkDatabase(ops);
  } finally {
    await ops.close();
  }
  if (check.problems.length > 0)
    throw new OpsError(`the backup ${backup} does not pass tally check (${check.problems[0]}); nothing was restored`);

  mkdirSync(dirname(given), { recursive: true });
  const real = realDatabasePath(given);
  if (real === realDatabasePath(backup)) throw new OpsError(`${backup} is the database itself: restore from a backup file elsewhere`);
  let unlock: () => void;
  try {
    unlock = lockDatabaseFile(given, real);
  } catch (error) {
    if (error instanceof DatabaseInUseError)
      throw new OpsError(`${error.message.split(";")[0]}: stop that server first (SIGTERM), then restore`);
    throw error;
  }
  try {
    let movedAside: string | undefined;
    const leftovers = [real, `${real}-wal`, `${real}-shm`].filter((p) => existsSync(p));
    if (leftovers.length > 0) {
      if (!options.force) {
        throw new OpsError(
          `${given} already exists: restoring replaces it; pass --force to move it (and its -wal) aside to ${given}.replaced-<time> and restore`,
        );
      }
      movedAside = `${real}.replaced-${new Date().toISOString().replace(/[:.]/g, "-")}`;
      for (const path of leftovers) {
        // The -shm index is rebuilt from the -wal; it must not outlive it.
        if (path.endsWith("-shm")) unlinkSync(path);
        else renameSync(path, movedAside + path.slice(real.length));
      }
    }
    const partial = `${real}.restoring`;
    copyFileSync(backup, partial);
    fsyncFile(partial);
    const restored = new Database(partial);
    const counter = readDatabaseCounter(restored);
    restored.close();
    renameSync(partial, real);
    // The log must not claim more commits than the restored file has.
    if (existsSync(commitLogPath(real))) unlinkSync(commitLogPath(real));
    writeCommitLog(real, counter);
    return { database: given, movedAside, check };
  } finally {
    unlock();
  }
}
