// Archive, unarchive and delete of a project, the same rules for both stores
// (ArchiveProject, UnarchiveProject, DeleteProject). What a store supplies is
// how to read and write the rows, in the op's own transaction; the decisions
// (does it exist, is it in use, what to answer) are made here once.
//
// Last cost: project_totals.updated_at_ms, which only a record moves.
import { ProjectArchivedError, ProjectInUseError, ProjectNotFoundError } from "../ledger/errors.ts";
import type { ArchiveOutcome, DeleteOutcome, UnarchiveOutcome } from "../ledger/projects.ts";
import { zeroTotals, type ProjectTotals } from "../ledger/types.ts";

/** Every table keyed by project_id: what DeleteProject empties. A table added
 * with a projectId column must be listed here (test/store/project-removal-store
 * checks this list against the entities). */
export const projectTables = [
  "cost_records",
  "project_label_totals",
  "holds",
  "reserve_keys",
  "project_reservations",
  "project_budgets",
  "project_totals",
  "project_archives",
  "agent_windows",
  "rate_buckets",
  "rate_holds",
  // A project's negotiated prices go with it; global entries have project_id "".
  "model_prices",
] as const;

/** Throws ProjectArchivedError for an archived project: every write but a
 * release calls it first, in its own transaction. */
export function refuseArchived(projectId: string, archivedAtMs: number | null): void {
  if (archivedAtMs !== null) throw new ProjectArchivedError(projectId, archivedAtMs);
}

/** What a store read about a project before archiving, unarchiving or deleting it. */
export interface ProjectFacts {
  /** Has a totals or a budget row. */
  exists: boolean;
  archivedAtMs: number | null;
  /** null without a totals row. */
  totals: ProjectTotals | null;
  activeHoldCount: bigint;
  /** Cost records, counted up to recordsMax + 1 (enough to refuse). */
  recordCount: bigint;
}

export function archiveOutcome(projectId: string, facts: ProjectFacts, nowMs: number): { insert: boolean; outcome: ArchiveOutcome } {
  if (!facts.exists) throw new ProjectNotFoundError(projectId);
  if (facts.archivedAtMs !== null) return { insert: false, outcome: { projectId, archivedAtMs: facts.archivedAtMs } };
  return { insert: true, outcome: { projectId, archivedAtMs: nowMs } };
}

export function unarchiveOutcome(projectId: string, facts: ProjectFacts): UnarchiveOutcome {
  if (!facts.exists) throw new ProjectNotFoundError(projectId);
  return { projectId, wasArchived: facts.archivedAtMs !== null };
}

/** Refuses (ProjectInUseError, nothing deleted) a project still in use or too
 * large to delete in one transaction; otherwise what the deletion answers. */
export function checkDeletable(projectId: string, facts: ProjectFacts, noRecordsSinceMs: number, recordsMax: number): DeleteOutcome {
  if (!facts.exists) throw new ProjectNotFoundError(projectId);
  const lastCostMs = facts.totals?.updatedAtMs ?? null;
  if (lastCostMs !== null && facts.totals!.recordCount > 0n && lastCostMs >= noRecordsSinceMs) {
    throw new ProjectInUseError(
      projectId,
      `recorded a cost at ${new Date(lastCostMs).toISOString()}, at or after no_records_since ${new Date(noRecordsSinceMs).toISOString()}`,
    );
  }
  if (facts.activeHoldCount > 0n) {
    const n = facts.activeHoldCount;
    throw new ProjectInUseError(
      projectId,
      `has ${n} active hold${n === 1n ? "" : "s"} (release ${n === 1n ? "it" : "them"} or let ${n === 1n ? "it" : "them"} expire)`,
    );
  }
  if (facts.recordCount > BigInt(recordsMax)) {
    throw new ProjectInUseError(
      projectId,
      `has more than ${recordsMax} cost records, too many to delete in one transaction (archive it instead)`,
    );
  }
  return {
    totals: facts.totals ?? zeroTotals(projectId),
    deletedRecordCount: facts.recordCount,
  };
}
