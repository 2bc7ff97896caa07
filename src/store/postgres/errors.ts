// How the PostgreSQL store tells a database that cannot serve right now from
// a bug, and which failed batches may simply run again.
import { StoreUnavailableError } from "../../ledger/errors.ts";

/** Errors that say the database (or the way to it) is unavailable right now,
 * not that Tally is wrong: lost or refused connections, a server shutting down,
 * too many connections, a statement or lock timeout, a pool that cannot hand
 * out a connection in time. Callers hear UNAVAILABLE and retry. */
export function isPostgresUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") {
    if (/^(ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ENETDOWN)$/.test(code))
      return true;
    // SQLSTATE classes: 08 connection exception, 53 insufficient resources,
    // 57 operator intervention (shutdown, statement timeout, cannot connect now),
    // 40 transaction rollback (serialization failure, deadlock), 55P03 lock timeout,
    // 25P03 idle-in-transaction timeout.
    if (/^(08|53|57|40)[0-9A-Z]{3}$/.test(code) || code === "55P03" || code === "25P03") return true;
  }
  return /connection terminated|connection timeout|timeout exceeded when trying to connect|connection error|not queryable|connection ended|query read timeout|cannot use a pool after calling end/i.test(
    error.message,
  );
}

/** How far one attempt at a batch got. */
export interface AttemptState {
  /** A pooled connection was handed out. */
  acquired: boolean;
  /** COMMIT was sent: from here on the outcome may be unknown. */
  commitSent: boolean;
}

/** Whether a batch that failed with `error` may simply be run again. */
export function isRetryable(error: unknown, state: AttemptState): boolean {
  const code = (error as { code?: unknown }).code;
  // Serialization failure, deadlock, and a unique violation from two writers
  // racing on one key (the retry sees the winner's record as a duplicate).
  if (code === "40001" || code === "40P01" || code === "23505") return true;
  // The budget tree changed between the locks and the read of its links
  // (./tree-writes.ts): the retry locks the links just read.
  if (code === "tally_tree_locks_stale") return true;
  // A pooled connection that turned out dead before COMMIT was sent (the server
  // restarted or closed it while idle): nothing was committed, and the retry
  // gets a new connection. Once COMMIT is sent the outcome is unknown, and the
  // caller hears UNAVAILABLE and retries with the same request_id (safe: it is
  // then a duplicate). A connection that could not be opened at all is not
  // retried here: the database is down, and callers should hear so now.
  return state.acquired && !state.commitSent && isPostgresUnavailable(error);
}

/** `error` as the caller should hear it: StoreUnavailableError when the
 * database is unavailable, the error itself (a bug) otherwise. */
export function unavailableOr(error: unknown, action: "write" | "read" = "write"): unknown {
  return isPostgresUnavailable(error) ? new StoreUnavailableError(error, action) : error;
}
