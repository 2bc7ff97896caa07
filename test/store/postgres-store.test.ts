// PostgresLedgerStore: the same behaviour as the SQLite store (mirrors
// sqlite-store.test.ts), the schema check, and what only several replicas on one
// database can show: concurrent stores on the same keys and projects, the
// migration lock, and the database going away and coming back.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MikroORM as PostgresMikroORM } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import type { Pool } from "pg";
import { IdempotencyConflictError, StoreUnavailableError } from "../../src/ledger/errors.ts";
import type { OpResult, ReserveOutcome, WriteOp } from "../../src/ledger/store.ts";
import type { RecordOutcome } from "../../src/ledger/types.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { entities } from "../../src/store/entities.ts";
import { postgresqlMigrations } from "../../src/store/migrations/postgresql/index.ts";
import { sqliteMigrations } from "../../src/store/migrations/sqlite/index.ts";
import {
  DatabaseConnectError,
  initORM,
  parseDatabaseUrl,
  postgresDefaults,
  redactDatabaseUrl,
  sqliteDefaults,
  type InitializedStore,
  type PostgresOptions,
} from "../../src/store/orm.ts";
import { projectLockKeys } from "../../src/store/postgres/locks.ts";
import type { PostgresLedgerStore } from "../../src/store/postgres/store.ts";
import { adminQuery, createPostgresDatabase, postgresAdminUrl } from "../databases.ts";
import { hostAndPort, TcpProxy, viaProxy } from "../tcp-proxy.ts";
import { entry, storeContract } from "./store-contract.ts";

/** Fast-failing settings for outage tests: short timeouts, no start-up retry. */
const impatient: PostgresOptions = { poolSize: 4, statementTimeoutMs: 2_000, connectTimeoutMs: 1_000, connectRetryMs: 0 };

describe("parseDatabaseUrl (PostgreSQL)", () => {
  it("accepts postgres:// and postgresql:// URLs that name a host and a database, and redacts passwords", () => {
    expect(parseDatabaseUrl("postgres://u:p@db:5432/tally")).toEqual({ driver: "postgresql", url: "postgres://u:p@db:5432/tally" });
    expect(parseDatabaseUrl("postgresql://db/tally?sslmode=require")).toMatchObject({ driver: "postgresql" });
    expect(() => parseDatabaseUrl("postgres://u:secret@db:5432/")).toThrow(/must name a host and a database/);
    expect(() => parseDatabaseUrl("postgres://u:secret@db:5432/")).not.toThrow(/secret/);
    expect(redactDatabaseUrl("postgres://tally:s3cr3t@db:5432/tally")).toBe("postgres://tally:***@db:5432/tally");
    expect(redactDatabaseUrl("sqlite:./data/tally.db")).toBe("sqlite:./data/tally.db");
  });

  it("keeps one migration history per driver, in step: same names, same order", () => {
    const names = (list: { name: string }[]) => list.map((m) => m.name);
    expect(names(postgresqlMigrations).length).toBeGreaterThan(0);
    expect(names(postgresqlMigrations)).toEqual(names(sqliteMigrations));
  });

  it("locks each distinct project of a batch once, in ascending key order", () => {
    const ops: WriteOp[] = ["b", "a", "b", "c"].map((projectId, i) => ({
      kind: "record",
      entry: entry({ projectId, requestId: `r${i}` }),
    }));
    const keys = projectLockKeys(ops);
    expect(keys).toHaveLength(3);
    expect([...keys].sort((x, y) => x - y)).toEqual(keys);
  });
});

describe.skipIf(postgresAdminUrl === undefined)("PostgresLedgerStore", () => {
  let opened: InitializedStore[] = [];
  const drops: (() => Promise<void>)[] = [];
  const freshUrl = async () => {
    const db = await createPostgresDatabase();
    drops.push(db.drop);
    return db.url;
  };
  const open = async (url?: string, options: PostgresOptions = postgresDefaults) => {
    const init = await initORM(url ?? (await freshUrl()), sqliteDefaults, options);
    opened.push(init);
    return init;
  };
  afterEach(async () => {
    for (const init of opened) await init.store.close().catch(() => undefined);
    opened = [];
  });
  afterAll(async () => {
    for (const drop of drops) await drop().catch(() => undefined);
  });

  it("applies the committed migrations, and they match the entities exactly", async () => {
    const url = await freshUrl();
    const { orm, applied } = await open(url);
    expect(applied).toEqual(postgresqlMigrations.map((m) => m.name));
    // MikroORM's own diff of the migrated database against the entities is empty.
    const diff = await (orm as PostgresMikroORM).schema.getUpdateSchemaSQL({ wrap: false });
    expect(diff.trim()).toBe("");
    // And a second database built straight from the entities by the schema
    // generator has the same catalog as the migrated one.
    const other = await freshUrl();
    const fromEntities = await PostgresMikroORM.init({ clientUrl: other, entities, allowGlobalContext: true, ensureDatabase: false });
    try {
      await fromEntities.schema.create();
      const catalogOf = async (pool: Pool) => ({
        columns: (
          await pool.query(
            `SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default, ordinal_position
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE 'mikro_orm_%' ORDER BY table_name, ordinal_position`,
          )
        ).rows,
        indexes: (
          await pool.query(
            `SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE 'mikro_orm_%' ORDER BY indexname`,
          )
        ).rows,
        constraints: (
          await pool.query(
            `SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE n.nspname = 'public' AND c.conrelid::regclass::text NOT LIKE 'mikro_orm_%' ORDER BY c.conname`,
          )
        ).rows,
      });
      const migrated = await catalogOf(await (orm as PostgresMikroORM).em.getConnection().getNativeClient());
      expect(migrated.columns.length).toBeGreaterThanOrEqual(25);
      expect(migrated.indexes.length).toBeGreaterThanOrEqual(5);
      expect(migrated).toEqual(await catalogOf(await fromEntities.em.getConnection().getNativeClient()));
    } finally {
      await fromEntities.close(true);
    }
  });

  storeContract(() => open());

  it("persists across close and reopen, and does not migrate twice", async () => {
    const url = await freshUrl();
    const first = await initORM(url);
    await first.store.commitBatch([{ kind: "record", entry: entry() }], 1);
    await first.store.close();
    const second = await open(url);
    expect(second.applied).toEqual([]);
    expect(await second.store.getTotals("p")).toMatchObject({ totalCostNanos: 10n, recordCount: 1n });
  });

  it("upgrades a v1 database with records in place: nothing lost, new columns defaulted", async () => {
    const url = await freshUrl();
    const v1 = await PostgresMikroORM.init({
      clientUrl: url,
      entities,
      extensions: [Migrator],
      migrations: { migrationsList: postgresqlMigrations.slice(0, 1), snapshot: false, silent: true },
      ensureDatabase: false,
    });
    await v1.migrator.up();
    const pool = await v1.em.getConnection().getNativeClient();
    await pool.query("INSERT INTO project_totals VALUES ('p', 12, 1, 2, 1, 5, 5)");
    await pool.query("INSERT INTO project_budgets VALUES ('p', 100, 'EUR', 5, 5)");
    await pool.query(
      "INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms, total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after) VALUES ('p', 'old', 12, 1, 2, '', '', 5, 12, 1, 2, 1)",
    );
    await v1.close(true);

    const { store, applied } = await open(url);
    expect(applied).toEqual(postgresqlMigrations.slice(1).map((m) => m.name));
    expect(await store.getBudget("p")).toMatchObject({
      limitNanos: 100n,
      currency: "EUR",
      dailyLimitNanos: 0n,
      timeZone: "UTC",
      alertThresholdsBps: [],
    });
    expect(await store.listCostRecords({ projectId: "p", startMs: null, endMs: null, after: null, limit: 10 })).toMatchObject([
      { requestId: "old", costNanos: 12n, holdId: "" },
    ]);
    const [retry] = await store.commitBatch(
      [{ kind: "record", entry: entry({ requestId: "old", costNanos: 12n, inputTokens: 1n, outputTokens: 2n }) }],
      10,
    );
    expect(retry).toMatchObject({ ok: true, value: { duplicate: true, totals: { totalCostNanos: 12n } } });
  });

  it("applies migrations exactly once when several replicas start at once", async () => {
    const url = await freshUrl();
    const starts = await Promise.all(Array.from({ length: 4 }, () => open(url)));
    const all = postgresqlMigrations.map((m) => m.name);
    expect(starts.map((s) => s.applied.length).sort()).toEqual([0, 0, 0, all.length]);
    const { rows } = await (starts[0]!.store as unknown as PostgresLedgerStore).native.query(
      "SELECT name FROM mikro_orm_migrations ORDER BY id",
    );
    expect(rows.map((r: { name: string }) => r.name)).toEqual(all);
  });

  it("keeps exact totals and one record per key with three replicas racing on the same projects and keys", async () => {
    const url = await freshUrl();
    const replicas = await Promise.all(Array.from({ length: 3 }, () => open(url)));
    const projects = ["alpha", "beta", "gamma", "delta"];
    const writers = 12;
    const batchesPerWriter = 15;
    const keys = new Map<string, bigint>(); // project/request -> cost
    // Every writer sends batches that touch several projects, in its own order
    // (a classic deadlock shape across replicas), and every key is sent by two
    // writers on different replicas: each must be counted exactly once.
    const outcomes: OpResult[] = [];
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        const store = replicas[w % 3]!.store;
        for (let b = 0; b < batchesPerWriter; b++) {
          const pair = Math.floor(w / 2); // writers 2k and 2k+1 share keys
          const order = w % 2 === 0 ? projects : [...projects].reverse();
          const ops: WriteOp[] = order.map((projectId) => {
            const requestId = `k${pair}-${b}`;
            const cost = BigInt(pair * 1_000 + b + 1);
            keys.set(`${projectId}/${requestId}`, cost);
            return { kind: "record", entry: entry({ projectId, requestId, costNanos: cost, inputTokens: 1n, outputTokens: 0n }) };
          });
          outcomes.push(...(await store.commitBatch(ops, Date.now())));
        }
      }),
    );
    expect(outcomes.every((o) => o.ok)).toBe(true);
    const fresh = outcomes.filter((o) => o.ok && !(o.value as RecordOutcome).duplicate).length;
    expect(fresh).toBe(keys.size);
    expect(outcomes.length - fresh).toBe(keys.size); // every key once as new, once as duplicate
    for (const projectId of projects) {
      let sum = 0n;
      let count = 0n;
      for (const [key, cost] of keys) {
        if (!key.startsWith(`${projectId}/`)) continue;
        sum += cost;
        count++;
      }
      expect(await replicas[2]!.store.getTotals(projectId)).toMatchObject({ totalCostNanos: sum, inputTokens: count, recordCount: count });
    }
  });

  it("lets exactly one of several replicas win a key sent with different payloads", async () => {
    const url = await freshUrl();
    const replicas = await Promise.all(Array.from({ length: 3 }, () => open(url)));
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        replicas[i % 3]!.store.commitBatch([{ kind: "record", entry: entry({ requestId: "contested", costNanos: BigInt(i + 1) }) }], i),
      ),
    );
    const flat = results.flat();
    const winners = flat.filter((r) => r.ok);
    expect(winners).toHaveLength(1);
    expect(flat.filter((r) => !r.ok && r.error instanceof IdempotencyConflictError)).toHaveLength(29);
    const cost = (winners[0] as { value: RecordOutcome }).value.totals.totalCostNanos;
    expect(await replicas[0]!.store.getTotals("p")).toMatchObject({ totalCostNanos: cost, recordCount: 1n });
  });

  it("places one hold for a reservation key sent to several replicas at once", async () => {
    const url = await freshUrl();
    const replicas = await Promise.all(Array.from({ length: 3 }, () => open(url)));
    const nowMs = Date.now();
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        replicas[i % 3]!.store.commitBatch(
          [
            {
              kind: "reserve",
              request: { projectId: "p", estimatedCostNanos: 7n, holdId: `h${i}`, ttlMs: 60_000, requestId: "one-reservation" },
            },
          ],
          nowMs,
        ),
      ),
    );
    const holds = new Set(results.flat().map((r) => (r.ok ? (r.value as ReserveOutcome).hold?.holdId : r.error.message)));
    expect(holds.size).toBe(1);
    expect(await replicas[1]!.store.getBudgetState("p", nowMs)).toMatchObject({ reservedNanos: 7n, activeHoldCount: 1n });
  });
});

describe.skipIf(postgresAdminUrl === undefined)("PostgreSQL going away and coming back", () => {
  let proxy: TcpProxy;
  let url: string;
  let drop: () => Promise<void>;
  let init: InitializedStore | undefined;
  beforeAll(async () => {
    const db = await createPostgresDatabase();
    drop = db.drop;
    const target = hostAndPort(db.url);
    proxy = new TcpProxy(target.host, target.port);
    await proxy.start();
    url = viaProxy(db.url, proxy);
  });
  afterEach(async () => {
    await init?.store.close().catch(() => undefined);
    init = undefined;
  });
  afterAll(async () => {
    await proxy.stop();
    await drop();
  });

  it("fails writes and reads as unavailable while the database is gone, recovers by itself, and loses no acknowledged write", async () => {
    init = await initORM(url, sqliteDefaults, impatient);
    const { store } = init;
    const uow = new UnitOfWork(store, { batchSizeMax: 64, queueDepthMax: 1_000 });
    const acknowledged = new Set<string>();
    const write = async (requestId: string) => {
      await uow.submit({ kind: "record", entry: entry({ projectId: "outage", requestId, costNanos: 3n }) });
      acknowledged.add(requestId);
    };
    await Promise.all(Array.from({ length: 20 }, (_, i) => write(`before-${i}`)));

    await proxy.stop();
    const during = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => write(`during-${i}`)));
    expect(during.every((o) => o.status === "rejected" && o.reason instanceof StoreUnavailableError)).toBe(true);
    const read = await store.getTotals("outage").catch((e: unknown) => e);
    expect(read).toBeInstanceOf(StoreUnavailableError);
    expect((read as Error).message).toMatch(/could not be read/);
    await expect(store.getBudgetAndTotals("outage")).rejects.toBeInstanceOf(StoreUnavailableError);

    await proxy.start();
    // Clients retry the failed writes with the same keys, and keep writing.
    await Promise.all(Array.from({ length: 20 }, (_, i) => write(`during-${i}`)));
    await Promise.all(Array.from({ length: 20 }, (_, i) => write(`after-${i}`)));
    expect(acknowledged.size).toBe(60);
    expect(await store.getTotals("outage")).toMatchObject({ totalCostNanos: 180n, recordCount: 60n });
    await uow.close();
  });

  it("survives every connection being terminated by the server (pg_terminate_backend)", async () => {
    init = await initORM(url, sqliteDefaults, impatient);
    const { store } = init;
    await store.commitBatch([{ kind: "record", entry: entry({ projectId: "terminated", requestId: "a" }) }], 1);
    await store.getTotals("terminated"); // pooled connections are now idle, and about to die
    const name = new URL(url).pathname.slice(1);
    const { rowCount } = await adminQuery(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tally'",
      [name],
    );
    expect(rowCount).toBeGreaterThan(0);
    // A dead pooled connection is replaced (before COMMIT nothing was sent, so
    // the batch is retried); no call has to fail for it.
    const [result] = await store.commitBatch([{ kind: "record", entry: entry({ projectId: "terminated", requestId: "b" }) }], 2);
    expect(result).toMatchObject({ ok: true });
    expect(await store.getTotals("terminated")).toMatchObject({ totalCostNanos: 20n, recordCount: 2n });
  });

  it("waits at start for a database that is not up yet, and gives up with a clear error after the retry window", async () => {
    await proxy.stop();
    await expect(initORM(url, sqliteDefaults, impatient)).rejects.toBeInstanceOf(DatabaseConnectError);
    const retries: number[] = [];
    const starting = initORM(url, sqliteDefaults, {
      ...impatient,
      connectRetryMs: 30_000,
      onConnectRetry: ({ attempt }) => retries.push(attempt),
    });
    while (retries.length < 2) await new Promise((resolve) => setTimeout(resolve, 20));
    await proxy.start();
    init = await starting;
    expect(retries.length).toBeGreaterThanOrEqual(2);
    expect(await init.store.getTotals("nothing")).toMatchObject({ recordCount: 0n });
  });
});
