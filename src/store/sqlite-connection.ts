// The settings every SQLite connection of Tally runs with: the ORM's (reads,
// migrations) and the writer thread's (src/store/sqlite-writer.ts). One place,
// so the two connections to one file can never disagree on durability.
import type Database from "better-sqlite3";
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
