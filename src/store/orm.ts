// One initORM for the process, and the single place where the database URL
// picks a driver. PostgreSQL plugs in here later with the same entities.
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { MikroORM } from "@mikro-orm/sqlite";
import { Migrator } from "@mikro-orm/migrations";
import type { LedgerStore } from "../ledger/store.ts";
import { entities } from "./entities.ts";
import { sqliteMigrations } from "./migrations/sqlite/index.ts";
import { SqliteLedgerStore } from "./sqlite-store.ts";

export type DatabaseTarget = { driver: "sqlite"; path: string };

export class DatabaseUrlError extends Error {
  override name = "DatabaseUrlError";
}

/** Parses TALLY_DATABASE_URL: `sqlite:<path>` or `sqlite::memory:`. */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  if (url.startsWith("sqlite:")) {
    let path = url.slice("sqlite:".length);
    if (path.startsWith("//")) path = path.slice(2); // sqlite://./data/x.db
    if (path === "") throw new DatabaseUrlError(`database URL "${url}" names no file; use sqlite:./data/tally.db or sqlite::memory:`);
    return { driver: "sqlite", path };
  }
  if (/^postgres(ql)?:/.test(url)) {
    throw new DatabaseUrlError(`database URL "${url}": PostgreSQL is not supported by this build yet; use sqlite:<path>`);
  }
  throw new DatabaseUrlError(`database URL "${url}" is not understood; use sqlite:<path> (e.g. sqlite:./data/tally.db) or sqlite::memory:`);
}

export interface SqliteOptions {
  /** PRAGMA synchronous: FULL (default) fsyncs the WAL on every commit, so an
   * acknowledged write survives power loss too; NORMAL survives kill -9 only. */
  synchronous: "FULL" | "NORMAL";
  /** How long a writer waits for another process holding the lock. */
  busyTimeoutMs: number;
}

export const sqliteDefaults: SqliteOptions = { synchronous: "FULL", busyTimeoutMs: 5_000 };

export interface InitializedStore {
  store: LedgerStore;
  orm: MikroORM;
  /** Names of migrations applied by this start. */
  applied: string[];
}

/** Connects, applies pending migrations, and returns the store. */
export async function initORM(url: string, sqlite: SqliteOptions = sqliteDefaults): Promise<InitializedStore> {
  const target = parseDatabaseUrl(url);
  const memory = target.path === ":memory:";
  const dbName = memory ? ":memory:" : resolve(target.path);
  if (!memory) mkdirSync(dirname(dbName), { recursive: true });
  const orm = await MikroORM.init({
    dbName,
    entities,
    extensions: [Migrator],
    migrations: { migrationsList: sqliteMigrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
    // Never let the ORM change the schema by itself: only committed migrations do.
    ensureDatabase: false,
    allowGlobalContext: false,
    debug: false,
  });
  try {
    const db = await orm.em.getConnection().getNativeClient();
    if (!memory) db.pragma("journal_mode = WAL");
    db.pragma(`synchronous = ${sqlite.synchronous}`);
    db.pragma(`busy_timeout = ${sqlite.busyTimeoutMs}`);
    const applied = (await orm.migrator.up()).map((m) => m.name);
    return { store: new SqliteLedgerStore(db, () => orm.close(true)), orm, applied };
  } catch (error) {
    await orm.close(true);
    throw error;
  }
}
