// `tally migrate-data`: copies a stopped SQLite database into PostgreSQL, every
// table of src/ops/tables.ts with every column the source has (found at run
// time, so a column added by a migration is copied without a change here).
// - The source is locked for the whole run (a server cannot start on it, and
//   one that serves it makes the copy refuse to start): a copy of a database
//   still taking writes would miss them.
// - The target gets Tally's migrations first (the same schema version as the
//   source, which `tally check` verified), and one migrate-data at a time
//   (a session advisory lock).
// - Tables whose rows change ("replace") are copied whole, each in one
//   transaction: emptied and refilled, so a second run gives the same result.
//   The ledger ("append") is copied in key order, one transaction per chunk:
//   an interrupted run resumes after the target's last row, and a finished
//   one copies nothing more. A ledger that changed since an earlier run (rows
//   deleted by retention) is found by the verification: run with --restart.
// - Rows go in as one `INSERT ... SELECT * FROM unnest($1::type[], ...)` per
//   chunk (one round trip for thousands of rows); the next chunk is read from
//   SQLite while PostgreSQL inserts the previous one.
import type Database from "better-sqlite3";
import type pg from "pg";
import { migrateChunkRows } from "../limits.ts";
import { advisoryLockNamespace } from "../store/postgres/locks.ts";
import { OpsError } from "./database.ts";
import { copiedTables, type CopiedTable } from "./tables.ts";

/** The session advisory lock of migrate-data (key 0 is the migration lock). */
export const migrateDataLockKey = 2;

export interface CopyProgress {
  table: string;
  tableRows: number;
  tableDone: number;
  allRows: number;
  allDone: number;
  elapsedMs: number;
}

export interface CopyResult {
  /** Rows written to the target per table by this run. */
  copied: Record<string, number>;
  /** Rows the ledger already had in the target (a resumed run). */
  resumedAfter: Record<string, number>;
  durationMs: number;
}

interface Column {
  name: string;
  /** The target's element type for the unnest array (pg's udt_name). */
  type: string;
}

export async function copyTables(
  source: Database.Database,
  target: pg.Client,
  options: { restart: boolean; onProgress: (p: CopyProgress) => void },
): Promise<CopyResult> {
  const { rows } = await target.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1, $2) AS locked", [
    advisoryLockNamespace,
    migrateDataLockKey,
  ]);
  if (!rows[0]?.locked) throw new OpsError("another tally migrate-data is copying into this PostgreSQL database: wait for it to finish");
  try {
    if (options.restart) await target.query(`TRUNCATE ${copiedTables.map((t) => t.table).join(", ")}`);
    const startedMs = performance.now();
    const counts = copiedTables.map((t) => Number(source.prepare(`SELECT count(*) FROM ${t.table}`).pluck().get()));
    const allRows = counts.reduce((a, b) => a + b, 0);
    let allDone = 0;
    const result: CopyResult = { copied: {}, resumedAfter: {}, durationMs: 0 };
    for (const [i, table] of copiedTables.entries()) {
      const columns = await columnsOf(source, target, table);
      const tableRows = counts[i]!;
      let tableDone = 0;
      const progress = (n: number) => {
        tableDone += n;
        allDone += n;
        options.onProgress({ table: table.table, tableRows, tableDone, allRows, allDone, elapsedMs: performance.now() - startedMs });
      };
      if (table.mode === "replace") {
        result.copied[table.table] = await copyReplace(source, target, table, columns, progress);
      } else {
        const resumed = await resumePoint(source, target, table);
        result.resumedAfter[table.table] = resumed.rowsBefore;
        progress(resumed.rowsBefore);
        result.copied[table.table] = await copyAppend(source, target, table, columns, resumed.afterKey, progress);
      }
      if (table.serial !== undefined) await followSequence(target, table.table, table.serial);
    }
    result.durationMs = performance.now() - startedMs;
    return result;
  } finally {
    await target.query("SELECT pg_advisory_unlock($1, $2)", [advisoryLockNamespace, migrateDataLockKey]).catch(() => undefined);
  }
}

/** The source's columns, each with the target's type; a column the target
 * lacks means the two schemas differ. */
async function columnsOf(source: Database.Database, target: pg.Client, table: CopiedTable): Promise<Column[]> {
  const names = (source.prepare(`SELECT name FROM pragma_table_info('${table.table}') ORDER BY cid`).pluck().all() as string[]).map(String);
  const { rows } = await target.query<{ column_name: string; udt_name: string }>(
    "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
    [table.table],
  );
  const types = new Map(rows.map((r) => [r.column_name, r.udt_name]));
  return names.map((name) => {
    const type = types.get(name);
    if (type === undefined)
      throw new OpsError(
        `the PostgreSQL table ${table.table} has no column ${name}, which the SQLite one has: the two were migrated by different Tally versions; run this migrate-data with the Tally that served the SQLite file`,
      );
    return { name, type };
  });
}

function keyOrder(table: CopiedTable): string {
  return table.key.join(", ");
}

/** Keyset pagination: rows after `after` (the previous chunk's last key). */
function readChunk(source: Database.Database, table: CopiedTable, columns: Column[], after: unknown[] | undefined): unknown[][] {
  const cols = columns.map((c) => c.name).join(", ");
  const where = after === undefined ? "" : `WHERE (${keyOrder(table)}) > (${table.key.map(() => "?").join(", ")})`;
  return source
    .prepare(`SELECT ${cols} FROM ${table.table} ${where} ORDER BY ${keyOrder(table)} LIMIT ${migrateChunkRows}`)
    .raw()
    .all(...(after ?? [])) as unknown[][];
}

function insertChunk(target: pg.Client, table: CopiedTable, columns: Column[], rows: unknown[][]): Promise<unknown> {
  const arrays = columns.map((_, c) => rows.map((r) => r[c] ?? null));
  const sql = `INSERT INTO ${table.table} (${columns.map((c) => c.name).join(", ")}) SELECT * FROM unnest(${columns.map((c, i) => `$${i + 1}::${c.type}[]`).join(", ")})`;
  return target.query(sql, arrays);
}

function keyOf(table: CopiedTable, columns: Column[], row: unknown[]): unknown[] {
  return table.key.map((k) => row[columns.findIndex((c) => c.name === k)]);
}

/** Streams the table's chunks to `write`, reading chunk k+1 while chunk k is written. */
async function pump(
  source: Database.Database,
  table: CopiedTable,
  columns: Column[],
  after: unknown[] | undefined,
  write: (rows: unknown[][]) => Promise<void>,
): Promise<number> {
  let copied = 0;
  let chunk = readChunk(source, table, columns, after);
  while (chunk.length > 0) {
    const writing = write(chunk);
    const next = chunk.length < migrateChunkRows ? [] : readChunk(source, table, columns, keyOf(table, columns, chunk[chunk.length - 1]!));
    await writing;
    copied += chunk.length;
    chunk = next;
  }
  return copied;
}

async function copyReplace(
  source: Database.Database,
  target: pg.Client,
  table: CopiedTable,
  columns: Column[],
  progress: (n: number) => void,
): Promise<number> {
  await target.query("BEGIN");
  try {
    await target.query(`DELETE FROM ${table.table}`);
    const copied = await pump(source, table, columns, undefined, async (rows) => {
      await insertChunk(target, table, columns, rows);
      progress(rows.length);
    });
    await target.query("COMMIT");
    return copied;
  } catch (error) {
    await target.query("ROLLBACK").catch(() => undefined);
    throw error;
  }
}

/** Where an interrupted ledger copy goes on: after the target's last key,
 * which must be a row of this source (else the target holds someone else's
 * ledger, and resuming would mix the two). */
async function resumePoint(
  source: Database.Database,
  target: pg.Client,
  table: CopiedTable,
): Promise<{ afterKey: unknown[] | undefined; rowsBefore: number }> {
  const order = table.key.map((k) => `${k} DESC`).join(", ");
  const { rows } = await target.query(
    `SELECT ${keyOrder(table)}, (SELECT count(*) FROM ${table.table}) AS n FROM ${table.table} ORDER BY ${order} LIMIT 1`,
  );
  const last = rows[0] as Record<string, unknown> | undefined;
  if (last === undefined) return { afterKey: undefined, rowsBefore: 0 };
  const afterKey = table.key.map((k) =>
    typeof last[k] === "string" && /^\d+$/.test(last[k] as string) ? BigInt(last[k] as string) : last[k],
  );
  const inSource = source
    .prepare(`SELECT count(*) FROM ${table.table} WHERE (${keyOrder(table)}) <= (${table.key.map(() => "?").join(", ")})`)
    .pluck()
    .get(...afterKey);
  const exists = source
    .prepare(`SELECT 1 FROM ${table.table} WHERE (${keyOrder(table)}) = (${table.key.map(() => "?").join(", ")})`)
    .get(...afterKey);
  if (exists === undefined) {
    throw new OpsError(
      `the PostgreSQL table ${table.table} already has ${String(last.n)} rows that did not come from this SQLite database (its last key ${afterKey.join("/")} is not in the source): migrate into an empty database, or pass --restart to empty the target's Tally tables first`,
    );
  }
  return { afterKey, rowsBefore: Number(inSource) };
}

async function copyAppend(
  source: Database.Database,
  target: pg.Client,
  table: CopiedTable,
  columns: Column[],
  after: unknown[] | undefined,
  progress: (n: number) => void,
): Promise<number> {
  return pump(source, table, columns, after, async (rows) => {
    // One transaction per chunk (the statement is one): all of it or none.
    await insertChunk(target, table, columns, rows);
    progress(rows.length);
  });
}

/** Moves a serial column's sequence past the copied values: the next row
 * PostgreSQL numbers must not collide with a copied one. */
async function followSequence(target: pg.Client, table: string, column: string): Promise<void> {
  await target.query(`SELECT setval(pg_get_serial_sequence($1, $2), COALESCE((SELECT max(${column}) FROM ${table}), 0) + 1, false)`, [
    table,
    column,
  ]);
}
