// The databases the integration suites run against: SQLite always, and
// PostgreSQL when TALLY_TEST_POSTGRES_URL names a server (.ci/run starts one and
// exports it). Under CI=true a missing URL is an error, never a silent skip.
//
// TALLY_TEST_POSTGRES_URL is an "admin" URL: its role may CREATE DATABASE. Every
// suite gets databases of its own (tally_test_<pid>_<n>_<random>), dropped at
// the end, so suites, files and concurrent CI runs never see each other's rows.
import { randomBytes } from "node:crypto";
import pg from "pg";

export const postgresAdminUrl: string | undefined = process.env.TALLY_TEST_POSTGRES_URL || undefined;

if (process.env.CI === "true" && postgresAdminUrl === undefined) {
  throw new Error(
    "CI=true but TALLY_TEST_POSTGRES_URL is not set: the integration suites must run against PostgreSQL too (.ci/run starts one and exports the URL)",
  );
}
if (postgresAdminUrl === undefined && !process.env.TALLY_TEST_QUIET) {
  console.warn(
    "TALLY_TEST_POSTGRES_URL is not set: PostgreSQL suites are skipped (set it to postgres://user:pass@host:port/db of a role with CREATEDB)",
  );
}

export type DatabaseKind = "sqlite" | "postgresql";

/** The kinds to run each integration suite on. */
export const databaseKinds: DatabaseKind[] = postgresAdminUrl === undefined ? ["sqlite"] : ["sqlite", "postgresql"];

let created = 0;

/** A new, empty PostgreSQL database; `drop` removes it (closing whatever is
 * still connected to it). */
export async function createPostgresDatabase(): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  if (postgresAdminUrl === undefined) throw new Error("TALLY_TEST_POSTGRES_URL is not set");
  const name = `tally_test_${process.pid}_${++created}_${randomBytes(3).toString("hex")}`;
  await adminQuery(`CREATE DATABASE "${name}"`);
  const url = new URL(postgresAdminUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), name, drop: () => adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).then(() => undefined) };
}

/** Empties every Tally table of a PostgreSQL database (the migration history
 * stays), for suites that reuse one database for many "empty database" tests. */
export async function emptyTables(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string }>(
      "SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'mikro_orm_%'",
    );
    if (rows.length > 0) await client.query(`TRUNCATE ${rows.map((r) => r.name).join(", ")}`);
  } finally {
    await client.end();
  }
}

/** Runs one statement as the admin role, on a connection of its own. */
export async function adminQuery(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: postgresAdminUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

/** Database URLs for one suite of the given kind: sqlite::memory: or a fresh
 * PostgreSQL database (call `cleanup` in afterAll). `file` gives a SQLite file
 * that survives a restart of the server using it. */
export class TestDatabases {
  readonly kind: DatabaseKind;
  readonly #drops: (() => Promise<void>)[] = [];
  #sqliteFile: (() => string) | undefined;

  constructor(kind: DatabaseKind, sqliteFile?: () => string) {
    this.kind = kind;
    this.#sqliteFile = sqliteFile;
  }

  /** A database whose data outlives the servers that use it. */
  async durable(): Promise<string> {
    if (this.kind === "sqlite") {
      if (this.#sqliteFile === undefined) throw new Error("TestDatabases: no SQLite file factory given");
      return this.#sqliteFile();
    }
    const db = await createPostgresDatabase();
    this.#drops.push(db.drop);
    return db.url;
  }

  /** A database for one suite: in memory on SQLite, a fresh database on PostgreSQL. */
  async scratch(): Promise<string> {
    return this.kind === "sqlite" ? "sqlite::memory:" : this.durable();
  }

  async cleanup(): Promise<void> {
    for (const drop of this.#drops.splice(0)) await drop().catch(() => undefined);
  }
}
