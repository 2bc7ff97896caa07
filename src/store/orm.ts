// One initORM for the process, and the single place where the database URL
// picks a driver: `sqlite:` -> @mikro-orm/sqlite, `postgres://` ->
// @mikro-orm/postgresql. Same entities; one migration history per driver, kept
// in step (same names, same order).
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { MikroORM } from "@mikro-orm/sqlite";
import { MikroORM as PostgresMikroORM } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import type pg from "pg";
import type { PriceCatalogStore } from "../ledger/price-catalog.ts";
import type { LedgerStore } from "../ledger/store.ts";
import {
  postgresConnectBackoffMsMax,
  postgresConnectBackoffMsMin,
  postgresConnectRetryMsDefault,
  postgresConnectTimeoutMsDefault,
  postgresMigrationLockWaitMsMax,
  postgresPoolSizeDefault,
  postgresStatementTimeoutMsDefault,
  postgresPoolIdleTimeoutMs,
} from "../limits.ts";
import { entities } from "./entities.ts";
import { postgresqlMigrations } from "./migrations/postgresql/index.ts";
import { sqliteMigrations } from "./migrations/sqlite/index.ts";
import { isPostgresUnavailable } from "./postgres/errors.ts";
import { advisoryLockNamespace, migrationLockKey } from "./postgres/locks.ts";
import { PostgresLedgerStore } from "./postgres/store.ts";
import {
  configureConnection,
  databaseOpenError,
  lockDatabaseFile,
  realDatabasePath,
  requireWritable,
  sqliteDefaults,
  type SqliteOptions,
} from "./sqlite/connection.ts";
import { PostgresPriceCatalog } from "./postgres/price-catalog.ts";
import { SqlitePriceCatalog } from "./sqlite/price-catalog.ts";
import { SqliteLedgerStore } from "./sqlite/store.ts";
import { SqliteWriter } from "./sqlite/writer.ts";
import { verifyCommitCounter } from "./sqlite/commit-counter.ts";
import { parsePostgresHosts, postgresClientConfig, PostgresHostsError } from "./postgres/hosts.ts";

export type DatabaseTarget = { driver: "sqlite"; path: string } | { driver: "postgresql"; url: string };

export class DatabaseUrlError extends Error {
  override name = "DatabaseUrlError";
}

/** Parses TALLY_DATABASE_URL: `sqlite:<path>`, `sqlite::memory:` or
 * `postgres://user:password@host:port/database` (also `postgresql://`; query
 * parameters such as `sslmode` go to the pg driver as they are). */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  if (url.startsWith("sqlite:")) {
    let path = url.slice("sqlite:".length);
    if (path.startsWith("//")) path = path.slice(2); // sqlite://./data/x.db
    if (path === "") throw new DatabaseUrlError(`database URL "${url}" names no file; use sqlite:./data/tally.db or sqlite::memory:`);
    return { driver: "sqlite", path };
  }
  if (/^postgres(ql)?:/.test(url)) {
    let parsed: URL;
    try {
      // Several hosts (failover, src/store/postgres/hosts.ts): the first stands for all here.
      parsed = new URL(parsePostgresHosts(url).singleHostUrl);
    } catch (error) {
      if (error instanceof PostgresHostsError) throw new DatabaseUrlError(`database URL "${redactDatabaseUrl(url)}": ${error.message}`);
      throw new DatabaseUrlError(
        `database URL "${redactDatabaseUrl(url)}" is not a valid URL; use postgres://user:password@host:5432/database`,
      );
    }
    if (parsed.hostname === "" || parsed.pathname.replace(/^\//, "") === "") {
      throw new DatabaseUrlError(
        `database URL "${redactDatabaseUrl(url)}" must name a host and a database: postgres://user:password@host:5432/database`,
      );
    }
    return { driver: "postgresql", url };
  }
  throw new DatabaseUrlError(
    `database URL "${redactDatabaseUrl(url)}" is not understood; use sqlite:<path> (e.g. sqlite:./data/tally.db), sqlite::memory: or postgres://user:password@host:5432/database`,
  );
}

export { sqliteDefaults, type SqliteOptions };

export interface PostgresOptions {
  /** Connections per replica (pg Pool max). */
  poolSize: number;
  /** Server-side statement_timeout of every connection (also bounds lock waits). */
  statementTimeoutMs: number;
  /** How long one attempt to open a connection may take. */
  connectTimeoutMs: number;
  /** At start, how long to keep retrying (with backoff) until PostgreSQL answers; 0 = one attempt. */
  connectRetryMs: number;
  /** Told about each failed start-up attempt (for the log). */
  onConnectRetry?: (info: { attempt: number; delayMs: number; error: Error }) => void;
}

export const postgresDefaults: PostgresOptions = {
  poolSize: postgresPoolSizeDefault,
  statementTimeoutMs: postgresStatementTimeoutMsDefault,
  connectTimeoutMs: postgresConnectTimeoutMsDefault,
  connectRetryMs: postgresConnectRetryMsDefault,
};

/** The database could not be reached at start within the retry window. */
export class DatabaseConnectError extends Error {
  override name = "DatabaseConnectError";
}

/** The URL with its password replaced, for logs and messages. */
export function redactDatabaseUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:@/]*:)[^@/]*@/, "$1***@");
}

export interface InitializedStore {
  store: LedgerStore;
  /** The price catalog, on the same database. */
  prices: PriceCatalogStore;
  orm: MikroORM | PostgresMikroORM;
  /** Names of migrations applied by this start. */
  applied: string[];
}

/** Connects, applies pending migrations, and returns the store. */
export async function initORM(
  url: string,
  sqlite: SqliteOptions = sqliteDefaults,
  postgres: PostgresOptions = postgresDefaults,
): Promise<InitializedStore> {
  const target = parseDatabaseUrl(url);
  if (target.driver === "postgresql") return initPostgres(target.url, postgres);
  const memory = target.path === ":memory:";
  const given = resolve(target.path);
  if (memory) return openSqlite(":memory:", ":memory:", true, sqlite);
  try {
    mkdirSync(dirname(given), { recursive: true });
    // Opened by its real path: its -wal and -shm files are the ones any other
    // name of it would use, and the lock is the file's (lockDatabaseFile).
    return await openSqlite(given, realDatabasePath(given), false, sqlite);
  } catch (error) {
    // Not a database, damaged, not writable: one clear error, not a stack.
    throw databaseOpenError(given, error);
  }
}

async function openSqlite(given: string, dbName: string, memory: boolean, sqlite: SqliteOptions): Promise<InitializedStore> {
  const unlock = memory ? () => undefined : lockDatabaseFile(given, dbName);
  const orm = await MikroORM.init({
    dbName,
    entities,
    extensions: [Migrator],
    migrations: { migrationsList: sqliteMigrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
    // Never let the ORM change the schema by itself: only committed migrations do.
    ensureDatabase: false,
    allowGlobalContext: false,
    debug: false,
  }).catch((error: unknown) => {
    unlock();
    throw error;
  });
  try {
    const db = await orm.em.getConnection().getNativeClient();
    if (!memory) requireWritable(db, given);
    // Before anything is served: a database missing acknowledged commits is refused.
    if (!memory) verifyCommitCounter(db, given, dbName);
    configureConnection(db, memory, sqlite);
    const applied = (await orm.migrator.up()).map((m) => m.name);
    // A file database writes on its own thread (src/store/sqlite/writer.ts);
    // :memory: is private to this connection, so it writes here.
    const writer = memory ? undefined : await SqliteWriter.start(dbName, sqlite);
    const close = async () => {
      try {
        await orm.close(true);
      } finally {
        unlock();
      }
    };
    return { store: new SqliteLedgerStore(db, close, writer), prices: new SqlitePriceCatalog(db), orm, applied };
  } catch (error) {
    await orm.close(true);
    unlock();
    throw error;
  }
}

async function initPostgres(url: string, options: PostgresOptions): Promise<InitializedStore> {
  // Every connection of the pool: bounded statements and lock waits, bounded
  // idle transactions (a replica that stalls mid-batch cannot hold its project
  // locks for long), TCP keepalive to notice a vanished server, and a client-side
  // bound for a socket that stops answering altogether.
  const connection = {
    ...postgresClientConfig(url),
    connectionTimeoutMillis: options.connectTimeoutMs,
    statement_timeout: options.statementTimeoutMs,
    idle_in_transaction_session_timeout: options.statementTimeoutMs * 2,
    query_timeout: options.statementTimeoutMs + options.connectTimeoutMs,
    keepAlive: true,
    application_name: "tally",
  };
  const orm = await PostgresMikroORM.init({
    clientUrl: connection.connectionString,
    entities,
    extensions: [Migrator],
    migrations: { migrationsList: postgresqlMigrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
    pool: { min: 0, max: options.poolSize, idleTimeoutMillis: postgresPoolIdleTimeoutMs },
    driverOptions: connection,
    // Never let the ORM change the schema by itself: only committed migrations do.
    ensureDatabase: false,
    allowGlobalContext: false,
    debug: false,
  });
  try {
    const pool = await orm.em.getConnection().getNativeClient();
    await withConnectRetry(options, () => pool.query("SELECT 1"));
    const applied = await migrateUnderLock(orm, { ...connection, application_name: "tally-migrate" }, options);
    return { store: new PostgresLedgerStore(pool, () => orm.close(true)), prices: new PostgresPriceCatalog(pool), orm, applied };
  } catch (error) {
    await orm.close(true);
    throw error;
  }
}

/** Applies pending migrations while holding a session advisory lock, so that of
 * several replicas starting at once exactly one migrates and the others wait,
 * then find nothing pending. The lock lives on its own connection (not the
 * pool's, which the migrator uses) and dies with it if this process dies. */
async function migrateUnderLock(
  orm: PostgresMikroORM,
  connection: pg.ClientConfig & { Client: typeof pg.Client },
  options: PostgresOptions,
): Promise<string[]> {
  const client = await withConnectRetry(options, async () => {
    const candidate = new connection.Client({
      ...connection,
      statement_timeout: 0,
      lock_timeout: postgresMigrationLockWaitMsMax,
      query_timeout: undefined,
    });
    candidate.on("error", () => undefined); // a dropped lock connection surfaces in the query below
    try {
      await candidate.connect();
      return candidate;
    } catch (error) {
      await candidate.end().catch(() => undefined);
      throw error;
    }
  });
  try {
    await client.query("SELECT pg_advisory_lock($1, $2)", [advisoryLockNamespace, migrationLockKey]);
    return (await orm.migrator.up()).map((m) => m.name);
  } finally {
    await client.query("SELECT pg_advisory_unlock($1, $2)", [advisoryLockNamespace, migrationLockKey]).catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}

/** Runs `attempt` until it succeeds, retrying errors that mean "not reachable
 * yet" with doubling backoff for at most connectRetryMs. Anything else (wrong
 * password, no such database) fails at once: waiting would not fix it. */
async function withConnectRetry<T>(options: PostgresOptions, attempt: () => Promise<T>): Promise<T> {
  const deadlineMs = Date.now() + options.connectRetryMs;
  let delayMs = postgresConnectBackoffMsMin;
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      if (!isPostgresUnavailable(error)) throw error;
      const remainingMs = deadlineMs - Date.now();
      if (remainingMs <= 0) {
        throw new DatabaseConnectError(
          `PostgreSQL is not reachable after ${n} attempt(s) in ${options.connectRetryMs} ms: ${(error as Error).message}`,
          { cause: error },
        );
      }
      const waitMs = Math.min(delayMs, remainingMs);
      options.onConnectRetry?.({ attempt: n, delayMs: waitMs, error: error as Error });
      await new Promise((resolve) => setTimeout(resolve, waitMs));
      delayMs = Math.min(delayMs * 2, postgresConnectBackoffMsMax);
    }
  }
}
