// Archive, unarchive and delete at the store (both databases, the SQLite one
// on its writer connection): each op atomic in its batch, a refused op leaving
// nothing, writes of an archived project refused in the same batch as the
// archive, and the record count bound of a delete.
import { afterEach, describe, expect, it } from "vitest";
import { ProjectArchivedError, ProjectInUseError } from "../../src/ledger/errors.ts";
import type { OpResult, WriteOp } from "../../src/ledger/store.ts";
import type { CostEntry } from "../../src/ledger/types.ts";
import { entities } from "../../src/store/entities.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { projectTables } from "../../src/store/project-removal.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { tempDatabaseUrl } from "../helpers.ts";

const entry = (over: Partial<CostEntry> = {}): CostEntry => ({
  projectId: "p",
  requestId: "r",
  costNanos: 1n,
  inputTokens: 0n,
  outputTokens: 0n,
  agentId: "",
  model: "",
  ...over,
});
const errorOf = (result: OpResult | undefined) => (result !== undefined && !result.ok ? result.error : null);

describe("DeleteProject's table list", () => {
  it("names every table with a project_id column, so a table added later cannot keep a deleted project's rows", () => {
    const withProject = entities
      .map((entity) => (entity as unknown as { meta: { tableName: string; properties: Record<string, unknown> } }).meta)
      .filter((meta) => Object.hasOwn(meta.properties, "projectId"))
      .map((meta) => meta.tableName);
    expect(withProject.length).toBeGreaterThanOrEqual(8);
    expect([...projectTables].sort()).toEqual(withProject.sort());
  });
});

for (const kind of databaseKinds)
  describe(`store on ${kind}: archive and delete`, () => {
    const databases = new TestDatabases(kind, tempDatabaseUrl);
    let opened: InitializedStore[] = [];
    const open = async () => {
      const init = await initORM(await databases.scratch());
      opened.push(init);
      return init.store;
    };
    afterEach(async () => {
      for (const init of opened) await init.store.close().catch(() => undefined);
      opened = [];
      await databases.cleanup();
    });

    it("refuses the writes that follow an archive in the same batch, and accepts them after an unarchive in it", async () => {
      const store = await open();
      await store.commitBatch([{ kind: "record", entry: entry({ requestId: "r0" }) }], 1_000);
      const results = await store.commitBatch(
        [
          { kind: "archive", projectId: "p" },
          { kind: "record", entry: entry({ requestId: "r1" }) },
          {
            kind: "setBudget",
            change: {
              projectId: "p",
              limitNanos: 5n,
              currency: null,
              dailyLimitNanos: null,
              monthlyLimitNanos: null,
              timeZone: null,
              alertThresholdsBps: null,
            },
          },
          { kind: "unarchive", projectId: "p" },
          { kind: "record", entry: entry({ requestId: "r2" }) },
        ],
        2_000,
      );
      expect(results.map((r) => (r.ok ? "ok" : r.error.name))).toEqual(["ok", "ProjectArchivedError", "ProjectArchivedError", "ok", "ok"]);
      expect(errorOf(results[1])).toBeInstanceOf(ProjectArchivedError);
      expect((await store.getTotals("p")).recordCount).toBe(2n); // r0 and r2
    });

    it("deletes at most recordsMax records: a larger project is refused and keeps every row", async () => {
      const store = await open();
      await store.commitBatch(
        [1, 2, 3].map((i): WriteOp => ({ kind: "record", entry: entry({ requestId: `r${i}` }) })),
        1_000,
      );
      const [refused] = await store.commitBatch([{ kind: "delete", projectId: "p", noRecordsSinceMs: 5_000, recordsMax: 2 }], 6_000);
      expect(errorOf(refused)).toBeInstanceOf(ProjectInUseError);
      expect(errorOf(refused)?.message).toBe(
        'project "p" has more than 2 cost records, too many to delete in one transaction (archive it instead): nothing was deleted',
      );
      expect((await store.getTotals("p")).recordCount).toBe(3n);
      const [deleted] = await store.commitBatch([{ kind: "delete", projectId: "p", noRecordsSinceMs: 5_000, recordsMax: 3 }], 6_000);
      expect(deleted).toEqual({
        ok: true,
        value: { totals: expect.objectContaining({ recordCount: 3n, totalCostNanos: 3n }), deletedRecordCount: 3n },
      });
      expect((await store.getTotals("p")).recordCount).toBe(0n);
      expect(await store.listCostRecords({ projectId: "p", startMs: null, endMs: null, after: null, limit: 10 })).toEqual([]);
    });
  });
