// The settings every SQLite connection of Tally runs with: the ORM's (reads,
// migrations) and the writer thread's (src/store/sqlite/writer.ts). One place,
// so the two connections to one file can never disagree on durability.
import { realpathSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import Database from "better-sqlite3";
import { sqliteBusyTimeoutMs, sqliteCacheBytes, sqliteMmapBytes } from "../../limits.ts";

export interface SqliteOptions {
  /** PRAGMA synchronous: FULL (default) fsyncs the WAL on every commit, so an
   * acknowledged write survives power loss too; NORMAL survives kill -9 only. */
  synchronous: "FULL" | "NORMAL";
  /** How long a connection waits for another one holding the lock. */
  busyTimeoutMs: number;
}

export const sqliteDefaults: SqliteOptions = { synchronous: "FULL", busyTimeoutMs: sqliteBusyTimeoutMs };

export function configureConnection(db: Database.Database, memory: boolean, options: SqliteOptions): void {
  // WAL: readers never wait for the writer, and a commit appends to one file.
  if (!memory) db.pragma("journal_mode = WAL");
  db.pragma(`synchronous = ${options.synchronous}`);
  db.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
  // Page cache and memory map (src/limits.ts): lookups across a million
  // projects stay in memory instead of re-reading pages through syscalls.
  db.pragma(`cache_size = -${Math.floor(sqliteCacheBytes / 1024)}`);
  if (!memory) db.pragma(`mmap_size = ${sqliteMmapBytes}`);
}

/** The database file is served by another process (or another store of this
 * one): it holds the file's lock (see lockDatabaseFile). */
export class DatabaseInUseError extends Error {
  override name = "DatabaseInUseError";
}

/** The SQLite file cannot be served: not a database, damaged, or not
 * writable. The message says which and what to do. */
export class DatabaseOpenError extends Error {
  override name = "DatabaseOpenError";
}

/** Turns SQLite's own failure to open or write a file into what an operator
 * can act on; other errors pass unchanged. */
export function databaseOpenError(path: string, error: unknown): unknown {
  const code = String((error as { code?: unknown } | null)?.code ?? "");
  const detail = (error as Error).message;
  if (code === "SQLITE_NOTADB" || code.startsWith("SQLITE_CORRUPT")) {
    return new DatabaseOpenError(
      `the SQLite database ${path} is not a database or is damaged (${detail}): restore it from a backup, or set TALLY_DATABASE_URL to another file (a new file is created empty)`,
      { cause: error },
    );
  }
  const notWritable = ["SQLITE_PERM", "EACCES", "EPERM", "EROFS"];
  if (
    code.startsWith("SQLITE_CANTOPEN") ||
    code.startsWith("SQLITE_READONLY") ||
    code.startsWith("SQLITE_IOERR") ||
    notWritable.includes(code)
  ) {
    return new DatabaseOpenError(
      `the SQLite database ${path} cannot be opened for writing (${detail}): the file, its directory (Tally writes ${basename(path)}-wal, -shm and .lock beside it) must be writable by this user and not on a read-only mount`,
      { cause: error },
    );
  }
  return error;
}

/** Refuses a database this process cannot write. SQLite opens a file it may
 * not write read-only without a word (or, for an immutable file, seems to
 * open it writable): the first write would fail, long after start. So a
 * write is tried and rolled back (nothing reaches the file). */
export function requireWritable(db: Database.Database, path: string): void {
  const readOnly = () =>
    new DatabaseOpenError(
      `the SQLite database ${path} is read-only for this process: the file and its directory must be writable by this user, not immutable, and not on a read-only mount`,
    );
  if (db.readonly) throw readOnly();
  try {
    db.exec("BEGIN IMMEDIATE; CREATE TABLE tally_write_probe (x INTEGER)");
  } catch (error) {
    if (String((error as { code?: unknown }).code ?? "").startsWith("SQLITE_READONLY")) throw readOnly();
    throw error;
  } finally {
    if (db.inTransaction) db.exec("ROLLBACK");
  }
}

/** The file a database path names, with every symlink resolved (of the file
 * if it exists, else of its directory): one file, one name, whichever link a
 * server was given. */
export function realDatabasePath(path: string): string {
  try {
    return realpathSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    return join(realpathSync(dirname(path)), basename(path));
  }
}

/** One process serves a SQLite file (docs/deploy.md): its reads trust what its
 * own writes changed (the store's state rows) and no one else's. The lock is
 * the file's identity, not the name a server was given:
 *  - the lock is an open exclusive transaction on `<real path>.lock`, where
 *    the real path has every symlink resolved, so a server started on a
 *    symlink to a served file (or through a symlinked directory) meets the
 *    same lock; the operating system drops it with the process, so a crashed
 *    owner never blocks its restart;
 *  - a file with more than one hard link is refused: its other names would
 *    have other lock files, and SQLite itself names the -wal, -shm and
 *    -journal files after the path, so two processes on two links of one file
 *    do not even see each other's transactions (acknowledged writes were lost
 *    that way, issue 15). With one link, the real path names exactly one
 *    device + inode.
 * `path` is what the operator configured (for messages). Returns the release. */
export function lockDatabaseFile(path: string, realPath: string = realDatabasePath(path)): () => void {
  const named = realPath === path ? path : `${path} (the file ${realPath})`;
  const lock = new Database(`${realPath}.lock`);
  try {
    lock.pragma("busy_timeout = 0"); // the owner keeps it: waiting would not help
    lock.pragma("journal_mode = MEMORY"); // nothing is written: no -journal file beside it
    lock.exec("BEGIN EXCLUSIVE");
  } catch (error) {
    lock.close();
    if ((error as { code?: unknown }).code === "SQLITE_BUSY") {
      throw new DatabaseInUseError(
        `the SQLite database ${named} is already served by another Tally process (it holds ${realPath}.lock); one process serves a SQLite file: stop the other one, or use PostgreSQL for several replicas (docs/deploy.md)`,
        { cause: error },
      );
    }
    throw error;
  }
  // Checked while holding the lock: a link made before this start is seen
  // here, one made later is seen by the server started on it.
  const links = linkCount(realPath);
  if (links > 1) {
    lock.close();
    throw new DatabaseInUseError(
      `the SQLite database ${named} has ${links} hard links: another Tally process may serve it under another name, and SQLite cannot keep two names of one file consistent; remove the other links (find -samefile) or copy the file`,
    );
  }
  return () => lock.close();
}

function linkCount(path: string): number {
  try {
    return statSync(path).nlink;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0; // a new database
    throw error;
  }
}
