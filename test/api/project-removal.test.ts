// Removing projects (issue 21, item 5): ArchiveProject hides a project from
// ListProjects and refuses its writes with FAILED_PRECONDITION while its
// totals stay readable; UnarchiveProject brings it back with those totals;
// DeleteProject removes a project that recorded nothing since a given time,
// and nothing else. Admin keys only. Over a real server on each database.
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProjectOrder } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { createPostgresDatabase, databaseKinds } from "../databases.ts";
import { clientsFor, codeOf, startTestServer, TestClock, usd, writeKeysFile, type BudgetClient } from "../helpers.ts";

const hourMs = 60 * 60 * 1000;

async function failure(call: Promise<unknown>): Promise<{ code: Code | "ok"; message: string }> {
  try {
    await call;
    return { code: "ok", message: "" };
  } catch (error) {
    const e = ConnectError.from(error);
    return { code: e.code, message: e.rawMessage };
  }
}

for (const kind of databaseKinds) {
  describe(`archive and delete projects on ${kind}`, () => {
    const adminKey = generateApiKey();
    const projectKey = generateApiKey();
    const clock = new TestClock("2026-11-27T12:00:00Z");
    let server: TallyServer;
    let admin: BudgetClient;
    let agent: BudgetClient;
    let drop: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      let databaseUrl = "sqlite::memory:";
      if (kind === "postgresql") ({ url: databaseUrl, drop } = await createPostgresDatabase());
      const keysFile = writeKeysFile([
        { id: "ops", role: "admin", key: adminKey },
        { id: "agent", role: "project", key: projectKey, projectPrefixes: ["rm-"] },
      ]);
      server = await startTestServer({ databaseUrl, keysFile }, { now: clock.now });
      admin = clientsFor(server.url, adminKey)["connect+json http/1.1"]!;
      agent = clientsFor(server.url, projectKey)["grpc h2c"]!;
    });
    afterAll(async () => {
      await server?.close();
      await drop?.();
    });

    const listed = async (includeArchived = false) =>
      (await admin.listProjects({ order: ProjectOrder.PROJECT_ID, pageSize: 1000, includeArchived })).projects.map(
        (p) => [p.projectId, p.archived] as const,
      );

    it("archive hides a project from listings, refuses its writes with FAILED_PRECONDITION and keeps its totals readable; unarchive brings it back", async () => {
      await admin.setProjectBudget({ projectId: "rm-a", limitNanos: usd(10) });
      await agent.recordCost({ projectId: "rm-a", costNanos: usd(2), requestId: "r1" });
      const hold = await agent.checkBudget({ projectId: "rm-a", estimatedCostNanos: usd(1), reserve: true });
      await agent.recordCost({ projectId: "rm-b", costNanos: usd(1), requestId: "r1" });

      const archived = await admin.archiveProject({ projectId: "rm-a" });
      expect(archived.projectId).toBe("rm-a");
      expect(timestampMs(archived.archivedAt!)).toBe(clock.ms);
      expect(await listed()).toEqual([["rm-b", false]]);
      const all = await admin.listProjects({ order: ProjectOrder.PROJECT_ID, includeArchived: true });
      expect(all.projects.map((p) => [p.projectId, p.archived, p.archivedAt === undefined ? null : timestampMs(p.archivedAt)])).toEqual([
        ["rm-a", true, clock.ms],
        ["rm-b", false, null],
      ]);
      // Spend order too, and the totals are still there.
      expect((await admin.listProjects({ order: ProjectOrder.SPENT_DESC })).projects.map((p) => p.projectId)).toEqual(["rm-b"]);
      expect(all.projects[0]?.cost?.totalCostNanos).toBe(usd(2));

      const write =
        /^project "rm-a" is archived \(since 2026-11-27T12:00:00\.000Z\): its totals are kept and readable, writes are refused; unarchive it/;
      expect(await failure(agent.recordCost({ projectId: "rm-a", costNanos: 5n, requestId: "r2" }))).toEqual({
        code: Code.FailedPrecondition,
        message: expect.stringMatching(write),
      });
      expect(await failure(agent.checkBudget({ projectId: "rm-a", estimatedCostNanos: 5n, reserve: true }))).toEqual({
        code: Code.FailedPrecondition,
        message: expect.stringMatching(write),
      });
      expect(await failure(admin.setProjectBudget({ projectId: "rm-a", limitNanos: usd(20) }))).toEqual({
        code: Code.FailedPrecondition,
        message: expect.stringMatching(write),
      });
      // A retry of a write recorded before the archive is refused too: nothing is written either way.
      expect((await failure(agent.recordCost({ projectId: "rm-a", costNanos: usd(2), requestId: "r1" }))).code).toBe(
        Code.FailedPrecondition,
      );
      // Reads go on, and a hold can still be given back.
      expect((await agent.getProjectCost({ projectId: "rm-a" })).projectCost?.totalCostNanos).toBe(usd(2));
      expect((await agent.getProjectBudget({ projectId: "rm-a" })).budget?.limitNanos).toBe(usd(10));
      expect((await agent.checkBudget({ projectId: "rm-a", estimatedCostNanos: usd(1) })).allowed).toBe(true);
      expect((await agent.releaseHold({ projectId: "rm-a", holdId: hold.holdId })).releasedNanos).toBe(usd(1));

      // Archiving again keeps the first time.
      clock.advance(hourMs);
      expect(timestampMs((await admin.archiveProject({ projectId: "rm-a" })).archivedAt!)).toBe(clock.ms - hourMs);

      expect(await admin.unarchiveProject({ projectId: "rm-a" })).toMatchObject({ projectId: "rm-a", wasArchived: true });
      expect(await listed()).toEqual([
        ["rm-a", false],
        ["rm-b", false],
      ]);
      const after = await agent.recordCost({ projectId: "rm-a", costNanos: usd(1), requestId: "r2" });
      expect(after.projectCost?.totalCostNanos).toBe(usd(3));
      expect(await admin.unarchiveProject({ projectId: "rm-a" })).toMatchObject({ wasArchived: false });
    });

    it("archive, unarchive and delete of a project that does not exist are NOT_FOUND; a bad id is INVALID_ARGUMENT", async () => {
      for (const call of [
        admin.archiveProject({ projectId: "rm-nothing" }),
        admin.unarchiveProject({ projectId: "rm-nothing" }),
        admin.deleteProject({ projectId: "rm-nothing", noRecordsSince: timestampFromMs(clock.ms) }),
      ]) {
        expect(await failure(call)).toEqual({
          code: Code.NotFound,
          message: 'project "rm-nothing" does not exist (it never recorded a cost nor had a budget set)',
        });
      }
      expect(await codeOf(admin.archiveProject({ projectId: "" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(admin.deleteProject({ projectId: "bad id", noRecordsSince: timestampFromMs(clock.ms) }))).toBe(
        Code.InvalidArgument,
      );
    });

    it("delete removes a project with no records since the given time, and refuses (deleting nothing) one still in use", async () => {
      await admin.setProjectBudget({
        projectId: "rm-old",
        limitNanos: usd(5),
        dailyLimitNanos: usd(1),
        alertThresholds: { basisPoints: [5000] },
      });
      await agent.recordCost({ projectId: "rm-old", costNanos: usd(0.75), agentId: "a1", model: "m1", requestId: "o1" });
      await agent.recordCost({ projectId: "rm-old", costNanos: usd(0.25), requestId: "o2" });
      const lastCostMs = clock.ms;
      clock.advance(24 * hourMs);

      expect(await failure(admin.deleteProject({ projectId: "rm-old" }))).toEqual({
        code: Code.InvalidArgument,
        message: expect.stringMatching(/^no_records_since is required/),
      });
      const inUse = await failure(admin.deleteProject({ projectId: "rm-old", noRecordsSince: timestampFromMs(lastCostMs) }));
      expect(inUse.code).toBe(Code.FailedPrecondition);
      expect(inUse.message).toBe(
        `project "rm-old" recorded a cost at ${new Date(lastCostMs).toISOString()}, at or after no_records_since ${new Date(lastCostMs).toISOString()}: nothing was deleted`,
      );
      const hold = await agent.checkBudget({ projectId: "rm-old", estimatedCostNanos: 1n, reserve: true });
      expect(await failure(admin.deleteProject({ projectId: "rm-old", noRecordsSince: timestampFromMs(clock.ms) }))).toEqual({
        code: Code.FailedPrecondition,
        message: 'project "rm-old" has 1 active hold (release it or let it expire): nothing was deleted',
      });
      expect((await agent.getProjectCost({ projectId: "rm-old" })).projectCost?.recordCount).toBe(2n);
      await agent.releaseHold({ projectId: "rm-old", holdId: hold.holdId });

      const deleted = await admin.deleteProject({ projectId: "rm-old", noRecordsSince: timestampFromMs(lastCostMs + 1) });
      expect(deleted.projectId).toBe("rm-old");
      expect(deleted.deletedCost).toMatchObject({ totalCostNanos: usd(1), recordCount: 2n });
      expect(deleted.deletedRecordCount).toBe(2n);
      // Gone everywhere: listing, totals, budget, ledger, breakdowns, period totals.
      expect((await listed(true)).map(([id]) => id)).not.toContain("rm-old");
      const cost = await agent.getProjectCost({ projectId: "rm-old", breakdownBy: [1, 2] });
      expect(cost.projectCost).toMatchObject({ totalCostNanos: 0n, recordCount: 0n, reservedNanos: 0n });
      expect(cost.currentDay?.totalCostNanos).toBe(0n);
      expect(cost.breakdowns.map((b) => b.entries.length)).toEqual([0, 0]);
      expect((await agent.getProjectBudget({ projectId: "rm-old" })).budget).toMatchObject({
        configured: false,
        limitNanos: 0n,
        dailyLimitNanos: 0n,
        alertThresholdsBps: [],
      });
      expect((await agent.listCostRecords({ projectId: "rm-old" })).records).toEqual([]);
      // The id starts from zero: an old request_id is a new record, not a duplicate.
      const again = await agent.recordCost({ projectId: "rm-old", costNanos: 7n, requestId: "o1" });
      expect([again.duplicate, again.projectCost?.totalCostNanos, again.projectCost?.recordCount]).toEqual([false, 7n, 1n]);
    });

    it("an archived project can be deleted, and a budget-only project too", async () => {
      await admin.setProjectBudget({ projectId: "rm-budget-only", limitNanos: usd(1) });
      await admin.archiveProject({ projectId: "rm-budget-only" });
      const deleted = await admin.deleteProject({ projectId: "rm-budget-only", noRecordsSince: timestampFromMs(clock.ms) });
      expect(deleted.deletedRecordCount).toBe(0n);
      expect((await listed(true)).map(([id]) => id)).not.toContain("rm-budget-only");
      // Nothing of the archive mark is left: the project is writable again from zero.
      await agent.recordCost({ projectId: "rm-budget-only", costNanos: 1n, requestId: "x" });
    });

    it("is for admin keys only: a project key is PERMISSION_DENIED even on its own projects", async () => {
      for (const call of [
        agent.archiveProject({ projectId: "rm-b" }),
        agent.unarchiveProject({ projectId: "rm-b" }),
        agent.deleteProject({ projectId: "rm-b", noRecordsSince: timestampFromMs(clock.ms) }),
      ]) {
        expect(await failure(call)).toEqual({
          code: Code.PermissionDenied,
          message: expect.stringMatching(/needs an admin key; key "agent" is a project key$/),
        });
      }
      expect(await listed()).toContainEqual(["rm-b", false]);
    });
  });
}
