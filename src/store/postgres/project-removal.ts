// The PostgreSQL rows of archive, unarchive and delete (rules:
// ./project-removal.ts). Run inside the batch's transaction, after the batch
// took its projects' advisory locks: no other replica writes these projects
// until the transaction ends, so what is read here stays true until commit.
// An op's refusal is decided from reads before its first write, so a refused
// op leaves nothing (the PostgreSQL store has no savepoints per op).
import type { PoolClient } from "pg";
import { isOpError, ProjectArchivedError } from "../../ledger/errors.ts";
import type { OpResult } from "../../ledger/store.ts";
import { archiveOutcome, checkDeletable, projectTables, unarchiveOutcome, type ProjectFacts } from "../project-removal.ts";
import { totalsFromRow, type TotalsRow } from "../rows.ts";

/** The archive marks of a batch's projects, read once after the locks and
 * kept current by the batch's own archive, unarchive and delete ops. */
export class ArchiveMarks {
  readonly #marks = new Map<string, number>();

  /** From the batch's first read (./batch.ts). */
  static fromRows(rows: ReadonlyArray<{ project_id: string; archived_at_ms: string }>): ArchiveMarks {
    const marks = new ArchiveMarks();
    for (const row of rows) marks.#marks.set(row.project_id, Number(row.archived_at_ms));
    return marks;
  }

  /** A refusal for a write to an archived project, or null. */
  refusal(projectId: string): OpResult | null {
    const archivedAtMs = this.#marks.get(projectId);
    return archivedAtMs === undefined ? null : { ok: false, error: new ProjectArchivedError(projectId, archivedAtMs) };
  }

  set(projectId: string, archivedAtMs: number | null): void {
    if (archivedAtMs === null) this.#marks.delete(projectId);
    else this.#marks.set(projectId, archivedAtMs);
  }
}

const factsSql = `SELECT
  EXISTS (SELECT 1 FROM project_totals WHERE project_id = $1) OR EXISTS (SELECT 1 FROM project_budgets WHERE project_id = $1) AS present,
  (SELECT archived_at_ms FROM project_archives WHERE project_id = $1) AS archived_at_ms,
  (SELECT count(*) FROM holds WHERE project_id = $1 AND expires_at_ms > $2::bigint) AS active_holds,
  (SELECT count(*) FROM (SELECT 1 FROM cost_records WHERE project_id = $1 LIMIT $3) c) AS records`;

async function factsOf(client: PoolClient, projectId: string, nowMs: number, countMax: number): Promise<ProjectFacts> {
  const { rows } = await client.query<{ present: boolean; archived_at_ms: string | null; active_holds: string; records: string }>({
    name: "tally_project_facts",
    text: factsSql,
    values: [projectId, String(nowMs), countMax],
  });
  const row = rows[0]!;
  const { rows: totals } = await client.query<TotalsRow>({
    name: "tally_removal_totals",
    text: "SELECT * FROM project_totals WHERE project_id = $1",
    values: [projectId],
  });
  return {
    exists: row.present,
    archivedAtMs: row.archived_at_ms === null ? null : Number(row.archived_at_ms),
    totals: totals[0] === undefined ? null : totalsFromRow(totals[0]),
    activeHoldCount: BigInt(row.active_holds),
    recordCount: BigInt(row.records),
  };
}

/** Domain refusals become the op's result; anything else fails the batch. */
async function asResult(apply: () => Promise<Extract<OpResult, { ok: true }>["value"]>): Promise<OpResult> {
  try {
    return { ok: true, value: await apply() };
  } catch (error) {
    if (isOpError(error)) return { ok: false, error };
    throw error;
  }
}

export function archiveProject(client: PoolClient, marks: ArchiveMarks, projectId: string, nowMs: number): Promise<OpResult> {
  return asResult(async () => {
    const { insert, outcome } = archiveOutcome(projectId, await factsOf(client, projectId, nowMs, 0), nowMs);
    if (insert)
      await client.query({
        name: "tally_archive",
        text: "INSERT INTO project_archives (project_id, archived_at_ms) VALUES ($1, $2::bigint)",
        values: [projectId, String(nowMs)],
      });
    marks.set(projectId, outcome.archivedAtMs);
    return outcome;
  });
}

export function unarchiveProject(client: PoolClient, marks: ArchiveMarks, projectId: string, nowMs: number): Promise<OpResult> {
  return asResult(async () => {
    const outcome = unarchiveOutcome(projectId, await factsOf(client, projectId, nowMs, 0));
    if (outcome.wasArchived)
      await client.query({ name: "tally_unarchive", text: "DELETE FROM project_archives WHERE project_id = $1", values: [projectId] });
    marks.set(projectId, null);
    return outcome;
  });
}

export function deleteProject(
  client: PoolClient,
  marks: ArchiveMarks,
  projectId: string,
  noRecordsSinceMs: number,
  recordsMax: number,
  nowMs: number,
): Promise<OpResult> {
  return asResult(async () => {
    const outcome = checkDeletable(projectId, await factsOf(client, projectId, nowMs, recordsMax + 1), noRecordsSinceMs, recordsMax);
    for (const table of projectTables)
      await client.query({
        name: `tally_delete_project_${table}`,
        text: `DELETE FROM ${table} WHERE project_id = $1`,
        values: [projectId],
      });
    marks.set(projectId, null);
    return outcome;
  });
}
