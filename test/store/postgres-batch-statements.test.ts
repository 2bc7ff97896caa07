// The PostgreSQL store applies a batch of records in a constant number of
// statements, whatever its size (decision 0012): BEGIN with the project
// locks, one read, one write, COMMIT. Counted on the store's own pooled
// connections.
import type { PoolClient } from "pg";
import { afterEach, describe, expect, it } from "vitest";
import type { WriteOp } from "../../src/ledger/store.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import type { PostgresLedgerStore } from "../../src/store/postgres/store.ts";
import { createPostgresDatabase, postgresAdminUrl } from "../databases.ts";

const record = (projectId: string, requestId: string, costNanos: bigint): WriteOp => ({
  kind: "record",
  entry: { projectId, requestId, costNanos, inputTokens: 1n, outputTokens: 1n, agentId: "", model: "" },
});

describe.skipIf(postgresAdminUrl === undefined)("PostgreSQL batch statements", () => {
  const drops: Array<() => Promise<void>> = [];
  let opened: InitializedStore | undefined;
  afterEach(async () => {
    await opened?.store.close();
    for (const drop of drops.splice(0)) await drop();
  });

  /** The store, and the text of every statement its connections send. */
  async function counted() {
    const db = await createPostgresDatabase();
    drops.push(db.drop);
    opened = await initORM(db.url);
    const pool = (opened.store as unknown as PostgresLedgerStore).native;
    const sent: string[] = [];
    const wrapped = new WeakSet<object>();
    const connect = pool.connect.bind(pool) as (callback?: unknown) => Promise<PoolClient>;
    // pool.query (reads) passes a callback: those go through untouched.
    (pool as unknown as { connect: (callback?: unknown) => unknown }).connect = (callback?: unknown) =>
      callback === undefined ? counting(connect()) : connect(callback);
    const counting = async (connecting: Promise<PoolClient>) => {
      const client = await connecting;
      if (!wrapped.has(client)) {
        wrapped.add(client);
        const query = client.query.bind(client) as (...args: unknown[]) => unknown;
        (client as unknown as { query: (...args: unknown[]) => unknown }).query = (config: unknown, ...rest: unknown[]) => {
          sent.push(typeof config === "string" ? config : (config as { text: string }).text);
          return query(config, ...rest);
        };
      }
      return client;
    };
    return { store: opened.store, sent };
  }

  it("sends BEGIN with the locks, one read, one write and COMMIT for 1 record and for 256 records over 16 projects", async () => {
    const { store, sent } = await counted();
    await store.commitBatch([record("p0", "one", 1n)], 1_000);
    const one = sent.splice(0);
    // Every 64th write re-sends p0's "one": a duplicate, four times.
    const many = Array.from({ length: 256 }, (_, i) => (i % 64 === 0 ? record("p0", "one", 1n) : record(`p${i % 16}`, `r${i}`, BigInt(i))));
    const results = await store.commitBatch(many, 2_000);
    const batch = sent.splice(0);
    for (const statements of [one, batch]) {
      expect(statements).toHaveLength(4);
      expect(statements[0]).toMatch(/^BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock/);
      expect(statements[3]).toBe("COMMIT");
    }
    expect(batch[1]).toBe(one[1]);
    expect(batch[2]).toBe(one[2]);
    expect(results.filter((r) => r.ok && (r.value as { duplicate: boolean }).duplicate)).toHaveLength(4);
    expect(results.every((r) => r.ok)).toBe(true);
    expect(await store.getTotals("p0")).toMatchObject({ recordCount: 13n });
    expect(await store.getTotals("p1")).toMatchObject({ recordCount: 16n });
  });
});
