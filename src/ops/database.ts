// One way for the operator commands (check, backup, restore, migrate-data) to
// read a Tally database of either driver without starting a store: plain SQL,
// integers as bigint (never a float), one read snapshot when asked. The SQL
// they send is portable (`?` placeholders, standard functions); this module
// turns it into what each driver wants.
import Database from "better-sqlite3";
import pg from "pg";
import { opsConnectTimeoutMs, sqliteBusyTimeoutMs } from "../limits.ts";
import { parseDatabaseUrl, redactDatabaseUrl } from "../store/orm.ts";
import { realDatabasePath } from "../store/sqlite/connection.ts";
import { postgresClientConfig } from "../store/postgres/hosts.ts";

export type Row = Record<string, unknown>;

export interface OpsDatabase {
  readonly driver: "sqlite" | "postgresql";
  /** For messages: the file, or the URL without its password. */
  readonly label: string;
  /** The real path of a SQLite file (undefined on PostgreSQL). */
  readonly realPath: string | undefined;
  all(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  /** Runs `read` inside one read-only snapshot: every statement sees the same data. */
  snapshot<T>(read: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** A refusal or failure of an operator command, with the line to print. */
export class OpsError extends Error {
  override name = "OpsError";
}

/** Opens `url` (sqlite:<path> or postgres://...) for reading; a SQLite file
 * must exist (the operator commands never create one by accident). */
export async function openOpsDatabase(url: string): Promise<OpsDatabase> {
  const target = parseDatabaseUrl(url);
  if (target.driver === "sqlite") {
    if (target.path === ":memory:")
      throw new OpsError("sqlite::memory: has nothing to check or copy; name a database file (sqlite:./data/tally.db)");
    return openSqliteOps(target.path);
  }
  return openPostgresOps(target.url);
}

export function openSqliteOps(path: string): OpsDatabase {
  let db: Database.Database;
  try {
    db = new Database(path, { fileMustExist: true });
    db.pragma(`busy_timeout = ${sqliteBusyTimeoutMs}`);
  } catch (error) {
    throw new OpsError(`cannot open the SQLite database ${path}: ${(error as Error).message}`);
  }
  db.defaultSafeIntegers(true);
  return {
    driver: "sqlite",
    label: path,
    realPath: realDatabasePath(path),
    async all(sql, params = []) {
      return db.prepare(sql).all(...(params as unknown[])) as Row[];
    },
    async snapshot(read) {
      // A deferred transaction whose first read pins one snapshot of the WAL
      // (writers go on; the server is never blocked).
      db.exec("BEGIN DEFERRED");
      try {
        db.prepare("SELECT count(*) FROM sqlite_master").get();
        return await read();
      } finally {
        if (db.inTransaction) db.exec("ROLLBACK");
      }
    },
    async close() {
      db.close();
    },
  };
}

/** int8 and numeric (sums of int8) as bigint: amounts never pass through a float. */
export const bigintTypes = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (oid === 20 || oid === 1700) return (value: string) => BigInt(value);
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

export async function openPostgresOps(url: string): Promise<OpsDatabase> {
  const client = new pg.Client({
    ...postgresClientConfig(url),
    connectionTimeoutMillis: opsConnectTimeoutMs,
    types: bigintTypes,
    application_name: "tally-ops",
  });
  client.on("error", () => undefined); // surfaces in the next query
  try {
    await client.connect();
  } catch (error) {
    throw new OpsError(`cannot connect to ${redactDatabaseUrl(url)}: ${(error as Error).message}`);
  }
  return {
    driver: "postgresql",
    label: redactDatabaseUrl(url),
    realPath: undefined,
    async all(sql, params = []) {
      return (await client.query(toDollarParams(sql), params as unknown[])).rows as Row[];
    },
    async snapshot(read) {
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      try {
        return await read();
      } finally {
        await client.query("ROLLBACK").catch(() => undefined);
      }
    },
    async close() {
      await client.end().catch(() => undefined);
    },
  };
}

/** `?` placeholders to PostgreSQL's `$1, $2, ...` (the SQL here has no `?` in literals). */
export function toDollarParams(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/** A bigint (or null) out of a row. */
export function big(value: unknown): bigint {
  if (value === null || value === undefined) return 0n;
  return typeof value === "bigint" ? value : BigInt(value as number | string);
}
