// Trees of budgets served end to end (issue 18's Must-hold list) on the stores
// that keep them: a record rolls up to every ancestor; a reservation is
// decided at every level and its hold counted at every level or none (400
// concurrent reservers under an organisation limit of 100 -> exactly 100
// holds); cycles and depth refused; re-parenting moves rolled-up totals and
// holds exactly; alerts once per crossing per level.
import { Code } from "@connectrpc/connect";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BreakdownDimension, BudgetDecisionReason, BudgetWindow } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { TallyServer } from "../../src/server.ts";
import { createPostgresDatabase, databaseKinds } from "../databases.ts";
import { clientsFor, codeOf, startTestServer, usd, type BudgetClient } from "../helpers.ts";

const unit = usd(1);

for (const kind of databaseKinds)
  describe(`trees of budgets on ${kind}`, () => {
    let server: TallyServer;
    let client: BudgetClient;
    let drop: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      // SQLite: a file database, so writes go through the writer thread.
      let databaseUrl = `sqlite:${join(mkdtempSync(join(tmpdir(), "tally-tree-")), "tally.db")}`;
      if (kind === "postgresql") ({ url: databaseUrl, drop } = await createPostgresDatabase());
      server = await startTestServer({ databaseUrl });
      client = clientsFor(server.url)["connect+json http/1.1"]!;
    });
    afterAll(async () => {
      await server?.close();
      await drop?.();
    });

    /** org (limit) > team-a, team-b (no limit) > two projects each (no limit). */
    async function tree(prefix: string, orgLimitNanos: bigint): Promise<{ org: string; teams: string[]; projects: string[] }> {
      const org = `${prefix}-org`;
      await client.setProjectBudget({ projectId: org, limitNanos: orgLimitNanos, alertThresholds: { basisPoints: [5000] } });
      const teams = [`${prefix}-team-a`, `${prefix}-team-b`];
      const projects: string[] = [];
      for (const team of teams) {
        await client.setProjectBudget({ projectId: team, limitNanos: 0n, parentId: org });
        for (const n of [1, 2]) {
          const project = `${team}-p${n}`;
          await client.setProjectBudget({ projectId: project, limitNanos: 0n, parentId: team });
          projects.push(project);
        }
      }
      return { org, teams, projects };
    }

    const spent = async (projectId: string) => (await client.getProjectCost({ projectId })).projectCost!;

    it("400 concurrent reservers of 1 unit over four projects under an org limit of 100: exactly 100 holds, at every level", async () => {
      const { org, teams, projects } = await tree("race", 100n * unit);
      const answers = await Promise.all(
        Array.from({ length: 400 }, (_, i) =>
          client.checkBudget({ projectId: projects[i % 4]!, estimatedCostNanos: unit, reserve: true, holdTtl: { seconds: 600n } }),
        ),
      );
      const granted = answers.filter((a) => a.allowed);
      expect(granted).toHaveLength(100);
      expect(new Set(granted.map((a) => a.holdId)).size).toBe(100);
      for (const refused of answers.filter((a) => !a.allowed)) {
        expect(refused).toMatchObject({
          reason: BudgetDecisionReason.FULLY_RESERVED,
          decidedByProjectId: org,
          decidedBy: BudgetWindow.LIFETIME,
          holdId: "",
        });
      }
      const orgCost = await spent(org);
      expect([orgCost.reservedNanos, orgCost.activeHoldCount]).toEqual([100n * unit, 100n]);
      const perProject = await Promise.all(projects.map(spent));
      expect(perProject.reduce((sum, p) => sum + p.reservedNanos, 0n)).toBe(100n * unit);
      for (const [i, team] of teams.entries()) {
        const t = await spent(team);
        expect(t.reservedNanos).toBe(perProject[2 * i]!.reservedNanos + perProject[2 * i + 1]!.reservedNanos);
      }
      // Settling spends at every level and frees the hold at every level.
      const first = granted[0]!;
      const settledIn = projects[answers.indexOf(first) % 4]!;
      await client.recordCost({ projectId: settledIn, requestId: "settle-1", costNanos: unit, holdId: first.holdId });
      expect(await spent(org)).toMatchObject({ totalCostNanos: unit, reservedNanos: 99n * unit, activeHoldCount: 99n });
      const refused = await client.checkBudget({ projectId: projects[0]!, estimatedCostNanos: unit, reserve: true });
      expect(refused).toMatchObject({ allowed: false, decidedByProjectId: org });
      // Released holds come off every level too.
      const second = granted[1]!;
      await client.releaseHold({ projectId: projects[answers.indexOf(second) % 4]!, holdId: second.holdId });
      expect(await spent(org)).toMatchObject({ reservedNanos: 98n * unit, activeHoldCount: 98n });
    });

    it("a record adds to every ancestor; GetProjectCost shows rolled-up totals, own_cost and the breakdown by child; alerts fire once per level", async () => {
      const { org, teams, projects } = await tree("roll", 10n * unit);
      await client.recordCost({ projectId: org, requestId: "own", costNanos: unit });
      const first = await client.recordCost({ projectId: projects[0]!, requestId: "r1", costNanos: 3n * unit });
      expect(first.thresholdsCrossed.map((t) => [t.projectId, t.thresholdBps])).toEqual([]);
      const crossing = await client.recordCost({ projectId: projects[3]!, requestId: "r2", costNanos: 2n * unit });
      // org: 1 + 3 + 2 = 6 of 10 crosses 50 % once, reported to this write.
      expect(crossing.thresholdsCrossed.map((t) => [t.projectId, t.window, t.thresholdBps])).toEqual([[org, BudgetWindow.LIFETIME, 5000]]);
      const again = await client.recordCost({ projectId: projects[1]!, requestId: "r3", costNanos: unit });
      expect(again.thresholdsCrossed).toEqual([]);
      const report = await client.getProjectCost({ projectId: org, breakdownBy: [BreakdownDimension.CHILD] });
      expect(report.projectCost).toMatchObject({ totalCostNanos: 7n * unit, recordCount: 4n });
      expect(report.ownCost).toMatchObject({ totalCostNanos: unit, recordCount: 1n });
      expect(report.breakdowns[0]!.entries.map((e) => [e.key, e.totalCostNanos])).toEqual([
        [teams[0], 4n * unit],
        [teams[1], 2n * unit],
        ["", unit],
      ]);
      expect((await spent(teams[0]!)).totalCostNanos).toBe(4n * unit);
      expect((await client.getProjectCost({ projectId: projects[0]! })).ownCost?.totalCostNanos).toBe(3n * unit);
      // A check from a leaf is decided by the org: 7 of 10 spent.
      const check = await client.checkBudget({ projectId: projects[2]!, estimatedCostNanos: 4n * unit });
      expect(check).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.EXCEEDS_REMAINING,
        decidedByProjectId: org,
        decidedByRemainingNanos: 3n * unit,
      });
      expect(check.levels.map((l) => l.projectId)).toEqual([org]);
    });

    it("refuses cycles and trees deeper than 4 levels with FAILED_PRECONDITION naming them, a missing parent with NOT_FOUND; nothing changes", async () => {
      const { org, teams, projects } = await tree("shape", 0n);
      const cycle = await client.setProjectBudget({ projectId: org, limitNanos: 0n, parentId: projects[0]! }).catch((e: unknown) => e);
      expect(cycle).toMatchObject({ code: Code.FailedPrecondition });
      expect(String((cycle as Error).message)).toContain(`${org} -> ${projects[0]} -> ${teams[0]} -> ${org}`);
      await client.setProjectBudget({ projectId: "shape-leaf", limitNanos: 0n, parentId: projects[0]! }); // level 4
      const deep = await client
        .setProjectBudget({ projectId: "shape-leaf-2", limitNanos: 0n, parentId: "shape-leaf" })
        .catch((e: unknown) => e);
      expect(deep).toMatchObject({ code: Code.FailedPrecondition });
      expect(String((deep as Error).message)).toContain(`${org} > ${teams[0]} > ${projects[0]} > shape-leaf > shape-leaf-2`);
      expect((await client.getProjectBudget({ projectId: "shape-leaf-2" })).budget?.configured).toBe(false);
      expect(await codeOf(client.setProjectBudget({ projectId: "shape-x", limitNanos: 0n, parentId: "shape-nowhere" }))).toBe(
        Code.NotFound,
      );
      expect((await client.getProjectBudget({ projectId: org })).budget?.parentId).toBe("");
      // One currency per tree; a project of a tree is not deleted.
      expect(await codeOf(client.setProjectBudget({ projectId: "shape-eur", limitNanos: 0n, currency: "EUR", parentId: org }))).toBe(
        Code.FailedPrecondition,
      );
      expect(await codeOf(client.setProjectBudget({ projectId: org, limitNanos: 0n, timeZone: "Europe/Paris" }))).toBe(
        Code.FailedPrecondition,
      );
    });

    it("re-parenting moves the subtree's rolled-up totals and holds exactly, atomically", async () => {
      const { org, teams, projects } = await tree("move", 100n * unit);
      await client.recordCost({ projectId: projects[0]!, requestId: "a", costNanos: 5n * unit });
      await client.recordCost({ projectId: projects[1]!, requestId: "b", costNanos: 7n * unit });
      const hold = await client.checkBudget({ projectId: projects[0]!, estimatedCostNanos: 2n * unit, reserve: true });
      expect(hold.allowed).toBe(true);
      await client.setProjectBudget({ projectId: projects[0]!, limitNanos: 0n, parentId: teams[1]! });
      expect((await client.getProjectBudget({ projectId: projects[0]! })).budget?.parentId).toBe(teams[1]);
      expect(await spent(teams[0]!)).toMatchObject({ totalCostNanos: 7n * unit, recordCount: 1n, reservedNanos: 0n, activeHoldCount: 0n });
      expect(await spent(teams[1]!)).toMatchObject({
        totalCostNanos: 5n * unit,
        recordCount: 1n,
        reservedNanos: 2n * unit,
        activeHoldCount: 1n,
      });
      expect(await spent(org)).toMatchObject({ totalCostNanos: 12n * unit, recordCount: 2n, reservedNanos: 2n * unit });
      const team1Day = (await client.getProjectCost({ projectId: teams[1]! })).currentDay;
      expect(team1Day?.totalCostNanos).toBe(5n * unit);
      // The hold settles along the new chain.
      await client.recordCost({ projectId: projects[0]!, requestId: "c", costNanos: 2n * unit, holdId: hold.holdId });
      expect(await spent(teams[1]!)).toMatchObject({ totalCostNanos: 7n * unit, reservedNanos: 0n });
      expect(await spent(teams[0]!)).toMatchObject({ totalCostNanos: 7n * unit, reservedNanos: 0n });
      // Detached, it is a root of its own; its totals leave the whole chain.
      await client.setProjectBudget({ projectId: projects[0]!, limitNanos: 0n, parentId: "" });
      expect(await spent(org)).toMatchObject({ totalCostNanos: 7n * unit, recordCount: 1n });
      expect(await spent(projects[0]!)).toMatchObject({ totalCostNanos: 7n * unit, recordCount: 2n });
      // A project of a tree is not deleted (its spend is rolled up above it).
      const deleted = await client
        .deleteProject({ projectId: projects[1]!, noRecordsSince: { seconds: 4_000_000_000n } })
        .catch((e: unknown) => e);
      expect(deleted).toMatchObject({
        code: Code.FailedPrecondition,
        message: expect.stringContaining(`has parent project "${teams[0]}"`),
      });
    });
  });
