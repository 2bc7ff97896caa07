// Listing projects: the domain view an operator reads (dashboard, metrics, CLI).
// A project exists once it recorded a cost or had a budget set.
import { int64Max } from "./money.ts";
import type { Budget, ProjectTotals } from "./types.ts";

export const ProjectOrder = {
  /** project_id ascending: complete and stable while writes go on. */
  projectId: "project_id",
  /** Lifetime spend descending, ties by project_id ascending. */
  spentDesc: "spent_desc",
} as const;
export type ProjectOrder = (typeof ProjectOrder)[keyof typeof ProjectOrder];

/** Where the previous page ended (keyset pagination: no OFFSET scans). */
export interface ProjectCursor {
  projectId: string;
  /** The last project's spend; used by spentDesc only. */
  spentNanos: bigint;
}

export interface ProjectListQuery {
  order: ProjectOrder;
  /** null for the first page. */
  after: ProjectCursor | null;
  /** At most this many projects (already bounded by the caller). */
  limit: number;
  /** List archived projects too (ListProjects include_archived); default false. */
  includeArchived?: boolean;
}

export interface ProjectEntry {
  totals: ProjectTotals;
  budget: Budget;
  /** Sum and count of the project's active holds at the listing's instant,
   * computed as GetProjectCost does (reserved total minus expired, unswept holds). */
  reservedNanos: bigint;
  activeHoldCount: bigint;
  /** When the project was archived; null when it is not. */
  archivedAtMs: number | null;
}

/** ArchiveProject's outcome: when the project was archived (the first time,
 * for a repeated archive). */
export interface ArchiveOutcome {
  projectId: string;
  archivedAtMs: number;
}

/** UnarchiveProject's outcome. */
export interface UnarchiveOutcome {
  projectId: string;
  wasArchived: boolean;
}

/** DeleteProject's outcome: the totals just before deletion. */
export interface DeleteOutcome {
  totals: ProjectTotals;
  deletedRecordCount: bigint;
}

export interface ProjectPage<Entry extends ProjectEntry = ProjectEntry> {
  entries: Entry[];
  /** Set when more projects may follow. */
  next: ProjectCursor | null;
}

/** Aggregate spend of all projects of one currency (metrics "other"). A float:
 * a sum over every project may pass int64 and only feeds a metric. */
export interface CurrencySpend {
  currency: string;
  totalCostNanos: number;
  projects: number;
}

/** Active holds of all projects of one currency (metrics). Floats, as in
 * CurrencySpend: a sum over every project only feeds a metric. */
export interface CurrencyReserved {
  currency: string;
  reservedNanos: number;
  activeHolds: number;
}

/** Spend as a share of the limit in basis points, rounded down; 0 without a
 * limit; saturates at the int64 maximum (spent int64Max over a limit of 1). */
export function limitUsedBasisPoints(spentNanos: bigint, limitNanos: bigint): bigint {
  if (limitNanos <= 0n) return 0n;
  const bp = (spentNanos * 10_000n) / limitNanos;
  return bp > int64Max ? int64Max : bp;
}
