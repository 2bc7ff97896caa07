// migrate-data copies the tables listed in src/ops/tables.ts: every table of
// the entities must be there (a new table is copied once it is listed), each
// with its primary key as the copy order.
import { MikroORM } from "@mikro-orm/sqlite";
import { describe, expect, it } from "vitest";
import { copiedTables } from "../../src/ops/tables.ts";
import { entities } from "../../src/store/entities.ts";

describe("the tables migrate-data copies", () => {
  it("are exactly the entities' tables, keyed by their primary keys", async () => {
    const orm = await MikroORM.init({ dbName: ":memory:", entities, allowGlobalContext: false, debug: false, ensureDatabase: false });
    try {
      const metas = [...orm.getMetadata().getAll().values()].filter((m) => m.tableName && !m.embeddable && !m.virtual);
      const fromEntities = Object.fromEntries(metas.map((m) => [m.tableName, m.primaryKeys.map((k) => m.properties[k]!.fieldNames[0])]));
      const listed = Object.fromEntries(copiedTables.map((t) => [t.table, [...t.key]]));
      expect(listed).toEqual(fromEntities);
    } finally {
      await orm.close(true);
    }
  });
});
