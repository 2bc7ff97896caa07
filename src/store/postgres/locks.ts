// PostgreSQL advisory locks: every batch (and the hold sweeper) locks the
// projects it writes, transaction-scoped, in ascending key order, so writes to
// one project are serialised across replicas and batches never deadlock.
import { createHash } from "node:crypto";
import { projectOf, type WriteOp } from "../../ledger/store.ts";

/** First key of every Tally advisory lock (pg_advisory_xact_lock(int4, int4)):
 * keeps Tally's locks apart from any other application's on the same database.
 * "Tly1" in ASCII. */
export const advisoryLockNamespace = 0x546c7931;
/** Second key of the lock held while migrations are applied at start. Project
 * locks use a hash of the project id as the second key; a collision with this
 * one would only make a batch wait for migrations, which are done by then. */
export const migrationLockKey = 0;

/** The second advisory-lock key of a project: 32 bits of SHA-256 of its id.
 * Computed here, not with a server-side hash, so every replica agrees
 * whatever the PostgreSQL version. Two projects sharing a key only share a lock. */
export function projectLockKey(projectId: string): number {
  return createHash("sha256").update(projectId).digest().readInt32BE(0);
}

/** The distinct project lock keys of a batch, ascending: every batch takes its
 * locks in the same global order, so two batches can wait on each other only
 * one way round and never deadlock. */
export function projectLockKeys(ops: readonly WriteOp[]): number[] {
  return sortedLockKeys(ops.map(projectOf));
}

export function sortedLockKeys(projectIds: readonly string[]): number[] {
  return [...new Set(projectIds.map(projectLockKey))].sort((a, b) => a - b);
}

// Locks are taken in the order of the (sorted, distinct) array.
export const lockProjectsSql = `SELECT pg_advisory_xact_lock(${advisoryLockNamespace}, k) FROM unnest($1::int4[]) AS k`;
