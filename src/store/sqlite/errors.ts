// How the SQLite store tells a database that cannot serve right now from a bug.
import { StoreUnavailableError } from "../../ledger/errors.ts";

/** Thrown inside the per-op savepoint to roll it back when the request_id exists. */
export class DuplicateKey extends Error {}

/** Whether `error` says the database could not serve (busy beyond
 * busy_timeout, I/O error, closed handle), not that Tally is wrong. */
export function isSqliteUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return (typeof code === "string" && code.startsWith("SQLITE_")) || /database connection is not open/.test((error as Error).message);
}

/** A read the database could not serve is UNAVAILABLE to the caller, like a
 * failed write (the same rule as PostgreSQL's reads); anything else is a bug
 * and stays one. */
export function readOrUnavailable<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (isSqliteUnavailable(error)) throw new StoreUnavailableError(error, "read");
    throw error;
  }
}
