// `tally check --accept-lost-commits`: the operator's decision to serve a
// SQLite database that lost acknowledged commits (its WAL was deleted or
// damaged) rather than restore a backup. The commit log is set to the
// database's counter, under the database's lock, so no server runs meanwhile.
import { resolve } from "node:path";
import Database from "better-sqlite3";
import { compareCounters, readCommitLog, readDatabaseCounter, writeCommitLog } from "../store/sqlite/commit-counter.ts";
import { DatabaseInUseError, lockDatabaseFile, realDatabasePath } from "../store/sqlite/connection.ts";
import { OpsError } from "./database.ts";

/** Returns the line to print. */
export async function acceptLostCommits(path: string): Promise<string> {
  const given = resolve(path);
  const real = realDatabasePath(given);
  let unlock: () => void;
  try {
    unlock = lockDatabaseFile(given, real);
  } catch (error) {
    if (error instanceof DatabaseInUseError)
      throw new OpsError(
        `${error.message.split(";")[0]}: a served database lost nothing since it started; stop the server first if you mean this file`,
      );
    throw error;
  }
  try {
    const db = new Database(given, { fileMustExist: true });
    let counter: number;
    try {
      counter = readDatabaseCounter(db);
    } finally {
      db.close();
    }
    let logged: number | undefined;
    try {
      logged = readCommitLog(real);
    } catch {
      logged = undefined; // a damaged log is replaced as well
    }
    const verdict = compareCounters(counter, logged);
    writeCommitLog(real, counter);
    if (verdict.ok) return `check: ${given} was not missing commits (commit ${counter}); the commit log now says ${counter}`;
    return `check: accepted the loss of ${verdict.missing} committed write transaction(s) in ${given} (commit ${counter}, the log said ${verdict.logCounter}); it will be served as it is`;
  } finally {
    unlock();
  }
}
