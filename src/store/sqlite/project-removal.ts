// The SQLite rows of archive, unarchive and delete (rules: ./project-removal.ts).
// Runs on the writer's connection, inside the batch's transaction: each op in
// a savepoint of its own, like every other op.
import type Database from "better-sqlite3";
import type { ArchiveOutcome, DeleteOutcome, UnarchiveOutcome } from "../../ledger/projects.ts";
import { archiveOutcome, checkDeletable, projectTables, refuseArchived, unarchiveOutcome, type ProjectFacts } from "../project-removal.ts";
import { totalsFromRow, type TotalsRow } from "../rows.ts";

export class SqliteProjectRemoval {
  readonly #archivedAt: Database.Statement;
  readonly #facts: Database.Statement;
  readonly #totals: Database.Statement;
  readonly #insert: Database.Statement;
  readonly #unarchive: Database.Statement;
  readonly #deletes: Database.Statement[];
  readonly archive: (projectId: string, nowMs: number) => ArchiveOutcome;
  readonly unarchive: (projectId: string) => UnarchiveOutcome;
  readonly delete: (projectId: string, noRecordsSinceMs: number, recordsMax: number, nowMs: number) => DeleteOutcome;

  constructor(db: Database.Database) {
    const prepare = (sql: string) => db.prepare(sql).safeIntegers(true);
    this.#archivedAt = prepare("SELECT archived_at_ms FROM project_archives WHERE project_id = ?");
    // Existence, archive mark, active holds and records (counted only up to
    // the limit + 1: enough to refuse, never a scan of a huge project).
    this.#facts = prepare(`SELECT
        EXISTS (SELECT 1 FROM project_totals WHERE project_id = @id) OR EXISTS (SELECT 1 FROM project_budgets WHERE project_id = @id) AS present,
        (SELECT archived_at_ms FROM project_archives WHERE project_id = @id) AS archived_at_ms,
        (SELECT count(*) FROM holds WHERE project_id = @id AND expires_at_ms > @nowMs) AS active_holds,
        (SELECT count(*) FROM (SELECT 1 FROM cost_records WHERE project_id = @id LIMIT @countMax)) AS records`);
    this.#totals = prepare("SELECT * FROM project_totals WHERE project_id = ?");
    this.#insert = prepare("INSERT INTO project_archives (project_id, archived_at_ms) VALUES (?, ?)");
    this.#unarchive = prepare("DELETE FROM project_archives WHERE project_id = ?");
    this.#deletes = projectTables.map((table) => prepare(`DELETE FROM ${table} WHERE project_id = ?`));
    this.archive = db.transaction((projectId: string, nowMs: number) => {
      const { insert, outcome } = archiveOutcome(projectId, this.#factsOf(projectId, nowMs, 0), nowMs);
      if (insert) this.#insert.run(projectId, nowMs);
      return outcome;
    });
    this.unarchive = db.transaction((projectId: string) => {
      const outcome = unarchiveOutcome(projectId, this.#factsOf(projectId, 0, 0));
      if (outcome.wasArchived) this.#unarchive.run(projectId);
      return outcome;
    });
    this.delete = db.transaction((projectId: string, noRecordsSinceMs: number, recordsMax: number, nowMs: number) => {
      const outcome = checkDeletable(projectId, this.#factsOf(projectId, nowMs, recordsMax + 1), noRecordsSinceMs, recordsMax);
      for (const statement of this.#deletes) statement.run(projectId);
      return outcome;
    });
  }

  /** Throws ProjectArchivedError when the project is archived (writes call it first). */
  refuseArchived(projectId: string): void {
    const row = this.#archivedAt.get(projectId) as { archived_at_ms: bigint } | undefined;
    refuseArchived(projectId, row === undefined ? null : Number(row.archived_at_ms));
  }

  /** When the project was archived, or null (for listings). */
  archivedAtMs(projectId: string): number | null {
    const row = this.#archivedAt.get(projectId) as { archived_at_ms: bigint } | undefined;
    return row === undefined ? null : Number(row.archived_at_ms);
  }

  #factsOf(projectId: string, nowMs: number, countMax: number): ProjectFacts {
    const row = this.#facts.get({ id: projectId, nowMs, countMax }) as {
      present: bigint;
      archived_at_ms: bigint | null;
      active_holds: bigint;
      records: bigint;
    };
    const totals = this.#totals.get(projectId) as TotalsRow | undefined;
    return {
      exists: row.present !== 0n,
      archivedAtMs: row.archived_at_ms === null ? null : Number(row.archived_at_ms),
      totals: totals === undefined ? null : totalsFromRow(totals),
      activeHoldCount: row.active_holds,
      recordCount: row.records,
    };
  }
}
