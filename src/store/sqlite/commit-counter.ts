// Detects, at start, a SQLite database that lost committed transactions while
// no process had it open: its write-ahead log deleted (SQLite then opens the
// database as of its last checkpoint, without a word), damaged (recovery stops
// at the first bad frame and drops the rest, without a word), or the file
// replaced by an older copy. Each write transaction of the writer thread
// increments a counter inside the database (PRAGMA user_version: a header
// field written in the same transaction, so it lives or dies with the writes),
// and once COMMIT returned, before any caller is answered, writes the same
// number to `<real path>.commits` beside it. So the file holds a number no
// higher than the database's, and a database whose counter is lower than the
// file's is missing acknowledged commits. What this cannot see is in
// docs/deploy.md ("What cannot be detected").
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import type Database from "better-sqlite3";
import { commitCounterModulo } from "../../limits.ts";
import { DatabaseOpenError } from "./connection.ts";

/** The file beside a database that holds its last acknowledged commit number. */
export function commitLogPath(realPath: string): string {
  return `${realPath}.commits`;
}

/** The counter stored in the database (the last committed transaction's number). */
export function readDatabaseCounter(db: Database.Database): number {
  return Number(db.pragma("user_version", { simple: true }));
}

/** The number in the commit log file; undefined when there is none. */
export function readCommitLog(realPath: string): number | undefined {
  const path = commitLogPath(realPath);
  if (!existsSync(path)) return undefined;
  const text = readFileSync(path, "utf8").trim();
  if (!/^\d{1,10}$/.test(text) || Number(text) >= commitCounterModulo) {
    throw new DatabaseOpenError(
      `the commit log ${path} is damaged (it holds "${text.slice(0, 40)}", not a commit number): restore the database with \`tally restore <backup>\`, or, if ${realPath} is known to be complete, delete ${path}`,
    );
  }
  return Number(text);
}

export type CounterVerdict =
  /** The database has every commit the log knows of (or one more: the process
   * died between COMMIT and writing the log; that write was never answered). */
  | { ok: true; databaseCounter: number; logCounter: number | undefined }
  /** The database is `missing` commits behind the log. */
  | { ok: false; databaseCounter: number; logCounter: number; missing: number };

/** Compares the two counters, modulo the counter's range (it wraps). The log
 * can only trail the database (it is written after each COMMIT), so a log
 * ahead of the database means commits are gone. */
export function compareCounters(databaseCounter: number, logCounter: number | undefined): CounterVerdict {
  if (logCounter === undefined) return { ok: true, databaseCounter, logCounter };
  const ahead = (databaseCounter - logCounter + commitCounterModulo) % commitCounterModulo;
  if (ahead < commitCounterModulo / 2) return { ok: true, databaseCounter, logCounter };
  return { ok: false, databaseCounter, logCounter, missing: commitCounterModulo - ahead };
}

/** The message an operator gets for a database that lost commits. */
export function lostCommitsMessage(path: string, verdict: Extract<CounterVerdict, { ok: false }>): string {
  return (
    `the SQLite database ${path} is at commit ${verdict.databaseCounter} but ${commitLogPath(path)} records commit ${verdict.logCounter} as acknowledged: ` +
    `${verdict.missing} committed write transaction(s) are missing (its write-ahead log ${path}-wal was deleted, damaged or replaced, or the file was replaced by an older copy); ` +
    `Tally refuses to serve it: put back the original ${path}-wal if you still have it, or restore a backup with \`tally restore <file>\`, ` +
    `or accept the loss and serve what is left with \`tally check --accept-lost-commits\``
  );
}

/** At start, before serving: refuses a database missing acknowledged commits,
 * else makes the log agree with the database (fsynced: the log must exist
 * before the first commit is answered). */
export function verifyCommitCounter(db: Database.Database, path: string, realPath: string): void {
  const verdict = compareCounters(readDatabaseCounter(db), readCommitLog(realPath));
  if (!verdict.ok) throw new DatabaseOpenError(lostCommitsMessage(path, verdict));
  writeCommitLog(realPath, verdict.databaseCounter);
}

/** Writes the log durably (restore, accept, start). */
export function writeCommitLog(realPath: string, counter: number): void {
  const fd = openSync(commitLogPath(realPath), "w");
  try {
    writeSync(fd, `${formatCounter(counter)}\n`, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const dir = openSync(dirname(realPath), "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** Fixed width, so an update overwrites the whole number in place. */
function formatCounter(counter: number): string {
  return String(counter).padStart(10, "0");
}

/** The writer thread's side: numbers each write transaction and records it in
 * the log once committed. */
export class CommitCounter {
  readonly #fd: number;
  readonly #transaction: Database.Transaction<(next: number, write: () => unknown) => unknown>;
  #value: number;

  constructor(db: Database.Database, realPath: string) {
    this.#value = readDatabaseCounter(db);
    this.#fd = openSync(commitLogPath(realPath), "r+");
    this.#transaction = db.transaction((next: number, write: () => unknown) => {
      db.pragma(`user_version = ${next}`);
      return write();
    });
  }

  /** Runs `write` in one IMMEDIATE transaction that also advances the counter;
   * `write`'s own transaction, if any, becomes a savepoint of it. The log is
   * written after COMMIT, before the caller (who answers the clients) returns:
   * not fsynced, since the page cache outlives a killed process, and a log
   * that trails after a power loss only misses a detection, never raises a
   * false one. */
  run<T>(write: () => T): T {
    const next = (this.#value + 1) % commitCounterModulo;
    const result = this.#transaction.immediate(next, write) as T;
    this.#value = next;
    writeSync(this.#fd, formatCounter(next), 0);
    return result;
  }

  close(): void {
    closeSync(this.#fd);
  }
}
