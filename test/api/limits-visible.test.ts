// Every set window visible where operators and agents look (issue 21, item 1):
// CheckBudget's decided_by_remaining_nanos (the deciding limit's remaining, not
// the lifetime one), SetProjectBudget's warnings for a limit set at or below
// its window's spend, and ListProjects' limits (every set window with spend,
// limit and %, the deciding one first), decided_by and thresholds_reached.
// Over a real server on each database, with a clock moved by hand.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetWindow, ProjectOrder, type ProjectSummary } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { TallyServer } from "../../src/server.ts";
import { createPostgresDatabase, databaseKinds } from "../databases.ts";
import { clientsFor, startTestServer, TestClock, usd, type BudgetClient } from "../helpers.ts";

const day = 24 * 60 * 60 * 1000;

for (const kind of databaseKinds) {
  describe(`limits visible on ${kind}`, () => {
    const clock = new TestClock("2026-11-27T12:00:00Z");
    let server: TallyServer;
    let client: BudgetClient;
    let drop: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      let databaseUrl = "sqlite::memory:";
      if (kind === "postgresql") ({ url: databaseUrl, drop } = await createPostgresDatabase());
      server = await startTestServer({ databaseUrl }, { now: clock.now });
      client = clientsFor(server.url)["connect+json http/1.1"]!;
    });
    afterAll(async () => {
      await server?.close();
      await drop?.();
    });

    it("CheckBudget: decided_by_remaining_nanos is the deciding limit's remaining (a day limit that refuses), not the lifetime one", async () => {
      await client.setProjectBudget({ projectId: "cb-day", limitNanos: usd(100), dailyLimitNanos: usd(2) });
      await client.recordCost({ projectId: "cb-day", costNanos: usd(2.5), requestId: "r1" });
      const refused = await client.checkBudget({ projectId: "cb-day", estimatedCostNanos: usd(0.1) });
      expect(refused.allowed).toBe(false);
      expect(refused.decidedBy).toBe(BudgetWindow.DAY);
      expect(refused.remainingNanos).toBe(usd(97.5)); // the lifetime figure, unchanged for compatibility
      expect(refused.decidedByRemainingNanos).toBe(-usd(0.5));

      await client.setProjectBudget({ projectId: "cb-allowed", limitNanos: usd(10), dailyLimitNanos: usd(5) });
      await client.recordCost({ projectId: "cb-allowed", costNanos: usd(1), requestId: "r1" });
      const allowed = await client.checkBudget({ projectId: "cb-allowed", estimatedCostNanos: usd(1) });
      expect([allowed.allowed, allowed.decidedBy, allowed.decidedByRemainingNanos, allowed.remainingNanos]).toEqual([
        true,
        BudgetWindow.DAY,
        usd(4),
        usd(9),
      ]);

      const none = await client.checkBudget({ projectId: "cb-none", estimatedCostNanos: usd(1) });
      expect([none.decidedBy, none.decidedByRemainingNanos]).toEqual([BudgetWindow.UNSPECIFIED, 0n]);
    });

    it("SetProjectBudget warns, per window, when a limit is set at or below what that window already spent, and stores it all the same", async () => {
      await client.recordCost({ projectId: "warn", costNanos: usd(3), requestId: "r1" });
      const daily = await client.setProjectBudget({ projectId: "warn", limitNanos: usd(100), dailyLimitNanos: usd(2) });
      expect(daily.budget?.dailyLimitNanos).toBe(usd(2));
      expect(daily.warnings.map((w) => [w.window, w.period, w.limitNanos, w.spentNanos])).toEqual([
        [BudgetWindow.DAY, "2026-11-27", usd(2), usd(3)],
      ]);
      expect(daily.warnings[0]?.message).toBe(
        "the daily limit 2 USD is at or below today's (2026-11-27) spend 3 USD: CheckBudget refuses until the next day",
      );

      const all = await client.setProjectBudget({ projectId: "warn", limitNanos: usd(3), monthlyLimitNanos: usd(1) });
      expect(all.warnings.map((w) => w.window)).toEqual([BudgetWindow.LIFETIME, BudgetWindow.DAY, BudgetWindow.MONTH]);
      expect(all.warnings[0]?.message).toBe(
        "the lifetime limit 3 USD is at or below lifetime spend 3 USD: CheckBudget refuses until it is raised",
      );
      expect(all.warnings[2]?.message).toBe(
        "the monthly limit 1 USD is at or below this month's (2026-11) spend 3 USD: CheckBudget refuses until the next month",
      );

      const roomy = await client.setProjectBudget({
        projectId: "warn",
        limitNanos: usd(100),
        dailyLimitNanos: usd(5),
        monthlyLimitNanos: 0n,
      });
      expect(roomy.warnings).toEqual([]);
      // A fresh project, or limits removed: nothing to warn about.
      expect((await client.setProjectBudget({ projectId: "warn-new", limitNanos: usd(1) })).warnings).toEqual([]);
    });

    it("ListProjects shows every set window (spend, limit, %), the deciding one first, decided_by and the thresholds reached; a new day starts the day window over", async () => {
      await client.setProjectBudget({
        projectId: "lp-a",
        limitNanos: usd(100),
        dailyLimitNanos: usd(2),
        monthlyLimitNanos: usd(50),
        alertThresholds: { basisPoints: [5000, 8000] },
      });
      await client.recordCost({ projectId: "lp-a", costNanos: usd(2.5), requestId: "r1" });
      await client.setProjectBudget({ projectId: "lp-b", limitNanos: usd(10) });
      await client.recordCost({ projectId: "lp-b", costNanos: usd(8.5), requestId: "r1" });
      await client.recordCost({ projectId: "lp-c", costNanos: usd(1), requestId: "r1" });

      const byId = async () =>
        new Map(
          (await client.listProjects({ order: ProjectOrder.PROJECT_ID, pageSize: 1000 })).projects.map((p) => [p.projectId, p] as const),
        );
      const view = (p: ProjectSummary | undefined) => ({
        decidedBy: p?.decidedBy,
        limits: p?.limits.map((l) => [l.window, l.period, l.spentNanos, l.limitNanos, l.usedBasisPoints, l.remainingNanos, l.allowed]),
        thresholds: p?.thresholdsReached.map((t) => [t.window, t.thresholdBps]),
      });
      let projects = await byId();
      // Blocked for today although lifetime use is a calm 2.5 %: the day comes first.
      expect(view(projects.get("lp-a"))).toEqual({
        decidedBy: BudgetWindow.DAY,
        limits: [
          [BudgetWindow.DAY, "2026-11-27", usd(2.5), usd(2), 12_500n, -usd(0.5), false],
          [BudgetWindow.MONTH, "2026-11", usd(2.5), usd(50), 500n, usd(47.5), true],
          [BudgetWindow.LIFETIME, "", usd(2.5), usd(100), 250n, usd(97.5), true],
        ],
        thresholds: [[BudgetWindow.DAY, 10_000]],
      });
      expect(projects.get("lp-a")?.limitUsedBasisPoints).toBe(250n); // the lifetime figure, as before
      expect(view(projects.get("lp-b"))).toEqual({
        decidedBy: BudgetWindow.LIFETIME,
        limits: [[BudgetWindow.LIFETIME, "", usd(8.5), usd(10), 8_500n, usd(1.5), true]],
        thresholds: [],
      });
      expect(view(projects.get("lp-c"))).toEqual({ decidedBy: BudgetWindow.UNSPECIFIED, limits: [], thresholds: [] });

      // The same as CheckBudget with an estimate of 0 sees.
      const check = await client.checkBudget({ projectId: "lp-a", estimatedCostNanos: 0n });
      expect(check.decidedBy).toBe(projects.get("lp-a")?.decidedBy);
      expect(check.decidedByRemainingNanos).toBe(projects.get("lp-a")?.limits[0]?.remainingNanos);

      clock.advance(day);
      projects = await byId();
      expect(view(projects.get("lp-a"))).toEqual({
        decidedBy: BudgetWindow.DAY,
        limits: [
          [BudgetWindow.DAY, "2026-11-28", 0n, usd(2), 0n, usd(2), true],
          [BudgetWindow.MONTH, "2026-11", usd(2.5), usd(50), 500n, usd(47.5), true],
          [BudgetWindow.LIFETIME, "", usd(2.5), usd(100), 250n, usd(97.5), true],
        ],
        thresholds: [],
      });
      // Holds count in every window's remaining, not in its %.
      await client.checkBudget({ projectId: "lp-b", estimatedCostNanos: usd(1), reserve: true });
      projects = await byId();
      expect(view(projects.get("lp-b")).limits).toEqual([[BudgetWindow.LIFETIME, "", usd(8.5), usd(10), 8_500n, usd(0.5), true]]);
      expect(projects.get("lp-b")?.thresholdsReached.map((t) => t.thresholdBps)).toEqual([]);
    });
  });
}
