import { afterEach, describe, expect, it } from "vitest";
import type { LedgerStore } from "../../src/ledger/store.ts";
import { MikroORM } from "@mikro-orm/sqlite";
import type Database from "better-sqlite3";
import { entities } from "../../src/store/entities.ts";
import { initORM, parseDatabaseUrl, type InitializedStore } from "../../src/store/orm.ts";
import { tempDatabaseUrl } from "../helpers.ts";
import { entry, storeContract } from "./store-contract.ts";

// In memory, writes run on the store's own connection; on a file, on the
// writer thread (src/store/sqlite/writer.ts). Same behaviour either way.
for (const where of ["memory", "file"] as const)
  describe(`SqliteLedgerStore (${where})`, () => {
    let opened: InitializedStore[] = [];
    const open = async (url = where === "memory" ? "sqlite::memory:" : tempDatabaseUrl()) => {
      const init = await initORM(url);
      opened.push(init);
      return init;
    };
    afterEach(async () => {
      for (const init of opened) await init.store.close().catch(() => undefined);
      opened = [];
    });

    it("applies the committed migrations, and they match the entities exactly", async () => {
      const { orm, applied } = await open();
      expect(applied).toEqual([
        "Migration20261127000000_initial",
        "Migration20261201000000_holds_windows_alerts",
        "Migration20261205000000_reserve_keys",
        "Migration20261205100000_project_archives",
        "Migration20261205200000_model_prices",
        "Migration20261205210000_record_pricing",
        "Migration20261205300000_budget_parents",
        "Migration20261205400000_agent_caps",
      ]);
      // A second database built straight from the entities by the schema
      // generator must come out identical to the migrated one: no drift.
      const fromEntities = await MikroORM.init({ dbName: ":memory:", entities, allowGlobalContext: true });
      try {
        await fromEntities.schema.create();
        const schemaOf = async (db: Database.Database) =>
          db
            .prepare(
              "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND tbl_name NOT LIKE 'mikro_orm_%' ORDER BY name",
            )
            .all();
        const migrated = await schemaOf((await orm.em.getConnection().getNativeClient()) as Database.Database);
        expect(migrated.length).toBeGreaterThanOrEqual(11);
        expect(migrated).toEqual(await schemaOf(await fromEntities.em.getConnection().getNativeClient()));
      } finally {
        await fromEntities.close(true);
      }
    });

    storeContract(() => open());

    it("persists across close and reopen of the same file", async () => {
      const url = tempDatabaseUrl();
      const first = await initORM(url);
      await first.store.commitBatch([{ kind: "record", entry: entry() }], 1);
      await first.store.close();
      const second = await open(url);
      expect(second.applied).toEqual([]); // already migrated
      expect(await second.store.getTotals("p")).toMatchObject({ totalCostNanos: 10n, recordCount: 1n });
    });

    it.runIf(where === "file")("serves a file from one store at a time: a second one is refused until the first closes", async () => {
      const url = tempDatabaseUrl();
      const first = await initORM(url);
      const path = (parseDatabaseUrl(url) as { path: string }).path;
      await expect(initORM(url)).rejects.toThrow(
        new RegExp(`the SQLite database .*${path.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is already served by another Tally process`),
      );
      await first.store.commitBatch([{ kind: "record", entry: entry() }], 1);
      await first.store.close();
      const second = await open(url);
      expect(await second.store.getTotals("p")).toMatchObject({ totalCostNanos: 10n });
    });

    it("parses database URLs and rejects what it does not serve", () => {
      expect(parseDatabaseUrl("sqlite:./data/tally.db")).toEqual({ driver: "sqlite", path: "./data/tally.db" });
      expect(parseDatabaseUrl("sqlite::memory:")).toEqual({ driver: "sqlite", path: ":memory:" });
      expect(() => parseDatabaseUrl("sqlite:")).toThrow(/names no file/);
      expect(() => parseDatabaseUrl("mysql://x")).toThrow(/not understood/);
    });
  });

export type { LedgerStore };
