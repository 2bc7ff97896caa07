// The settings every SQLite connection of Tally runs with: the ORM's (reads,
// migrations) and the writer thread's (src/store/sqlite-writer.ts). One place,
// so the two connections to one file can never disagree on durability.
import Database from "better-sqlite3";
import { sqliteCacheBytes, sqliteMmapBytes } from "../limits.ts";

export interface SqliteOptions {
  /** PRAGMA synchronous: FULL (default) fsyncs the WAL on every commit, so an
   * acknowledged write survives power loss too; NORMAL survives kill -9 only. */
  synchronous: "FULL" | "NORMAL";
  /** How long a connection waits for another one holding the lock. */
  busyTimeoutMs: number;
}

export const sqliteDefaults: SqliteOptions = { synchronous: "FULL", busyTimeoutMs: 5_000 };

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

/** One process serves a SQLite file (docs/deploy.md): its reads trust what its
 * own writes changed (the store's state rows) and no one else's. An open
 * exclusive transaction on `<path>.lock` marks the owner for as long as this
 * connection lives; the operating system drops the lock with the process, so
 * a crashed owner never blocks its restart. Returns the release. */
export function lockDatabaseFile(path: string): () => void {
  const lock = new Database(`${path}.lock`);
  try {
    lock.pragma("busy_timeout = 0"); // the owner keeps it: waiting would not help
    lock.pragma("journal_mode = MEMORY"); // nothing is written: no -journal file beside it
    lock.exec("BEGIN EXCLUSIVE");
  } catch (error) {
    lock.close();
    if ((error as { code?: unknown }).code === "SQLITE_BUSY") {
      throw new DatabaseInUseError(
        `the SQLite database ${path} is already served by another Tally process (it holds ${path}.lock); one process serves a SQLite file: stop the other one, or use PostgreSQL for several replicas (docs/deploy.md)`,
        { cause: error },
      );
    }
    throw error;
  }
  return () => lock.close();
}
